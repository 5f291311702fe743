# Performance measurements (not part of `all`, not a pipeline step): the scripts in bench/ print ratios measured side
# by side and write data/bench/*.json; this rule runs them all and writes data/bench/summary.md.


rule bench:
    output:
        "data/bench/summary.md",
    log:
        "logs/bench.log",
    threads: param("compute.sample_threads")
    shell:
        "python bench/run.py > {log} 2>&1"
