import subprocess
import sys

import pytest
import yaml

from hcmi.config import ConfigError, UndeclaredParameter, deep_merge, from_dict, load, parse_setting
from hcmi.files import fingerprint

from conftest import REPO, tiny_params_dict


def test_shipped_params_are_valid():
    params = load([REPO / "params.yaml"])
    assert params.datasets == ["synthetic"]
    assert set(params.models) <= set(params.variants.keys())
    assert params.variant("baseline").head == "meanp"
    for paper in (["config/paper.yaml"], ["config/paper.yaml", "config/paper-b32.yaml"]):
        load([REPO / "params.yaml", *(REPO / p for p in paper)])


def test_misspelled_key_is_named_with_a_suggestion():
    raw = tiny_params_dict()
    raw["train"]["lrr"] = raw["train"].pop("lr")
    with pytest.raises(ConfigError) as error:
        from_dict(raw)
    message = str(error.value)
    assert "unknown key 'train.lrr'" in message
    assert "did you mean 'lr'" in message


def test_nested_misspelling_inside_a_variant_is_named():
    raw = tiny_params_dict()
    raw["variants"]["hcmi-no-frame-word"] = {"levels": {"frame_wrod": 0}}
    with pytest.raises(ConfigError, match=r"variants.hcmi-no-frame-word.levels.frame_wrod"):
        from_dict(raw)


def test_missing_and_mistyped_keys_are_named():
    raw = tiny_params_dict()
    del raw["eval"]["top_k"]
    raw["train"]["batch_size"] = "many"
    with pytest.raises(ConfigError) as error:
        from_dict(raw)
    assert "'eval.top_k'" in str(error.value)
    assert "train.batch_size" in str(error.value)


def test_cross_references_are_checked():
    raw = tiny_params_dict()
    raw["models"] = ["baseline", "nonexistent"]
    with pytest.raises(ConfigError, match="'nonexistent' is not defined under 'variants'"):
        from_dict(raw)
    raw = tiny_params_dict()
    raw["datasets"] = ["msrvtt-typo"]
    with pytest.raises(ConfigError, match="msrvtt-typo"):
        from_dict(raw)
    raw = tiny_params_dict()
    raw["data"]["ucf101"] = raw["data"]["msrvtt"]
    with pytest.raises(ConfigError, match="data.ucf101': unknown dataset"):
        from_dict(raw, known_datasets=["synthetic", "msrvtt", "msvd", "lsmdc", "didemo", "activitynet"])


def test_settings_and_files_merge_in_order(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"train": {"epochs": 7}}))
    params = load([REPO / "params.yaml", override], ["train.lr=2e-3", "seeds=[3, 4]"])
    assert params.train.epochs == 7
    assert params.train.lr == 0.002
    assert params.seeds == [3, 4]
    assert parse_setting("a.b.c=x") == {"a": {"b": {"c": "x"}}}
    with pytest.raises(ConfigError):
        parse_setting("novalue")


