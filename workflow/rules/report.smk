# Reports: a papermill-executed notebook per dataset rendered to HTML, and the index over all datasets.

import os


rule dataset_report:
    input:
        notebook="notebooks/report.ipynb",
        metrics=expand("data/results/{{dataset}}/{model}/metrics.json", model=ALL_MODELS),
    output:
        "data/reports/{dataset}.html",
        "data/reports/{dataset}.ipynb",
    params:
        report=config["report"],
    log:
        "logs/report/{dataset}.log",
    shell:
        "hcmi report --dataset {wildcards.dataset} > {log} 2>&1"


rule index_report:
    input:
        notebook="notebooks/index.ipynb",
        metrics=expand("data/results/{dataset}/{model}/metrics.json", dataset=config["datasets"],
                       model=ALL_MODELS),
    output:
        "data/reports/index.html",
        "data/reports/index.ipynb",
    log:
        "logs/report/index.log",
    shell:
        "hcmi report --index > {log} 2>&1"


# Performance measurements (not part of `all`): the scripts in bench/ print ratios measured side by side and write
# data/bench/*.json; this rule runs them all and writes data/bench/summary.md. It takes every CPU of the machine
# (a local run scales that down to --cores), counted here rather than read from --cores, which a cluster run lacks.
rule bench:
    output:
        "data/bench/summary.md",
    log:
        "logs/bench.log",
    threads: len(os.sched_getaffinity(0))
    shell:
        "python bench/run.py > {log} 2>&1"
