"""`hcmi <command>`: the command line the workflow (Snakemake and DVC alike) calls. Thin: parse the arguments, load the
parameters, restrict them to what the step declares (hcmi/pipeline.py), call the step's one function (hcmi/steps/).

    hcmi [--params FILE ...] [--set KEY=VALUE ...] [--data-root DIR] <command> [options]

Pipeline steps: download, weights, parse, sample, train, snapshot, evaluate, summarize, report.
Tools: check, synth, index, search, sync, verify, probe, workflow-files, plan, readme-results.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger("hcmi")


def cmd_check(params, layout, args) -> None:
    print(f"params OK: datasets {params.get('datasets')}, models {params.get('models')}, seeds {params.get('seeds')}")


def cmd_synth(params, layout, args) -> None:
    from hcmi.steps import download

    download.run(params, layout, "synthetic")


# -- the pipeline's steps, one command each, from the step table --------------------------------------------------

# steps whose command is written by hand below (it also serves a tool: `report --index`, `index --videos`)
HAND_WRITTEN = ("report", "index")
# tools that work outside a checkout: without a params.yaml they read the declared defaults (hcmi/defaults.yaml)
STANDALONE = ("check", "index", "search", "verify", "plan")
WILDCARD_OPTIONS = {
    "dataset": dict(required=True),
    "model": dict(required=True, help="a variant name from params `variants`"),
    "seed": dict(type=int, required=True),
    "split": dict(required=True, choices=("train", "val", "test")),
}


def step_command(step):
    """`hcmi <step> --<wildcard> VALUE ...`: the step module's run(params, layout, *wildcard values)."""

    def command(params, layout, args) -> None:
        module = importlib.import_module(step.module)
        module.run(params, layout, *(getattr(args, name) for name in step.wildcards))

    return command


def cmd_report(params, layout, args) -> None:
    from hcmi.steps import report

    if args.mechanisms:
        report.run_mechanisms(params, layout, args.params_files)
    elif args.index:
        report.run_index(params, layout, args.params_files)
    elif args.dataset:
        report.run_dataset(params, layout, args.dataset, args.params_files)
    else:
        raise SystemExit("hcmi report: give --dataset D, --index for the summary report, or --mechanisms for the "
                         "mechanism checks")


def cmd_sync(params, layout, args) -> None:
    from hcmi.steps import sync

    sync.run(Path("."), args.snakemake_args)


def cmd_verify(params, layout, args) -> None:
    from hcmi.steps import verify
    from hcmi.steps.common import load_params

    if args.declared_defaults:  # no params of the user's: re-evaluate under the parameters the run recorded
        recorded = verify.recorded_settings(layout, args.dataset, args.model, args.seed)
        params = restricted(load_params(args.params_files, [*recorded, *args.settings]), args)
    verify.run(params, layout, args.dataset, args.model, args.seed)


def cmd_probe(params, layout, args) -> None:
    from hcmi.steps import probe

    probe.run(params, layout, args.dataset, args.model, args.seed, args.batches, args.epoch)


def cmd_workflow_files(params, layout, args) -> None:
    from hcmi.steps import workflow_files

    written = workflow_files.run(Path("."), check=args.check)
    names = ", ".join(workflow_files.FILES)
    print(f"{names}: match the declarations" if args.check
          else f"{names}: {len(written)} rewritten from the declarations")


def cmd_index(params, layout, args) -> None:
    from hcmi.steps import index

    if args.videos:
        if not (args.checkpoint and args.out):
            raise SystemExit("hcmi index --videos FOLDER needs --checkpoint model.pt and --out INDEX")
        index.run_folder(params, args.videos, args.checkpoint, args.out)
    elif args.dataset and args.model and args.seed is not None:
        index.run_split(params, layout, args.dataset, args.model, args.seed)
    else:
        raise SystemExit("hcmi index: give --videos FOLDER --checkpoint model.pt --out INDEX, or --dataset D "
                         "--model M --seed S")


def cmd_search(params, layout, args) -> None:
    from hcmi.steps import search

    search.run(params, args.index, args.queries, args.checkpoint, args.top, args.json, args.html,
               recorded_settings=args.declared_defaults)


def cmd_plan(params, layout, args) -> None:
    from hcmi.steps import plan

    plan.run(params, args.gpu_memory_gb)


def cmd_readme_results(params, layout, args) -> None:
    from hcmi.steps import readme

    readme.run(layout, args.readme)
    print(f"{args.readme}: results section written from {layout.results_summary()}")


def module_summary(module: str) -> str:
    """The first sentence of a module's docstring, without its leading "`hcmi ...`:" (read, not imported)."""
    from hcmi.codebase import module_docstring

    summary = module_docstring(module).split("\n\n")[0].replace("\n", " ")
    return re.split(r"(?<=\.)\s", re.sub(r"^`hcmi [^`]*`(?: \([^)]*\))?: ", "", summary), maxsplit=1)[0]


