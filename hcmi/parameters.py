"""Every parameter of params.yaml, declared once: its type, its allowed values and its meaning.

These models are the one declaration. hcmi validates params against them (hcmi/config.py: an unknown key is named,
with the closest known one), its typed objects are these models (`SyntheticSource`, `PretrainParams`, `TrainParams`,
`ModelParams`), and the JSON schema that editors and other tools read (params.schema.json, written by
`hcmi workflow-files`) is generated from them. Every section forbids unknown keys. Values written as strings where a
number, a boolean or null is meant (Snakemake's `--config key='{"a": "6"}'`) are read as what they spell.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _null(value: Any) -> Any:
    return None if value in ("null", "~", "None") else value


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Names = Annotated[list[Name], Field(min_length=1, json_schema_extra={"uniqueItems": True})]
OptionalNames = Annotated[list[Name], Field(json_schema_extra={"uniqueItems": True})]
PositiveInt = Annotated[int, Field(ge=1)]
Seeds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, json_schema_extra={"uniqueItems": True})]
Fraction = Annotated[float, Field(ge=0, le=1)]
NullableStr = Annotated[Optional[str], BeforeValidator(_null)]


class Section(BaseModel):
    """A closed section of params: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- data ---------------------------------------------------------------------------------------------------------


class SyntheticSource(Section):
    """How the embedded synthetic benchmark is generated (docs/benchmark.md)."""

    seed: int = Field(ge=0)
    n_train: PositiveInt
    n_val: int = Field(ge=2, multiple_of=2)
    n_test: int = Field(ge=2, multiple_of=2)
    captions_per_video: PositiveInt
    query_captions: PositiveInt = Field(
        1, description="query captions per validation and test video (paraphrases; each is a query, as every caption "
        "of an MSVD test video is)")
    min_events: int = Field(ge=2, le=4)
    max_events: int = Field(ge=2, le=4)
    event_seconds: float = Field(gt=0)
    fps: PositiveInt
    size: int = Field(ge=16)
    false_negative_rate: Fraction = Field(
        description="share of training families with a false-negative copy (same events, new video and captions)")
    hard_negative_rate: Fraction = Field(
        description="share of training families with a hard negative (an order or binding twin of the base)")


class RealSource(Section):
    """Where a real dataset's files come from (docs/datasets.md)."""

    manual_dir: NullableStr = Field(
        description="folder where the user placed gated or manually fetched files (null = data/raw/<dataset>/manual)")
    mirror: Annotated[Optional[Annotated[str, Field(pattern=r"^https?://")]], BeforeValidator(_null)] = Field(
        None, description="base URL of a copy of the upstream files (same file names), used instead of each source's "
        "URL: an institutional mirror, or a local server in tests (null or absent = the upstream URLs)")


class DatasetProtocol(Section):
    """What every dataset entry sets: frames and words per sample, and the galleries its test split is ranked in."""

    max_frames: PositiveInt
    max_words: int = Field(ge=4)
    test_folds: PositiveInt = Field(
        description="galleries the test split is ranked in: its clusters (twin pairs, else videos) in order, cut "
        "into this many blocks; each query is ranked among its own gallery's videos and the metrics are taken over "
        "every query, so more test videos add queries without making R@K harder (as COCO's 5 x 1K test; 1: the "
        "whole split, the real benchmarks' protocol)")


class SyntheticDataset(DatasetProtocol):
    source: SyntheticSource


class RealDataset(DatasetProtocol):
    source: RealSource


