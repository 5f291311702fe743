# hcmi workflow: download -> parse -> sample -> train -> evaluate -> summarize -> report, for every dataset x model x
# seed in params.yaml. Every rule (workflow/rules/steps.smk) runs one `hcmi` command; those rules and dvc.yaml are
# both written from the step table in hcmi/pipeline.py, so both workflows run the same commands on the same paths.
# Run from the repository root, Snakemake finds this file and the profile beside it (profiles/default) by itself.
#
#   snakemake --cores 8 all                                  # the embedded synthetic benchmark (CPU, offline)
#   snakemake --cores 8 all --configfile config/paper.yaml   # the paper's runs (GPU, real datasets)
#   snakemake --cores 8 mechanisms                           # the mechanism checks (params `checks`), after `all`
#
# Working state that makes steps resumable (downloaded files, frame-cache shards, training state) is deliberately not
# declared as output: Snakemake deletes declared outputs before it re-runs a job, which would throw that work away.
# Each step writes its declared outputs last and atomically, so their presence means the step finished.

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/steps.smk"
include: "workflow/rules/bench.smk"


onstart:
    check_jobs_fit_slurm_nodes()


rule all:
    input:
        "data/reports/index.html",
        expand("data/reports/{dataset}.html", dataset=config["datasets"]),
    default_target: True


# Outside `all`: each component against its condition (params `checks`; docs/method.md). The runs at the default
# level are the default run's own (the same paths): after `all`, only the other levels are trained.
rule mechanisms:
    input:
        "data/reports/mechanisms.html",
