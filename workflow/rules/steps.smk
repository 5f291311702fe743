# Every rule of the pipeline, generated from the step table in hcmi/pipeline.py (its command, inputs, outputs, the
# parameters it reads and its code). A rule's params hold the values of the parameters the step declares and the
# hash of its code, so either changing re-runs the rule (params are a rerun trigger) and everything downstream.

import itertools
import re

from hcmi import pipeline


def expand_starred(template, wildcards):
    """A path template with starred wildcards ({model*}, {seed*}, {dataset*}) -> every configured path."""
    names = re.findall(r"\{(\w+)\*\}", template)
    plain = template.replace("*}", "}")
    fixed = dict(wildcards.items())
    datasets = [fixed["dataset"]] if "dataset" not in names else config["datasets"]
    models = [fixed["model"]] if "model" in fixed else ALL_MODELS
    paths = []
    for dataset, model in itertools.product(datasets, models):
        seeds = seeds_for(model) if "seed" in names else [fixed.get("seed")]
        for seed in seeds:
            values = {**fixed, "dataset": dataset, "model": model, "seed": seed}
            paths.append(plain.format(**{name: values[name] for name in re.findall(r"\{(\w+)\}", plain)}))
    return list(dict.fromkeys(paths))


def rule_inputs(step):
    inputs = {}
    for i, template in enumerate(step.inputs):
        key = f"in{i}"
        if "*}" in template:
            inputs[key] = lambda wc, template=template: expand_starred(template, wc)
        else:
            inputs[key] = template
    return inputs


def rule_params(step):
    if step.watches:
        return lambda wc: {step.watches: DERIVED[step.watches](wc)}
    return lambda wc: {key: param(key) for key in step.declared_params(**dict(wc.items()))}


def rule_resources(step):
    return {name: param(key) for name, key in step.resources}


def rule_constraints(step):
    """A step over model groups matches only their variants: a zero-shot model.pt comes from `snapshot`, never
    from `train`."""
    return {"model": model_names(step.groups)} if "model" in step.wildcards else {}


def rule_shell(step):
    return re.sub(r"\{(\w+)\}", r"{wildcards.\1}", step.command) + " > {log} 2>&1"


def define(step):
    rule:
        name: step.name
        input: **rule_inputs(step)
        output: *(step.outputs + step.metrics)
        params: declared=rule_params(step), code=pipeline.code_hash(step)
        log: step.log
        threads: param(step.threads) if step.threads else 1
        resources: **rule_resources(step)
        localrule: step.local
        wildcard_constraints: **rule_constraints(step)
        shell: rule_shell(step)


for step in pipeline.STEPS:
    define(step)
