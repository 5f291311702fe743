"""Tables and figures for the report notebooks. Reads result files only (metrics.json, curves.csv, rankings, the
test frame cache); never imports training code, so a report renders from results pulled with `dvc pull` alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hcmi.config import load
from hcmi.files import read_json
from hcmi.paths import Layout
from hcmi.report import paired
from hcmi.report.published import DSL, ZERO_SHOT, has_figures, published

RECALL_COLUMNS = ["R1", "R5", "R10", "MdR", "MnR"]
REFERENCE_MODEL = "hcmi"  # the full method, against which every ablation is judged
VERDICT_COLOURS = {"helps": "tab:green", "hurts": "tab:red", "equivalent": "tab:blue", "undetermined": "tab:gray"}


def fmt(mean: float | None, std: float | None, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "missing"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 and std is not None else f"{mean:.1f}"


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _params(params_files, declared, step):
    params = load(params_files)
    return params.restrict(declared, step) if declared is not None else params


class Summary:
    """One model's summary (metrics.json of the summarize step): mean, std and per-seed values by dotted key; and
    what made them (provenance.json beside it: the summary's own, and each seed's)."""

    def __init__(self, content: dict, made: dict | None = None):
        self.content = content
        self.seeds = content["seeds"]
        self.made = made or {}

    @classmethod
    def load(cls, path: Path) -> "Summary":
        beside = Path(path).with_name("provenance.json")
        return cls(read_json(path), read_json(beside) if beside.exists() else None)

    def seed_provenance(self) -> dict[str, dict]:
        """{seed: {"provenance": of its evaluation, "model_provenance": of the training it evaluated}}."""
        return self.made.get("per_seed", {})

    def mean(self, key: str):
        return _at(self.content["mean"], key)

    def std(self, key: str):
        return _at(self.content["std"], key)

    def per_seed(self, key: str) -> list:
        return [_at(result, key) for result in self.content["per_seed"].values()]

    def text(self, key: str) -> str:
        return fmt(self.mean(key), self.std(key), len(self.seeds))


class DatasetResults:
    """Everything the report of one dataset shows, loaded from the result files of the configured runs.

    `declared`: the parameter keys the report step declares (the view is restricted to them, as every step's is)."""

    def __init__(self, dataset: str, data_root: str | Path = "data", params_files=None, declared=None):
        self.params = _params(params_files, declared, "dataset_report")
        self.layout = Layout(Path(data_root))
        self.dataset = dataset
        self.models = self.params.get("models")
        self.zero_shot = self.params.get("zero_shot")
        self.ablations = self.params.get("ablations")
        self.seeds = self.params.get("seeds")
        self.summaries: dict[str, Summary] = {}
        for model in self.models + self.zero_shot + self.ablations:
            path = self.layout.metrics(dataset, model)
            if path.exists():
                self.summaries[model] = Summary.load(path)

    # -- tables ----------------------------------------------------------------------------------------------

    @property
    def compared(self) -> list[str]:
        """The rows of the main tables: the compared models, then the variants evaluated without training."""
        return self.models + self.zero_shot

    def metrics_table(self, direction: str = "t2v") -> pd.DataFrame:
        rows = []
        for model in self.compared:
            summary = self.summaries.get(model)
            row = {"model": model}
            for column in RECALL_COLUMNS:
                row[column] = summary.text(f"{direction}.{column}") if summary else "missing"
            rows.append(row)
        return pd.DataFrame(rows).set_index("model")

    def hard_distractor_table(self) -> pd.DataFrame | None:
        rows = []
        for model in self.compared:
            summary = self.summaries.get(model)
            if not summary or summary.mean("hard_distractors.accuracy") is None:
                continue
            row = {"model": model, "all pairs": summary.text("hard_distractors.accuracy")}
            for kind in ("order", "binding"):
                if summary.mean(f"hard_distractors.{kind}") is not None:
                    row[kind] = summary.text(f"hard_distractors.{kind}")
            rows.append(row)
        return pd.DataFrame(rows).set_index("model") if rows else None

    def denoising_table(self) -> pd.DataFrame | None:
        """Two-view label denoising against the known duplicates: per model, the latent positives per item and
        their precision and recall (mean over a run's training-log rows, then mean ± std over seeds)."""
        return denoising_rows(self._curves())

    def comparisons(self) -> pd.DataFrame:
        """The paired comparisons of this dataset (the full method against each other model and each ablation)."""
        return paired_comparisons(self.params, self.layout, [self.dataset])

    def ablation_table(self) -> pd.DataFrame | None:
        """The full method and each ablation over their seeds: R@1 (plain and DSL), hard-distractor accuracy, and the
        verdict on the removed component from the paired comparison of t2v R@1 (difference and 95 % interval)."""
        if not self.ablations:
            return None
        comparisons = self.comparisons()
        judged = {r["second"]: f"{r['verdict']}: {paired.describe(r)}"
                  for r in comparisons.to_dict("records") if r["measure"] == "t2v R@1"} if len(comparisons) else {}
        rows = []
        for model in ([REFERENCE_MODEL] if REFERENCE_MODEL in self.models else []) + self.ablations:
            summary = self.summaries.get(model)
            if summary is None:
                rows.append({"model": model, "t2v R@1": "missing"})
                continue
            row = {"model": model, "seeds": len(summary.seeds), "t2v R@1": summary.text("t2v.R1"),
                   "t2v R@1 (DSL)": summary.text("t2v_dsl.R1") if summary.mean("t2v_dsl.R1") is not None else ""}
            for kind in ("order", "binding"):
                if summary.mean(f"hard_distractors.{kind}") is not None:
                    row[f"hard pairs: {kind}"] = summary.text(f"hard_distractors.{kind}")
            if model != REFERENCE_MODEL:
                row["removed component: t2v R@1 difference [95% interval]"] = judged.get(model, "missing")
            rows.append(row)
        return pd.DataFrame(rows).set_index("model").fillna("—")

    def backbones(self) -> str:
        """The backbone(s) of the compared models, for the report's header."""
        names = {model: self.params.backbone_dict(model) for model in self.compared}
        described = {f"`{b['name']}` ({b['pretrained'] or 'trained from scratch'})" for b in names.values()}
        if len(described) == 1:
            return described.pop()
        return ", ".join(f"{model}: `{b['name']}` ({b['pretrained'] or 'from scratch'})" for model, b in names.items())

    def published_table(self) -> pd.DataFrame | None:
        """Our t2v R@1 beside the published figure of the same method, on the same protocol: the paper's HCMI
        figures (with DSL) beside our DSL results, CLIP4Clip's meanP figures beside our plain results. None for a
        dataset nobody published figures for."""
        if not has_figures(self.dataset):
            return None
        rows = []
        for model in self.compared:
            backbone = self.params.backbone_dict(model)["name"]
            method = ZERO_SHOT if model in self.zero_shot else self.params.variant(model).head
            figure = published(self.dataset, method, backbone)
            summary = self.summaries.get(model)
            protocol = figure.protocol if figure else "plain"
            key = "t2v_dsl.R1" if protocol == DSL else "t2v.R1"
            rows.append({
                "model": model, "backbone": backbone, "protocol": protocol,
                "t2v R@1 (ours)": summary.text(key) if summary else "missing",
                "t2v R@1 (published)": f"{figure.r1:.1f}" if figure else "missing",
                "published backbone": figure.backbone if figure else "",
                "source": (figure.source + (f" ({figure.note})" if figure.note else "")) if figure else "",
            })
        return pd.DataFrame(rows).set_index("model")

    def provenance_table(self) -> pd.DataFrame:
        """What made each result: per model and seed, the code, parameters, data and runtime of its evaluation and of
        the training of the model it evaluated."""
        rows = []
        for model, summary in self.summaries.items():
            for seed, made in summary.seed_provenance().items():
                rows.append({"model": model, "seed": seed, **provenance_row(made.get("provenance"), "eval"),
                             **provenance_row(made.get("model_provenance"), "train")})
        return pd.DataFrame(rows).set_index(["model", "seed"]) if rows else pd.DataFrame()

    def counts(self) -> dict:
        for summary in self.summaries.values():
            return next(iter(summary.content["per_seed"].values()))["counts"]
        return {}

    # -- figures ---------------------------------------------------------------------------------------------

    def _curves(self) -> dict[str, pd.DataFrame]:
        out = {}
        for model in self.models:
            path = self.layout.curves(self.dataset, model)
            if path.exists() and path.stat().st_size > 1:
                out[model] = pd.read_csv(path)
        return out

    def training_curves(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        colours = _colours(self.compared)
        for model, table in self._curves().items():
            for i, (seed, rows) in enumerate(table.groupby("seed")):
                train, val = rows[rows["log"] == "train"], rows[rows["log"] == "val"]
                label = model if i == 0 else None
                if "loss" in train and len(train):
                    axes[0].plot(train["step"], train["loss"], color=colours[model], alpha=0.8, label=label)
                if "R1" in val and len(val):
                    axes[1].plot(val["step"], val["R1"], "o-", color=colours[model], alpha=0.8, label=label)
        axes[0].set(title="training loss", xlabel="step", ylabel="loss")
        axes[1].set(title="validation text-to-video R@1", xlabel="step", ylabel="R@1 (%)")
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def recall_bars(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
        ks = ["R1", "R5", "R10"]
        compared = {m: self.summaries[m] for m in self.compared if m in self.summaries}
        width = 0.8 / max(1, len(compared))
        colours = _colours(self.compared)
        for ax, direction in zip(axes, ("t2v", "v2t")):
            for i, (model, summary) in enumerate(compared.items()):
                means = [_number(summary.mean(f"{direction}.{k}")) for k in ks]
                stds = [_number(summary.std(f"{direction}.{k}")) for k in ks]
                ax.bar(np.arange(len(ks)) + i * width, means, width, yerr=stds, capsize=3, label=model,
                       color=colours[model])
            ax.set_xticks(np.arange(len(ks)) + width * (len(compared) - 1) / 2, ["R@1", "R@5", "R@10"])
            ax.set_title("text-to-video" if direction == "t2v" else "video-to-text")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("recall (%)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def qualitative(self, model: str, n_queries: int, thumbnails: int, top: int = 5, seed: int | None = None):
        """Queries with their top retrieved videos as frame strips; the true video framed green, others grey."""
        seed = self.seeds[0] if seed is None else seed
        path = self.layout.rankings(self.dataset, model, seed)
        if not path.exists() or n_queries == 0:
            return None
        rankings = pd.read_parquet(path)
        rng = np.random.default_rng(0)
        picks = rankings.iloc[np.sort(rng.choice(len(rankings), size=min(n_queries, len(rankings)), replace=False))]
        queries = [(q.text, q.rank, q.video_id, list(q.top_videos), list(q.top_scores)) for q in picks.itertuples()]
        return retrieval_strips(self.layout.frames(self.dataset, "test"), queries, thumbnails, top)


def provenance_row(record: dict | None, prefix: str) -> dict:
    if not record:
        return {f"{prefix}: code": "not recorded"}
    code, runtime = record["code"], record["runtime"]
    commit = (code["git_commit"] or "no git")[:10] + (" (dirty)" if code.get("git_dirty") else "")
    return {f"{prefix}: commit": commit, f"{prefix}: step code": code["step_code_sha256"][:10],
            f"{prefix}: params": record["params"]["sha256"][:10],
            f"{prefix}: device / threads": f"{runtime.get('device', '—')} / {runtime.get('threads', '—')}",
            f"{prefix}: torch": record["environment"]["libraries"].get("torch"),
            f"{prefix}: wall time (s)": runtime["wall_time_s"]}


def retrieval_strips(frames_dir: Path, queries, thumbnails: int, top: int = 5):
    """A figure: per query (text, rank of the true video, true id, top ids, top scores), its top videos as frame
    strips; the true video framed green."""
    import matplotlib.pyplot as plt

    from hcmi.data.frames import FrameCache

    cache = FrameCache(frames_dir)
    fig, axes = plt.subplots(len(queries), top, figsize=(2.8 * top, 0.3 + 1.15 * len(queries)), squeeze=False)
    for row, (text, rank, true_id, top_ids, top_scores) in enumerate(queries):
        for col in range(top):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(top_ids):
                ax.axis("off")
                continue
            ax.imshow(_strip(cache, top_ids[col], thumbnails), interpolation="nearest")
            hit = top_ids[col] == true_id
            for spine in ax.spines.values():
                spine.set_edgecolor("#1a9850" if hit else "#bbbbbb")
                spine.set_linewidth(4 if hit else 1)
            ax.set_xlabel(f"#{col + 1} {top_ids[col]} ({top_scores[col]:.2f})", fontsize=7)
        title = f"“{text}”" + (f" (true video ranked {rank})" if rank is not None else "")
        axes[row][0].set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def show(fig) -> None:
    """Display a figure where the call stands in the notebook (not at the end of the cell), then free it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if fig is not None:
        display(fig)
        plt.close(fig)


def _strip(cache, video_id: str, count: int) -> np.ndarray:
    frames, n_valid = cache.frames(video_id)
    picks = np.linspace(0, max(0, n_valid - 1), num=min(count, max(1, n_valid))).round().astype(int)
    return np.concatenate([np.asarray(frames[i]) for i in picks], axis=1)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _colours(models) -> dict[str, str]:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {model: cycle[i % len(cycle)] for i, model in enumerate(models)}


# -- the index over every dataset -----------------------------------------------------------------------------------


def index_table(data_root: str | Path = "data", params_files=None, declared=None) -> pd.DataFrame:
    """Every dataset x model: our t2v R@1 without and with DSL (mean ± std over seeds) beside the published figure,
    its protocol and its source."""
    params = _params(params_files, declared, "index_report")
    layout = Layout(Path(data_root))
    rows = []
    zero_shot = params.get("zero_shot")
    for dataset in params.get("datasets"):
        for model in params.get("models") + zero_shot:
            path = layout.metrics(dataset, model)
            summary = Summary.load(path) if path.exists() else None
            backbone = params.backbone_dict(model)["name"]
            figure = published(dataset, ZERO_SHOT if model in zero_shot else params.variant(model).head, backbone)
            rows.append({
                "dataset": dataset, "model": model, "backbone": backbone,
                "t2v R@1 (ours)": summary.text("t2v.R1") if summary else "missing",
                "with DSL (ours)": summary.text("t2v_dsl.R1") if summary and summary.mean("t2v_dsl.R1") is not None
                else "missing",
                "published": f"{figure.r1:.1f} ({figure.protocol})" if figure else "—",
                "source": figure.source if figure else "",
            })
    return pd.DataFrame(rows)


# the per-query outcomes a paired comparison looks at: (name, column of query_outcomes)
MEASURES = (("t2v R@1", "R1"), ("hard pairs: order", "order"), ("hard pairs: binding", "binding"))


def test_split_text(counts: dict) -> str:
    """What the test split held and what a query was ranked among (its gallery), with chance R@1 (markdown)."""
    videos, captions = counts.get("videos", "?"), counts.get("captions", "?")
    text = (f"Evaluated on the **test** split: {videos} videos, {captions} query captions "
            f"({counts.get('skipped_videos', 0)} videos unreadable and left out). ")
    sizes = counts.get("gallery_videos") or [videos]
    if len(sizes) > 1:
        text += (f"Ranked in {len(sizes)} galleries of {' / '.join(map(str, sizes))} videos: each query among its own "
                 "gallery's videos, so R@K has the scale of one gallery, measured over every query. ")
    known = [n for n in sizes if isinstance(n, int) and n > 0]
    if known:
        text += f"Chance text-to-video R@1: {100 * len(known) / sum(known):.2f}%."
    return text


def query_outcomes(layout: Layout, dataset: str, model: str, seed: int) -> pd.DataFrame | None:
    """Per test query (by caption id) of one run: its cluster (the queries that stand or fall together: a twin pair,
    else a video's captions), 100 for its video at rank 1 (else 0), and the hard-distractor outcome (100 / 50 / 0) of
    order and binding twins (NaN where the query has no twin of that kind)."""
    path = layout.rankings(dataset, model, seed)
    if not path.exists():
        return None
    table = pd.read_parquet(path)
    clusters = table["cluster"] if "cluster" in table else table["video_id"]  # results written before clusters were
    out = pd.DataFrame({"cluster": clusters.to_numpy(), "R1": 100.0 * (table["rank"].to_numpy() == 1)},
                       index=table["caption_id"].to_numpy())
    if "twin_outcome" in table:
        for kind in ("order", "binding"):
            out[kind] = table["twin_outcome"].where(table["twin_kind"] == kind).to_numpy(dtype=float)
    return out


def _paired_runs(params, first: str, second: str) -> list[tuple[int, int]]:
    """(seed of first, seed of second) pairs: the same seed where both were trained with it; a variant evaluated
    without training (one snapshot, seed 0) pairs with every seed of the other."""
    mine, theirs = params.seeds_for(first), params.seeds_for(second)
    if second in params.get("zero_shot"):
        return [(seed, theirs[0]) for seed in mine]
    return [(seed, seed) for seed in mine if seed in theirs]


def comparison_pairs(params) -> list[tuple[str, str, str]]:
    """(first, second, what the difference measures): the full method against each other compared model and each
    variant evaluated without training, and against each ablation (the gain of the component it removes)."""
    if REFERENCE_MODEL not in params.get("models"):
        return []
    pairs = [(REFERENCE_MODEL, m, f"{REFERENCE_MODEL} vs {m}") for m in params.get("models") + params.get("zero_shot")
             if m != REFERENCE_MODEL]
    pairs += [(REFERENCE_MODEL, m, f"{REFERENCE_MODEL} vs {m} (the removed component)") for m in params.get("ablations")]
    return pairs


def comparison_rows(data_root: str | Path, params_files=None, declared=None) -> pd.DataFrame:
    """Every paired comparison (hcmi/report/paired.py) on every dataset and measure: the difference first - second over
    the same seeds and test queries, its 95 % interval, the smallest effect these seeds and queries can detect, and
    the verdict."""
    params = _params(params_files, declared, "index_report")
    return paired_comparisons(params, Layout(Path(data_root)), params.get("datasets"))


def paired_comparisons(params, layout: Layout, datasets: list[str]) -> pd.DataFrame:
    """The comparisons of each dataset form one family: their verdicts hold jointly (hcmi/report/paired.py)."""
    rows = []
    margin = params.get("report.equivalence_margin")
    for dataset in datasets:
        paired_outcomes = list(_paired_outcomes(params, layout, dataset))
        for label, first, second, name, a, b, clusters in paired_outcomes:
            result = paired.paired_difference(a, b, family=len(paired_outcomes), clusters=clusters)
            verdict = paired.verdict(result, margin)
            rows.append({"dataset": dataset, "comparison": label, "first": first, "second": second,
                         "measure": name, "seeds": result["seeds"], "queries": result["queries"],
                         "clusters": result["clusters"], "difference": result["difference"], "low": result["low"],
                         "high": result["high"], "family_low": result["family_low"],
                         "family_high": result["family_high"], "family": result["family"], "df": result["df"],
                         "detectable": result["detectable"], "verdict": verdict, "margin": margin,
                         "seeds_needed": paired.seeds_to_determine(result, margin) if verdict == "undetermined"
                         else None,
                         "per seed": ", ".join(f"{d:+.1f}" for d in result["per_seed"])})
    return pd.DataFrame(rows)


def _paired_outcomes(params, layout: Layout, dataset: str):
    """(label, first, second, measure, first's outcomes, second's outcomes, clusters) of every comparison that has
    results: the [seeds, queries] arrays of both models, paired by seed and query, and each query's cluster."""
    for first, second, label in comparison_pairs(params):
        runs = [(query_outcomes(layout, dataset, first, a), query_outcomes(layout, dataset, second, b))
                for a, b in _paired_runs(params, first, second)]
        runs = [(x, y) for x, y in runs if x is not None and y is not None]
        if not runs:
            continue
        queries = runs[0][0].index
        for name, column in MEASURES:
            if not all(column in x and column in y for x, y in runs):
                continue
            a = np.stack([x.loc[queries, column].to_numpy() for x, _ in runs])
            b = np.stack([y.loc[queries, column].to_numpy() for _, y in runs])
            if not (np.isfinite(a) & np.isfinite(b)).all(axis=0).any():
                continue  # no query with this outcome in both (results written before it was recorded)
            yield label, first, second, name, a, b, runs[0][0].loc[queries, "cluster"].to_numpy()


def comparison_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The comparisons for display: difference [95 % interval], verdict [family interval], smallest detectable
    effect."""
    if not len(rows):
        return rows
    return pd.DataFrame({
        "dataset": rows["dataset"], "comparison": rows["comparison"], "measure": rows["measure"],
        "difference [95% interval]": [f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
                                      for d, lo, hi in zip(rows["difference"], rows["low"], rows["high"])],
        "verdict [all at once]": [verdict_text(r) for r in rows.to_dict("records")],
        "detectable": [f"±{v:.1f}" for v in rows["detectable"]],
        "df": [_degrees(v) for v in rows["df"]],
        "seeds x queries (clusters)": [f"{s} x {q} ({c})" for s, q, c in
                                       zip(rows["seeds"], rows["queries"], rows["clusters"])],
        "per seed": rows["per seed"]}).set_index(["dataset", "comparison", "measure"])


def verdict_legend(comparisons: pd.DataFrame) -> str:
    """How a verdict is read, with the margin in force (reports and results.md say it alike)."""
    return (f"*helps* (green) or *hurts* (red) when the family interval excludes 0; *equivalent* (blue) when it lies "
            f"inside ±{_margin(comparisons):g} points, the equivalence margin (`report.equivalence_margin`): a "
            "precise zero; *undetermined* (grey) when it covers 0 and reaches past the margin: no information either "
            "way, with the seeds that would determine it at the measured seed and query variances")


def verdict_text(row: dict) -> str:
    """'equivalent [-1.2, +1.0]', or for an undetermined comparison also the seeds that would determine it."""
    text = f"{row['verdict']} [{row['family_low']:+.1f}, {row['family_high']:+.1f}]"
    if row["verdict"] == "undetermined":
        needed = row.get("seeds_needed")
        text += (f"; {needed:.0f} seeds would determine it" if needed is not None and np.isfinite(needed)
                 else f"; more than {paired.MAX_SEEDS} seeds (its queries alone)")
    return text


def _degrees(df: float) -> str:
    """Degrees of freedom for display: one decimal below 10, whole above, ∞ for a normal interval."""
    return "∞" if not np.isfinite(df) else f"{df:.1f}" if df < 10 else f"{df:.0f}"


def comparison_figure(rows: pd.DataFrame):
    """Each comparison as a point with its 95 % interval (thick) and its family interval (thin, the verdict's)
    against zero: what helps, at one glance."""
    if not len(rows):
        return None
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    measures = list(dict.fromkeys(rows["measure"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 1.3 + 0.42 * len(rows) / len(measures)),
                             sharey=True, squeeze=False)
    labels = list(dict.fromkeys(f"{d}: {c}" for d, c in zip(rows["dataset"], rows["comparison"])))
    colours = VERDICT_COLOURS
    for ax, measure in zip(axes[0], measures):
        for row in rows[rows["measure"] == measure].to_dict("records"):
            y = labels.index(f"{row['dataset']}: {row['comparison']}")
            colour = colours[row["verdict"]]
            ax.plot([row["family_low"], row["family_high"]], [y, y], color=colour, linewidth=1)
            ax.errorbar(row["difference"], y, xerr=[[row["difference"] - row["low"]], [row["high"] - row["difference"]]],
                        fmt="o", color=colour, elinewidth=3, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(measure)
        ax.set_xlabel("difference (points)")
        # a few ticks: a wide family interval must not crowd its labels into the next panel's
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    fig.suptitle("dot: difference; thick bar: 95 % interval; thin line: all comparisons at once (the verdict's)",
                 fontsize="medium")
    fig.tight_layout(w_pad=2.0)
    return fig


DENOISING = (("latent positives per item", "latent_positives"), ("precision (%)", "latent_precision"),
             ("recall (%)", "latent_recall"))


def denoising_rows(curves: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The latent positives of each model whose training log has them (curves: model -> curves.csv table)."""
    rows = []
    for model, table in curves.items():
        train = table[table["log"] == "train"] if "log" in table else table
        if "latent_precision" not in train or not train["latent_positives"].fillna(0).gt(0).any():
            continue
        per_seed = train.groupby("seed")[[key for _, key in DENOISING]].mean()
        row = {"model": model, "seeds": len(per_seed)}
        for label, key in DENOISING:
            scale = 1 if key == "latent_positives" else 100
            values = per_seed[key].dropna() * scale
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            digits = 2 if key == "latent_positives" else 1
            row[label] = (f"{values.mean():.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
                          if len(values) else "—")
        rows.append(row)
    return pd.DataFrame(rows).set_index("model") if rows else None


def results_markdown(data_root: str | Path, params_files=None, declared=None) -> str:
    """The results as Markdown tables (what the README's results section is made of), with the code version of the
    runs that produced them."""
    params = _params(params_files, declared, "index_report")
    layout = Layout(Path(data_root))
    lines, commits = [], set()
    columns = [("t2v R@1", "t2v.R1"), ("t2v R@5", "t2v.R5"), ("MdR", "t2v.MdR"), ("v2t R@1", "v2t.R1"),
               ("t2v R@1 with DSL", "t2v_dsl.R1"), ("hard pairs: order", "hard_distractors.order"),
               ("hard pairs: binding", "hard_distractors.binding")]
    for dataset in params.get("datasets"):
        lines += [f"### {dataset}", "", "| model | seeds | " + " | ".join(c for c, _ in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for model in params.evaluated_models:
            path = layout.metrics(dataset, model)
            if not path.exists():
                continue
            summary = Summary.load(path)
            commits.update(_commits(summary))
            cells = [summary.text(key) if summary.mean(key) is not None else "—" for _, key in columns]
            lines.append(f"| {model} | {len(summary.seeds)} | " + " | ".join(cells) + " |")
        lines.append("")
        curves = {model: pd.read_csv(layout.curves(dataset, model)) for model in params.all_models
                  if layout.curves(dataset, model).exists() and layout.curves(dataset, model).stat().st_size > 1}
        denoising = denoising_rows(curves)
        if denoising is not None:
            lines += ["Label denoising: latent positives against the known duplicates (mean over training, "
                      "over seeds)", "", "| model | seeds | " + " | ".join(label for label, _ in DENOISING) + " |",
                      "|---|---|" + "---|" * len(DENOISING)]
            lines += [f"| {model} | {row['seeds']} | " + " | ".join(row[label] for label, _ in DENOISING) + " |"
                      for model, row in denoising.iterrows()]
            lines.append("")
    comparisons = comparison_rows(data_root, params_files, declared)
    if len(comparisons):
        lines += ["### Paired comparisons: what helps?", "",
                  "The full method minus each other model, on the same test queries and seeds; 95 % t interval from "
                  "the seeds' and the queries' variance (every seed scores the same queries; the queries of a twin "
                  "pair or of one video count as one cluster). The verdict follows from the family interval, which holds "
                  "for all of a dataset's comparisons at once with 95 % (Bonferroni), so that a rerun does not turn "
                  "a comparison of no effect into a finding by chance: " + verdict_legend(comparisons) + ". "
                  "*detectable*: the smallest effect it can detect; *df*: the degrees of freedom of its t (few where "
                  "the seeds disagree more than the queries do: the family interval is then wide, and more seeds "
                  "narrow it).", "",
                  "| dataset | comparison | measure | difference [95% interval] | verdict [all at once] | detectable "
                  "| df | per seed |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['comparison']} | {r['measure']} | {r['difference']:+.1f} "
                  f"[{r['low']:+.1f}, {r['high']:+.1f}] | {verdict_text(r)} "
                  f"| ±{r['detectable']:.1f} | {_degrees(r['df'])} | {r['per seed']} |"
                  for r in comparisons.to_dict("records")]
        lines.append("")
    origin = ", ".join(sorted(commits)) or "not recorded"
    return "\n".join([f"Produced by the pipeline from commit(s) {origin}.", ""] + lines)


def _margin(comparisons: pd.DataFrame) -> float:
    return float(comparisons["margin"].iloc[0])


def _commits(summary: Summary) -> set[str]:
    found = set()
    for made in summary.seed_provenance().values():
        code = (made.get("model_provenance") or {}).get("code") or {}
        if code.get("git_commit"):
            found.add(code["git_commit"][:10] + ("+dirty" if code.get("git_dirty") else ""))
    return found
