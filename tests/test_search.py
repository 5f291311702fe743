"""Searching your own videos: `hcmi index` (a folder, or a dataset split) and `hcmi search` (two-stage), with the
evaluation engine's scores, incremental adds, resumption, and clear errors for bad input."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import linked_root, tiny_params_dict, tiny_params_from

from hcmi.paths import Layout

TIMEOUT_S = 300


@pytest.fixture(scope="module")
def indexed(tiny_data, tmp_path_factory):
    """An untrained HCMI checkpoint (multi-level scoring) and the tiny test split indexed with it."""
    from hcmi.steps import index, snapshot

    params, layout = tiny_data
    root = Layout(linked_root(tmp_path_factory.mktemp("search"), layout))
    snapshot.run(params, root, "synthetic", "hcmi")
    index.run_split(params, root, "synthetic", "hcmi", 0)
    return params, root


def evaluation_scores(params, root):
    """The evaluation engine's final score matrix of the test split, and the split."""
    from hcmi.data.annotations import read_annotations
    from hcmi.data.frames import FrameCache
    from hcmi.data.splits import RetrievalSplit
    from hcmi.model.backbone import tokenizer
    from hcmi.scoring import score_split
    from hcmi.steps.evaluate import load_model

    model, checkpoint = load_model(root.model_file("synthetic", "hcmi", 0), torch.device("cpu"))
    cache = FrameCache(root.frames("synthetic", "test"))
    split = RetrievalSplit(read_annotations(root.annotations("synthetic")), cache, "test")
    _, final = score_split(model, split, cache, tokenizer(checkpoint["backbone"]["name"], checkpoint["max_words"]),
                           16, 64, torch.device("cpu"))
    return final, split


def test_search_ranks_as_the_evaluation_engine_scores(indexed):
    from hcmi.steps.search import ranked

    params, root = indexed
    final, split = evaluation_scores(params, root)
    queries = split.texts[:5]
    _, results = ranked(params, root.search_index("synthetic", "hcmi", 0), queries, top_k=8)
    column = {video: i for i, video in enumerate(split.video_ids)}
    for q, hits in enumerate(results):
        assert len(hits) == 8
        expected = np.sort(final[q])[::-1][:8]
        np.testing.assert_allclose([score for _, score in hits], expected, atol=2e-3)  # tokens stored as float16
        for video, score in hits:
            assert abs(final[q, column[video]] - score) <= 2e-3, (q, video)


def test_two_stage_equals_exact_when_the_depth_covers_every_video(indexed):
    from hcmi.steps.search import ranked

    params, root = indexed
    out = root.search_index("synthetic", "hcmi", 0)
    final, split = evaluation_scores(params, root)
    shallow = tiny_params_dict()
    shallow["search"] = {"depth": 4, "top_k": 3}
    deep = tiny_params_dict()
    deep["search"] = {"depth": 1000, "top_k": 3}
    queries = split.texts[:4]
    _, exact = ranked(tiny_params_from(deep), out, queries)
    order = np.argsort(-final[:4], axis=1, kind="stable")[:, :3]
    assert [[v for v, _ in hits] for hits in exact] == [[split.video_ids[i] for i in row] for row in order]
    _, two_stage = ranked(tiny_params_from(shallow), out, queries)
    assert all(len(hits) == 3 for hits in two_stage)


def folder_of_videos(tiny_data, folder, count, start=0):
    _, layout = tiny_data
    sources = sorted(layout.videos("synthetic").glob("test-*.mp4"))[start : start + count]
    folder.mkdir(parents=True, exist_ok=True)
    for path in sources:
        shutil.copy2(path, folder / path.name)
    return [p.stem for p in sources]


