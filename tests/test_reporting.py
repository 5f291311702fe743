"""Report tables from result files: published figures beside ours on the same protocol, verdicts from paired
differences with their bootstrap intervals (checked against hand computations), missing shown as missing; reports
rendered from fixture metrics."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from hcmi.files import write_json
from hcmi.paths import Layout
from hcmi.report import paired
from hcmi.report.tables import DatasetResults, index_table, results_markdown

from conftest import tiny_params_dict

MARGIN = 3.0  # points: the equivalence margin of these tests (the shipped one is params.yaml's report section)


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


def test_the_paired_difference_and_its_interval_match_a_hand_computation():
    """One seed, four queries, hits 1,0,1,1 against 0,0,1,0: differences 1,0,0,1, mean 0.5, sample variance 1/3, so
    the standard error is sqrt(1/3 / 4) = 0.2887 with 3 degrees of freedom, and the 95 % interval is
    0.5 -/+ t(0.975, 3) x 0.2887 = 0.5 -/+ 3.1824 x 0.2887."""
    result = paired.paired_difference([[1, 0, 1, 1]], [[0, 0, 1, 0]])
    se = (1 / 12) ** 0.5
    assert result["difference"] == 0.5 and result["df"] == pytest.approx(3.0)
    assert result["se"] == pytest.approx(se)
    assert (result["low"], result["high"]) == pytest.approx((0.5 - 3.182446 * se, 0.5 + 3.182446 * se))
    assert paired.two_sided_t(0.95, float("inf")) == pytest.approx(1.959964) and result["family"] == 1
    assert result["detectable"] == pytest.approx((3.182446 + 0.978472) * se)  # t(0.975, 3) + t(0.8, 3)
    assert (result["family_low"], result["family_high"]) == (result["low"], result["high"]), "a family of one"
    assert paired.verdict(result, margin=0.1) == "undetermined", "an interval that covers 0 and passes the margin"
    assert paired.verdict(result, margin=2.0) == "equivalent", "one inside the margin"


def test_the_report_tables_load_without_scipy_stats():
    """Every report process and every report notebook's kernel imports the tables: the t quantiles come from
    scipy.special (scipy.stats costs about a second of start-up each) and equal scipy.stats' own."""
    code = ("import sys, hcmi.report.tables; from hcmi.report import paired; "
            "print('scipy.stats' in sys.modules, repr(paired.t_quantile(0.975, 3.0)), repr(paired.t_quantile(0.8, 7.5)))")
    loaded, t975, t80 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.split()
    from scipy import stats

    assert loaded == "False"
    assert (float(t975), float(t80)) == (stats.t.ppf(0.975, 3.0), stats.t.ppf(0.8, 7.5))


def test_the_variance_parts_of_seeds_crossed_with_queries_match_a_hand_computation():
    """Two seeds x two queries, differences [[3, 0], [1, 0]]: seed means 1.5, 0.5 (V_seeds = 0.5 / 2 = 0.25), query
    means 2, 0 (V_queries = 2 x (1 + 1) / 4 = 1), residuals [[.5, -.5], [-.5, .5]] (V_residual = (0.25 + 0.25) /
    (2 x 1) = 0.25): variance 0.25 + 1 - 0.25 = 1 with 1 / (0.25^2 + 1 + 0.25^2) degrees of freedom; a NaN query (no
    twin) counts in neither model."""
    result = paired.paired_difference([[3, 0], [1, 0]], [[0, 0], [0, 0]])
    assert (result["v_seeds"], result["v_queries"], result["v_residual"]) == pytest.approx((0.25, 1.0, 0.25))
    assert result["se"] == pytest.approx(1.0) and result["df"] == pytest.approx(1 / 1.125)
    result = paired.paired_difference([[1, 5, np.nan], [3, 5, 1]], [[0, 5, 0], [0, 5, np.nan]])
    assert result["queries"] == 2 and result["per_seed"] == [0.5, 1.5]


def test_two_seeds_that_agree_say_little_about_a_third():
    """Two seeds of one query each, differences 1 and 3: standard error sqrt(var(1, 3) / 2) = 1 with one degree of
    freedom, so the 95 % interval is 2 -/+ 12.71: a bootstrap over the two seeds would have said [0.6, 3.4]."""
    result = paired.paired_difference([[1], [3]], [[0], [0]])
    assert result["difference"] == 2.0 and result["se"] == pytest.approx(1.0) and result["df"] == pytest.approx(1.0)
    assert (result["low"], result["high"]) == pytest.approx((2 - 12.7062, 2 + 12.7062), abs=1e-3)
    assert paired.verdict(result, MARGIN) == "undetermined"
    with pytest.raises(ValueError, match="one seed and one cluster"):
        paired.paired_difference([[1, 1]], [[0, 0]], clusters=["v", "v"])


