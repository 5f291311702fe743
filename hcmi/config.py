"""The parameters: params.yaml (plus override files and key=value settings), validated before any work.

params.yaml holds the value of every parameter; hcmi/parameters.py declares each one once (type, allowed values,
meaning). Every section is closed, so a misspelled key fails with an error that names it and suggests the right one.

A step reads its parameters through a view restricted to the keys it declares (hcmi/pipeline.py): reading any other
key raises UndeclaredParameter, so the parameters Snakemake and DVC watch for a step are exactly the ones it uses.
Values are read by attribute (`params.train.lr`, `params.dataset("msrvtt").max_frames`) or by dotted key
(`params.get("eval.batch_size")`); a whole section is read with `.to_dict()`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hcmi import checks, parameters
from hcmi.errors import HcmiError
from hcmi.parameters import ModelParams, SyntheticSource

DEFAULT_PARAMS = "params.yaml"
STILLS_TAG = "synthetic-stills"  # backbone.pretrained: pretrained by `hcmi weights` on the embedded still images
# the compute parameters that pretraining's numbers depend on (hcmi/runtime.py)
PRETRAIN_COMPUTE = ("compute.train_threads", "compute.numerics", "compute.device", "compute.deterministic")
ZERO_SHOT_SEED = 0  # a variant evaluated without training has one run, filed under this seed
PARAMS_ENV = "HCMI_PARAMS"


class ConfigError(HcmiError, ValueError):
    """A params file is missing, unreadable or invalid; the message names the file and the key."""


class UndeclaredParameter(HcmiError, KeyError):
    """A step read a parameter it does not declare (hcmi/pipeline.py): the workflows would not re-run it when that
    parameter changes."""

    def __str__(self) -> str:
        return str(self.args[0])


def model_params(values: Mapping[str, Any]) -> ModelParams:
    """The typed model section of a variant (a merged `model` + `variants.<name>` dict, as checkpoints store it)."""
    return ModelParams.model_validate(dict(values))


def _covers(declared: str, key: str) -> bool:
    return key == declared or key.startswith(declared + ".")


class Params:
    """Validated parameters; `restrict(keys, step)` gives the view a step may read."""

    def __init__(self, raw: Mapping, source: str = "params", allowed: tuple[str, ...] | None = None,
                 step: str | None = None):
        self._raw = checks.expand(raw) if "checks" in raw else copy.deepcopy(dict(raw))  # + derived entries
        self.source = source
        self.allowed = allowed
        self.step = step

    def restrict(self, keys: Iterable[str], step: str) -> "Params":
        return Params(self._raw, self.source, tuple(keys), step)

    def _check(self, key: str) -> None:
        if self.allowed is not None and not any(_covers(declared, key) for declared in self.allowed):
            raise UndeclaredParameter(
                f"step '{self.step}' read parameter '{key}', which it does not declare (declared: "
                f"{', '.join(self.allowed) or 'none'}); add it to the step's params in hcmi/pipeline.py")

    def _lookup(self, key: str) -> Any:
        node: Any = self._raw
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{self.source}: no parameter '{key}'")
            node = node[part]
        return node

    def get(self, key: str) -> Any:
        """The value of a dotted key (a copy for mappings and lists)."""
        self._check(key)
        return copy.deepcopy(self._lookup(key))

    def has(self, key: str) -> bool:
        try:
            self._lookup(key)
        except ConfigError:
            return False
        return True

    def section(self, key: str) -> "Section":
        self._lookup(key)
        return Section(self, key)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._raw:
            raise AttributeError(f"params have no section '{name}'")
        return Section(self, name) if isinstance(self._raw[name], Mapping) else self.get(name)

    def declared_values(self) -> dict:
        """{key: value} of every declared key present (a restricted view's parameters, for provenance)."""
        if self.allowed is None:
            return self.to_dict()
        return {key: self.get(key) for key in self.allowed if self.has(key)}

    def to_dict(self) -> dict:
        """Every parameter (only for an unrestricted view)."""
        if self.allowed is not None:
            raise UndeclaredParameter(f"step '{self.step}' cannot read the whole parameter set")
        return copy.deepcopy(self._raw)

    # -- what several steps ask ---------------------------------------------------------------------------------

    def dataset(self, name: str) -> "Section":
        if not self.has(f"data.{name}"):
            known = ", ".join(sorted(self._raw["data"]))
            raise ConfigError(f"params: no entry data.{name} (configured datasets: {known})")
        return Section(self, f"data.{name}")

    @property
    def all_models(self) -> list[str]:
        """The trained variants: compared models first, then the ablations."""
        return self.get("models") + self.get("ablations")

    @property
    def evaluated_models(self) -> list[str]:
        """Every evaluated variant: the trained ones, then those evaluated without training (`zero_shot`)."""
        return self.all_models + self.get("zero_shot")

    def seeds_for(self, variant: str) -> list[int]:
        """A variant's seeds (a variant derived for a check: its base's)."""
        variant = checks.base_name(variant)
        if variant in self.get("models"):
            return self.get("seeds")
        return [ZERO_SHOT_SEED] if variant in self.get("zero_shot") else self.get("ablation_seeds")

    def synthetic(self, dataset: str = "synthetic") -> SyntheticSource:
        """The generator parameters of the embedded benchmark (or of one derived from it for a check)."""
        return SyntheticSource.model_validate(self.get(f"data.{dataset}.source"))

    @property
    def check_levels(self) -> list[checks.Level]:
        """Every level of every mechanism check (hcmi/checks.py)."""
        self._check("checks")
        return checks.levels(self._raw)

    def check_runs(self) -> list[tuple[str, str, int]]:
        """(dataset, variant, seed) of every run the mechanism checks compare, the default run's among them."""
        self._check("checks")
        return checks.runs(self._raw, self.seeds_for)

    @property
    def check_models(self) -> list[str]:
        """The variants the mechanism checks train (those derived for them included), in order."""
        return list(dict.fromkeys(model for _, model, _ in self.check_runs()))

    def _variant(self, name: str) -> dict:
        if not self.has(f"variants.{name}"):
            known = ", ".join(sorted(self._raw["variants"]))
            raise ConfigError(f"params: unknown model variant '{name}' (variants: {known})")
        return self.get(f"variants.{name}")

    def variant_dict(self, name: str) -> dict:
        """The merged model section of a variant, as a plain dict (stored in checkpoints); its backbone apart."""
        merged = deep_merge(self.get("model"), self._variant(name))
        merged.pop("backbone", None)
        merged.pop("train", None)
        return merged

    def train_dict(self, variant: str) -> dict:
        """params `train`, with the variant's own `train` merged over it."""
        return deep_merge(self.get("train"), self._variant(variant).get("train") or {})

    def variant(self, name: str) -> ModelParams:
        return model_params(self.variant_dict(name))

    def backbone_dict(self, variant: str) -> dict:
        """params `backbone`, with the variant's own `backbone` merged over it."""
        return deep_merge(self.get("backbone"), self._variant(variant).get("backbone") or {})

    def backbones_in_use(self) -> list[dict]:
        """Every distinct backbone that the configured variants (trained or zero-shot) use, in order."""
        found: list[dict] = []
        for variant in self.evaluated_models:
            backbone = self.backbone_dict(variant)
            if backbone not in found:
                found.append(backbone)
        return found

    def pretraining_inputs(self) -> dict:
        """What pretraining on stills depends on: params `pretrain` and the compute parameters that set its numbers."""
        return {"pretrain": self.get("pretrain"), **{key: self.get(key) for key in PRETRAIN_COMPUTE}}


class Section:
    """A mapping of params read key by key: `section.lr`, `section["hcmi-b16"]`, `section.to_dict()`."""

    def __init__(self, params: Params, key: str):
        self._params, self._key = params, key

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str):
        key = f"{self._key}.{name}"
        value = self._params._lookup(key)
        return Section(self._params, key) if isinstance(value, Mapping) else self._params.get(key)

    def __contains__(self, name: str) -> bool:
        return self._params.has(f"{self._key}.{name}")

    def keys(self) -> list[str]:
        return list(self._params._lookup(self._key))

    def to_dict(self) -> dict:
        return self._params.get(self._key)

    def __repr__(self) -> str:
        return f"<params section {self._key}>"


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