def test_variants_override_the_model_section():
    params = from_dict(tiny_params_dict())
    merged = params.variant("hcmi-no-frame-word")
    assert merged.levels["frame_word"] == 0
    assert merged.levels["video_sentence"] == params.variant("hcmi").levels["video_sentence"]
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_cli_rejects_a_bad_params_file_before_any_work(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["frames"]["max_skip_fraktion"] = raw["frames"].pop("max_skip_fraction")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "hcmi.cli", "synth"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "unknown key 'frames.max_skip_fraktion'" in result.stderr
    assert not (tmp_path / "data").exists(), "no work may start with invalid parameters"


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_strings_from_the_snakemake_command_line_become_what_the_declarations_want():
    raw = tiny_params_dict()
    raw["train"]["epochs"] = "6"
    raw["seeds"] = ["0", "1"]
    raw["eval"]["dsl"] = "false"
    raw["backbone"]["pretrained"] = "null"
    raw["data"]["synthetic"]["source"]["event_seconds"] = "0.5"
    params = from_dict(raw)
    assert params.train.epochs == 6 and params.seeds == [0, 1] and params.eval.dsl is False
    assert params.backbone.pretrained is None and params.get("data.synthetic.source.event_seconds") == 0.5
    assert params.backbone.name == raw["backbone"]["name"] and params.datasets == raw["datasets"]
    raw["backbone"]["name"] = 7  # a name is never read from a number
    with pytest.raises(ConfigError, match="backbone.name"):
        from_dict(raw)


def test_each_parameter_is_declared_once_and_the_schema_is_generated_from_it():
    """hcmi/parameters.py is the only declaration: the shipped params.yaml sets exactly the declared keys, the typed
    objects are those declarations, and params.schema.json (for editors) is generated from them."""
    import json

    from hcmi import parameters
    from hcmi.steps import workflow_files

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw["train"]) == set(parameters.TrainParams.model_fields)
    assert set(raw["pretrain"]) == set(parameters.PretrainParams.model_fields)
    assert set(raw["model"]) == set(parameters.ModelParams.model_fields)
    params = load([REPO / "params.yaml"])
    assert isinstance(params.variant("hcmi"), parameters.ModelParams)
    assert isinstance(params.synthetic(), parameters.SyntheticSource)
    schema = json.loads((REPO / "params.schema.json").read_text())
    assert schema == json.loads(workflow_files.params_schema())
    lr = schema["$defs"]["TrainParams"]["properties"]["lr"]
    assert lr["type"] == "number" and lr["exclusiveMinimum"] == 0
    assert schema["$defs"]["TrainParams"]["additionalProperties"] is False


def test_a_step_reading_an_undeclared_parameter_fails():
    params = from_dict(tiny_params_dict()).restrict(["train", "data.synthetic.max_words", "eval.batch_size"], "train")
    assert params.train.lr == tiny_params_dict()["train"]["lr"]
    assert params.dataset("synthetic").max_words == 32 and params.get("eval.batch_size") == 16
    with pytest.raises(UndeclaredParameter, match="step 'train' read parameter 'eval.top_k'"):
        params.eval.top_k
    with pytest.raises(UndeclaredParameter, match="'eval'"):
        params.eval.to_dict()  # a whole section needs the whole section declared
    with pytest.raises(UndeclaredParameter, match="'data.synthetic.max_frames'"):
        params.dataset("synthetic").max_frames
    with pytest.raises(UndeclaredParameter):
        params.to_dict()
    assert params.declared_values() == {"train": tiny_params_dict()["train"], "data.synthetic.max_words": 32,
                                        "eval.batch_size": 16}


def test_every_pipeline_step_reads_only_what_it_declares(tiny_data, tmp_path):
    """Each step function runs on a view restricted to its declared keys (as the command line gives it): any read of
    another key would raise. The workflow end-to-end tests run every step this way too."""
    from hcmi.pipeline import STEP
    from hcmi.paths import Layout
    from hcmi.steps import evaluate, summarize, train

    from conftest import linked_root, tiny_params_dict, tiny_params_from
    from hcmi.config import deep_merge

    _, layout = tiny_data
    params = tiny_params_from(deep_merge(tiny_params_dict(), {"train": {"epochs": 1}}))  # training runs, that is all
    run_layout = Layout(linked_root(tmp_path, layout))

    def view(step, **values):
        return params.restrict(STEP[step].declared_params(**values), step)

    train.run(view("train", dataset="synthetic", model="baseline", seed=0), run_layout, "synthetic", "baseline", 0)
    evaluate.run(view("evaluate", dataset="synthetic", model="baseline", seed=0), run_layout, "synthetic", "baseline",
                 0)
    summary = summarize.run(view("summarize", dataset="synthetic", model="baseline"), run_layout, "synthetic",
                            "baseline")
    assert summary["seeds"] == [0]
    declared = STEP["evaluate"].declared_params(dataset="synthetic", model="baseline", seed=0)
    narrower = params.restrict([k for k in declared if k != "eval"] + ["eval.batch_size"], "evaluate")
    with pytest.raises(UndeclaredParameter, match="eval.block_memory_mb|eval.dsl|eval.top_k"):
        evaluate.run(narrower, run_layout, "synthetic", "baseline", 0)


