"""The pipeline's steps, each declared once: command, named inputs and outputs, the parameters it reads and its code.

Both workflows are written from this table by `hcmi workflow-files`: workflow/rules/steps.smk (a Snakemake rule per
step, as text) and dvc.yaml (a stage per step and model group); a test fails when either committed file differs
from what the table gives. The command line restricts each step to the parameters declared here, so reading any
other parameter is an error, not a silent dependency.

A step's code is the import closure of its module inside the package (hcmi/codebase.py: the modules it imports,
transitively, at any depth and from anywhere in a function, and the data folders beside them), plus, for a step over
a model, the module of that model's head (hcmi/model/factory.py: HEADS). Snakemake sees a hash of those files among
the rule's params (a code edit re-runs the rule: params are a rerun trigger), DVC sees the files as dependencies:
either way an edit re-runs exactly the steps whose code it touches, and what follows them. The command line itself
(hcmi/cli.py) only parses arguments and is no step's code.

Path templates use {dataset}, {split}, {model} and {seed}. An input template with a wildcard that is not one of the
step's own (its command's) stands for every configured value of it: Snakemake expands it (each dataset; each model
with its seeds), DVC depends on the folder above it. A step with {model} runs over model groups: `models` (with
`seeds`), `ablations` (with `ablation_seeds`) and `zero_shot` (variants evaluated without training, seed 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hcmi import codebase
from hcmi.config import STILLS_TAG, Params
from hcmi.paths import Layout

SPLITS = ("train", "val", "test")  # every dataset is sampled into these caches (a split it lacks becomes empty)
TRAINED = ("models", "ablations")  # the model groups that are trained
EVALUATED = TRAINED + ("zero_shot",)  # and every group that is evaluated
CHECKS = "checks"  # the runs of the mechanism checks (hcmi/checks.py): trained, evaluated and summarized as the others

_L = Layout(Path("data"))
D, M, S, SPLIT = "{dataset}", "{model}", "{seed}", "{split}"


def _p(path: Path) -> str:
    return str(path)


@dataclass(frozen=True)
class Step:
    name: str  # the Snakemake rule and DVC stage
    command: str  # a template over the step's wildcards
    module: str  # the step's module: its import closure is the step's code
    inputs: dict[str, str] = field(default_factory=dict)  # name -> path template
    state_inputs: tuple[str, ...] = ()  # resumable working state read (DVC dependencies; Snakemake never declares it)
    outputs: dict[str, str] = field(default_factory=dict)  # name -> path template
    state_outputs: tuple[str, ...] = ()  # resumable working state written (DVC persist outputs)
    metrics: dict[str, str] = field(default_factory=dict)  # outputs DVC shows as metrics (JSON)
    plots: tuple[tuple[str, str, str], ...] = ()  # (output name, x column, y column) DVC shows as plots
    params: tuple[str, ...] = ()  # dotted keys, with wildcards
    threads: str | None = None  # the params key of its CPU threads (a scheduling request; a step whose results
    # depend on its thread count also declares that key among its params and applies it itself)
    resources: tuple[tuple[str, str], ...] = ()  # (Snakemake resource, params key)
    local: bool = False  # runs on the machine that starts the workflow (needs network or user files)
    groups: tuple[str, ...] = TRAINED  # the model groups a step with {model} runs over
    # Snakemake watches the value of this function (below) of the declared parameters instead of the parameters
    # themselves, where a change of a declared key that leaves it unchanged must re-run nothing: Snakemake re-runs
    # everything after a step that runs, DVC compares that step's outputs by content
    watches: str | None = None
    over: str = "configured"  # what an input over other wildcards expands to: every configured value, or (checks)
    # every run of the mechanism checks

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

    def expanded(self, template: str) -> tuple[str, ...]:
        """The wildcards of an input template that are not the step's own: it stands for each of their values."""
        return tuple(w for w in dict.fromkeys(re.findall(r"\{(\w+)\}", template)) if w not in self.wildcards)


COMPUTE = ("compute.train_threads", "compute.numerics", "compute.device", "compute.deterministic")
SEED_RUN = _L.seed_results(D, M, S)

