"""Where every artifact lives under the data root: the one place that spells a path (hcmi/pipeline.py declares the
steps with these paths, so the Snakefile and dvc.yaml use them too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path("data")

    # downloads (or the generated synthetic benchmark) and parsed annotations
    def raw(self, dataset: str) -> Path:
        return self.root / "raw" / dataset

    def videos(self, dataset: str) -> Path:
        return self.raw(dataset) / "videos"

    def source(self, dataset: str) -> Path:
        return self.raw(dataset) / "source"

    def manifest(self, dataset: str) -> Path:
        return self.raw(dataset) / "manifest.json"

    def annotations(self, dataset: str) -> Path:
        return self.raw(dataset) / "annotations.parquet"

    # pretrained backbone weights
    def weights(self) -> Path:
        return self.root / "weights"

    def weights_manifest(self) -> Path:
        return self.weights() / "backbone.json"

    def weights_store(self) -> Path:
        """Fetched open_clip weights, as plain state dicts."""
        return self.weights() / "files"

    # frame cache
    def frames(self, dataset: str, split: str) -> Path:
        return self.root / "frames" / dataset / split

    def frame_index(self, dataset: str, split: str) -> Path:
        return self.frames(dataset, split) / "index.parquet"

    def frame_skipped(self, dataset: str, split: str) -> Path:
        return self.frames(dataset, split) / "skipped.csv"

    def frame_shards(self, dataset: str, split: str) -> Path:
        return self.frames(dataset, split) / "shards"

    # training
    def run(self, dataset: str, model: str, seed: int) -> Path:
        return self.root / "checkpoints" / dataset / model / "seeds" / str(seed)

    def model_file(self, dataset: str, model: str, seed: int) -> Path:
        return self.run(dataset, model, seed) / "model.pt"

    def train_log(self, dataset: str, model: str, seed: int) -> Path:
        return self.run(dataset, model, seed) / "train_log.csv"

    def val_log(self, dataset: str, model: str, seed: int) -> Path:
        return self.run(dataset, model, seed) / "val_log.csv"

    def train_state(self, dataset: str, model: str, seed: int) -> Path:
        """Working state (last.pt, best.pt): kept across interrupted runs, so training resumes."""
        return self.run(dataset, model, seed) / "state"

    # evaluation
    def results(self, dataset: str, model: str) -> Path:
        return self.root / "results" / dataset / model

    def seed_results(self, dataset: str, model: str, seed: int) -> Path:
        return self.results(dataset, model) / "seeds" / str(seed)

    def seed_metrics(self, dataset: str, model: str, seed: int) -> Path:
        """Every number of one evaluation (what the reports show and `hcmi verify` compares)."""
        return self.seed_results(dataset, model, seed) / "metrics.json"

    def seed_provenance(self, dataset: str, model: str, seed: int) -> Path:
        """What made that evaluation and the model it evaluated: code, parameters, data, environment."""
        return self.seed_results(dataset, model, seed) / "provenance.json"

    def seed_scores(self, dataset: str, model: str, seed: int) -> Path:
        """The numbers a person compares across commits (`dvc metrics show` / `diff`)."""
        return self.seed_results(dataset, model, seed) / "scores.json"

    def rankings(self, dataset: str, model: str, seed: int) -> Path:
        return self.seed_results(dataset, model, seed) / "rankings.parquet"

    def metrics(self, dataset: str, model: str) -> Path:
        """Mean and spread over seeds of every number, and every seed's numbers."""
        return self.results(dataset, model) / "metrics.json"

    def provenance(self, dataset: str, model: str) -> Path:
        """What made the summary, and every seed's provenance."""
        return self.results(dataset, model) / "provenance.json"

    def scores(self, dataset: str, model: str) -> Path:
        """The seeds' mean of the numbers of `seed_scores`."""
        return self.results(dataset, model) / "scores.json"

    def spread(self, dataset: str, model: str) -> Path:
        """Their standard deviation over seeds (the same keys, so `dvc metrics show` lines them up)."""
        return self.results(dataset, model) / "spread.json"

    def curves(self, dataset: str, model: str) -> Path:
        """Every seed's training and validation curves, collected for the reports."""
        return self.results(dataset, model) / "curves.csv"

    # search
    def search_index(self, dataset: str, model: str, seed: int) -> Path:
        """A dataset split made searchable with a trained run (`hcmi index`)."""
        return self.root / "index" / dataset / model / "seeds" / str(seed)

    # reports
    def report(self, dataset: str) -> Path:
        return self.root / "reports" / f"{dataset}.html"

    def report_notebook(self, dataset: str) -> Path:
        return self.report(dataset).with_suffix(".ipynb")

    def index_report(self) -> Path:
        return self.root / "reports" / "index.html"

    def index_notebook(self) -> Path:
        return self.index_report().with_suffix(".ipynb")

    def results_summary(self) -> Path:
        """The results tables as Markdown (what the README's results section is made from)."""
        return self.root / "reports" / "results.md"

    def mechanisms_report(self) -> Path:
        """The mechanism checks (`snakemake mechanisms`): each component's effect against its condition."""
        return self.root / "reports" / "mechanisms.html"

    def mechanisms_notebook(self) -> Path:
        return self.mechanisms_report().with_suffix(".ipynb")

    def mechanisms_summary(self) -> Path:
        """The mechanism checks' tables as Markdown (the README's section on them is made from it)."""
        return self.root / "reports" / "mechanisms.md"
