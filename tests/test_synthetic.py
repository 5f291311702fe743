import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hcmi.config import SyntheticSource
from hcmi.data import synthetic, videos
from hcmi.data.annotations import parse
from hcmi.data.frames import Sampling, sample_split
from hcmi.files import sha256sum


def small_source(**changes):
    values = dict(seed=5, n_train=12, n_val=4, n_test=8, captions_per_video=3, min_events=2, max_events=3,
                  event_seconds=0.5, fps=8, size=32, false_negative_rate=0.3, hard_negative_rate=0.5)
    values.update(changes)
    return SyntheticSource(**values)


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file below folder, by relative path."""
    return {str(p.relative_to(folder)): sha256sum(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_specs_are_deterministic_and_seed_dependent():
    a, b = synthetic.video_specs(small_source()), synthetic.video_specs(small_source())
    assert a == b
    assert synthetic.video_specs(small_source(seed=6)) != a
    assert [s.split for s in a].count("train") == 12
    assert [s.split for s in a].count("test") == 8


def test_more_query_captions_add_paraphrases_to_val_and_test_videos_only():
    """query_captions: every val/test video gets that many distinct captions of its own events; its first caption,
    every video and every training caption stay as with one."""
    one, three = synthetic.video_specs(small_source()), synthetic.video_specs(small_source(query_captions=3))
    for a, b in zip(one, three):
        assert (a.video_id, a.events, a.background) == (b.video_id, b.events, b.background)
        if a.split == "train":
            assert a.captions == b.captions
        else:
            assert len(a.captions) == 1 and len(set(b.captions)) == 3 and b.captions[0] == a.captions[0]
            for text in b.captions:
                assert all(event.colour in text for event in b.events)


def test_training_families_hold_false_negative_copies_and_hard_negatives():
    specs = [s for s in synthetic.video_specs(small_source(n_train=400)) if s.split == "train"]
    assert len(specs) == 400
    families: dict[str, list] = {}
    for spec in specs:
        families.setdefault(spec.group_id, []).append(spec)
    roles = Counter(s.role for s in specs)
    assert set(roles) == {"base", "false_negative", "order", "binding"}
    for members in families.values():
        base, *others = members
        assert base.role == "base" and all(m.role != "base" for m in others)
        for member in others:
            if member.role == "false_negative":  # a distinct video of the same events
                assert member.content_id == base.content_id
                assert member.background != base.background
                assert [e.anchor for e in member.events] != [e.anchor for e in base.events]
                assert set(member.captions) != set(base.captions)
            else:  # a true negative: the base's twin, with captions of its own events
                assert member.content_id != base.content_id
                assert member.twin_id == base.video_id and base.twin_id == member.video_id
                assert list(member.events) == synthetic._twin(list(base.events), member.role)
                for text, event in zip(member.captions, member.events):
                    assert event.colour in text
    # the documented rates hold for the families (the last one may be cut)
    n = len(families)
    assert roles["false_negative"] / n == pytest.approx(0.3, abs=0.08)
    assert (roles["order"] + roles["binding"]) / n == pytest.approx(0.5, abs=0.08)


def test_false_negative_captions_are_interchangeable_with_the_base_captions():
    specs = [s for s in synthetic.video_specs(small_source(n_train=100)) if s.split == "train"]
    by_family = {s.group_id: s for s in specs if s.role == "base"}
    copies = [s for s in specs if s.role == "false_negative"]
    assert copies
    for copy in copies:
        base = by_family[copy.group_id]
        # the grammar sees only (colour, shape, action): the same draws caption both videos identically
        assert (synthetic.caption(copy.events, np.random.default_rng(1))
                == synthetic.caption(base.events, np.random.default_rng(1)))


def test_zero_rates_give_families_of_one():
    specs = [s for s in synthetic.video_specs(small_source(n_train=50, false_negative_rate=0.0,
                                                           hard_negative_rate=0.0)) if s.split == "train"]
    assert len({s.group_id for s in specs}) == 50 and {s.role for s in specs} == {"base"}


def test_test_split_is_made_of_hard_distractor_twins():
    specs = {s.video_id: s for s in synthetic.video_specs(small_source()) if s.split == "test"}
    kinds = set()
    for spec in specs.values():
        twin = specs[spec.twin_id]
        assert twin.twin_id == spec.video_id
        kinds.add(spec.twin_kind)
        if spec.twin_kind == "order":
            assert list(twin.events) == list(reversed(spec.events))
        else:  # binding: same objects in the same order, every action moved to another object
            assert [(e.colour, e.shape) for e in twin.events] == [(e.colour, e.shape) for e in spec.events]
            assert all(a.action != b.action for a, b in zip(twin.events, spec.events))
            assert sorted(e.action for e in twin.events) == sorted(e.action for e in spec.events)
    assert kinds == {"order", "binding"}
    pairs = Counter(spec.group_id for spec in specs.values())
    assert set(pairs.values()) == {2}, "a val/test group is one twin pair"
    assert all(specs[s.twin_id].group_id == s.group_id for s in specs.values())


def test_captions_name_every_event_and_paraphrase():
    for spec in synthetic.video_specs(small_source()):
        for text in spec.captions:
            for event in spec.events:
                assert event.colour in text
        if spec.split == "train":
            assert len(set(spec.captions)) == len(spec.captions) == 3


def test_rendering_shows_motion_in_the_right_direction():
    event = synthetic.Event("red", "square", "right", anchor=0.5, offset=0.0)
    spec = synthetic.VideoSpec("v", "train", (event,), (20, 20, 20), ("x",))
    frames = synthetic.render(spec, fps=8, event_seconds=1.0, size=64)
    red = (frames[..., 0] > 150) & (frames[..., 1] < 100)
    xs = [np.nonzero(mask)[1].mean() for mask in red]
    assert xs[-1] > xs[0] + 20, "the square must move right"


def test_generate_writes_decodable_mp4s_and_parses(tmp_path):
    import decord

    source = small_source()
    specs = synthetic.generate(source, tmp_path, workers=2)
    reader = decord.VideoReader(str(tmp_path / "videos" / f"{specs[0].video_id}.mp4"))
    assert len(reader) == len(specs[0].events) * 4
    assert reader[0].shape == (32, 32, 3)
    table = parse("synthetic", tmp_path / "source")
    assert set(table["split"]) == {"train", "val", "test"}
    assert table["caption_id"].is_unique
    assert table[table.split == "test"]["twin_id"].notna().all()
    assert table["group_id"].notna().all() and table["content_id"].notna().all()
    train = table[table.split == "train"]
    assert train.groupby("video_id")["group_id"].nunique().eq(1).all()
    # a second run keeps finished videos
    before = (tmp_path / "videos" / f"{specs[0].video_id}.mp4").stat().st_mtime_ns
    synthetic.generate(source, tmp_path, workers=1)
    assert (tmp_path / "videos" / f"{specs[0].video_id}.mp4").stat().st_mtime_ns == before
    # changed parameters regenerate
    synthetic.generate(small_source(n_train=2), tmp_path, workers=1)
    captions = json.loads((tmp_path / "source" / "captions.json").read_text())
    assert sum(v["split"] == "train" for v in captions["videos"]) == 2
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2 + 4 + 8


GENERATE = """
import sys
from hcmi.config import SyntheticSource
from hcmi.data import synthetic
synthetic.generate(SyntheticSource(**{source}), sys.argv[1], workers=int(sys.argv[2]))
"""


def test_generation_is_byte_identical_across_processes_and_worker_counts(tmp_path):
    source = small_source(n_train=16).model_dump()
    for workers in (1, 2):
        subprocess.run([sys.executable, "-c", GENERATE.format(source=source), str(tmp_path / f"w{workers}"),
                        str(workers)], check=True, timeout=300)
    one, two = file_digests(tmp_path / "w1"), file_digests(tmp_path / "w2")
    assert len([name for name in one if name.endswith(".mp4")]) == 16 + 4 + 8
    assert one == two


def test_sampling_the_benchmark_twice_gives_byte_identical_caches(tmp_path):
    specs = synthetic.generate(small_source(), tmp_path / "raw", workers=2)
    pairs, missing = videos.match([s.video_id for s in specs], tmp_path / "raw" / "videos")
    assert not missing
    sampling = Sampling(max_frames=4, image_size=24, candidates=3, jpeg_quality=90)
    for name, workers in (("a", 1), ("b", 2)):
        sample_split(pairs, tmp_path / name, sampling, shard_size=5, max_skip_fraction=0.0, workers=workers)
    first, second = file_digests(tmp_path / "a"), file_digests(tmp_path / "b")
    assert any(name.endswith(".jpg.bin") for name in first)
    assert first == second
