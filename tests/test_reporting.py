"""Report tables from result files: published figures beside ours on the same protocol, ablation verdicts against
the seed spread, missing shown as missing; a report rendered from fixture metrics."""

import yaml

from hcmi.files import write_json
from hcmi.paths import Layout
from hcmi.report.tables import DatasetResults, Summary, index_table, results_markdown, verdict

from conftest import tiny_params_dict


def summary(plain_by_seed, dsl_by_seed=None, std=0.5):
    def block(values):
        return sum(values) / len(values)

    dsl_by_seed = dsl_by_seed or {s: v + 5 for s, v in plain_by_seed.items()}
    return {"seeds": list(plain_by_seed),
            "mean": {"t2v": {"R1": block(list(plain_by_seed.values()))},
                     "t2v_dsl": {"R1": block(list(dsl_by_seed.values()))}},
            "std": {"t2v": {"R1": std}, "t2v_dsl": {"R1": std}},
            "per_seed": {str(s): {"t2v": {"R1": v}, "t2v_dsl": {"R1": dsl_by_seed[s]}, "counts": {"videos": 1000}}
                         for s, v in plain_by_seed.items()}}


def msrvtt_params(tmp_path):
    raw = tiny_params_dict()
    raw.update(datasets=["msrvtt"], models=["baseline", "hcmi", "hcmi-b16"], seeds=[0, 1], ablations=[])
    raw["backbone"] = {"name": "ViT-B-32-quickgelu", "pretrained": "openai"}
    raw["variants"]["hcmi-b16"] = {"backbone": {"name": "ViT-B-16-quickgelu"}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    layout = Layout(tmp_path / "data")
    write_json(layout.metrics("msrvtt", "baseline"), summary({0: 44.0, 1: 45.0}, {0: 49.0, 1: 50.0}))
    write_json(layout.metrics("msrvtt", "hcmi"), summary({0: 50.0, 1: 51.0}, {0: 54.0, 1: 55.0}))
    return params_file, layout


def test_published_figures_stand_beside_ours_on_the_same_protocol(tmp_path):
    params_file, layout = msrvtt_params(tmp_path)
    table = DatasetResults("msrvtt", layout.root, [params_file]).published_table()
    assert table.loc["hcmi", "protocol"] == "DSL" and table.loc["hcmi", "t2v R@1 (published)"] == "55.0"
    assert table.loc["hcmi", "t2v R@1 (ours)"] == "54.5 ± 0.5", "HCMI's figure (with DSL) beside our DSL result"
    assert "2204.03382" in table.loc["hcmi", "source"] and "VALOR" in table.loc["hcmi", "source"]
    assert table.loc["baseline", "protocol"] == "plain" and table.loc["baseline", "t2v R@1 (published)"] == "43.1"
    assert table.loc["baseline", "t2v R@1 (ours)"] == "44.5 ± 0.5", "CLIP4Clip's plain figure beside our plain one"
    assert "CLIP4Clip" in table.loc["baseline", "source"]
    assert table.loc["hcmi-b16", "t2v R@1 (ours)"] == "missing", "a run without results is shown as missing"
    assert table.loc["hcmi-b16", "backbone"] == "ViT-B-16-quickgelu"

    index = index_table(layout.root, [params_file]).set_index("model")
    assert index.loc["baseline", "published"] == "43.1 (plain)" and index.loc["hcmi", "published"] == "55.0 (DSL)"
    assert index.loc["hcmi", "with DSL (ours)"] == "54.5 ± 0.5"
    assert index.loc["hcmi-b16", "t2v R@1 (ours)"] == "missing"


def test_a_dataset_nobody_published_figures_for_has_no_published_table(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    assert DatasetResults("synthetic", tmp_path / "data", [params_file]).published_table() is None


def test_ablation_verdicts_weigh_the_gain_against_the_seed_spread():
    full = Summary(summary({0: 60.0, 1: 62.0, 2: 64.0}, std=2.0))
    clearly_worse = Summary(summary({0: 50.0, 1: 51.0, 2: 52.0}, std=1.0))
    about_equal = Summary(summary({0: 61.0, 1: 62.5, 2: 63.0}, std=1.0))
    better = Summary(summary({0: 70.0, 1: 71.0, 2: 72.0}, std=1.0))
    one_seed = Summary(summary({0: 55.0}, std=0.0))
    assert verdict(full, clearly_worse).startswith("helps: +11.0 > spread 2.0")
    assert verdict(full, about_equal).startswith("no clear effect")
    assert verdict(full, better).startswith("hurts")
    assert "one seed" in verdict(full, one_seed)


def test_results_markdown_names_the_commit_and_the_verdicts(tmp_path):
    raw = tiny_params_dict()
    raw.update(seeds=[0, 1], ablations=["hcmi-no-enhance"], ablation_seeds=[0, 1])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    layout = Layout(tmp_path / "data")
    for model, values in (("baseline", {0: 30.0, 1: 31.0}), ("hcmi", {0: 60.0, 1: 61.0}),
                          ("hcmi-no-enhance", {0: 59.0, 1: 62.0})):
        content = summary(values)
        for result in content["per_seed"].values():
            result["model_provenance"] = {"code": {"git_commit": "abcdef1234567", "git_dirty": False}}
        write_json(layout.metrics("synthetic", model), content)
    text = results_markdown(layout.root, [params_file])
    assert "from commit(s) abcdef1234" in text
    assert "| hcmi | 2 | 60.5 ± 0.5 |" in text
    assert "| synthetic | hcmi-no-enhance | 60.5 ± 0.5 | 60.5 ± 0.5 | no clear effect" in text


def test_a_report_renders_from_fixture_metrics_with_the_dsl_pairing(tmp_path):
    from hcmi.report.render import notebook_path, render

    params_file, layout = msrvtt_params(tmp_path)
    html = render(notebook_path("report.ipynb"), {"dataset": "msrvtt", "data_root": str(layout.root),
                                                   "params_files": [str(params_file)], "declared": None},
                  layout.report("msrvtt")).read_text()
    assert "Against the published figures" in html and "same inference protocol" in html
    assert "54.5 ± 0.5" in html and "55.0" in html and "DSL" in html
    assert "results = tables.DatasetResults" not in html, "code cells are hidden"