def _shown_path(raw: Any, loc: tuple) -> str:
    """The dotted key of an error location: the parts of `loc` that are keys of the given params (a location may go on
    into the members of a union), and the first missing one."""
    parts, node = [], raw
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            if isinstance(part, str) and not parts or isinstance(node, Mapping):
                parts.append(str(part))
            break
        parts.append(str(part))
    return ".".join(parts)


def _describe(error: Mapping, raw: Mapping, source: str) -> str:
    loc = tuple(error["loc"])
    path = _shown_path(raw, loc)
    if error["type"] == "extra_forbidden":
        section = parameters.section_model(loc[:-1])
        known = list(section.model_fields) if section is not None else []
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return f"{source}: unknown key '{path}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if error["type"] == "missing":
        return f"{source}: missing key '{path}'"
    return f"{source}: key '{path or '<top level>'}': {error['msg']} (given: {error['input']!r})"


def _cross_reference_problems(raw: Mapping, known_datasets: Iterable[str]) -> list[str]:
    problems = []
    for name in raw["datasets"]:
        if name not in raw["data"]:
            problems.append(f"key 'datasets': '{name}' has no entry under 'data'")
    for key in ("models", "ablations", "zero_shot"):
        for name in raw[key]:
            if name not in raw["variants"]:
                problems.append(f"key '{key}': '{name}' is not defined under 'variants'")
    for key in ("ablations", "zero_shot"):
        for name in sorted(set(raw["models"]) & set(raw[key])):
            problems.append(f"key '{key}': '{name}' is already in 'models'")
    for name in sorted(set(raw["ablations"]) & set(raw["zero_shot"])):
        problems.append(f"key 'zero_shot': '{name}' is already in 'ablations'")
    if "synthetic" in raw["data"]:
        src = raw["data"]["synthetic"]["source"]
        if src["min_events"] > src["max_events"]:
            problems.append("key 'data.synthetic.source.min_events' is larger than max_events")
    problems += _check_problems(raw)
    known = set(known_datasets)
    for name in raw["data"]:
        if name not in known:
            problems.append(f"key 'data.{name}': unknown dataset (known: {', '.join(sorted(known))})")
    return problems


