"""Report tables from result files: published figures beside ours, missing shown as missing."""

import yaml

from hcmi.files import write_json
from hcmi.paths import Layout
from hcmi.reporting import DatasetResults, index_table

from conftest import tiny_params_dict


def summary(r1_by_seed):
    values = list(r1_by_seed.values())
    mean = sum(values) / len(values)
    return {"seeds": list(r1_by_seed), "mean": {"t2v": {"R1": mean}}, "std": {"t2v": {"R1": 0.5}},
            "per_seed": {str(s): {"t2v": {"R1": v}, "counts": {"videos": 1000}} for s, v in r1_by_seed.items()}}


def test_published_figures_stand_beside_ours_with_their_sources(tmp_path):
    raw = tiny_params_dict()
    raw.update(datasets=["msrvtt"], models=["baseline", "hcmi", "hcmi-b16"], seeds=[0, 1], ablations=[])
    raw["backbone"] = {"name": "ViT-B-32-quickgelu", "pretrained": "openai"}
    raw["variants"]["hcmi-b16"] = {"backbone": {"name": "ViT-B-16-quickgelu"}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    layout = Layout(tmp_path / "data")
    write_json(layout.metrics("msrvtt", "baseline"), summary({0: 44.0, 1: 45.0}))
    write_json(layout.metrics("msrvtt", "hcmi"), summary({0: 54.0, 1: 55.0}))

    table = DatasetResults("msrvtt", layout.root, [params_file]).published_table()
    assert table.loc["baseline", "t2v R@1 (published)"] == "43.1" and "CLIP4Clip" in table.loc["baseline", "source"]
    assert table.loc["hcmi", "t2v R@1 (published)"] == "55.0" and "2204.03382" in table.loc["hcmi", "source"]
    assert table.loc["baseline", "t2v R@1 (ours)"] == "44.5 ± 0.5"
    assert table.loc["hcmi-b16", "t2v R@1 (ours)"] == "missing", "a run without results is shown as missing"
    assert table.loc["hcmi-b16", "backbone"] == "ViT-B-16-quickgelu"

    index = index_table(layout.root, [params_file]).set_index("model")
    assert index.loc["baseline", "t2v R@1 (published)"] == "43.1"
    assert index.loc["hcmi-b16", "t2v R@1 (ours)"] == "missing"
