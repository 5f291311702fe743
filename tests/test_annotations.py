"""Parsers of the five real benchmarks against small files in their exact formats (tests/fixtures/<dataset>/)."""

import pickle
import shutil

import pytest

from hcmi.data import videos
from hcmi.data.annotations import AnnotationError, parse, split_table

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"

# split -> (videos, captions) under each dataset's protocol, counted by hand from the fixture files
EXPECTED = {
    "msrvtt": {"train": (5, 10), "test": (4, 4)},  # 9k videos: all sentences; 1k-A: the JSFusion sentence
    "msvd": {"train": (4, 9), "val": (1, 2), "test": (3, 11)},  # every caption is a row (multi-caption test)
    "lsmdc": {"train": (4, 5), "val": (2, 2), "test": (3, 3)},  # a training clip with two sentences
    "didemo": {"train": (4, 4), "val": (2, 2), "test": (3, 3)},  # one paragraph per video
    "activitynet": {"train": (4, 4), "test": (3, 3)},  # val_1 is the test split
}


def fixture_copy(tmp_path, dataset):
    return shutil.copytree(FIXTURES / dataset, tmp_path / dataset)


def counts(table):
    grouped = table.groupby("split").agg(videos=("video_id", "nunique"), captions=("caption_id", "size"))
    return {split: (int(row.videos), int(row.captions)) for split, row in grouped.iterrows()}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_fixture_counts_follow_the_protocol(dataset):
    table = parse(dataset, FIXTURES / dataset)
    assert counts(table) == EXPECTED[dataset]
    assert list(table.columns[:4]) == ["video_id", "caption_id", "text", "split"]
    assert table["caption_id"].is_unique


def test_msrvtt_trains_on_every_sentence_and_tests_on_the_jsfusion_sentence():
    table = parse("msrvtt", FIXTURES / "msrvtt")
    train = split_table(table, "train")
    assert sorted(train.loc[train.video_id == "video3", "text"]) == [
        "a band performs a song", "a crowd cheers for the band", "a man plays a guitar on stage"]
    assert "video9000" not in set(table.video_id), "videos outside the 9k list and the 1k-A test are not used"
    test = split_table(table, "test")
    assert dict(zip(test.video_id, test.text))["video7010"] == "a brown dog runs across a field of grass"


def test_msvd_keeps_every_test_caption_as_a_query():
    test = split_table(parse("msvd", FIXTURES / "msvd"), "test")
    per_video = test.groupby("video_id")["text"].apply(list).to_dict()
    captions = pickle.loads((FIXTURES / "msvd" / "raw-captions.pkl").read_bytes())
    assert per_video == {v: [" ".join(tokens) for tokens in captions[v]] for v in per_video}
    assert per_video["2YHU7aw9CYM_1_8"][0] == "a man is cutting bread"


def test_lsmdc_repeated_clip_ids_give_one_video_with_several_captions():
    train = split_table(parse("lsmdc", FIXTURES / "lsmdc"), "train")
    clip = "0001_American_Beauty_00.00.56.562-00.01.00.514"
    rows = train[train.video_id == clip]
    assert list(rows.caption_id) == [f"{clip}#0", f"{clip}#1"]
    assert list(rows.text) == ["He walks into the kitchen and opens the fridge.",
                               "SOMEONE takes out a carton of milk."]


def test_didemo_joins_a_videos_descriptions_in_order_into_one_paragraph():
    table = parse("didemo", FIXTURES / "didemo")
    row = table[table.video_id == "10015567@N08_3655084291_d8b58466fa"].iloc[0]
    assert row.text == "a girl walks into the room the girl sits on the couch she waves at the camera"
    assert row.split == "train"
    assert not table.video_id.str.contains(r"\.(?:mov|mp4|avi|3gp|m4v)$").any(), "ids drop the video extension"
    assert "99999999@N00_1111111111_0000000000" not in set(table.video_id), "unlisted videos are not used"


def test_activitynet_paragraphs_come_from_val_1_for_the_test_split():
    table = parse("activitynet", FIXTURES / "activitynet")
    test = split_table(table, "test")
    assert list(test.video_id) == ["v_uqiMw7tQ1Cc", "v_bXdq2zI1Ms0", "v_FsS_NCZEfaI"]
    assert test.text.iloc[1] == "Three men are standing on a mat. The man in front begins to do karate on the mat."


