import json

import numpy as np
import pytest

from hcmi.config import SyntheticSource
from hcmi.data import synthetic
from hcmi.data.annotations import parse


def small_source(**changes):
    values = dict(seed=5, n_train=12, n_val=4, n_test=8, captions_per_video=3, min_events=2, max_events=3,
                  event_seconds=0.5, fps=8, size=32)
    values.update(changes)
    return SyntheticSource(**values)


def test_specs_are_deterministic_and_seed_dependent():
    a, b = synthetic.video_specs(small_source()), synthetic.video_specs(small_source())
    assert a == b
    assert synthetic.video_specs(small_source(seed=6)) != a
    assert [s.split for s in a].count("train") == 12
    assert [s.split for s in a].count("test") == 8


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
    # a second run keeps finished videos
    before = (tmp_path / "videos" / f"{specs[0].video_id}.mp4").stat().st_mtime_ns
    synthetic.generate(source, tmp_path, workers=1)
    assert (tmp_path / "videos" / f"{specs[0].video_id}.mp4").stat().st_mtime_ns == before
    # changed parameters regenerate
    synthetic.generate(small_source(n_train=2), tmp_path, workers=1)
    captions = json.loads((tmp_path / "source" / "captions.json").read_text())
    assert sum(v["split"] == "train" for v in captions["videos"]) == 2
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2 + 4 + 8
