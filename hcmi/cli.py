"""`hcmi <command>`: the command line the workflow (Snakemake and DVC alike) calls. Thin: parse the arguments, load the
parameters, restrict them to what the step declares (hcmi/pipeline.py), call the step's one function (hcmi/steps/).

    hcmi [--params FILE ...] [--set KEY=VALUE ...] [--data-root DIR] <command> [options]

Pipeline steps: download, weights, parse, sample, train, snapshot, evaluate, summarize, report.
Tools: check, synth, index, search, sync, verify, dvc-yaml, plan, readme-results.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("hcmi")


def cmd_check(params, layout, args) -> None:
    print(f"params OK: datasets {params.get('datasets')}, models {params.get('models')}, seeds {params.get('seeds')}")


def cmd_download(params, layout, args) -> None:
    from hcmi.steps import download

    download.run(params, layout, args.dataset)


def cmd_synth(params, layout, args) -> None:
    from hcmi.steps import download

    download.run(params, layout, "synthetic")


def cmd_weights(params, layout, args) -> None:
    from hcmi.steps import weights

    weights.run(params, layout)


def cmd_parse(params, layout, args) -> None:
    from hcmi.steps import parse

    parse.run(params, layout, args.dataset)


def cmd_sample(params, layout, args) -> None:
    from hcmi.steps import sample

    sample.run(params, layout, args.dataset, args.split)


def cmd_train(params, layout, args) -> None:
    from hcmi.steps import train

    train.run(params, layout, args.dataset, args.model, args.seed)


def cmd_snapshot(params, layout, args) -> None:
    from hcmi.steps import snapshot

    snapshot.run(params, layout, args.dataset, args.model)


def cmd_evaluate(params, layout, args) -> None:
    from hcmi.steps import evaluate

    evaluate.run(params, layout, args.dataset, args.model, args.seed)


def cmd_summarize(params, layout, args) -> None:
    from hcmi.steps import summarize

    summarize.run(params, layout, args.dataset, args.model)


def cmd_report(params, layout, args) -> None:
    from hcmi.steps import report

    if args.index:
        report.run_index(params, layout, args.params_files)
    elif args.dataset:
        report.run_dataset(params, layout, args.dataset, args.params_files)
    else:
        raise SystemExit("hcmi report: give --dataset D, or --index for the summary report")


def cmd_sync(params, layout, args) -> None:
    from hcmi.steps import sync

    sync.run(Path("."), args.snakemake_args)


def cmd_verify(params, layout, args) -> None:
    from hcmi.steps import verify

    verify.run(params, layout, args.dataset, args.model, args.seed)


def cmd_dvc_yaml(params, layout, args) -> None:
    from hcmi.steps import dvc_yaml

    dvc_yaml.run(args.output, check=args.check)
    print(f"{args.output} {'matches' if args.check else 'written from'} the step table")


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

    search.run(params, args.index, args.queries, args.checkpoint, args.top, args.json, args.html)


def cmd_plan(params, layout, args) -> None:
    from hcmi.steps import plan

    plan.run(params, args.gpu_memory_gb)


def cmd_readme_results(params, layout, args) -> None:
    from hcmi.steps import readme

    readme.run(layout, args.readme)
    print(f"{args.readme}: results section written from {layout.results_summary()}")


def build_parser() -> argparse.ArgumentParser:
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

    dataset = lambda p: p.add_argument("--dataset", required=True)  # noqa: E731
    model = lambda p: p.add_argument("--model", required=True, help="a variant name from params `variants`")  # noqa
    seed = lambda p: p.add_argument("--seed", type=int, required=True)  # noqa: E731
    split = lambda p: p.add_argument("--split", required=True, choices=("train", "val", "test"))  # noqa: E731

    add("check", cmd_check, "validate the params and exit")
    add("synth", cmd_synth, "generate the embedded synthetic benchmark (same as download --dataset synthetic)")
    add("download", cmd_download, "fetch (or generate) a dataset's raw files into data/raw/<dataset>/", dataset)
    add("weights", cmd_weights, "make the configured backbones' weights local: open_clip tags are fetched once into "
        "data/weights/files/ (network needed once); writes data/weights/backbone.json, which training depends on")
    add("parse", cmd_parse, "parse a dataset's annotation files into data/raw/<dataset>/annotations.parquet", dataset)
    add("sample", cmd_sample, "sample frames of one split into the frame cache", dataset, split)
    add("train", cmd_train, "train one model variant with one seed (resumes an interrupted run)", dataset, model,
        seed)
    add("snapshot", cmd_snapshot, "the model.pt of a variant evaluated without training (params `zero_shot`)",
        dataset, model)
    add("evaluate", cmd_evaluate, "evaluate a trained run on the dataset's test split", dataset, model, seed)
    add("summarize", cmd_summarize, "mean and spread of a model's metrics over the configured seeds", dataset, model)
    report = add("report", cmd_report, "render a dataset's HTML report, or the index report")
    report.add_argument("--dataset")
    report.add_argument("--index", action="store_true", help="the summary report over all datasets")
    sync_parser = add("sync", cmd_sync, "after `dvc pull` or `dvc checkout`: mark the steps whose results match "
                      "dvc.lock as done for Snakemake, and the changed ones for re-running")
    sync_parser.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                             help="options for Snakemake after `--`, e.g. -- --configfile config/paper.yaml")
    add("verify", cmd_verify, "re-evaluate a trained checkpoint and check that it reproduces its recorded metrics",
        dataset, model, seed)
    dvc = add("dvc-yaml", cmd_dvc_yaml, "write dvc.yaml from the step table (hcmi/pipeline.py)")
    dvc.add_argument("--check", action="store_true", help="only check that dvc.yaml matches the step table")
    dvc.add_argument("--output", type=Path, default=Path("dvc.yaml"))
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

    step = step_for_command(args.command, index=getattr(args, "index", False))
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
