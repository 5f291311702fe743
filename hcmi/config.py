"""The typed configuration: params.yaml (plus override files and key=value settings), validated before any work.

params.yaml is the single source of every parameter. Its JSON schema (workflow/schemas/params.schema.yaml) closes
every object, so a misspelled key fails with an error that names it. The dataclasses below carry no defaults on
purpose: a value either comes from the file or the file is invalid.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hcmi.errors import HcmiError

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
DEFAULT_PARAMS = "params.yaml"
PARAMS_ENV = "HCMI_PARAMS"


class ConfigError(HcmiError, ValueError):
    """A params file is missing, unreadable or invalid; the message names the file and the key."""


# ----------------------------------------------------------------------------------------------------------------
# typed sections


@dataclass(frozen=True)
class SyntheticSource:
    seed: int
    n_train: int
    n_val: int
    n_test: int
    captions_per_video: int
    min_events: int
    max_events: int
    event_seconds: float
    fps: int
    size: int
    false_negative_rate: float
    hard_negative_rate: float


@dataclass(frozen=True)
class DatasetParams:
    max_frames: int
    max_words: int
    source: dict


@dataclass(frozen=True)
class FramesParams:
    image_size: int
    shard_size: int
    max_skip_fraction: float
    candidates: int
    jpeg_quality: int


@dataclass(frozen=True)
class BackboneParams:
    name: str
    pretrained: str | None


@dataclass(frozen=True)
class DenoiseParams:
    enabled: bool
    max_confidence: float
    temperature: float


@dataclass(frozen=True)
class EnhanceParams:
    enabled: bool
    margin: float
    weight: float


@dataclass(frozen=True)
class ModelParams:
    """The retrieval head and objective of one variant (params `model` merged with `variants.<name>`)."""

    head: str
    temporal_layers: int
    clip_clusters: int
    phrase_clusters: int
    clustering: str
    levels: dict
    denoise: DenoiseParams
    enhance: EnhanceParams


@dataclass(frozen=True)
class TrainParams:
    epochs: float
    batch_size: int
    lr: float
    weight_decay: float
    warmup_fraction: float
    grad_clip: float
    accumulation_steps: int
    backbone_lr_scale: float
    grad_checkpointing: bool
    amp: bool
    workers: int
    log_every: int
    checkpoint_every: int
    device: str
    sampler: str


@dataclass(frozen=True)
class EvalParams:
    batch_size: int
    dsl_temperature: float
    top_k: int
    block_memory_mb: float
    dsl: bool


@dataclass(frozen=True)
class ComputeParams:
    sample_threads: int
    train_threads: int
    train_gpus: int
    train_mem_mb: int
    train_runtime_min: int


@dataclass(frozen=True)
class ReportParams:
    qualitative_queries: int
    thumbnails_per_video: int


def _build(cls, values: Mapping[str, Any]):
    return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Params:
    raw: dict
    datasets: list
    models: list
    seeds: list
    ablations: list
    ablation_seeds: list
    frames: FramesParams
    backbone: BackboneParams
    train: TrainParams
    eval: EvalParams
    compute: ComputeParams
    report: ReportParams

    def dataset(self, name: str) -> DatasetParams:
        try:
            return _build(DatasetParams, self.raw["data"][name])
        except KeyError:
            known = ", ".join(sorted(self.raw["data"]))
            raise ConfigError(f"params: no entry data.{name} (configured datasets: {known})") from None

    @property
    def all_models(self) -> list[str]:
        """Compared models first, then the ablation variants."""
        return self.models + self.ablations

    def seeds_for(self, variant: str) -> list[int]:
        return self.seeds if variant in self.models else self.ablation_seeds

    def synthetic(self) -> SyntheticSource:
        return _build(SyntheticSource, self.dataset("synthetic").source)

    def _variant(self, name: str) -> dict:
        if name not in self.raw["variants"]:
            known = ", ".join(sorted(self.raw["variants"]))
            raise ConfigError(f"params: unknown model variant '{name}' (variants: {known})")
        return self.raw["variants"][name]

    def variant_dict(self, name: str) -> dict:
        """The merged model section of a variant, as a plain dict (stored in checkpoints); its backbone apart."""
        merged = deep_merge(self.raw["model"], self._variant(name))
        merged.pop("backbone", None)
        return merged

    def backbone_dict(self, variant: str) -> dict:
        """params `backbone`, with the variant's own `backbone` merged over it."""
        return deep_merge(self.raw["backbone"], self._variant(variant).get("backbone", {}))

    def backbone_for(self, variant: str) -> BackboneParams:
        return _build(BackboneParams, self.backbone_dict(variant))

    def backbones_in_use(self) -> list[BackboneParams]:
        """Every distinct backbone that the configured models and ablations train on, in order."""
        found: list[BackboneParams] = []
        for variant in self.all_models:
            backbone = self.backbone_for(variant)
            if backbone not in found:
                found.append(backbone)
        return found

    def variant(self, name: str) -> ModelParams:
        return model_params(self.variant_dict(name))


def model_params(values: Mapping[str, Any]) -> ModelParams:
    values = dict(values)
    values["denoise"] = _build(DenoiseParams, values["denoise"])
    values["enhance"] = _build(EnhanceParams, values["enhance"])
    return _build(ModelParams, values)