STEPS: tuple[Step, ...] = (
    Step("download", f"hcmi download --dataset {D}", "hcmi.steps.download",
         outputs={"manifest": _p(_L.manifest(D))}, state_outputs=(_p(_L.source(D)), _p(_L.videos(D))),
         params=(f"data.{D}.source",), threads="compute.sample_threads", local=True),
    Step("weights", "hcmi weights", "hcmi.steps.weights",
         outputs={"backbones": _p(_L.weights_manifest())}, state_outputs=(_p(_L.weights_store()),),
         params=("backbone", "variants", "models", "ablations", "zero_shot", "pretrain") + COMPUTE,
         watches="backbones_in_use", local=True),
    Step("parse", f"hcmi parse --dataset {D}", "hcmi.steps.parse",
         inputs={"manifest": _p(_L.manifest(D))}, outputs={"annotations": _p(_L.annotations(D))}),
    Step("sample", f"hcmi sample --dataset {D} --split {SPLIT}", "hcmi.steps.sample",
         inputs={"annotations": _p(_L.annotations(D))}, state_inputs=(_p(_L.videos(D)),),
         outputs={"frames": _p(_L.frame_index(D, SPLIT)), "skipped": _p(_L.frame_skipped(D, SPLIT))},
         state_outputs=(_p(_L.frame_shards(D, SPLIT)),),
         params=(f"data.{D}.max_frames", "frames"), threads="compute.sample_threads"),
    Step("train", f"hcmi train --dataset {D} --model {M} --seed {S}", "hcmi.steps.train",
         inputs={"backbones": _p(_L.weights_manifest()), "annotations": _p(_L.annotations(D)),
                 "train_frames": _p(_L.frame_index(D, "train")), "val_frames": _p(_L.frame_index(D, "val"))},
         state_inputs=(_p(_L.frame_shards(D, "train")), _p(_L.frame_shards(D, "val"))),
         outputs={"model": _p(_L.model_file(D, M, S)), "train_log": _p(_L.train_log(D, M, S)),
                  "val_log": _p(_L.val_log(D, M, S))},
         state_outputs=(_p(_L.train_state(D, M, S)),),
         plots=(("train_log", "step", "loss"), ("val_log", "step", "R1")),
         params=("train", "backbone", "model", f"variants.{M}", f"data.{D}.max_words", "eval.batch_size",
                 "eval.block_memory_mb") + COMPUTE + ("compute.train_gpus", "compute.gpu_memory_gb",
                                                      f"data.{D}.max_frames", "frames.image_size"),
         threads="compute.train_threads",
         resources=(("gpu", "compute.train_gpus"), ("mem_mb", "compute.train_mem_mb"),
                    ("runtime", "compute.train_runtime_min")), groups=TRAINED + (CHECKS,)),
    Step("snapshot", f"hcmi snapshot --dataset {D} --model {M}", "hcmi.steps.snapshot",
         inputs={"backbones": _p(_L.weights_manifest())},
         outputs={"model": _p(_L.model_file(D, M, "0")), "train_log": _p(_L.train_log(D, M, "0")),
                  "val_log": _p(_L.val_log(D, M, "0"))},
         params=("backbone", "model", f"variants.{M}", f"data.{D}.max_words", f"data.{D}.max_frames"),
         groups=("zero_shot",)),
    Step("evaluate", f"hcmi evaluate --dataset {D} --model {M} --seed {S}", "hcmi.steps.evaluate",
         inputs={"model": _p(_L.model_file(D, M, S)), "annotations": _p(_L.annotations(D)),
                 "test_frames": _p(_L.frame_index(D, "test"))},
         state_inputs=(_p(_L.frame_shards(D, "test")),),
         outputs={"rankings": _p(_L.rankings(D, M, S)), "metrics": _p(_L.seed_metrics(D, M, S)),
                  "provenance": _p(_L.seed_provenance(D, M, S))},
         metrics={"scores": _p(_L.seed_scores(D, M, S))},
         params=("eval", f"data.{D}.test_folds") + COMPUTE, threads="compute.train_threads",
         resources=(("mem_mb", "compute.train_mem_mb"),), groups=EVALUATED + (CHECKS,)),
    Step("index", f"hcmi index --dataset {D} --model {M} --seed {S}", "hcmi.steps.index",
         inputs={"model": _p(_L.model_file(D, M, S)), "test_frames": _p(_L.frame_index(D, "test")),
                 "skipped": _p(_L.frame_skipped(D, "test"))},
         state_inputs=(_p(_L.frame_shards(D, "test")),),
         outputs={"index": _p(_L.search_index(D, M, S) / "index.json"),
                  "skipped": _p(_L.search_index(D, M, S) / "skipped.csv")},
         state_outputs=(_p(_L.search_index(D, M, S) / "store"),),
         params=("eval.batch_size", "frames.jpeg_quality", "frames.shard_size") + COMPUTE + ("search",),
         threads="compute.train_threads", groups=("models",)),
    Step("summarize", f"hcmi summarize --dataset {D} --model {M}", "hcmi.steps.summarize",
         inputs={"metrics": _p(SEED_RUN / "metrics.json"), "provenance": _p(SEED_RUN / "provenance.json"),
                 "train_logs": _p(_L.train_log(D, M, S)), "val_logs": _p(_L.val_log(D, M, S))},
         outputs={"curves": _p(_L.curves(D, M)), "summary": _p(_L.metrics(D, M)),
                  "provenance": _p(_L.provenance(D, M))},
         metrics={"scores": _p(_L.scores(D, M)), "spread": _p(_L.spread(D, M))},
         params=("models", "seeds", "ablation_seeds", "zero_shot"), watches="model_seeds",
         groups=EVALUATED + (CHECKS,)),
    Step("dataset_report", f"hcmi report --dataset {D}", "hcmi.steps.report",
         inputs={"summaries": _p(_L.metrics(D, M)), "provenance": _p(_L.provenance(D, M)),
                 "curves": _p(_L.curves(D, M)), "rankings": _p(SEED_RUN / "rankings.parquet"),
                 "test_frames": _p(_L.frame_index(D, "test"))},
         state_inputs=(_p(_L.frame_shards(D, "test")),),
         outputs={"html": _p(_L.report(D)), "notebook": _p(_L.report_notebook(D))},
         params=("models", "ablations", "zero_shot", "seeds", "ablation_seeds", "variants", "model", "backbone",
                 "eval.dsl", "eval.dsl_bank", "report")),
    Step("index_report", "hcmi report --index", "hcmi.steps.report",
         # the summaries, the training curves (latent positives) and every run's per-query outcomes
         inputs={"summaries": _p(_L.metrics(D, M)), "provenance": _p(_L.provenance(D, M)),
                 "curves": _p(_L.curves(D, M)), "rankings": _p(SEED_RUN / "rankings.parquet")},
         outputs={"html": _p(_L.index_report()), "notebook": _p(_L.index_notebook()),
                  "results": _p(_L.results_summary())},
         params=("datasets", "models", "ablations", "zero_shot", "seeds", "ablation_seeds", "variants", "model",
                 "backbone", "report.equivalence_margin")),
    Step("mechanisms_report", "hcmi report --mechanisms", "hcmi.steps.report",
         # every run the checks compare: its per-query outcomes, and the training curves (latent positives)
         inputs={"summaries": _p(_L.metrics(D, M)), "curves": _p(_L.curves(D, M)),
                 "rankings": _p(SEED_RUN / "rankings.parquet")},
         outputs={"html": _p(_L.mechanisms_report()), "notebook": _p(_L.mechanisms_notebook()),
                  "results": _p(_L.mechanisms_summary())},
         params=("checks", "data", "train", "datasets", "models", "ablations", "zero_shot", "seeds", "ablation_seeds",
                 "variants", "report.equivalence_margin"), over=CHECKS),
)

