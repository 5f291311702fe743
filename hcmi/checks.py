"""The mechanism checks (params `checks`, docs/method.md): a component against the variant that removes it, at several
levels of the condition the component exists for; `snakemake --cores 8 mechanisms` (or the `*_check_*` stages of
dvc.yaml) runs them.

A check's condition is one parameter: a data parameter (`data.<dataset>.source.<key>`: another benchmark is
generated) or a training parameter (`train.<key>`: the compared variants are trained otherwise). Each level that
differs from the parameter's own value is an entry derived in memory from the base entry, with the condition set to
the level: a dataset `<dataset>--<check>-<level>` under `data`, or variants `<variant>--<check>-<level>` under
`variants` (their `train` holds the level). The pipeline's steps run on them as on any dataset or variant; params.yaml
stays as written. The level equal to the parameter's own value is the default run itself: its models are reused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

SEPARATOR = "--"  # <base>--<check>-<level>: a dataset or variant derived for a check


def level_label(value: float) -> str:
    """A level as a name part: 0.5 -> 0p5, 12 -> 12, 0 -> 0."""
    return f"{float(value):g}".replace(".", "p").replace("-", "m")


def derived_name(base: str, check: str, value: float) -> str:
    return f"{base}{SEPARATOR}{check}-{level_label(value)}"


def base_name(name: str) -> str:
    """The registered dataset (or the variant) a derived one is made from; a name that is not derived is its own."""
    return name.split(SEPARATOR, 1)[0]


def condition_kind(condition: str) -> str:
    """'data' (data.<dataset>.source.<key>) or 'train' (train.<key>)."""
    return "data" if condition.startswith("data.") else "train"


def condition_dataset(condition: str) -> str | None:
    return condition.split(".")[1] if condition_kind(condition) == "data" else None


@dataclass(frozen=True)
class Level:
    """One level of one check on one dataset: the two compared variants as they are named at this level."""

    check: str
    value: float
    default: bool  # the parameter's own value: the default run's dataset and variants
    dataset: str
    first: str  # the component's variant (compare[0])
    second: str  # the variant without it (compare[1])

    @property
    def models(self) -> tuple[str, str]:
        return (self.first, self.second)


def lookup(raw: Mapping, key: str):
    node = raw
    for part in key.split("."):
        node = node[part]
    return node


def levels(raw: Mapping) -> list[Level]:
    """Every level of every check, in the order of params `checks` and their `levels`."""
    out = []
    for check, spec in (raw.get("checks") or {}).items():
        condition = spec["condition"]
        current = float(lookup(raw, condition))
        data_set = condition_dataset(condition)
        for value in spec["levels"]:
            value = float(value)
            default = value == current
            for dataset in ([data_set] if data_set else raw["datasets"]):
                first, second = spec["compare"]
                if not default and data_set:
                    dataset = derived_name(data_set, check, value)
                elif not default:
                    first, second = derived_name(first, check, value), derived_name(second, check, value)
                out.append(Level(check, value, default, dataset, first, second))
    return out


def _setting(key: str, value) -> dict:
    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def _merged(base: Mapping, override: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else copy.deepcopy(value)
    return out


def typed(current, value: float):
    """A level as the parameter's own type (an integer parameter stays an integer)."""
    return int(value) if isinstance(current, int) and not isinstance(current, bool) and value == int(value) else value


def expand(raw: Mapping) -> dict:
    """`raw` with the derived datasets and variants of every check level added (a new dict)."""
    out = copy.deepcopy(dict(raw))
    for level in levels(raw):
        if level.default:
            continue
        condition = raw["checks"][level.check]["condition"]
        value = typed(lookup(raw, condition), level.value)
        if condition_kind(condition) == "data":
            base = condition_dataset(condition)
            inner = condition.split(".", 2)[2]  # source.<key>
            out["data"][level.dataset] = _merged(raw["data"][base], _setting(inner, value))
        else:
            inner = condition.split(".", 1)[1]
            for derived in level.models:
                variant = raw["variants"][base_name(derived)]
                out["variants"][derived] = _merged(variant, {"train": _setting(inner, value)})
    return out


def derived_datasets(raw: Mapping) -> list[str]:
    """The datasets derived for the checks' levels, in order."""
    return list(dict.fromkeys(lv.dataset for lv in levels(raw) if base_name(lv.dataset) != lv.dataset))


def runs(raw: Mapping, seeds_for) -> list[tuple[str, str, int]]:
    """(dataset, variant, seed) of every run the checks compare, default levels included (`seeds_for`: a variant's
    seeds, as the default run trains it)."""
    found = []
    for level in levels(raw):
        for model in level.models:
            found += [(level.dataset, model, seed) for seed in seeds_for(model)]
    return list(dict.fromkeys(found))