def test_every_seed_scores_the_same_queries_so_their_spread_counts_once():
    """Three seeds that score every query alike: the queries' spread is not averaged away by the seeds, so the
    standard error is that of one seed's queries (sd / sqrt(queries)), not sd / sqrt(3 x queries)."""
    rng = np.random.default_rng(5)
    outcomes = np.where(rng.random(300) < 0.4, 100.0, 0.0)
    result = paired.paired_difference(np.tile(outcomes, (3, 1)), np.zeros((3, 300)))
    assert result["se"] == pytest.approx(outcomes.std(ddof=1) / np.sqrt(300))


def test_the_queries_of_one_cluster_count_once():
    """Every caption asked twice (two queries of one video that stand or fall together): with their clusters the
    interval is that of the single captions; counted as independent queries (one seed's) it would narrow by
    sqrt(2)."""
    rng = np.random.default_rng(6)
    first, second = np.where(rng.random((3, 200)) < 0.6, 100.0, 0.0), np.where(rng.random((3, 200)) < 0.5, 100.0, 0.0)
    single = paired.paired_difference(first, second)
    twice = paired.paired_difference(np.repeat(first, 2, axis=1), np.repeat(second, 2, axis=1),
                                     clusters=np.repeat([f"v{i}" for i in range(200)], 2))
    assert twice["queries"] == 400 and twice["clusters"] == 200
    assert twice["se"] == pytest.approx(single["se"]) and twice["df"] == pytest.approx(single["df"])
    one_seed = paired.paired_difference(first[:1], second[:1])
    naive = paired.paired_difference(np.repeat(first[:1], 2, axis=1), np.repeat(second[:1], 2, axis=1))
    assert naive["se"] == pytest.approx(one_seed["se"] / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("seed_sd, query_sd, residual_sd", [(8.0, 10.0, 20.0), (0.0, 42.0, 40.0)])
def test_the_95_interval_covers_the_true_difference_95_times_in_100(seed_sd, query_sd, residual_sd):
    """Simulated reruns (3 seeds x 300 queries, true difference 0) where the seeds' spread dominates, or the queries':
    the 95 % interval holds the truth in close to 95 % of them (a normal interval over 3 seeds: about 81 %; the
    bootstrap that drew seeds, and queries anew for each seed, covered it 82 % and 88 % of the time)."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(1000):
        diff = (seed_sd * rng.standard_normal((3, 1)) + query_sd * rng.standard_normal((1, 300))
                + residual_sd * rng.standard_normal((3, 300)))
        result = paired.paired_difference(diff, np.zeros_like(diff))
        covered += result["low"] <= 0 <= result["high"]
    assert 0.91 <= covered / 1000 <= 0.98


def test_a_clear_gain_helps_a_clear_loss_hurts_and_noise_is_undetermined():
    rng = np.random.default_rng(1)
    base = (rng.random((3, 200)) < 0.4) * 100.0
    gain = np.maximum(base, (rng.random((3, 200)) < 0.3) * 100.0)  # every hit kept, about 18 points more
    gain_result = paired.paired_difference(gain, base)
    assert paired.verdict(gain_result, MARGIN) == "helps" and gain_result["low"] > 0
    assert paired.verdict(paired.paired_difference(base, gain), MARGIN) == "hurts"
    noise = paired.paired_difference(base, base[:, rng.permutation(200)])  # the same hit rate, other queries
    assert noise["low"] < -MARGIN and noise["high"] > MARGIN and paired.verdict(noise, MARGIN) == "undetermined"
    assert paired.paired_difference(gain, base) == gain_result, "the same results give the same interval"


def test_a_family_interval_holds_for_all_comparisons_at_once():
    """With many queries t is close to normal: the family interval of 18 comparisons is wider than the
    95 % one by z(1 - 0.05 / 36) / z(0.975) = 2.99 / 1.96. A gain of 55 against 30 discordant queries of 400 lies
    2.7 standard errors above 0: a finding for one comparison alone, none among 18 (the family bound is below 0)."""
    assert paired.family_level(0.95, 18) == pytest.approx(1 - 0.05 / 18)
    assert paired.two_sided_t(paired.family_level(0.95, 18), float("inf")) == pytest.approx(2.9913, abs=1e-3)
    rng = np.random.default_rng(3)
    wide = paired.paired_difference(rng.random((1, 4000)) < 0.5, rng.random((1, 4000)) < 0.5, family=18)
    ratio = (wide["family_high"] - wide["family_low"]) / (wide["high"] - wide["low"])
    assert ratio == pytest.approx(2.9913 / 1.959964, rel=0.05)
    first = np.zeros((1, 400))
    second = np.zeros((1, 400))
    first[0, :55] = 100.0  # 55 queries only the first model gets right,
    second[0, 55:85] = 100.0  # 30 only the second
    alone = paired.paired_difference(first, second)
    among = paired.paired_difference(first, second, family=18)
    assert alone["difference"] == among["difference"] == 6.25 and (alone["low"], alone["high"]) == (
        among["low"], among["high"])
    assert alone["low"] > 0 and paired.verdict(alone, MARGIN) == "helps"
    assert among["family_low"] < 0 < among["family_high"] and paired.verdict(among, MARGIN) == "undetermined"
    assert among["detectable"] > alone["detectable"]
    assert "all at once [" in paired.describe(among) and "all at once" not in paired.describe(alone)


def write_rankings(layout, model, seed, hits, twins=None, clusters=None):
    rows = len(hits)
    table = pd.DataFrame({"caption_id": [f"q{i}" for i in range(rows)], "text": "",
                          "video_id": [f"v{i}" for i in range(rows)],
                          "rank": [1 if hit else 2 for hit in hits],
                          "twin_outcome": twins if twins is not None else [np.nan] * rows,
                          "twin_kind": ["order" if i % 2 else "binding" for i in range(rows)],
                          "top_videos": [[] for _ in range(rows)], "top_scores": [[] for _ in range(rows)]})
    if clusters is not None:
        table["cluster"] = clusters
    path = layout.rankings("synthetic", model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path)


def test_a_query_cluster_is_its_twin_pair_else_its_video_and_the_comparisons_count_clusters(tmp_path):
    from hcmi.report.tables import _degrees, comparison_rows, comparison_table
    from hcmi.data.splits import RetrievalSplit

    captions = pd.DataFrame({"video_id": ["a", "b", "c", "c"], "group_id": ["pair-0", "pair-0", None, None],
                             "caption_id": ["a#0", "b#0", "c#0", "c#1"], "text": ["x"] * 4, "split": ["test"] * 4})
    split = RetrievalSplit(captions, {"a", "b", "c"}, "test")
    assert list(split.query_clusters) == ["pair-0", "pair-0", "c", "c"]
    split.captions = split.captions.drop(columns="group_id")
    assert list(split.query_clusters) == ["a", "b", "c", "c"]

    raw = tiny_params_dict()
    raw.update(seeds=[0, 1], ablations=[], ablation_seeds=[0, 1])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    layout = Layout(tmp_path / "data")
    rng = np.random.default_rng(2)
    for seed in (0, 1):
        write_rankings(layout, "hcmi", seed, rng.random(40) < 0.6, clusters=[f"pair-{i // 2}" for i in range(40)])
        write_rankings(layout, "baseline", seed, rng.random(40) < 0.3, clusters=[f"pair-{i // 2}" for i in range(40)])
    rows = comparison_rows(layout.root, [params_file])
    first = rows[(rows["second"] == "baseline") & (rows["measure"] == "t2v R@1")].iloc[0]
    assert (first["seeds"], first["queries"], first["clusters"]) == (2, 40, 20)
    shown = comparison_table(rows).loc[("synthetic", "hcmi vs baseline", "t2v R@1")]
    assert shown["seeds x queries (clusters)"] == "2 x 40 (20)" and shown["df"] == _degrees(first["df"])
    assert (_degrees(float("inf")), _degrees(3.14), _degrees(249.6)) == ("∞", "3.1", "250")


def test_results_markdown_names_the_commit_and_the_paired_verdicts(tmp_path):
    raw = tiny_params_dict()
    raw.update(seeds=[0, 1], ablations=["hcmi-no-enhance"], ablation_seeds=[0, 1])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    layout = Layout(tmp_path / "data")
    for model, values in (("baseline", {0: 30.0, 1: 31.0}), ("hcmi", {0: 60.0, 1: 61.0}),
                          ("hcmi-no-enhance", {0: 59.0, 1: 62.0})):
        content = summary(values)
        made = {seed: {"model_provenance": {"code": {"git_commit": "abcdef1234567", "git_dirty": False}}}
                for seed in content["per_seed"]}
        write_json(layout.metrics("synthetic", model), content)
        write_json(layout.provenance("synthetic", model), {"per_seed": made})
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        hcmi = rng.random(100) < 0.6
        write_rankings(layout, "hcmi", seed, hcmi, twins=np.where(rng.random(100) < 0.9, 100.0, 0.0))
        write_rankings(layout, "baseline", seed, hcmi & (rng.random(100) < 0.5),
                       twins=np.where(rng.random(100) < 0.5, 100.0, 0.0))
        write_rankings(layout, "hcmi-no-enhance", seed, hcmi[rng.permutation(100)])
    text = results_markdown(layout.root, [params_file])
    assert "from commit(s) abcdef1234" in text
    assert "| detectable | df | per seed |" in text
    assert "| hcmi | 2 | 60.5 ± 0.5 |" in text
    lines = {tuple(cell.strip() for cell in line.split("|")[2:4]): line for line in text.splitlines()
             if line.startswith("| synthetic |")}
    assert "| helps [+" in lines[("hcmi vs baseline", "t2v R@1")]
    assert "| helps [+" in lines[("hcmi vs baseline", "hard pairs: order")]
    assert "| undetermined [-" in lines[("hcmi vs hcmi-no-enhance (the removed component)", "t2v R@1")]
    assert "seeds would determine it" in lines[("hcmi vs hcmi-no-enhance (the removed component)", "t2v R@1")] \
        or f"more than {paired.MAX_SEEDS} seeds" in lines[("hcmi vs hcmi-no-enhance (the removed component)",
                                                             "t2v R@1")]
    assert "*equivalent* (blue) when it lies inside ±3 points" in text
    assert ("hcmi vs hcmi-no-enhance (the removed component)", "hard pairs: order") not in lines, \
        "an outcome the ablation's results lack is not compared"


def test_a_report_renders_from_fixture_metrics_with_the_dsl_pairing(tmp_path):
    from hcmi.report.render import notebook_path, render

    params_file, layout = msrvtt_params(tmp_path)
    html = render(notebook_path("report.ipynb"), {"dataset": "msrvtt", "data_root": str(layout.root),
                                                   "params_files": [str(params_file)], "declared": None},
                  layout.report("msrvtt")).read_text()
    assert "Against the published figures" in html and "same inference protocol" in html
    assert "54.5 ± 0.5" in html and "55.0" in html and "DSL" in html
    assert "results = tables.DatasetResults" not in html, "code cells are hidden"


def test_the_denoising_table_averages_each_run_then_the_seeds():
    """Latent positives per model: each seed's mean over its training rows (NaN precision of a batch without latent
    positives left out), then mean ± std over seeds; a model without latent positives has no row."""
    from hcmi.report.tables import denoising_rows

    def run(seed, positives, precision, recall):
        return pd.DataFrame({"seed": seed, "log": "train", "step": range(len(positives)),
                             "latent_positives": positives, "latent_precision": precision,
                             "latent_recall": recall})

    hcmi = pd.concat([run(0, [0.5, 0.25], [0.5, np.nan], [0.2, 0.4]), run(1, [0.5, 0.5], [0.7, 0.9], [0.4, 0.6]),
                      pd.DataFrame({"seed": [0], "log": ["val"], "step": [2], "R1": [50.0]})])
    baseline = run(0, [0.0, 0.0], [np.nan, np.nan], [0.0, 0.0])
    table = denoising_rows({"hcmi": hcmi, "baseline": baseline})
    assert list(table.index) == ["hcmi"]
    row = table.loc["hcmi"]
    assert row["seeds"] == 2
    assert row["precision (%)"] == f"65.0 ± {np.std([50.0, 80.0], ddof=1):.1f}"  # seed 0: 50 (NaN left out), 1: 80
    assert row["recall (%)"] == f"40.0 ± {np.std([30.0, 50.0], ddof=1):.1f}"
    assert row["latent positives per item"] == f"0.44 ± {np.std([0.375, 0.5], ddof=1):.2f}"


def test_the_forest_plot_keeps_each_panels_axis_labels_apart():
    """Three panels of comparisons, one with a very wide family interval: no tick label or axis label of one panel
    runs into the next panel's, at the width the reports render it."""
    import matplotlib

    matplotlib.use("Agg")
    from hcmi.report.tables import comparison_figure

    rows = []
    comparisons = ["hcmi vs baseline", "hcmi vs zero-shot"] + [
        f"hcmi vs hcmi-no-{part} (the removed component)" for part in ("frame-word", "clip-phrase", "denoise", "enhance")]
    for measure, spread in (("t2v R@1", 3.0), ("hard pairs: order", 40.5), ("hard pairs: binding", 8.4)):
        for k, comparison in enumerate(comparisons):
            difference = 20.0 - 7 * k
            rows.append({"dataset": "synthetic", "comparison": comparison, "measure": measure,
                         "difference": difference, "low": difference - 2.5, "high": difference + 2.5,
                         "family_low": difference - spread * 3.3, "family_high": difference + spread * 3.3,
                         "verdict": "helps" if k == 0 else "undetermined"})
    fig = comparison_figure(pd.DataFrame(rows))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        low, high = sorted(ax.get_xlim())
        shown = [label for tick, label in zip(ax.get_xticks(), ax.get_xticklabels())
                 if label.get_text() and low <= tick <= high]  # ticks beyond the limits are not drawn
        texts = shown + [ax.xaxis.label, ax.title]
        boxes.append([text.get_window_extent(renderer) for text in texts if text.get_visible()])
    for left, right in zip(boxes, boxes[1:]):
        assert max(box.x1 for box in left) < min(box.x0 for box in right), "labels of neighbouring panels overlap"
    for panel in boxes:  # within a panel, the tick labels keep apart too
        ticks = sorted(panel[:-2], key=lambda box: box.x0)
        assert all(a.x1 < b.x0 for a, b in zip(ticks, ticks[1:]))
    assert [ax.get_xlabel() for ax in fig.axes] == ["difference (points)"] * 3


