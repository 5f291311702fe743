"""The pipeline's steps, each declared once: command, inputs, outputs, the parameters it reads and its code.

Both workflows follow from this table: workflow/rules/steps.smk turns every step into a Snakemake rule, and
`hcmi dvc-yaml` writes dvc.yaml from it (a test fails when the committed dvc.yaml differs). The command line restricts
each step to the parameters declared here, so reading any other parameter is an error, not a silent dependency.

A step's code is the import closure of its module inside the package (hcmi/codebase.py: the modules it imports,
transitively, at any depth and from anywhere in a function, and the data folders beside them). Snakemake sees a
hash of those files among the rule's params (a code edit re-runs the rule: params are a rerun trigger), DVC sees the
files as dependencies: either way an edit re-runs exactly the steps whose code it touches, and what follows them.
The command line itself (hcmi/cli.py) only parses arguments and is no step's code.

Path templates use {dataset}, {split}, {model} and {seed}; a starred wildcard ({model*}, {seed*}) stands for every
configured value (Snakemake expands it; DVC depends on the folder above it). A step with {model} runs over model
groups: `models` (with `seeds`), `ablations` (with `ablation_seeds`) and `zero_shot` (variants evaluated without
training, seed 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hcmi import codebase
from hcmi.paths import Layout

SPLITS = ("train", "val", "test")  # every dataset is sampled into these caches (a split it lacks becomes empty)
TRAINED = ("models", "ablations")  # the model groups that are trained
EVALUATED = TRAINED + ("zero_shot",)  # and every group that is evaluated

_L = Layout(Path("data"))
D, M, S = "{dataset}", "{model}", "{seed}"


@dataclass(frozen=True)
class Step:
    name: str  # the Snakemake rule and DVC stage
    command: str  # a template over the step's wildcards
    module: str  # the step's module: its import closure is the step's code
    inputs: tuple[str, ...] = ()
    state_inputs: tuple[str, ...] = ()  # resumable working state read (DVC dependencies; Snakemake never declares it)
    outputs: tuple[str, ...] = ()
    state_outputs: tuple[str, ...] = ()  # resumable working state written (DVC persist outputs)
    metrics: tuple[str, ...] = ()  # outputs DVC shows as metrics (JSON)
    plots: tuple[tuple[str, str, str], ...] = ()  # (output, x column, y column) DVC shows as plots
    params: tuple[str, ...] = ()  # dotted keys, with wildcards
    threads: str | None = None  # the params key of its CPU threads (a scheduling request; a step whose results
    # depend on its thread count also declares that key among its params and applies it itself)
    resources: tuple[tuple[str, str], ...] = ()  # (Snakemake resource, params key)
    local: bool = False  # runs on the machine that starts the workflow (needs network or user files)
    groups: tuple[str, ...] = TRAINED  # the model groups a step with {model} runs over
    # Snakemake watches this value derived from the declared parameters (a function of workflow/rules/common.smk)
    # instead of the parameters themselves, where a change of a declared key that leaves it unchanged must re-run
    # nothing: Snakemake re-runs everything after a step that runs, DVC compares that step's outputs by content
    watches: str | None = None

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(re.findall(r"\{(\w+)\}", self.command)))

    @property
    def log(self) -> str:
        parts = "-".join("{%s}" % w for w in self.wildcards)
        return f"logs/{self.name}/{parts or self.name}.log"

    def declared_params(self, **values) -> list[str]:
        """The dotted parameter keys of one job (wildcards filled in)."""
        return [key.format(**values) for key in self.params]


def _every_seed(name: str, model: str = M) -> str:
    return str(_L.seed_results(D, model, "{seed*}") / name)


STEPS: tuple[Step, ...] = (
    Step("download", f"hcmi download --dataset {D}", "hcmi.steps.download",
         outputs=(str(_L.manifest(D)),), state_outputs=(str(_L.source(D)), str(_L.videos(D))),
         params=(f"data.{D}.source",), threads="compute.sample_threads", local=True),
    Step("weights", "hcmi weights", "hcmi.steps.weights",
         outputs=(str(_L.weights_manifest()),), state_outputs=(str(_L.weights_store()),),
         params=("backbone", "variants", "models", "ablations", "zero_shot", "pretrain", "compute.train_threads",
                 "compute.numerics", "compute.device", "compute.deterministic"), watches="backbones_in_use",
         local=True),
    Step("parse", f"hcmi parse --dataset {D}", "hcmi.steps.parse",
         inputs=(str(_L.manifest(D)),), outputs=(str(_L.annotations(D)),)),
    Step("sample", f"hcmi sample --dataset {D} --split {{split}}", "hcmi.steps.sample",
         inputs=(str(_L.annotations(D)),), state_inputs=(str(_L.videos(D)),),
         outputs=(str(_L.frame_index(D, "{split}")), str(_L.frame_skipped(D, "{split}"))),
         state_outputs=(str(_L.frame_shards(D, "{split}")),),
         params=(f"data.{D}.max_frames", "frames"), threads="compute.sample_threads"),
    Step("train", f"hcmi train --dataset {D} --model {M} --seed {S}", "hcmi.steps.train",
         inputs=(str(_L.weights_manifest()), str(_L.annotations(D)), str(_L.frame_index(D, "train")),
                 str(_L.frame_index(D, "val"))),
         state_inputs=(str(_L.frame_shards(D, "train")), str(_L.frame_shards(D, "val"))),
         outputs=(str(_L.model_file(D, M, S)), str(_L.train_log(D, M, S)), str(_L.val_log(D, M, S))),
         state_outputs=(str(_L.train_state(D, M, S)),),
         plots=((str(_L.train_log(D, M, S)), "step", "loss"), (str(_L.val_log(D, M, S)), "step", "R1")),
         params=("train", "backbone", "model", f"variants.{M}", f"data.{D}.max_words", "eval.batch_size",
                 "eval.block_memory_mb", "compute.train_threads", "compute.numerics", "compute.device",
                 "compute.deterministic", "compute.train_gpus", "compute.gpu_memory_gb", f"data.{D}.max_frames", "frames.image_size"),
         threads="compute.train_threads",
         resources=(("gpu", "compute.train_gpus"), ("mem_mb", "compute.train_mem_mb"),
                    ("runtime", "compute.train_runtime_min"))),
    Step("snapshot", f"hcmi snapshot --dataset {D} --model {M}", "hcmi.steps.snapshot",
         inputs=(str(_L.weights_manifest()),),
         outputs=(str(_L.model_file(D, M, "0")), str(_L.train_log(D, M, "0")), str(_L.val_log(D, M, "0"))),
         params=("backbone", "model", f"variants.{M}", f"data.{D}.max_words", f"data.{D}.max_frames"),
         groups=("zero_shot",)),
    Step("evaluate", f"hcmi evaluate --dataset {D} --model {M} --seed {S}", "hcmi.steps.evaluate",
         inputs=(str(_L.model_file(D, M, S)), str(_L.annotations(D)), str(_L.frame_index(D, "test"))),
         state_inputs=(str(_L.frame_shards(D, "test")),),
         outputs=(str(_L.rankings(D, M, S)),), metrics=(str(_L.seed_metrics(D, M, S)),),
         params=("eval", "compute.train_threads", "compute.numerics", "compute.device", "compute.deterministic"),
         threads="compute.train_threads",
         resources=(("mem_mb", "compute.train_mem_mb"),), groups=EVALUATED),
    Step("index", f"hcmi index --dataset {D} --model {M} --seed {S}", "hcmi.steps.index",
         inputs=(str(_L.model_file(D, M, S)), str(_L.frame_index(D, "test")), str(_L.frame_skipped(D, "test"))),
         state_inputs=(str(_L.frame_shards(D, "test")),),
         outputs=(str(_L.search_index(D, M, S) / "index.json"), str(_L.search_index(D, M, S) / "skipped.csv")),
         state_outputs=(str(_L.search_index(D, M, S) / "store"),),
         params=("eval.batch_size", "frames.jpeg_quality", "frames.shard_size", "compute.train_threads",
                 "compute.numerics", "compute.device", "compute.deterministic", "search"),
         threads="compute.train_threads", groups=("models",)),
    Step("summarize", f"hcmi summarize --dataset {D} --model {M}", "hcmi.steps.summarize",
         inputs=(_every_seed("metrics.json"), str(_L.train_log(D, M, "{seed*}")), str(_L.val_log(D, M, "{seed*}"))),
         outputs=(str(_L.curves(D, M)),), metrics=(str(_L.metrics(D, M)),),
         params=("models", "seeds", "ablation_seeds", "zero_shot"), watches="model_seeds", groups=EVALUATED),
    Step("dataset_report", f"hcmi report --dataset {D}", "hcmi.steps.report",
         inputs=(str(_L.metrics(D, "{model*}")), str(_L.curves(D, "{model*}")),
                 _every_seed("rankings.parquet", "{model*}"),
                 str(_L.frame_index(D, "test"))),
         state_inputs=(str(_L.frame_shards(D, "test")),),
         outputs=(str(_L.report(D)), str(_L.report_notebook(D))),
         params=("models", "ablations", "zero_shot", "seeds", "ablation_seeds", "variants", "model", "backbone",
                 "eval.dsl", "eval.dsl_bank", "report")),
    Step("index_report", "hcmi report --index", "hcmi.steps.report",
         inputs=(str(_L.metrics("{dataset*}", "{model*}")),  # the summaries, the training curves (latent
                 str(_L.curves("{dataset*}", "{model*}")),  # positives) and every run's per-query outcomes
                 str(_L.seed_results("{dataset*}", "{model*}", "{seed*}") / "rankings.parquet")),
         outputs=(str(_L.index_report()), str(_L.index_notebook()), str(_L.results_summary())),
         params=("datasets", "models", "ablations", "zero_shot", "seeds", "ablation_seeds", "variants", "model",
                 "backbone")),
)

STEP = {step.name: step for step in STEPS}


def step_for_command(command: str, index: bool = False) -> Step | None:
    """The step that `hcmi <command>` runs (the report command serves two steps), or None for a tool command."""
    if command == "report":
        return STEP["index_report" if index else "dataset_report"]
    return STEP.get(command)


# -- a step's code ------------------------------------------------------------------------------------------------


def code_files(step: Step) -> list[str]:
    """The step's code as paths relative to the repository root (the package's parent)."""
    return codebase.code_files(step.module)


def code_hash(step: Step) -> str:
    return codebase.code_hash(step.module)
