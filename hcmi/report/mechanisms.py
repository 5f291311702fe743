"""The mechanism checks' results (params `checks`, hcmi/checks.py): at each level of a check's condition, the
component's variant against the variant without it, paired over the same seeds and test queries (as every comparison,
hcmi/report/paired.py), with the four verdicts; the levels of one check form one family. Beside each difference: both
variants' own means, the latent positives' precision and recall (where the component marks them), and where
validation R@1 stopped rising. `mechanisms_markdown` is what the README's section on the checks is made of.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hcmi.paths import Layout
from hcmi.report import paired
from hcmi.report.tables import (MEASURES, VERDICT_COLOURS, Summary, _commits, _degrees, _params, query_outcomes,
                                verdict_text)

STEP = "mechanisms_report"
LATENT = (("latent precision (%)", "latent_precision"), ("latent recall (%)", "latent_recall"))


def _outcomes(layout: Layout, dataset: str, model: str, seeds: list[int]):
    runs = {seed: query_outcomes(layout, dataset, model, seed) for seed in seeds}
    return {seed: table for seed, table in runs.items() if table is not None}


def _curves(layout: Layout, dataset: str, model: str) -> pd.DataFrame | None:
    path = layout.curves(dataset, model)
    return pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else None


def _latent(curves: pd.DataFrame | None) -> dict:
    """Latent positives' precision and recall (%), mean over training, then over seeds (None: none marked)."""
    if curves is None or "latent_precision" not in curves:
        return {}
    train = curves[curves["log"] == "train"]
    if not train["latent_positives"].fillna(0).gt(0).any():
        return {}
    per_seed = train.groupby("seed")[[key for _, key in LATENT]].mean()
    return {key: 100 * float(per_seed[key].mean()) for _, key in LATENT}


def _validation(curves: pd.DataFrame | None) -> dict:
    """Validation R@1 at the last epoch, and the epoch of its best (mean over seeds)."""
    if curves is None or "R1" not in curves:
        return {}
    val = curves[(curves["log"] == "val") & curves["R1"].notna()]
    if not len(val):
        return {}
    last = val.sort_values("step").groupby("seed").tail(1)
    best = val.loc[val.groupby("seed")["R1"].idxmax()]
    return {"val_R1_last": float(last["R1"].mean()), "val_best_epoch": float(best["epoch"].mean())}


def check_rows(params, layout: Layout) -> pd.DataFrame:
    """One row per check, level and measure: the paired difference (first - second) with its interval, its family
    interval (the check's levels and measures at once) and verdict, both variants' means, and the level's latent
    positives and validation curve."""
    margin = params.get("report.equivalence_margin")
    checks = params.get("checks")
    rows = []
    for name, spec in checks.items():
        found = []
        for level in [lv for lv in params.check_levels if lv.check == name]:
            a_runs = _outcomes(layout, level.dataset, level.first, params.seeds_for(level.first))
            b_runs = _outcomes(layout, level.dataset, level.second, params.seeds_for(level.second))
            seeds = [seed for seed in a_runs if seed in b_runs]
            if not seeds:
                continue
            queries = a_runs[seeds[0]].index
            first_curves = _curves(layout, level.dataset, level.first)
            second_curves = _curves(layout, level.dataset, level.second)
            extra = {**_latent(first_curves), **_validation(first_curves),
                     **{f"second_{k}": v for k, v in _validation(second_curves).items()}}
            for measure, column in MEASURES:
                if not all(column in a_runs[s] and column in b_runs[s] for s in seeds):
                    continue
                a = np.stack([a_runs[s].loc[queries, column].to_numpy(dtype=float) for s in seeds])
                b = np.stack([b_runs[s].loc[queries, column].to_numpy(dtype=float) for s in seeds])
                if not (np.isfinite(a) & np.isfinite(b)).all(axis=0).any():
                    continue
                found.append((level, measure, a, b, a_runs[seeds[0]].loc[queries, "cluster"].to_numpy(), extra))
        for level, measure, a, b, clusters, extra in found:
            result = paired.paired_difference(a, b, family=len(found), clusters=clusters)
            verdict = paired.verdict(result, margin)
            rows.append({"check": name, "condition": spec["condition"], "level": level.value,
                         "default": level.default, "dataset": level.dataset, "first": level.first,
                         "second": level.second, "measure": measure, "first_mean": float(np.nanmean(a)),
                         "second_mean": float(np.nanmean(b)), "difference": result["difference"],
                         "low": result["low"], "high": result["high"], "family_low": result["family_low"],
                         "family_high": result["family_high"], "family": result["family"], "df": result["df"],
                         "seeds": result["seeds"], "queries": result["queries"], "verdict": verdict,
                         "margin": margin,
                         "seeds_needed": paired.seeds_to_determine(result, margin) if verdict == "undetermined"
                         else None, **extra})
    return pd.DataFrame(rows)


def _short(variant: str) -> str:
    from hcmi.checks import base_name

    return base_name(variant)


def check_table(rows: pd.DataFrame, check: str) -> pd.DataFrame:
    """One check for display: a row per level and measure."""
    part = rows[rows["check"] == check]
    table = pd.DataFrame({
        "level": [f"{v:g}" + (" (default)" if d else "") for v, d in zip(part["level"], part["default"])],
        "measure": part["measure"],
        "first": [f"{v:.1f}" for v in part["first_mean"]], "second": [f"{v:.1f}" for v in part["second_mean"]],
        "difference [95% interval]": [f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
                                      for d, lo, hi in zip(part["difference"], part["low"], part["high"])],
        "verdict [all levels at once]": [verdict_text(r) for r in part.to_dict("records")],
        "df": [_degrees(v) for v in part["df"]], "seeds": part["seeds"]})
    return table.set_index(["level", "measure"])


