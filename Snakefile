# hcmi workflow: download -> parse -> sample -> train -> evaluate -> summarize -> report, for every dataset x model x
# seed in params.yaml. Every rule runs one `hcmi` command; dvc.yaml runs the same commands on the same paths.
#
#   snakemake --cores 8 all                                  # the embedded synthetic benchmark (CPU, offline)
#   snakemake --cores 8 all --configfile config/paper.yaml   # the paper's runs (GPU, real datasets)
#
# Working state that makes steps resumable (downloaded files, frame-cache shards, training state) is deliberately not
# declared as output: Snakemake deletes declared outputs before it re-runs a job, which would throw that work away.
# Each step writes its declared outputs last and atomically, so their presence means the step finished.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


# `--config train='{"epochs": 6}'` reaches Snakemake with "6" as a string: parse such values as the schema wants
from hcmi.config import coerce_strings

config.update(coerce_strings(config))


validate(config, "workflow/schemas/params.schema.yaml")

include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onstart:
    check_jobs_fit_slurm_nodes()


rule all:
    input:
        "data/reports/index.html",
        expand("data/reports/{dataset}.html", dataset=config["datasets"]),
    default_target: True
