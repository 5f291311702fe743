# Training one model variant with one seed (resumes an interrupted run from its state/last.pt). With
# compute.train_gpus > 1 the same command re-launches itself under torchrun (DDP, one process per GPU).


rule train:
    input:
        annotations="data/raw/{dataset}/annotations.parquet",
        train="data/frames/{dataset}/train/index.parquet",
        val="data/frames/{dataset}/val/index.parquet",
        weights="data/weights/backbone.json",
    output:
        model="data/checkpoints/{dataset}/{model}/seeds/{seed}/model.pt",
        log="data/checkpoints/{dataset}/{model}/seeds/{seed}/train_log.csv",
        val_log="data/checkpoints/{dataset}/{model}/seeds/{seed}/val_log.csv",
    params:
        train=config["train"],
        backbone=lambda wc: backbone_for(wc.model),
        model=lambda wc: {**config["model"], **config["variants"][wc.model]},
        data=lambda wc: config["data"][wc.dataset]["max_words"],
    log:
        "logs/train/{dataset}-{model}-{seed}.log",
    threads: config["compute"]["train_threads"]
    resources:
        gpu=config["compute"]["train_gpus"],
        mem_mb=config["compute"]["train_mem_mb"],
        runtime=config["compute"]["train_runtime_min"],
    shell:
        "hcmi train --dataset {wildcards.dataset} --model {wildcards.model} --seed {wildcards.seed} > {log} 2>&1"