def test_checks_derive_their_datasets_and_variants_from_the_base_entries():
    params = load([REPO / "params.yaml"])
    levels = {(lv.check, lv.value): lv for lv in params.check_levels}
    assert levels[("denoise", 0.2)].default and levels[("denoise", 0.2)].dataset == "synthetic"
    derived = levels[("denoise", 0.5)]
    assert derived.dataset == "synthetic--denoise-0p5" and derived.models == ("hcmi", "hcmi-no-denoise")
    source = params.synthetic(derived.dataset)
    assert source.false_negative_rate == 0.5
    assert source.model_copy(update={"false_negative_rate": 0.2}) == params.synthetic()  # nothing else differs
    longer = levels[("length", 12.0)]
    assert longer.models == ("hcmi--length-12", "baseline--length-12") and longer.dataset == "synthetic"
    assert params.train_dict("hcmi--length-12") == {**params.train_dict("hcmi"), "epochs": 12.0}
    assert params.variant("hcmi--length-12") == params.variant("hcmi")
    assert params.variant("baseline--length-12") == params.variant("baseline")
    assert params.seeds_for("baseline--length-12") == params.get("seeds")
    # params.yaml itself is left as written: no derived entry is a key of the file
    assert "synthetic--denoise-0p5" not in yaml.safe_load((REPO / "params.yaml").read_text())["data"]


@pytest.mark.parametrize("ablation", ["hcmi-no-denoise", "hcmi-no-enhance"])
def test_the_length_check_with_an_ablation_reuses_hcmis_longer_runs_and_trains_only_the_ablation(ablation):
    """README, "Mechanism checks": the length check with an ablation in place of the baseline (`--config checks=...`)
    names HCMI's 12-epoch runs as the shipped check does, so after `mechanisms` only the ablation trains."""
    shipped = load([REPO / "params.yaml"])
    swapped = load([REPO / "params.yaml"], [f"checks.length.compare=[hcmi, {ablation}]", "checks.length.levels=[3, 12]"])
    new = set(swapped.check_runs()) - set(shipped.check_runs())
    assert new == {("synthetic", f"{ablation}--length-12", seed) for seed in swapped.get("ablation_seeds")}
    assert swapped.train_dict(f"{ablation}--length-12") == {**swapped.train_dict(ablation), "epochs": 12.0}


@pytest.mark.parametrize("setting, message", [
    ("checks.denoise.compare=[hcmi, hcmi-no-denoize]", "key 'checks.denoise.compare': 'hcmi-no-denoize' is not defined"),
    ("checks.length.levels=[3, 0]", "key 'checks.length.levels': 0.0 is not a valid train.epochs"),
    ("checks.enhance.levels=[0.0, 1.5]", "key 'checks.enhance.levels': 1.5 is not a valid "
                                         "data.synthetic.source.hard_negative_rate"),
    ("checks.enhance.condition=train.sampler", "key 'checks.enhance.condition': 'train.sampler' is not a number"),
    ("checks.enhance.condition=train.epochz", "key 'checks.enhance.condition': no parameter 'train.epochz'"),
    ("checks.denoise.condition=data.msvdd.source.seed", "key 'checks.denoise.condition': no entry data.msvdd"),
    ("checks.denoise.levels=[0.5, 0.2]", "key 'checks.denoise.levels': levels must be ascending"),
])
def test_a_bad_check_is_named(setting, message):
    with pytest.raises(ConfigError) as error:
        load([REPO / "params.yaml"], [setting])
    assert message in str(error.value)
