"""HCMI: hierarchical cross-modal interaction between a video and a text at three levels (docs/method.md).

    video:  frames --temporal self-attention--> frame tokens --aggregation--> clip tokens --aggregation--> video
    text:   words (text-transformer outputs) --aggregation--> phrase tokens --aggregation--> sentence
            (or, with model.sentence: eot, CLIP's end-of-text output as the sentence)
    levels: video-sentence (cosine), clip-phrase and frame-word (token-wise max-mean)

The final score is the weighted sum of the enabled levels (params `model.levels`); a level with weight 0 is not
computed at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hcmi.model.aggregation import TopToken, make_aggregation
from hcmi.model.retrieval import RetrievalModel
from hcmi.model.similarity import cosine, max_mean, max_mean_bytes_per_pair
from hcmi.model.temporal import TemporalTransformer

LEVELS = ("video_sentence", "clip_phrase", "frame_word")


def word_mask(tokens: torch.Tensor) -> torch.Tensor:
    """Real word positions: not padding (id 0) and not the start-of-text token, whose output is the same for every
    text under the causal mask and so carries nothing."""
    mask = tokens != 0
    mask[:, 0] = False
    return mask


class HCMI(RetrievalModel):
    def __init__(self, backbone, params):
        super().__init__(backbone)
        dim = backbone.embed_dim
        self.weights = {level: float(params.levels[level]) for level in LEVELS if params.levels[level] > 0}
        if not self.weights:
            raise ValueError("model.levels: every level has weight 0; enable at least one")
        self.levels = tuple(self.weights)
        self.aggregated_sentence = params.sentence == "aggregated"
        self.temporal = TemporalTransformer(dim, params.temporal_layers) if params.temporal_layers > 0 else None
        self.clip_aggregation = make_aggregation(params.aggregation, dim, params.clip_clusters)
        self.video_token = TopToken(params.aggregation, dim)
        # built only when used: every parameter of a model must take part in training (DDP requires it)
        if self._needs_phrases():
            self.phrase_aggregation = make_aggregation(params.aggregation, dim, params.phrase_clusters)
        if self.aggregated_sentence:
            self.sentence_token = TopToken(params.aggregation, dim)

    def _needs_phrases(self) -> bool:
        return "clip_phrase" in self.weights or self.aggregated_sentence

    def level_weights(self) -> dict[str, float]:
        return dict(self.weights)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.backbone.encode_frames(frames)
        if self.temporal is not None:
            tokens = self.temporal(tokens, frame_mask)
        clips, clip_mask, _ = self.clip_aggregation(tokens, frame_mask)
        # frame tokens are always part of it: the frame-word level scores them, and two-view label denoising compares
        # two sampled videos segment by segment
        rep = {"video": F.normalize(self.video_token(clips, clip_mask), dim=-1),
               "frame": F.normalize(tokens, dim=-1), "frame_mask": frame_mask}
        if "clip_phrase" in self.weights:
            rep.update(clip=F.normalize(clips, dim=-1), clip_mask=clip_mask)
        return rep

    def encode_text(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        words, eot = self.backbone.encode_words(tokens)
        mask = word_mask(tokens)
        rep = {}
        if self._needs_phrases():
            phrases, phrase_mask, _ = self.phrase_aggregation(words, mask)
            if "clip_phrase" in self.weights:
                rep.update(phrase=F.normalize(phrases, dim=-1), phrase_mask=phrase_mask)
        sentence = self.sentence_token(phrases, phrase_mask) if self.aggregated_sentence else eot
        rep["sentence"] = F.normalize(sentence, dim=-1)
        if "frame_word" in self.weights:
            rep.update(word=F.normalize(words, dim=-1), word_mask=mask)
        return rep

    def level_similarities(self, text: dict, video: dict) -> dict[str, torch.Tensor]:
        sims = {}
        if "video_sentence" in self.weights:
            sims["video_sentence"] = cosine(text["sentence"], video["video"])
        if "clip_phrase" in self.weights:
            sims["clip_phrase"] = max_mean(text["phrase"], text["phrase_mask"], video["clip"], video["clip_mask"])
        if "frame_word" in self.weights:
            sims["frame_word"] = max_mean(text["word"], text["word_mask"], video["frame"], video["frame_mask"])
        return sims

    def similarity_bytes_per_pair(self, text: dict, video: dict) -> int:
        total = 8
        if "clip_phrase" in self.weights:
            total += max_mean_bytes_per_pair(text["phrase"].shape[1], video["clip"].shape[1])
        if "frame_word" in self.weights:
            total += max_mean_bytes_per_pair(text["word"].shape[1], video["frame"].shape[1])
        return total
