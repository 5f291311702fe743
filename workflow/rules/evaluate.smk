# Evaluation of each trained run on the dataset's test split, and the mean/spread over seeds.


rule evaluate:
    input:
        model="data/checkpoints/{dataset}/{model}/seeds/{seed}/model.pt",
        annotations="data/raw/{dataset}/annotations.parquet",
        frames="data/frames/{dataset}/test/index.parquet",
    output:
        metrics="data/results/{dataset}/{model}/seeds/{seed}/metrics.json",
        rankings="data/results/{dataset}/{model}/seeds/{seed}/rankings.parquet",
    params:
        eval=config["eval"],
    log:
        "logs/evaluate/{dataset}-{model}-{seed}.log",
    resources:
        mem_mb=config["compute"]["train_mem_mb"],
    shell:
        "hcmi evaluate --dataset {wildcards.dataset} --model {wildcards.model} --seed {wildcards.seed} > {log} 2>&1"


rule summarize:
    input:
        lambda wc: expand("data/results/{dataset}/{model}/seeds/{seed}/metrics.json", dataset=wc.dataset,
                          model=wc.model, seed=seeds_for(wc.model)),
    output:
        "data/results/{dataset}/{model}/metrics.json",
    params:
        seeds=lambda wc: seeds_for(wc.model),
    log:
        "logs/summarize/{dataset}-{model}.log",
    shell:
        "hcmi summarize --dataset {wildcards.dataset} --model {wildcards.model} > {log} 2>&1"