STEP = {step.name: step for step in STEPS}


def step_for_command(command: str, index: bool = False, mechanisms: bool = False) -> Step | None:
    """The step that `hcmi <command>` runs (the report command serves three steps), or None for a tool command."""
    if command == "report":
        return STEP["mechanisms_report" if mechanisms else "index_report" if index else "dataset_report"]
    return STEP.get(command)


# -- a step's code ------------------------------------------------------------------------------------------------


def code_files(step: Step, head: str | None = None) -> list[str]:
    """The step's code as paths relative to the repository root (the package's parent): for one model head, or
    (None) for any model the step may build."""
    return codebase.code_files(step.module, heads=None if head is None else (head,))


def code_hash(step: Step, head: str | None = None) -> str:
    return codebase.code_hash(step.module, heads=None if head is None else (head,))


# -- what the workflows watch and expand ---------------------------------------------------------------------------


def backbones_in_use(params: Params) -> list[dict]:
    """The distinct backbones (name and weights) of every configured variant, and the pretraining parameters where a
    backbone is pretrained on stills: what the weights record depends on, so that adding a variant on a backbone
    already in use, or changing pretraining that no backbone uses, re-runs nothing."""
    found = params.backbones_in_use()
    if any(backbone["pretrained"] == STILLS_TAG for backbone in found):
        found.append(params.pretraining_inputs())
    return found


def model_seeds(params: Params, model: str) -> list[int]:
    """The seeds one model is summarized over: adding a variant to another group re-runs no other model's summary."""
    return params.seeds_for(model)


WATCHED = {"backbones_in_use": backbones_in_use, "model_seeds": model_seeds}


def group_models(params: Params, groups: tuple[str, ...]) -> list[str]:
    """The variants of these model groups (models, ablations, zero_shot, checks), in order."""
    names = [name for group in groups for name in (params.check_models if group == CHECKS else params.get(group))]
    return list(dict.fromkeys(names))


def every_value(params: Params, template: str, fixed: dict[str, str], over: str = "configured") -> list[str]:
    """Every configured path of `template`: the wildcards in `fixed` as given, each other one over its configured
    values (every dataset; every evaluated model, each with its own seeds), or (over checks) over every run of the
    mechanism checks."""
    names = re.findall(r"\{(\w+)\}", template)
    if over == CHECKS:
        runs = [dict(dataset=d, model=m, seed=s) for d, m, s in params.check_runs()]
        runs = [run for run in runs if all(str(run[k]) == str(v) for k, v in fixed.items() if k in run)]
        return list(dict.fromkeys(template.format(**{**fixed, **{n: run[n] for n in names if n in run}})
                                  for run in runs))
    datasets = [fixed["dataset"]] if "dataset" in fixed else params.get("datasets")
    models = [fixed["model"]] if "model" in fixed else params.evaluated_models
    paths = []
    for dataset in datasets:
        for model in models:
            for seed in ([fixed["seed"]] if "seed" in fixed else params.seeds_for(model)):
                values = {**fixed, "dataset": dataset, "model": model, "seed": seed}
                paths.append(template.format(**{name: values[name] for name in names}))
    return list(dict.fromkeys(paths))
