# Raw data: fetched (or, for the synthetic benchmark, generated) into data/raw/<dataset>/, then parsed into the
# common annotation table. Pretrained backbone weights: fetched once into data/weights/. Both need the network (or
# files placed by hand), so they run on the machine that starts the workflow, never on a compute node.


rule download:
    output:
        "data/raw/{dataset}/manifest.json",
    params:
        source=lambda wc: config["data"][wc.dataset]["source"],
    log:
        "logs/download/{dataset}.log",
    threads: config["compute"]["sample_threads"]
    localrule: True
    shell:
        "hcmi download --dataset {wildcards.dataset} > {log} 2>&1"


# Pretrained weights: `hcmi weights` makes backbone.pretrained local (an open_clip tag is fetched once into
# data/weights/files/) and records what training will load in data/weights/backbone.json, which every training job
# depends on. With random initialisation (the synthetic default) it only writes that record.
rule weights:
    output:
        "data/weights/backbone.json",
    params:
        backbones=[backbone_for(model) for model in ALL_MODELS],
    log:
        "logs/weights.log",
    localrule: True
    shell:
        "hcmi weights > {log} 2>&1"


rule parse:
    input:
        "data/raw/{dataset}/manifest.json",
    output:
        "data/raw/{dataset}/annotations.parquet",
    log:
        "logs/parse/{dataset}.log",
    shell:
        "hcmi parse --dataset {wildcards.dataset} > {log} 2>&1"
