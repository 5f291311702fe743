"""CLIP4Clip meanP: the video is the mean of its (valid) frame embeddings, matched to the sentence by cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hcmi.model.retrieval import RetrievalModel


class MeanPooling(RetrievalModel):
    levels = ("video_sentence",)

    def __init__(self, backbone, params=None):  # every head is built from (backbone, params); mean pooling has none
        super().__init__(backbone)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        features = F.normalize(self.backbone.encode_frames(frames), dim=-1)
        weights = frame_mask.to(features.dtype).unsqueeze(-1)
        pooled = (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return {"video": F.normalize(pooled, dim=-1)}

    def encode_text(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        _, sentence = self.backbone.encode_words(tokens)
        return {"sentence": F.normalize(sentence, dim=-1)}

    def level_similarities(self, text: dict, video: dict) -> dict[str, torch.Tensor]:
        return {"video_sentence": text["sentence"] @ video["video"].T}
