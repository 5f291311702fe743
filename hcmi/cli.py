"""`hcmi <step>`: the command line the workflow (Snakemake and DVC alike) calls. Thin: parse, load params, call.

    hcmi [--params FILE ...] [--set KEY=VALUE ...] [--data-root DIR] <step> [options]

Steps: check, synth, download, weights, parse, sample, train, evaluate, summarize, report, sync.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("hcmi")


def _workers() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(os.environ.get("OMP_NUM_THREADS", available) or available), available))


def cmd_check(params, layout, args) -> None:
    print(f"params OK: datasets {params.datasets}, models {params.models}, seeds {params.seeds}")


def cmd_download(params, layout, args) -> None:
    from hcmi.data.download import fetch

    manifest = fetch(args.dataset, params, layout.raw(args.dataset), workers=_workers())
    log.info("%s: %d files recorded in %s", args.dataset, len(manifest["files"]), layout.manifest(args.dataset))


def cmd_weights(params, layout, args) -> None:
    from hcmi.files import write_json
    from hcmi.model.backbone import describe_weights

    records = [describe_weights(b.name, b.pretrained, layout.weights()) for b in params.backbones_in_use()]
    (layout.weights() / "files").mkdir(parents=True, exist_ok=True)  # the (possibly empty) store of fetched weights
    write_json(layout.weights_manifest(), {"backbones": records})
    for record in records:
        log.info("backbone %s: %s%s", record["backbone"], record["kind"],
                 f" ({record['file']})" if record["file"] else "")


def cmd_synth(params, layout, args) -> None:
    args.dataset = "synthetic"
    cmd_download(params, layout, args)


def cmd_parse(params, layout, args) -> None:
    from hcmi.data.annotations import parse
    from hcmi.files import write_table

    table = parse(args.dataset, layout.source(args.dataset))
    write_table(layout.annotations(args.dataset), table)
    counts = table.groupby("split").agg(videos=("video_id", "nunique"), captions=("caption_id", "size"))
    log.info("%s annotations -> %s\n%s", args.dataset, layout.annotations(args.dataset), counts.to_string())


def cmd_sample(params, layout, args) -> None:
    import pandas as pd

    from hcmi.data import videos
    from hcmi.data.annotations import split_table
    from hcmi.data.frames import Sampling, sample_split
    from hcmi.logs import progress

    table = split_table(pd.read_parquet(layout.annotations(args.dataset)), args.split)
    if table.empty:
        log.info("%s has no '%s' split in its protocol: writing an empty frame cache", args.dataset, args.split)
    pairs, missing = videos.match(list(dict.fromkeys(table["video_id"])), layout.videos(args.dataset))
    if missing:
        log.warning("%d annotated videos have no file in %s (listed in skipped.csv)", len(missing),
                    layout.videos(args.dataset))
    sampling = Sampling(max_frames=params.dataset(args.dataset).max_frames, image_size=params.frames.image_size,
                        candidates=params.frames.candidates, jpeg_quality=params.frames.jpeg_quality)
    index = sample_split(pairs, layout.frames(args.dataset, args.split), sampling, params.frames.shard_size,
                         params.frames.max_skip_fraction, workers=_workers(), progress=progress)
    log.info("%s/%s: %d videos cached in %s", args.dataset, args.split, len(index),
             layout.frames(args.dataset, args.split))


def cmd_train(params, layout, args) -> None:
    from hcmi.train import train_run

    train_run(params, args.dataset, args.model, args.seed, layout)


def cmd_evaluate(params, layout, args) -> None:
    from hcmi.evaluate import evaluate_run

    evaluate_run(params, args.dataset, args.model, args.seed, layout)


def cmd_summarize(params, layout, args) -> None:
    from hcmi.evaluate import summarize_run

    summary = summarize_run(params, args.dataset, args.model, layout)
    log.info("%s/%s over seeds %s: t2v R@1 %.1f ± %.1f", args.dataset, args.model, summary["seeds"],
             summary["mean"]["t2v"]["R1"], summary["std"]["t2v"]["R1"])


def cmd_report(params, layout, args) -> None:
    from hcmi.report import render_dataset_report, render_index_report

    if args.index:
        render_index_report(params, layout, args.params_files)
    else:
        if not args.dataset:
            raise SystemExit("hcmi report: give --dataset D, or --index for the summary report")
        render_dataset_report(params, layout, args.dataset, args.params_files)


def cmd_sync(params, layout, args) -> None:
    from hcmi.sync import sync

    sync(Path("."), args.snakemake_args)


def build_parser() -> argparse.ArgumentParser:
    from hcmi.data.datasets import SPLITS

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
    split = lambda p: p.add_argument("--split", required=True, choices=SPLITS)  # noqa: E731

    add("check", cmd_check, "validate the params and exit")
    add("synth", cmd_synth, "generate the embedded synthetic benchmark (same as download --dataset synthetic)")
    add("download", cmd_download, "fetch (or generate) a dataset's raw files into data/raw/<dataset>/", dataset)
    add("weights", cmd_weights, "make the configured backbones' weights local: open_clip tags are fetched once into "
        "data/weights/files/ (network needed once); writes data/weights/backbone.json, which training depends on")
    add("parse", cmd_parse, "parse a dataset's annotation files into data/raw/<dataset>/annotations.parquet", dataset)
    add("sample", cmd_sample, "sample frames of one split into the frame cache", dataset, split)
    add("train", cmd_train, "train one model variant with one seed (resumes an interrupted run)", dataset, model,
        seed)
    add("evaluate", cmd_evaluate, "evaluate a trained run on the dataset's test split", dataset, model, seed)
    add("summarize", cmd_summarize, "mean and spread of a model's metrics over the configured seeds", dataset, model)
    sync_parser = add("sync", cmd_sync, "after `dvc pull` or `dvc checkout`: mark the steps whose results match "
                      "dvc.lock as done for Snakemake, and the changed ones for re-running")
    sync_parser.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                             help="options for Snakemake after `--`, e.g. -- --configfile config/paper.yaml")
    report = add("report", cmd_report, "render a dataset's HTML report, or the index report")
    report.add_argument("--dataset")
    report.add_argument("--index", action="store_true", help="the summary report over all datasets")
    return parser


def main(argv: list[str] | None = None) -> int:
    from hcmi import config
    from hcmi.errors import HcmiError
    from hcmi.logs import setup_logging
    from hcmi.paths import Layout

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        params = config.load(args.params_files, args.settings)
    except config.ConfigError as exc:
        print(f"hcmi: invalid parameters:\n{exc}", file=sys.stderr)
        return 2
    args.params_files = args.params_files or config.default_params_files()
    try:
        args.func(params, Layout(args.data_root), args)
    except KeyboardInterrupt:
        print("hcmi: interrupted", file=sys.stderr)
        return 130
    except HcmiError as exc:
        log.error("%s failed: %s", args.command, exc)
        return 1
    except Exception:
        log.exception("%s failed", args.command)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