class Data(BaseModel):
    """One entry per dataset: the synthetic benchmark's source is its generator, a real dataset's where its files
    come from."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[Name, RealDataset] = Field(init=False)

    synthetic: Optional[SyntheticDataset] = None


class Frames(Section):
    image_size: int = Field(ge=16)
    shard_size: PositiveInt
    max_skip_fraction: Fraction
    candidates: PositiveInt = Field(
        description="candidate frames cached per segment (training draws one at random; evaluation takes the middle)")
    jpeg_quality: int = Field(
        ge=1, le=100, description="JPEG quality of the cached frames (Pillow's scale; above 95 files grow with no "
        "visible gain)")


# -- the backbone and its pretraining -----------------------------------------------------------------------------


class Backbone(Section):
    name: str = Field(min_length=1)
    pretrained: NullableStr


class BackboneOverride(Section):
    """Only in a variant, to train it on another backbone than params `backbone` (merged over it)."""

    name: Optional[str] = Field(None, min_length=1)
    pretrained: NullableStr = None


class PretrainParams(Section):
    """Contrastive pretraining on the embedded benchmark's still images, run by `hcmi weights` for a backbone whose
    `pretrained` is synthetic-stills (docs/benchmark.md); the result is shared by every variant and seed."""

    seed: int = Field(ge=0)
    images: PositiveInt = Field(description="training images")
    held_out: PositiveInt = Field(description="images kept apart to measure what pretraining learned")
    max_objects: int = Field(ge=1, le=3, description="objects per image: 1 to this many")
    size: int = Field(ge=8, description="side of the rendered image, before it is resized to the backbone's input")
    epochs: PositiveInt
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: Fraction


# -- the model: a retrieval head and its objective ----------------------------------------------------------------


class Levels(Section):
    """The weight of each level in the final score and the loss (0 switches a level off)."""

    video_sentence: float = Field(ge=0)
    clip_phrase: float = Field(ge=0)
    frame_word: float = Field(ge=0)

    def __getitem__(self, level: str) -> float:
        return getattr(self, level)


class Denoise(Section):
    method: Literal["two_view", "soft_targets", "none"]
    similarity: Literal["frames", "video"] = Field(description="two_view: frames (segment-aligned) or video")
    latent_weight: float = Field(ge=0)
    max_confidence: Fraction
    temperature: float = Field(gt=0)


class Enhance(Section):
    method: Literal["triplet", "reweight", "none"]
    margin: float = Field(ge=0)
    weight: float = Field(ge=0)
    scope: Literal["final", "levels"]


class ModelParams(Section):
    """The retrieval head and objective of one variant (params `model`, with `variants.<name>` merged over it)."""

    head: Literal["meanp", "hcmi"]
    temporal_layers: int = Field(ge=0)
    clip_clusters: PositiveInt
    phrase_clusters: PositiveInt
    aggregation: Literal["attention", "density_peak", "kmedoids", "uniform"] = Field(
        description="how frames become clips and words phrases (docs/method.md)")
    sentence: Literal["aggregated", "eot"] = Field(
        description="the sentence token; aggregated (from the phrases, like the video from the clips) or eot (CLIP's)")
    levels: Levels
    denoise: Denoise
    enhance: Enhance

    @property
    def two_views(self) -> bool:
        """Training needs a second, independently drawn view of every video (two-view label denoising)."""
        return self.denoise.method == "two_view"


def _optional(annotation: Any) -> Any:
    """The annotation of a field in an override: the same type with every key optional, recursively."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return Optional[overrides(annotation)]
    return Optional[annotation]


def overrides(model: type[Section]) -> type[Section]:
    """`model` with every key optional (recursively): what a variant may override."""
    fields = {name: (_optional(field.annotation), Field(None, description=field.description))
              for name, field in model.model_fields.items()}
    return create_model(f"{model.__name__}Override", __base__=Section, __doc__=model.__doc__, **fields)


# -- training, evaluation, compute, reports, search ---------------------------------------------------------------


class TrainParams(Section):
    """How every variant is trained (the trainer reads these; `gradcache_chunk` resolved to a number first)."""

    epochs: float = Field(gt=0)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: Fraction
    grad_clip: float = Field(ge=0, description="0 disables clipping")
    accumulation_steps: PositiveInt
    backbone_lr_scale: float = Field(ge=0)
    grad_checkpointing: bool
    amp: bool
    workers: int = Field(ge=0)
    decoded_frames_mb: float = Field(
        ge=0, description="memory a training job may use to keep decoded training frames between epochs instead of "
        "decoding them again (0: decode every time); results are the same. Kept in the process that reads them: "
        "with workers > 0 each epoch's loader processes start empty")
    log_every: PositiveInt
    checkpoint_every: PositiveInt
    sampler: Literal["shuffle", "grouped"] = Field(
        description="batch order: shuffle (a permutation of the pairs) or grouped (families kept contiguous, so a "
        "batch holds false negatives and hard negatives; a dataset without group_id falls back to shuffle)")
    gradcache_chunk: Union[Annotated[int, Field(ge=0)], Literal["auto"]] = Field(
        description="gradient caching (docs/scaling.md): 0 off, N chunks of N items, auto the largest chunk whose "
        "step fits compute.gpu_memory_gb (0 when the plain step fits); the contrastive batch stays train.batch_size")
    select: Literal["best", "last"] = Field(
        description="the weights a run's result is: best (the best validation t2v R@1 at an epoch's end, as "
        "CLIP4Clip selects) or last (the end of the schedule; validation is still run and logged)")