def build_parser() -> argparse.ArgumentParser:
    from hcmi.pipeline import STEPS

    parser = argparse.ArgumentParser(prog="hcmi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", action="append", dest="params_files", metavar="FILE",
                        help="params file(s), merged in order (default: $HCMI_PARAMS or params.yaml)")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="KEY=VALUE",
                        help="override one parameter, e.g. --set train.lr=0.001 (value parsed as YAML)")
    parser.add_argument("--data-root", default="data", type=Path, help="where data, results and reports live")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text, *options):
        p = sub.add_parser(name, help=help_text, description=help_text)
        for option in options:
            option(p)
        p.set_defaults(func=func)
        return p

    dataset, model, seed = (lambda p, name=name: p.add_argument(f"--{name}", **WILDCARD_OPTIONS[name])
                            for name in ("dataset", "model", "seed"))

    add("check", cmd_check, "validate the params and exit")
    add("synth", cmd_synth, "generate the embedded synthetic benchmark (same as download --dataset synthetic)")
    for step in STEPS:
        name = step.command.split()[1]
        if name not in HAND_WRITTEN:
            p = add(name, step_command(step), module_summary(step.module))
            for wildcard in step.wildcards:
                p.add_argument(f"--{wildcard}", **WILDCARD_OPTIONS[wildcard])
    report = add("report", cmd_report, "render a dataset's HTML report, or the index report")
    report.add_argument("--dataset")
    report.add_argument("--index", action="store_true", help="the summary report over all datasets")
    report.add_argument("--mechanisms", action="store_true",
                        help="the mechanism checks' report (params `checks`: each effect against its condition)")
    sync_parser = add("sync", cmd_sync, "after `dvc pull` or `dvc checkout`: mark the steps whose results match "
                      "dvc.lock as done for Snakemake, and the changed ones for re-running")
    sync_parser.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                             help="options for Snakemake after `--`, e.g. -- --configfile config/paper.yaml")
    add("verify", cmd_verify, "re-evaluate a trained checkpoint and check that it reproduces its recorded metrics",
        dataset, model, seed)
    probe = add("probe", cmd_probe, "what label denoising and marginal sample enhancement act on in a trained run's "
                "training batches: latent positives and hardest negatives by what they are (copy, twin, other)",
                dataset, model, seed)
    probe.add_argument("--batches", type=int, default=40, help="grouped training batches to look at")
    probe.add_argument("--epoch", type=int, default=0, help="the epoch whose batch order and frame draws are used")
    files = add("workflow-files", cmd_workflow_files, "write the Snakemake rules (workflow/rules/steps.smk) and "
                "dvc.yaml from the step table (hcmi/pipeline.py), in the current directory")
    files.add_argument("--check", action="store_true", help="only check that both files match the step table")
    index = add("index", cmd_index, "make videos searchable with a trained model: a folder of videos (--videos "
                "--checkpoint --out), or a dataset's test split (--dataset --model --seed)")
    index.add_argument("--videos", type=Path, help="a folder of video files (any format decord reads)")
    index.add_argument("--checkpoint", type=Path, help="the trained model.pt")
    index.add_argument("--out", type=Path, help="the index folder (created, or extended with new videos)")
    index.add_argument("--dataset")
    index.add_argument("--model")
    index.add_argument("--seed", type=int)
    search_parser = add("search", cmd_search, "rank the videos of an index for text queries (two-stage: coarse "
                        "index, then the full multi-level score)")
    search_parser.add_argument("queries", nargs="+", metavar="QUERY")
    search_parser.add_argument("--index", type=Path, required=True)
    search_parser.add_argument("--checkpoint", type=Path, help="the model (default: the one that built the index)")
    search_parser.add_argument("--top", type=int, help="videos per query (default: search.top_k)")
    search_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search_parser.add_argument("--html", type=Path, help="also write a self-contained page with thumbnails")
    plan = add("plan", cmd_plan, "the estimated peak GPU memory of every training job, and the gradient-caching "
               "chunk each will use (docs/scaling.md)")
    plan.add_argument("--gpu-memory-gb", type=float, help="the budget per GPU (default: compute.gpu_memory_gb)")
    readme = add("readme-results", cmd_readme_results, "write the results tables of the last run "
                 "(data/reports/results.md) into README.md's results section")
    readme.add_argument("--readme", type=Path, default=Path("README.md"))
    return parser


def restricted(params, args):
    """The parameters a pipeline step may read: the keys it declares, for this job's values."""
    from hcmi.pipeline import step_for_command

    step = step_for_command(args.command, index=getattr(args, "index", False),
                            mechanisms=getattr(args, "mechanisms", False))
    if step is None:
        return params
    values = {name: getattr(args, name, None) for name in step.wildcards}
    return params.restrict(step.declared_params(**values), step.name)


def main(argv: list[str] | None = None) -> int:
    from hcmi import config, numerics
    from hcmi.errors import HcmiError
    from hcmi.logs import setup_logging
    from hcmi.paths import Layout
    from hcmi.steps.common import load_params

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    args.declared_defaults = not args.params_files and not config.params_files_here()
    if args.declared_defaults:
        if args.command not in STANDALONE:
            print(f"hcmi {args.command}: no params.yaml in {Path.cwd()}: run the pipeline's steps from the project's "
                  "folder, or give --params FILE", file=sys.stderr)
            return 2
        # a tool that needs no project: the declared defaults, and what the index and the checkpoint recorded
        args.params_files = [str(config.declared_defaults())]
        log.info("no params.yaml here: %s uses hcmi's declared defaults (%s)", args.command, args.params_files[0])
    try:
        params = load_params(args.params_files, args.settings)
    except config.ConfigError as exc:
        for problem in filter(None, str(exc).splitlines()):  # one line for each problem, naming file and key
            print(f"hcmi: invalid parameters: {problem.strip()}", file=sys.stderr)
        return 2
    args.params_files = args.params_files or config.default_params_files()
    try:
        # before anything computes: this process's CPU kernels, inherited by every process it starts
        numerics.pin(params.get("compute.numerics"))
        args.func(restricted(params, args), Layout(args.data_root), args)
    except KeyboardInterrupt:
        print("hcmi: interrupted", file=sys.stderr)
        return 130
    except HcmiError as exc:
        print(f"hcmi {args.command}: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"hcmi {args.command}: {exc.filename or exc}: not found", file=sys.stderr)
        return 1
    except Exception:
        log.exception("%s failed", args.command)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
