"""The mechanisms at the level of one batch (docs/method.md): on planted batches, does the two-view rule mark what it
should and the triplet push on what it should; and the probe that counts both on real training batches."""

import numpy as np
import pytest
import torch

from hcmi.losses import latent_positives, retrieval_loss, symmetric_info_nce, triplet_loss, view_similarities
from hcmi.probe import pair_classes


def _rep(frames):
    frames = torch.nn.functional.normalize(frames, dim=-1)
    return {"frame": frames, "frame_mask": torch.ones(frames.shape[:2], dtype=torch.bool),
            "video": torch.nn.functional.normalize(frames.mean(1), dim=-1)}


def _planted_batch(view_noise: float, copy_noise: float, n: int = 16, seed: int = 0):
    """n videos of 4 segments; video 1 a copy of video 0 (its frames with `copy_noise`); every second view the video
    with `view_noise`."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.randn(n, 4, 32, generator=generator)
    first[1] = first[0] + copy_noise * torch.randn(4, 32, generator=generator)
    second = first + view_noise * torch.randn(n, 4, 32, generator=generator)
    return _rep(first), _rep(second)


def test_the_two_view_rule_marks_a_planted_copy_closer_than_the_second_view_and_no_true_negative():
    first, second = _planted_batch(view_noise=0.5, copy_noise=0.2)
    latent = latent_positives(*view_similarities(first, second, "frames"))
    assert latent[0, 1] and latent[1, 0]
    assert latent.sum() == 2, "no unrelated video is closer than a video's own second view"


def test_the_two_view_rule_misses_a_copy_farther_than_a_near_identical_second_view():
    """What the rule can mark is set by how far a video's two views lie apart: a second view drawn from adjacent
    frames is nearly the video itself, so a copy that differs by more (placement, background) is never marked."""
    first, second = _planted_batch(view_noise=0.05, copy_noise=0.5)
    latent = latent_positives(*view_similarities(first, second, "frames"))
    assert not latent[0, 1] and not latent[1, 0] and latent.sum() == 0


def test_the_triplet_pushes_on_the_twin_where_it_is_the_hardest_negative_and_never_on_a_latent_positive():
    # text 0's video is 0; video 1 is a copy (flagged latent positive), video 2 its twin, video 3 unrelated
    sim = torch.tensor([[0.80, 0.82, 0.75, 0.10],
                        [0.81, 0.80, 0.74, 0.12],
                        [0.70, 0.69, 0.80, 0.05],
                        [0.10, 0.12, 0.05, 0.90]], requires_grad=True)
    latent = torch.zeros(4, 4, dtype=torch.bool)
    latent[0, 1] = latent[1, 0] = True
    triplet_loss(sim, 0.2, latent).backward()
    grad = sim.grad
    assert grad[0, 2] > 0 and grad[0, 1] == 0 and grad[0, 3] == 0, "text 0 pushes its twin, not its copy"
    assert grad[0, 0] < 0
    sim.grad = None
    triplet_loss(sim, 0.2).backward()
    assert sim.grad[0, 1] > 0, "unflagged, the copy is text 0's hardest negative"


def test_at_a_learned_logit_scale_infonce_already_pushes_hardest_on_the_twin():
    """The triplet adds to the same negative that InfoNCE pushes hardest, at a share that falls as the scale grows."""
    sim = torch.tensor([[0.80, 0.75, 0.40, 0.30], [0.70, 0.85, 0.30, 0.20],
                        [0.30, 0.20, 0.90, 0.60], [0.20, 0.30, 0.65, 0.85]], requires_grad=True)
    shares = []
    for scale in (5.0, 23.0):
        sim.grad = None
        symmetric_info_nce(sim, torch.tensor(scale)).backward()
        infonce = sim.grad.clone()
        sim.grad = None
        triplet_loss(sim, 0.2).backward()
        triplet = sim.grad.clone()
        off = ~torch.eye(4, dtype=torch.bool)
        active = (triplet.masked_fill(~off, 0) > 0).any(1)  # rows whose margin is violated
        assert active.sum() >= 2
        pushed = infonce.masked_fill(~off, -1).argmax(1), triplet.masked_fill(~off, -1).argmax(1)
        assert (pushed[0][active] == pushed[1][active]).all()
        shares.append(float(triplet[0, 1] / infonce[0, 1]))
    assert shares[1] < shares[0]


def test_retrieval_loss_keeps_a_marked_copy_out_of_the_triplet():
    from hcmi.config import model_params

    from conftest import tiny_params_dict

    objective = model_params(tiny_params_dict()["model"])
    first, second = _planted_batch(view_noise=0.5, copy_noise=0.2, n=4)
    sim = torch.eye(4) * 0.5 + 0.3
    sim[0, 1] = 0.9  # text 0 scores the copy above its own video
    result = retrieval_loss({"video_sentence": sim}, {"video_sentence": 1.0}, torch.tensor(10.0),
                            objective=objective, video=first, second_view=second)
    assert result.latent[0, 1]
    assert result.parts["triplet"] == pytest.approx(float(triplet_loss(sim, objective.enhance.margin, result.latent)))
    assert result.parts["triplet"] < float(triplet_loss(sim, objective.enhance.margin))


def test_pair_classes_name_what_each_video_is_to_another():
    ids = ["a", "b", "c", "d", "e"]
    contents = ["x", "x", "y", "z", "w"]
    twins = ["c", None, "a", None, None]  # a's binding twin is c
    kinds = ["binding", None, "binding", None, None]
    groups = ["f1", "f1", "f1", "f2", "f1"]
    classes = pair_classes(ids, contents, twins, kinds, groups)
    assert classes[0, 1] == "copy" and classes[0, 2] == "binding" and classes[2, 0] == "binding"
    assert classes[1, 2] == "family" and classes[0, 3] == "other" and classes[0, 0] == "self"
    assert classes[4, 0] == "family"


def test_the_probe_counts_every_pair_of_real_batches_once(tiny_data):
    from hcmi.config import model_params
    from hcmi.model import create_backbone
    from hcmi.model.factory import build_model
    from hcmi.probe import CLASSES, probe
    from hcmi.weights import load_backbone_weights

    params, layout = tiny_data
    backbone_cfg = params.backbone_dict("hcmi")
    backbone = create_backbone(backbone_cfg["name"], load_backbone_weights(
        backbone_cfg["name"], backbone_cfg["pretrained"], layout.weights()))
    model = build_model(model_params(params.variant_dict("hcmi")), backbone).eval()
    result = probe(model, layout.annotations("synthetic"), layout.frames("synthetic", "train"), "synthetic", 0,
                   params.dataset("synthetic").max_words, 16, batches=3)
    assert result["batches"] == 3
    assert sum(result["pairs"].values()) + result["same_video_pairs"] == 3 * 16 * 15
    assert set(result["pairs"]) <= set(CLASSES) and result["pairs"]["copy"] > 0
    if result["flag_share"]:
        assert sum(result["flag_share"].values()) == pytest.approx(1.0)
        assert result["precision"] == pytest.approx(result["flag_share"].get("copy", 0.0))
    assert sum(result["hardest_t2v"].values()) == pytest.approx(1.0)
    assert np.isfinite(result["triplet_to_infonce_gradient_median"])


def _write_rankings(layout, dataset, model, seed, hits):
    import pandas as pd

    rows = len(hits)
    table = pd.DataFrame({"caption_id": [f"q{i}" for i in range(rows)], "text": "",
                          "video_id": [f"v{i}" for i in range(rows)], "rank": [1 if hit else 2 for hit in hits],
                          "twin_outcome": [np.nan] * rows, "twin_kind": [None] * rows,
                          "top_videos": [[] for _ in range(rows)], "top_scores": [[] for _ in range(rows)],
                          "cluster": [f"c{i}" for i in range(rows)]})
    path = layout.rankings(dataset, model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path)


def test_the_checks_report_pairs_each_level_on_its_own_runs_and_says_the_four_verdicts(tmp_path):
    import yaml

    from hcmi.paths import Layout
    from hcmi.report.mechanisms import check_figure, check_rows, mechanisms_markdown
    from hcmi.steps.readme import CHECKS_END, CHECKS_START, END, START, replace_results

    from conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw.update(seeds=[0, 1], ablations=["hcmi-no-enhance"], ablation_seeds=[0, 1],
               checks={"enhance": {"compare": ["hcmi", "hcmi-no-enhance"],
                                   "condition": "data.synthetic.source.hard_negative_rate", "levels": [0.0, 0.5]}})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    layout = Layout(tmp_path / "data")
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        base = rng.random(400) < 0.4
        # at the default level (0.5: the default run's own dataset) the component adds hits; at 0 it changes none
        _write_rankings(layout, "synthetic", "hcmi", seed, base | (rng.random(400) < 0.3))
        _write_rankings(layout, "synthetic", "hcmi-no-enhance", seed, base)
        _write_rankings(layout, "synthetic--enhance-0", "hcmi", seed, base)
        _write_rankings(layout, "synthetic--enhance-0", "hcmi-no-enhance", seed, base)
    from hcmi.config import load

    rows = check_rows(load([params_file]), layout)
    by_level = {row["level"]: row for row in rows.to_dict("records")}
    assert set(by_level) == {0.0, 0.5} and by_level[0.5]["default"] and not by_level[0.0]["default"]
    assert by_level[0.5]["dataset"] == "synthetic" and by_level[0.0]["dataset"] == "synthetic--enhance-0"
    assert by_level[0.5]["verdict"] == "helps" and by_level[0.0]["verdict"] == "equivalent"
    assert by_level[0.0]["difference"] == 0.0 and all(row["family"] == 2 for row in by_level.values())
    assert check_figure(rows) is not None
    text = mechanisms_markdown(layout.root, [params_file])
    assert "#### enhance: hcmi - hcmi-no-enhance against `data.synthetic.source.hard_negative_rate`" in text
    assert "| 0.5 (default) | t2v R@1 |" in text and "| helps [+" in text and "| equivalent [" in text
    readme = f"intro\n{START}\nold\n{END}\nmiddle\n{CHECKS_START}\nold checks\n{CHECKS_END}\nend\n"
    written = replace_results(replace_results(readme, "new"), text, CHECKS_START, CHECKS_END)
    assert "old" not in written and "#### enhance" in written and written.endswith("end\n")