class Variant(overrides(ModelParams)):
    """A model variant: the keys of `model` it overrides, and optionally its own backbone and training."""

    backbone: Optional[BackboneOverride] = None
    train: Optional[overrides(TrainParams)] = Field(
        None, description="keys of `train` this variant is trained with instead (e.g. more epochs)")


class Check(Section):
    """A mechanism check (docs/method.md): compare[0] against compare[1] (the variant without the component) at each
    level of `condition`, paired, with intervals; the level equal to the parameter's own value is the default run's."""

    compare: Annotated[list[Name], Field(min_length=2, max_length=2)] = Field(
        description="[the component's variant, the variant that removes it]")
    condition: str = Field(
        pattern=r"^(data\.[a-z0-9][a-z0-9_-]*\.source\.[a-z_]+|train\.[a-z_]+)$",
        description="the parameter the component exists for: data.<dataset>.source.<key> (another benchmark is "
        "generated at each level) or train.<key> (the compared variants are trained otherwise)")
    levels: Annotated[list[float], Field(min_length=2, json_schema_extra={"uniqueItems": True})] = Field(
        description="values of the condition, ascending; the parameter's own value among them reuses the default run")


class Eval(Section):
    batch_size: PositiveInt
    dsl_temperature: float = Field(gt=0)
    top_k: PositiveInt
    block_memory_mb: float = Field(gt=0)
    dsl: bool
    dsl_bank: int = Field(
        ge=0, description="training captions in the bank of the query-blind dual softmax (t2v_dsl_bank; 0 switches "
        "it off)")


class Compute(Section):
    sample_threads: PositiveInt
    train_threads: PositiveInt = Field(
        description="CPU threads of a training or evaluation job (its results depend on it, so those steps declare it)")
    numerics: Literal["portable", "vendor", "compatible", "native"] = Field(
        description="CPU kernels of every result (portable = x86-64-v3 pinned, Intel and AMD alike; vendor = "
        "x86-64-v3 per CPU vendor, faster matrix products; compatible = any x86-64; native = unpinned)")
    device: Literal["auto", "cpu", "cuda"]
    deterministic: bool = Field(
        description="deterministic algorithms (on CUDA also a fixed cuBLAS workspace); the same seed gives the same "
        "bits")
    train_gpus: int = Field(ge=0)
    gpu_memory_gb: float = Field(
        gt=0, description="memory of one training GPU that a step may use (the memory plan's budget; leave headroom)")
    train_mem_mb: PositiveInt
    train_runtime_min: PositiveInt


class Report(Section):
    qualitative_queries: int = Field(ge=0)
    thumbnails_per_video: PositiveInt
    equivalence_margin: float = Field(
        gt=0, description="points of a measure (R@1, twin accuracy) within which a comparison whose family interval "
        "lies is 'equivalent' (a precise zero) rather than 'undetermined' (docs/method.md)")


class Search(Section):
    """Two-stage search of an index (`hcmi search`; docs/search.md)."""

    depth: PositiveInt = Field(description="candidates the coarse index proposes and the full multi-level score "
                               "re-ranks")
    top_k: PositiveInt = Field(description="videos a search returns")


class Params(Section):
    """The one configuration file of hcmi (params.yaml), read by Snakemake, DVC and the hcmi command line."""

    datasets: Names
    models: Names
    seeds: Seeds = Field(description="training seeds of `models`; results are reported as mean and spread over them")
    ablations: OptionalNames
    ablation_seeds: Seeds
    zero_shot: OptionalNames = Field(
        description="variants evaluated without any training (the pretrained backbone as it is), with seed 0")
    data: Data
    frames: Frames
    backbone: Backbone
    pretrain: PretrainParams
    model: ModelParams
    variants: Annotated[dict[Name, Variant], Field(min_length=1)]
    train: TrainParams
    eval: Eval
    compute: Compute
    report: Report
    search: Search
    checks: dict[Name, Check] = Field(
        default_factory=dict, description="mechanism checks, outside `all`: `snakemake --cores 8 mechanisms`")


def section_model(path: tuple) -> type[BaseModel] | None:
    """The model of the section at `path` (keys and list indexes from the top), or None where there is none."""
    annotation: Any = Params
    for part in path:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is not None:
                annotation = field.annotation
            elif annotation is Data:
                annotation = RealDataset
            else:
                return None
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            return None
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Annotated[T, ...] -> T; Optional[T] -> T."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is Union:
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def json_schema() -> dict:
    schema = Params.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