def hcmi_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hcmi.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_a_folder_is_indexed_then_only_new_videos_are_encoded(indexed, tiny_data, tmp_path, monkeypatch):
    from hcmi.steps import index

    params, root = indexed
    checkpoint = root.model_file("synthetic", "hcmi", 0)
    folder, out = tmp_path / "mine", tmp_path / "index"
    first = folder_of_videos(tiny_data, folder, 6)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video\n")
    data = (folder / f"{first[0]}.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    record = index.run_folder(params, folder, checkpoint, out)
    assert record["videos"] == 6
    assert set(pd.read_csv(out / "skipped.csv")["video_id"]) == {"empty", "notes", "truncated"}

    encoded = []
    real = index.encode_videos
    monkeypatch.setattr(index, "encode_videos", lambda model, cache, ids, *a, **k: encoded.append(list(ids)) or
                        real(model, cache, ids, *a, **k))
    new = folder_of_videos(tiny_data, folder, 2, start=6)
    record = index.run_folder(params, folder, checkpoint, out)
    assert record["videos"] == 8 and [v for ids in encoded for v in ids] == sorted(new), "only the 2 new videos"
    assert len(record["frame_caches"]) == 2


def test_an_interrupted_index_run_continues_where_it_stopped(indexed, tiny_data, tmp_path, monkeypatch):
    from hcmi.steps import index

    params, root = indexed
    checkpoint = root.model_file("synthetic", "hcmi", 0)
    folder, out = tmp_path / "mine", tmp_path / "index"
    folder_of_videos(tiny_data, folder, 6)
    monkeypatch.setattr(index, "ENCODE_BLOCK", 2)
    calls = {"n": 0}
    real = index.encode_videos

    def dying(model, cache, ids, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(model, cache, ids, *args, **kwargs)

    monkeypatch.setattr(index, "encode_videos", dying)
    with pytest.raises(KeyboardInterrupt):
        index.run_folder(params, folder, checkpoint, out)
    monkeypatch.setattr(index, "encode_videos", real)
    from hcmi.index import VideoStore

    assert VideoStore.open(out / "store", index.sha256sum(checkpoint)).rows == 2, "the first block was committed"
    encoded = []
    monkeypatch.setattr(index, "encode_videos", lambda model, cache, ids, *a, **k: encoded.append(len(ids)) or
                        real(model, cache, ids, *a, **k))
    record = index.run_folder(params, folder, checkpoint, out)
    assert record["videos"] == 6 and sum(encoded) == 4 and len(record["frame_caches"]) == 1


def test_search_from_the_command_line_with_json_and_a_page(indexed, tmp_path):
    params, root = indexed
    out = root.search_index("synthetic", "hcmi", 0)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    page = tmp_path / "results.html"
    result = hcmi_cli("--params", str(params_file), "search", "a red circle moves left", "--index", str(out),
                      "--json", "--html", str(page), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [answer] = json.loads(result.stdout)
    assert answer["query"] == "a red circle moves left" and len(answer["results"]) == 10
    html = page.read_text()
    assert html.count("data:image/png;base64") == 10 and "a red circle moves left" in html
    table = hcmi_cli("--params", str(params_file), "search", "a blue square grows", "--index", str(out), "--top",
                     "3", cwd=tmp_path)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 2 + 3


def test_bad_queries_and_indexes_give_clear_errors(indexed, tmp_path):
    params, root = indexed
    out = root.search_index("synthetic", "hcmi", 0)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    base = ["--params", str(params_file), "search"]
    empty = hcmi_cli(*base, "  ", "--index", str(out), cwd=tmp_path)
    assert empty.returncode == 1 and "the query is empty" in empty.stderr and "Traceback" not in empty.stderr
    long_query = " ".join(["a red circle moves left then a blue square grows"] * 6)
    cut = hcmi_cli(*base, long_query, "--index", str(out), cwd=tmp_path)
    assert cut.returncode == 0 and "it is cut to its first 32" in cut.stderr
    missing = hcmi_cli(*base, "a red circle", "--index", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 1 and "not an index" in missing.stderr
    other = tmp_path / "other.pt"
    shutil.copy2(root.model_file("synthetic", "hcmi", 0), other)
    with open(other, "ab") as handle:
        handle.write(b"\0")  # another file: another model as far as the index can tell
    foreign = hcmi_cli(*base, "a red circle", "--index", str(out), "--checkpoint", str(other), cwd=tmp_path)
    assert foreign.returncode == 1 and "cannot be compared with this model" in foreign.stderr


def test_an_index_built_with_relative_paths_is_searched_from_anywhere_without_loader_noise(indexed, tiny_data,
                                                                                         tmp_path):
    """`hcmi index` run in one directory with relative paths (as the workflow runs it, from the repository root), then
    `hcmi search` from another directory and from a moved copy: index.json holds its paths relative to the index, and
    the search prints nothing on stderr (faiss's loader reports which optional builds it did not find)."""
    params, root = indexed
    here = tmp_path / "project"
    (here / "runs").mkdir(parents=True)
    shutil.copy2(root.model_file("synthetic", "hcmi", 0), here / "runs" / "model.pt")
    folder_of_videos(tiny_data, here / "videos", 3)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    built = hcmi_cli("--params", str(params_file), "index", "--videos", "videos", "--checkpoint", "runs/model.pt",
                     "--out", "indexes/mine", cwd=here)
    assert built.returncode == 0, built.stderr[-3000:]
    record = json.loads((here / "indexes/mine/index.json").read_text())
    assert record["model"]["checkpoint"] == "../../runs/model.pt" and record["frame_caches"] == ["frames/part-00000"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(here, tmp_path / "moved", symlinks=True)
    for index_dir in (here / "indexes/mine", tmp_path / "moved/indexes/mine"):
        found = hcmi_cli("--params", str(params_file), "search", "a red circle moves left", "--index", str(index_dir),
                         "--json", "--html", str(elsewhere / "page.html"), cwd=elsewhere)
        assert found.returncode == 0, found.stderr[-3000:]
        assert len(json.loads(found.stdout)[0]["results"]) == 3
        assert (elsewhere / "page.html").read_text().count("data:image/png;base64") == 3, "thumbnails found too"
        assert "swigfaiss" not in found.stderr and "Could not load library" not in found.stderr, found.stderr


def test_index_and_search_work_from_an_empty_folder_without_params(indexed, tiny_data, tmp_path):
    """A user outside the checkout: no params.yaml, no --params. `hcmi index` and `hcmi search` take the declared
    defaults and what the checkpoint and the index recorded; a pipeline step says in one line what is missing."""
    params, root = indexed
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()
    videos = folder_of_videos(tiny_data, tmp_path / "my videos", 3)
    out = tmp_path / "my index"
    built = hcmi_cli("index", "--videos", str(tmp_path / "my videos"), "--checkpoint",
                     str(root.model_file("synthetic", "hcmi", 0)), "--out", str(out), cwd=anywhere)
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads((out / "index.json").read_text())["videos"] == 3
    found = hcmi_cli("search", "a red circle moves left", "--index", str(out), "--json", cwd=anywhere)
    assert found.returncode == 0, found.stderr[-3000:]
    assert sorted(hit["video_id"] for hit in json.loads(found.stdout)[0]["results"]) == sorted(videos)
    assert not list(anywhere.iterdir()), "nothing is written where the tools were run"
    refused = hcmi_cli("train", "--dataset", "synthetic", "--model", "hcmi", "--seed", "0", cwd=anywhere)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"hcmi train: no params.yaml in {anywhere}: run the pipeline's steps from the project's folder, or give "
        "--params FILE"]
