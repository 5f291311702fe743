"""The headline numbers of a result: what each run's and each model's scores.json holds (DVC's metrics), few enough
that `dvc metrics show` fits a terminal. Every other number stays in the metrics.json beside it.

Apart from hcmi/metrics.py (which training's validation imports), so that choosing which numbers to show re-runs the
evaluations and summaries that write them, not the trainings (a step's code is the import closure of its module)."""

from __future__ import annotations


SCORES = {"t2v": ("R1", "R5", "R10", "MdR", "MnR"), "v2t": ("R1", "R5", "R10", "MdR", "MnR"),
          "t2v_dsl": ("R1", "R5", "R10"), "v2t_dsl": ("R1", "R5", "R10")}
HARD_PAIR_SCORES = {"order": "order", "binding": "binding"}  # hard_distractors.<key> -> hard.<name>
SCORE_DIGITS = 2


def scores(result: dict) -> dict:
    """The headline numbers of one result (a metrics dict, or a summary's mean or std), rounded for display; the
    ones it lacks (no DSL, no hard pairs) are left out."""
    out: dict = {}
    for group, keys in SCORES.items():
        values = {key: round(float(result[group][key]), SCORE_DIGITS) for key in keys
                  if key in result.get(group, {})}
        if values:
            out[group] = values
    hard = result.get("hard_distractors", {})
    pairs = {name: round(float(hard[key]), SCORE_DIGITS) for key, name in HARD_PAIR_SCORES.items() if key in hard}
    if pairs:
        out["hard"] = pairs
    return out
