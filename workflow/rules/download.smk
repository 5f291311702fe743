# Raw data: fetched (or, for the synthetic benchmark, generated) into data/raw/<dataset>/, then parsed into the
# common annotation table.


rule download:
    output:
        "data/raw/{dataset}/manifest.json",
    params:
        source=lambda wc: config["data"][wc.dataset]["source"],
    log:
        "logs/download/{dataset}.log",
    threads: config["compute"]["sample_threads"]
    shell:
        "hcmi download --dataset {wildcards.dataset} > {log} 2>&1"


rule parse:
    input:
        "data/raw/{dataset}/manifest.json",
    output:
        "data/raw/{dataset}/annotations.parquet",
    log:
        "logs/parse/{dataset}.log",
    shell:
        "hcmi parse --dataset {wildcards.dataset} > {log} 2>&1"