# ----------------------------------------------------------------------------------------------------------------
# loading, merging, validating


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A new dict: `base` with `override` merged in (mappings recursively, everything else replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` (no dot) as a string; parameters mean the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_setting(setting: str) -> dict:
    """`train.lr=0.01` -> {"train": {"lr": 0.01}}; the value is parsed as YAML."""
    key, sep, value = setting.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key, got '{setting}'")
    nested: Any = load_yaml(value) if value != "" else None
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
    return data


@lru_cache(maxsize=1)
def schema() -> dict:
    return load_yaml(SCHEMA_PATH.read_text())


def _allowed_keys(schema_node: Mapping) -> list[str]:
    keys = list(schema_node.get("properties", {}))
    for sub in schema_node.get("allOf", []):
        keys += _allowed_keys(_resolve_ref(sub))
    return keys


def _resolve_ref(node: Mapping) -> Mapping:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema()
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return target


def _subschemas(node: Mapping) -> list[Mapping]:
    node = _resolve_ref(node)
    return [node] + [s for sub in node.get("allOf", []) for s in _subschemas(sub)]


def _child_schema(node: Mapping, key) -> list[Mapping]:
    children = []
    for sub in _subschemas(node):
        if key in sub.get("properties", {}):
            children.append(sub["properties"][key])
        elif isinstance(sub.get("additionalProperties"), Mapping):
            children.append(sub["additionalProperties"])
        elif isinstance(key, int) and isinstance(sub.get("items"), Mapping):
            children.append(sub["items"])
    return children


def _schema_types(nodes: list[Mapping]) -> set:
    types = set()
    for node in nodes:
        for sub in _subschemas(node):
            kind = sub.get("type")
            types.update(kind if isinstance(kind, list) else [kind] if kind else [])
    return types


def coerce_strings(value: Any, nodes: list[Mapping] | None = None) -> Any:
    """Scalars given as strings where the schema wants numbers, booleans or null are parsed as YAML: Snakemake's
    `--config key='{"a": 6}'` hands nested values over as strings."""
    nodes = [schema()] if nodes is None else nodes
    if isinstance(value, Mapping):
        return {k: coerce_strings(v, [c for n in nodes for c in _child_schema(n, k)]) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_strings(v, [c for n in nodes for c in _child_schema(n, i)]) for i, v in enumerate(value)]
    types = _schema_types(nodes) if isinstance(value, str) else set()
    if "null" in types and value in ("null", "~", "None"):
        return None
    if types and "string" not in types:
        try:
            parsed = load_yaml(value)
        except yaml.YAMLError:
            return value
        return parsed if not isinstance(parsed, (str, Mapping, list)) else value
    return value


def _describe(error, source: str) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = _allowed_keys(error.schema) or []
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        parts = []
        for key in extra:
            full = f"{path}.{key}" if path else key
            hint = difflib.get_close_matches(key, allowed, n=1)
            parts.append(f"unknown key '{full}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        if parts:
            return f"{source}: " + "; ".join(parts)
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        where = f"{path}." if path else ""
        return f"{source}: missing key " + ", ".join(f"'{where}{k}'" for k in missing)
    return f"{source}: key '{path or '<top level>'}': {error.message}"


def validate(raw: Mapping, source: str = "params") -> None:
    """Check `raw` against the schema and the cross-references between sections; raise ConfigError naming the key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        messages = []
        for error in errors:
            msg = _describe(error, source)
            if msg not in messages:
                messages.append(msg)
        raise ConfigError("\n".join(messages))
    problems = []
    for name in raw["datasets"]:
        if name not in raw["data"]:
            problems.append(f"key 'datasets': '{name}' has no entry under 'data'")
    for key in ("models", "ablations"):
        for name in raw[key]:
            if name not in raw["variants"]:
                problems.append(f"key '{key}': '{name}' is not defined under 'variants'")
    for name in set(raw["models"]) & set(raw["ablations"]):
        problems.append(f"key 'ablations': '{name}' is already in 'models'")
    if "synthetic" in raw["data"]:
        src = raw["data"]["synthetic"]["source"]
        if src["min_events"] > src["max_events"]:
            problems.append("key 'data.synthetic.source.min_events' is larger than max_events")
    from hcmi.data.datasets import DATASETS

    for name in raw["data"]:
        if name not in DATASETS:
            problems.append(f"key 'data.{name}': unknown dataset (known: {', '.join(sorted(DATASETS))})")
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))


def from_dict(raw: Mapping, source: str = "params") -> Params:
    validate(raw, source)
    raw = copy.deepcopy(dict(raw))
    return Params(
        raw=raw,
        datasets=list(raw["datasets"]),
        models=list(raw["models"]),
        seeds=list(raw["seeds"]),
        ablations=list(raw["ablations"]),
        ablation_seeds=list(raw["ablation_seeds"]),
        frames=_build(FramesParams, raw["frames"]),
        backbone=_build(BackboneParams, raw["backbone"]),
        train=_build(TrainParams, raw["train"]),
        eval=_build(EvalParams, raw["eval"]),
        compute=_build(ComputeParams, raw["compute"]),
        report=_build(ReportParams, raw["report"]),
    )


def default_params_files() -> list[str]:
    env = os.environ.get(PARAMS_ENV)
    return env.split(os.pathsep) if env else [DEFAULT_PARAMS]


def load(files: Iterable[str | os.PathLike] | None = None, settings: Iterable[str] = ()) -> Params:
    """Merge the params files in order, apply KEY=VALUE settings, validate, and return the typed config."""
    files = list(files) if files else default_params_files()
    raw: dict = {}
    for path in files:
        raw = deep_merge(raw, read_yaml(path))
    for setting in settings:
        raw = deep_merge(raw, parse_setting(setting))
    source = " + ".join(str(f) for f in files) + (" + --set" if settings else "")
    return from_dict(raw, source)