def test_missing_video_files_are_listed_not_dropped(tmp_path):
    """Each dataset's real file naming is matched; an annotated video without a file is reported."""
    folder = tmp_path / "videos"
    names = ["video7010.mp4", "-4wsuPCjDBc_5_15.avi",  # MSR-VTT, MSVD
             "0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.129.avi",  # LSMDC: per-movie folders
             "10015567@N08_3655084291_d8b58466fa.mov.mp4", "10051972@N05_2893744911_1ed1de2fb8.mp4",  # DiDeMo
             "v_uqiMw7tQ1Cc.mp4", "bXdq2zI1Ms0.mkv"]  # ActivityNet, with and without the v_ prefix
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    ids = ["video7010", "-4wsuPCjDBc_5_15", "0001_American_Beauty_00.00.51.926-00.00.54.129",
           "10015567@N08_3655084291_d8b58466fa", "10051972@N05_2893744911_1ed1de2fb8", "v_uqiMw7tQ1Cc",
           "v_bXdq2zI1Ms0", "video7040"]
    pairs, missing = videos.match(ids, folder)
    assert missing == ["video7040"]
    assert [vid for vid, _ in pairs] == ids, "every annotated id stays, in order"
    assert dict(pairs)["v_bXdq2zI1Ms0"].name == "bXdq2zI1Ms0.mkv"
    assert dict(pairs)["video7040"] is None


class Exploit:
    """Unpickling this would call print: a caption pickle must never run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


# (dataset, file, open mode, what is written: the file is replaced ("w") or appended to ("a"), expected message)
MALFORMED = [
    pytest.param("lsmdc", "LSMDC16_annos_val.csv", "a", "1001_Fixture_Evening_00.00.20.000\tonly three\tfields\n",
                 r"LSMDC16_annos_val\.csv, line 3: expected 6 tab-separated fields", id="lsmdc-field-count"),
    pytest.param("msrvtt", "MSRVTT_JSFUSION_test.csv", "w", ",key,vid_key,video_id\n0,ret0,msr7010,video7010\n",
                 r"MSRVTT_JSFUSION_test\.csv: missing column\(s\) \['sentence'\]", id="msrvtt-column"),
    pytest.param("msrvtt", "MSRVTT_train.9k.csv", "a", "video8888\n",
                 r"MSRVTT_train\.9k\.csv: video 'video8888' has no sentence", id="msrvtt-no-sentence"),
    pytest.param("msrvtt", "MSRVTT_train.9k.csv", "a", "video0\n",
                 r"MSRVTT_train\.9k\.csv: video_id 'video0' is listed twice", id="msrvtt-duplicate"),
    pytest.param("msvd", "test_list.txt", "a", "zzzzzzzzzzz_1_2\n",
                 r"test_list\.txt: video 'zzzzzzzzzzz_1_2' has no captions", id="msvd-no-captions"),
    pytest.param("msvd", "raw-captions.pkl", "wb", pickle.dumps({"x": Exploit()}),
                 r"raw-captions\.pkl: not a readable caption pickle.*builtins\.print", id="msvd-code-in-pickle"),
    pytest.param("didemo", "val_data.json", "w", '[{"video": "a.mov", "description": "cut off',
                 r"val_data\.json: not valid JSON", id="didemo-json"),
    pytest.param("didemo", "test_data.json", "w", '[{"video": "a.mov", "times": [[0, 0]]}]',
                 r"test_data\.json: expected a list of \{'video', 'times', 'description'\}", id="didemo-structure"),
    pytest.param("activitynet", "val_1.json", "w", '{"v_uqiMw7tQ1Cc": {"duration": 55.15, "timestamps": [[0, 5]]}}',
                 r"val_1\.json: every video needs a 'sentences' list", id="activitynet-sentences"),
    pytest.param("activitynet", "train_ids.json", "w", '{"v_QOlSCBRmfWY": 1}',
                 r"train_ids\.json: expected a JSON list of video ids", id="activitynet-ids"),
]


@pytest.mark.parametrize("dataset, name, mode, content, message", MALFORMED)
def test_malformed_file_is_an_error_naming_it(tmp_path, dataset, name, mode, content, message):
    folder = fixture_copy(tmp_path, dataset)
    with open(folder / name, mode) as handle:
        handle.write(content)
    with pytest.raises(AnnotationError, match=message):
        parse(dataset, folder)


def test_missing_annotation_file_is_named(tmp_path):
    folder = fixture_copy(tmp_path, "activitynet")
    (folder / "train_ids.json").unlink()
    with pytest.raises(AnnotationError, match=r"train_ids\.json: annotation file not found"):
        parse("activitynet", folder)


def test_files_inside_an_unpacked_archive_folder_are_found(tmp_path):
    shutil.copytree(FIXTURES / "msvd", tmp_path / "source" / "msvd_data")
    assert counts(parse("msvd", tmp_path / "source")) == EXPECTED["msvd"]