def level_table(rows: pd.DataFrame, check: str) -> pd.DataFrame | None:
    """What each level's training did beside the difference: latent positives, validation R@1 (last, best epoch)."""
    part = rows[rows["check"] == check].drop_duplicates("level")
    columns = [c for c in ("latent_precision", "latent_recall", "val_R1_last", "val_best_epoch",
                           "second_val_R1_last", "second_val_best_epoch") if c in part and part[c].notna().any()]
    if not columns:
        return None
    table = part[["level"] + columns].copy()
    table["level"] = [f"{v:g}" for v in table["level"]]
    return table.set_index("level").round(1)


def _panels(rows: pd.DataFrame, height: float):
    """A figure with a row of panels per check and one per measure; yields (figure, axes, check, measure, that
    panel's rows by level) for each panel with results."""
    import matplotlib.pyplot as plt

    checks = list(dict.fromkeys(rows["check"]))
    measures = list(dict.fromkeys(rows["measure"]))
    fig, axes = plt.subplots(len(checks), len(measures), figsize=(4.0 * len(measures), height * len(checks)),
                             squeeze=False)
    for i, check in enumerate(checks):
        for j, measure in enumerate(measures):
            part = rows[(rows["check"] == check) & (rows["measure"] == measure)].sort_values("level")
            ax = axes[i][j]
            if len(part):
                ax.set_xlabel(part["condition"].iloc[0].rsplit(".", 1)[-1])
                ax.set_xticks(sorted(part["level"]))
                yield fig, ax, j == 0, check, measure, part


def check_figure(rows: pd.DataFrame):
    """A row of panels per check, one per measure: the difference against the level of the condition, with its 95 %
    interval (thick) and family interval (thin), coloured by verdict; does the effect grow where it should?"""
    if not len(rows):
        return None
    from matplotlib.ticker import MaxNLocator

    fig = None
    for fig, ax, first_column, check, measure, part in _panels(rows, 2.9):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.plot(part["level"], part["difference"], color="0.6", linewidth=0.8)
        for row in part.to_dict("records"):
            colour = VERDICT_COLOURS[row["verdict"]]
            ax.plot([row["level"]] * 2, [row["family_low"], row["family_high"]], color=colour, linewidth=1)
            ax.errorbar(row["level"], row["difference"], yerr=[[row["difference"] - row["low"]],
                                                               [row["high"] - row["difference"]]],
                        fmt="o", color=colour, elinewidth=3, capsize=3)
        first, second = _short(part["first"].iloc[0]), _short(part["second"].iloc[0])
        ax.set_title(f"{check}: {measure}\n{first} - {second}", fontsize="medium")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        if first_column:
            ax.set_ylabel("difference (points)")
    fig.suptitle("dot: difference; thick bar: 95 % interval; thin line: the check's levels at once (the verdict's)",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def means_figure(rows: pd.DataFrame):
    """Both compared variants' own means against the level (each check, each measure)."""
    if not len(rows):
        return None
    fig = None
    for fig, ax, first_column, check, measure, part in _panels(rows, 2.7):
        ax.plot(part["level"], part["first_mean"], "o-", label=_short(part["first"].iloc[0]))
        ax.plot(part["level"], part["second_mean"], "s--", label=_short(part["second"].iloc[0]))
        ax.set_title(f"{check}: {measure}", fontsize="medium")
        ax.grid(alpha=0.3)
        if first_column:
            ax.set_ylabel("mean over seeds (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def mechanism_rows(data_root: str | Path, params_files=None, declared=None) -> pd.DataFrame:
    return check_rows(_params(params_files, declared, STEP), Layout(Path(data_root)))


def mechanisms_markdown(data_root: str | Path, params_files=None, declared=None) -> str:
    """The checks as Markdown tables, with the code version of the runs that produced them."""
    params = _params(params_files, declared, STEP)
    layout = Layout(Path(data_root))
    rows = check_rows(params, layout)
    commits = set()
    for dataset, model, _ in params.check_runs():
        path = layout.metrics(dataset, model)
        if path.exists():
            commits.update(_commits(Summary.load(path)))
    lines = [f"Produced by the pipeline from commit(s) {', '.join(sorted(commits)) or 'not recorded'}.", ""]
    for check, spec in params.get("checks").items():
        part = rows[rows["check"] == check] if len(rows) else rows
        first, second = spec["compare"]
        lines += [f"#### {check}: {first} - {second} against `{spec['condition']}`", ""]
        if not len(part):
            lines += ["No results yet.", ""]
            continue
        lines += [f"| level | measure | {first} | {second} | difference [95% interval] | verdict [all levels at once] "
                  "| df | seeds |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['level']:g}{' (default)' if r['default'] else ''} | {r['measure']} | {r['first_mean']:.1f} "
                  f"| {r['second_mean']:.1f} | {r['difference']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}] "
                  f"| {verdict_text(r)} | {_degrees(r['df'])} | {r['seeds']} |" for r in part.to_dict("records")]
        lines.append("")
        extra = level_table(rows, check)
        if extra is not None:
            names = {"latent_precision": "latent precision (%)", "latent_recall": "latent recall (%)",
                     "val_R1_last": f"{first}: val R@1, last", "val_best_epoch": f"{first}: best val epoch",
                     "second_val_R1_last": f"{second}: val R@1, last",
                     "second_val_best_epoch": f"{second}: best val epoch"}
            lines += ["| level | " + " | ".join(names[c] for c in extra.columns) + " |",
                      "|---|" + "---|" * len(extra.columns)]
            lines += [f"| {level} | " + " | ".join("—" if pd.isna(v) else f"{v:g}" for v in values) + " |"
                      for level, values in zip(extra.index, extra.to_numpy())]
            lines.append("")
    return "\n".join(lines)