def _check_problems(raw: Mapping) -> list[str]:
    """A check compares defined variants on a configured condition, at levels the parameter may take."""
    problems = []
    for name, spec in (raw.get("checks") or {}).items():
        key = f"checks.{name}"
        for variant in spec["compare"]:
            if variant not in raw["variants"]:
                problems.append(f"key '{key}.compare': '{variant}' is not defined under 'variants'")
        condition = spec["condition"]
        dataset = checks.condition_dataset(condition)
        if dataset is not None and dataset not in raw["data"]:
            problems.append(f"key '{key}.condition': no entry data.{dataset}")
            continue
        try:
            current = checks.lookup(raw, condition)
        except (KeyError, TypeError):
            problems.append(f"key '{key}.condition': no parameter '{condition}'")
            continue
        if isinstance(current, (Mapping, list, bool)) or not isinstance(current, (int, float)):
            problems.append(f"key '{key}.condition': '{condition}' is not a number")
            continue
        section_key, _, leaf = condition.rpartition(".")
        section = checks.lookup(raw, section_key)
        model = parameters.SyntheticSource if dataset is not None else parameters.TrainParams
        for value in spec["levels"]:
            try:
                model.model_validate({**section, leaf: checks.typed(current, float(value))})
            except Exception as exc:  # pydantic's ValidationError: the level is out of the parameter's range
                first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
                problems.append(f"key '{key}.levels': {value} is not a valid {condition} ({first})")
        if list(spec["levels"]) != sorted(spec["levels"]):
            problems.append(f"key '{key}.levels': levels must be ascending")
    return problems


def validate(raw: Mapping, source: str = "params", known_datasets: Iterable[str] | None = None) -> dict:
    """Check `raw` against the declarations (hcmi/parameters.py) and the cross-references between sections; raise
    ConfigError naming each bad key. Returns the parameters as declared: values given as strings read as the numbers,
    booleans or nulls they spell. `known_datasets`: the dataset registry's names (config knows no data layer)."""
    from pydantic import ValidationError

    try:
        checked = parameters.Params.model_validate(dict(raw)).model_dump(exclude_unset=True)
    except ValidationError as exc:
        messages = []
        for error in sorted(exc.errors(), key=lambda e: (len(e["loc"]), list(map(str, e["loc"])))):
            message = _describe(error, raw, source)
            if message not in messages:
                messages.append(message)
        raise ConfigError("\n".join(messages)) from None
    problems = _cross_reference_problems(checked, known_datasets if known_datasets is not None else checked["data"])
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return checked


def from_dict(raw: Mapping, source: str = "params", known_datasets: Iterable[str] | None = None) -> Params:
    return Params(validate(raw, source, known_datasets), source)


def default_params_files() -> list[str]:
    env = os.environ.get(PARAMS_ENV)
    return env.split(os.pathsep) if env else [DEFAULT_PARAMS]


def declared_defaults() -> Path:
    """The project's params.yaml as installed with the package (hcmi/defaults.yaml: a link to it in a checkout, a
    copy in a wheel): what the tools that need no project (search, verify, plan) read outside a checkout."""
    return Path(__file__).resolve().parent / "defaults.yaml"


def params_files_here() -> bool:
    """Whether this folder (or $HCMI_PARAMS) gives parameters of its own."""
    return bool(os.environ.get(PARAMS_ENV)) or Path(DEFAULT_PARAMS).exists()


def merged(files: Iterable[str | os.PathLike] | None = None, settings: Iterable[str] = ()) -> tuple[dict, str]:
    """The params files merged in order with KEY=VALUE settings applied (not validated), and their description."""
    files = list(files) if files else default_params_files()
    raw: dict = {}
    for path in files:
        raw = deep_merge(raw, read_yaml(path))
    for setting in settings:
        raw = deep_merge(raw, parse_setting(setting))
    return raw, " + ".join(str(f) for f in files) + (" + --set" if settings else "")


def load(files: Iterable[str | os.PathLike] | None = None, settings: Iterable[str] = (),
         known_datasets: Iterable[str] | None = None) -> Params:
    """Merge the params files in order, apply KEY=VALUE settings, validate, and return the parameters."""
    raw, source = merged(files, settings)
    return from_dict(raw, source, known_datasets)
