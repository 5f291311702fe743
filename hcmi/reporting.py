"""Tables and figures for the report notebooks. Reads result files only (metrics.json, logs, rankings, frame cache);
never imports training code, so a report renders from results pulled with `dvc pull` alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hcmi.config import load
from hcmi.files import read_json
from hcmi.paths import Layout
from hcmi.published import published

RECALL_COLUMNS = ["R1", "R5", "R10", "MdR", "MnR"]


def _fmt(mean: float, std: float | None, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "missing"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 and std is not None else f"{mean:.1f}"


class DatasetResults:
    """Everything the report of one dataset shows, loaded from the result files of the configured runs."""

    def __init__(self, dataset: str, data_root: str | Path = "data", params_files=None):
        self.params = load(params_files)
        self.layout = Layout(Path(data_root))
        self.dataset = dataset
        self.models = list(self.params.models)
        self.ablations = list(self.params.ablations)
        self.seeds = list(self.params.seeds)
        self.summaries = {}
        for model in self.models + self.ablations:
            path = self.layout.metrics(dataset, model)
            if path.exists():
                self.summaries[model] = read_json(path)

    # -- tables ----------------------------------------------------------------------------------------------

    def metrics_table(self, direction: str = "t2v") -> pd.DataFrame:
        rows = []
        for model in self.models:
            summary = self.summaries.get(model)
            row = {"model": model}
            for column in RECALL_COLUMNS:
                if summary and direction in summary["mean"]:
                    row[column] = _fmt(summary["mean"][direction][column], summary["std"][direction][column],
                                       len(summary["seeds"]))
                else:
                    row[column] = "missing"
            rows.append(row)
        return pd.DataFrame(rows).set_index("model")

    def hard_distractor_table(self) -> pd.DataFrame | None:
        rows = []
        for model in self.models:
            summary = self.summaries.get(model)
            hard = summary["mean"].get("hard_distractors") if summary else None
            if not hard:
                continue
            std = summary["std"].get("hard_distractors", {})
            n = len(summary["seeds"])
            row = {"model": model, "all pairs": _fmt(hard["accuracy"], std.get("accuracy"), n)}
            for kind in ("order", "binding"):
                if kind in hard:
                    row[kind] = _fmt(hard[kind], std.get(kind), n)
            rows.append(row)
        return pd.DataFrame(rows).set_index("model") if rows else None

    def ablation_table(self) -> pd.DataFrame | None:
        """HCMI and its ablation variants: R@1 (plain and DSL), hard-distractor accuracy per kind, R@1 per level."""
        if not self.ablations:
            return None
        rows = []
        reference = [m for m in self.models if m == "hcmi"]
        for model in reference + self.ablations:
            summary = self.summaries.get(model)
            if summary is None:
                rows.append({"model": model, "t2v R@1": "missing"})
                continue
            mean, std, n = summary["mean"], summary["std"], len(summary["seeds"])
            row = {"model": model, "seeds": n,
                   "t2v R@1": _fmt(mean["t2v"]["R1"], std["t2v"]["R1"], n),
                   "t2v R@1 (DSL)": _fmt(mean["t2v_dsl"]["R1"], std["t2v_dsl"]["R1"], n) if "t2v_dsl" in mean else "",
                   }
            hard = mean.get("hard_distractors", {})
            for kind in ("accuracy", "order", "binding"):
                if kind in hard:
                    label = "hard pairs: all" if kind == "accuracy" else f"hard pairs: {kind}"
                    row[label] = _fmt(hard[kind], std["hard_distractors"].get(kind), n)
            for level, values in mean.get("levels", {}).items():
                row[f"R@1 {level.replace('_', '-')} only"] = _fmt(values["t2v"]["R1"],
                                                                  std["levels"][level]["t2v"]["R1"], n)
            rows.append(row)
        return pd.DataFrame(rows).set_index("model").fillna("—")

    def backbones(self) -> str:
        """The backbone(s) of the compared models, for the report's header."""
        names = {model: self.params.backbone_for(model) for model in self.models}
        described = {f"`{b.name}` ({b.pretrained or 'trained from scratch'})" for b in names.values()}
        if len(described) == 1:
            return described.pop()
        return ", ".join(f"{model}: `{b.name}` ({b.pretrained or 'from scratch'})" for model, b in names.items())

    def published_table(self) -> pd.DataFrame:
        """Our t2v R@1 beside the published figure for the same method (and backbone, where the source says)."""
        rows = []
        for model in self.models:
            summary = self.summaries.get(model)
            backbone = self.params.backbone_for(model).name
            pub = published(self.dataset, self.params.variant(model).head, backbone)
            rows.append({
                "model": model,
                "backbone": backbone,
                "t2v R@1 (ours)": (_fmt(summary["mean"]["t2v"]["R1"], summary["std"]["t2v"]["R1"],
                                        len(summary["seeds"])) if summary else "missing"),
                "t2v R@1 (published)": f"{pub[0]:.1f}" if pub else "missing",
                "published backbone": pub[1] if pub else "",
                "source": pub[2] if pub else "",
            })
        return pd.DataFrame(rows).set_index("model")

    def counts(self) -> dict:
        for summary in self.summaries.values():
            first = next(iter(summary["per_seed"].values()))
            return first["counts"]
        return {}

    # -- figures ---------------------------------------------------------------------------------------------

    def _logs(self, name: str) -> dict[tuple[str, int], pd.DataFrame]:
        out = {}
        for model in self.models:
            for seed in self.seeds:
                path = self.layout.run(self.dataset, model, seed) / name
                if path.exists() and path.stat().st_size > 1:
                    out[(model, seed)] = pd.read_csv(path)
        return out

    def training_curves(self):
        import matplotlib.pyplot as plt

        train, val = self._logs("train_log.csv"), self._logs("val_log.csv")
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        colours = _colours(self.models)
        for (model, seed), frame in train.items():
            if "loss" in frame:
                axes[0].plot(frame["step"], frame["loss"], color=colours[model], alpha=0.8,
                             label=model if seed == self.seeds[0] else None)
        for (model, seed), frame in val.items():
            if len(frame):
                axes[1].plot(frame["step"], frame["R1"], "o-", color=colours[model], alpha=0.8,
                             label=model if seed == self.seeds[0] else None)
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
        compared = {m: self.summaries[m] for m in self.models if m in self.summaries}
        width = 0.8 / max(1, len(compared))
        colours = _colours(self.models)
        for ax, direction in zip(axes, ("t2v", "v2t")):
            for i, (model, summary) in enumerate(compared.items()):
                means = [summary["mean"][direction][k] for k in ks]
                stds = [summary["std"][direction][k] for k in ks]
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
        import matplotlib.pyplot as plt

        from hcmi.data.frames import FrameCache

        seed = self.seeds[0] if seed is None else seed
        path = self.layout.rankings(self.dataset, model, seed)
        if not path.exists() or n_queries == 0:
            return None
        rankings = pd.read_parquet(path)
        rng = np.random.default_rng(0)
        picks = rankings.iloc[np.sort(rng.choice(len(rankings), size=min(n_queries, len(rankings)), replace=False))]
        cache = FrameCache(self.layout.frames(self.dataset, "test"))
        fig, axes = plt.subplots(len(picks), top, figsize=(2.8 * top, 0.3 + 1.15 * len(picks)), squeeze=False)
        for row, query in enumerate(picks.itertuples()):
            for col in range(top):
                ax = axes[row][col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(query.top_videos):
                    ax.axis("off")
                    continue
                video_id = query.top_videos[col]
                ax.imshow(_strip(cache, video_id, thumbnails), interpolation="nearest")
                hit = video_id == query.video_id
                for spine in ax.spines.values():
                    spine.set_edgecolor("#1a9850" if hit else "#bbbbbb")
                    spine.set_linewidth(4 if hit else 1)
                ax.set_xlabel(f"#{col + 1} {video_id} ({query.top_scores[col]:.2f})", fontsize=7)
            axes[row][0].set_title(f"“{query.text}” (true video ranked {query.rank})", fontsize=9, loc="left")
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


def _colours(models) -> dict[str, str]:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {model: cycle[i % len(cycle)] for i, model in enumerate(models)}


def index_table(data_root: str | Path = "data", params_files=None) -> pd.DataFrame:
    """Every dataset x model: our t2v R@1 (mean ± std over seeds) beside the published figure and its source."""
    params = load(params_files)
    layout = Layout(Path(data_root))
    rows = []
    for dataset in params.datasets:
        for model in params.models:
            path = layout.metrics(dataset, model)
            ours = ours_dsl = "missing"
            if path.exists():
                summary = read_json(path)
                n = len(summary["seeds"])
                ours = _fmt(summary["mean"]["t2v"]["R1"], summary["std"]["t2v"]["R1"], n)
                if "t2v_dsl" in summary["mean"]:
                    ours_dsl = _fmt(summary["mean"]["t2v_dsl"]["R1"], summary["std"]["t2v_dsl"]["R1"], n)
            backbone = params.backbone_for(model).name
            pub = published(dataset, params.variant(model).head, backbone)
            rows.append({
                "dataset": dataset,
                "model": model,
                "backbone": backbone,
                "t2v R@1 (ours)": ours,
                "with DSL (ours)": ours_dsl,
                "t2v R@1 (published)": f"{pub[0]:.1f}" if pub else "missing",
                "published backbone": pub[1] if pub else "",
                "source": pub[2] if pub else "",
            })
    return pd.DataFrame(rows)
