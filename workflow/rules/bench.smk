# Performance measurements (not part of `all`, not a pipeline step): the scripts in bench/ print ratios measured side
# by side and write data/bench/*.json; this rule runs them all and writes data/bench/summary.md. It takes every CPU
# of the machine (a local run scales that down to --cores), counted here rather than read from --cores, which a
# cluster run lacks.

import os


rule bench:
    output:
        "data/bench/summary.md",
    log:
        "logs/bench.log",
    threads: len(os.sched_getaffinity(0))
    shell:
        "python bench/run.py > {log} 2>&1"
