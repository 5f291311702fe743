"""hcmi sync's plan: which DVC stages Snakemake may consider done, and which must re-run."""

from hcmi.steps.sync import plan


def test_changed_stages_and_everything_downstream_are_not_marked_done():
    outputs = {"download": ["raw"], "sample": ["frames"], "train": ["model"], "evaluate": ["metrics"],
               "report": ["html"]}
    upstream = {"download": set(), "sample": {"download"}, "train": {"sample", "download"},
                "evaluate": {"train", "sample", "download"}, "report": {"evaluate", "train", "sample", "download"}}
    clean, rerun = plan(outputs, upstream, changed={"train": [{"changed params": {"train.lr": "x"}}]})
    assert clean == ["download", "sample"]
    assert rerun == ["train"]
    clean, rerun = plan(outputs, upstream, changed={})
    assert clean == list(outputs) and rerun == []
