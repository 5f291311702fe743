# Frame sampling: decord reads max_frames frames per video into the memory-mapped frame cache.


rule sample:
    input:
        "data/raw/{dataset}/annotations.parquet",
    output:
        "data/frames/{dataset}/{split}/index.parquet",
        "data/frames/{dataset}/{split}/skipped.csv",
    params:
        max_frames=lambda wc: config["data"][wc.dataset]["max_frames"],
        frames=config["frames"],
    log:
        "logs/sample/{dataset}-{split}.log",
    threads: config["compute"]["sample_threads"]
    shell:
        "hcmi sample --dataset {wildcards.dataset} --split {wildcards.split} > {log} 2>&1"