def test_the_verdict_rule_on_hand_made_intervals():
    """helps / hurts exclude 0; inside the margin is equivalent (a precise zero); covering 0 and passing the margin
    is undetermined (no information), whichever side it passes."""
    def judged(low, high):
        return paired.verdict({"family_low": low, "family_high": high}, MARGIN)

    assert judged(0.4, 9.0) == "helps" and judged(-9.0, -0.1) == "hurts"
    assert judged(-0.7, 0.7) == "equivalent" and judged(-2.9, 2.9) == "equivalent"
    assert judged(-40.5, 40.3) == "undetermined" and judged(-1.0, 3.5) == "undetermined"
    assert judged(-3.0, 1.0) == "undetermined", "the margin itself is outside it"
    assert judged(0.1, 2.0) == "helps", "a small effect that excludes 0 still helps"


def test_the_seeds_that_would_determine_a_comparison_match_a_hand_computation():
    """Only the seed part varies (V_seeds 1 at 3 seeds, no query part): at n seeds the variance is 3 / n with n - 1
    degrees of freedom, so the interval around +0.5 is 0.5 -/+ t(0.975, n - 1) sqrt(3 / n): n = 4 gives 3.18 x 0.866
    = 2.76 (reaching 3.26, past the margin of 3), n = 5 gives 2.78 x 0.775 = 2.15 (inside: equivalent). A query part
    whose interval alone is wider than the margin around 0 is never determined by seeds."""
    result = {"difference": 0.5, "v_seeds": 1.0, "v_queries": 0.0, "v_residual": 0.0, "seeds": 3, "clusters": 1000,
              "family_level": 0.95}
    assert paired.seeds_to_determine(result, MARGIN) == 5
    wide_queries = {**result, "difference": 0.0, "v_seeds": 0.1, "v_queries": 4.0}
    assert paired.seeds_to_determine(wide_queries, MARGIN) is None
    made = paired.paired_difference([[1, 0, 1, 0] * 50, [0, 1, 1, 0] * 50, [1, 1, 0, 0] * 50],
                                    [[0, 0, 1, 0] * 50, [0, 0, 1, 1] * 50, [1, 0, 1, 0] * 50])
    needed = paired.seeds_to_determine(made, 0.3)
    assert paired.verdict(made, 0.3) == "undetermined" and needed is not None and needed > made["seeds"]
