"""Downloads against a real HTTP server on 127.0.0.1 (Range requests, a connection cut mid-transfer, a corrupted file),
manual placement of gated files, and the pretrained-weights file that lets training run offline."""

import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hcmi.data import datasets, download
from hcmi.data.annotations import parse
from hcmi.data.datasets import Source
from hcmi.data.download import ChecksumError, DownloadError, DownloadState, MissingFiles, fetch_real

from conftest import REPO, tiny_params_dict

FIXTURES = REPO / "tests" / "fixtures"


class FileServer(ThreadingHTTPServer):
    """Serves `files` (name -> bytes) with Range support; names in `cut_once` lose their connection half-way through
    the first response. Every request is recorded as (name, Range header)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RangeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        self.server.requests.append((name, self.headers.get("Range")))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in self.server.cut_once:
            self.server.cut_once.discard(name)
            body = body[: len(body) // 2]  # announce everything, send half, hang up
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_of(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}_data/{path.name}")
    return buffer.getvalue()


def tar_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def spec_with(sources, **changes) -> datasets.DatasetSpec:
    values = dict(name="fixture", title="fixture", splits=("train", "test"), paragraph=False, multi_caption=False,
                  sources=tuple(sources), annotation_files=("notes.csv",))
    values.update(changes)
    return datasets.DatasetSpec(**values)


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, several read chunks
VIDEOS_TAR = tar_of({"clips/a.mp4": b"not decoded here" * 10})


def payload_sources(server, payload=PAYLOAD):
    server.files.update({"notes.csv": payload, "clips.tar": VIDEOS_TAR})
    return [Source(f"{server.url}/notes.csv", "source/notes.csv", sha256=sha(payload), size=len(payload),
                   provides=("notes.csv",)),
            Source(f"{server.url}/clips.tar", "videos/clips.tar", sha256=sha(VIDEOS_TAR), extract=True,
                   provides=(datasets.VIDEOS,))]


def test_a_transfer_cut_mid_way_resumes_with_a_range_request(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRY_WAIT_S", 0.0)
    sources = payload_sources(server)
    server.cut_once.add("notes.csv")
    manifest = fetch_real(spec_with(sources), tmp_path / "raw", tmp_path / "manual")
    assert (tmp_path / "raw/source/notes.csv").read_bytes() == PAYLOAD
    notes = [rng for name, rng in server.requests if name == "notes.csv"]
    assert notes == [None, f"bytes={len(PAYLOAD) // 2}-"], "the second request asks for the missing half only"
    assert manifest["files"]["source/notes.csv"]["sha256"] == sha(PAYLOAD)
    assert manifest["downloads"]["source/notes.csv"]["verified"] is True
    assert (tmp_path / "raw/videos/clips/a.mp4").exists(), "the archive is unpacked into videos/"
    assert not list((tmp_path / "raw/downloads").glob("*.part")) and not (tmp_path / "raw/downloads/clips.tar").exists()


def test_a_second_run_downloads_and_hashes_nothing(server, tmp_path, monkeypatch):
    spec = spec_with(payload_sources(server))
    first = fetch_real(spec, tmp_path / "raw", tmp_path / "manual")
    requests = len(server.requests)
    hashed = []
    real_sha = download.sha256sum
    monkeypatch.setattr(download, "sha256sum", lambda path, *a: hashed.append(path) or real_sha(path, *a))
    again = fetch_real(spec, tmp_path / "raw", tmp_path / "manual")
    assert len(server.requests) == requests
    assert hashed == [], "verified files and unchanged digests are recorded, not recomputed"
    assert again["files"] == first["files"]


def test_a_corrupted_file_names_both_digests_and_a_retry_starts_clean(server, tmp_path):
    sources = payload_sources(server)
    broken = bytearray(PAYLOAD)
    broken[1000] ^= 0xFF
    server.files["notes.csv"] = bytes(broken)
    with pytest.raises(ChecksumError) as error:
        fetch_real(spec_with(sources), tmp_path / "raw", tmp_path / "manual")
    message = str(error.value)
    assert "notes.csv" in message and sha(bytes(broken)) in message and sha(PAYLOAD) in message
    downloads = tmp_path / "raw/downloads"
    assert (downloads / "notes.csv.corrupt").read_bytes() == bytes(broken), "kept aside for inspection"
    assert not (downloads / "notes.csv.part").exists() and not (downloads / "notes.csv").exists()
    server.files["notes.csv"] = PAYLOAD  # the mirror is repaired
    server.requests.clear()
    fetch_real(spec_with(sources), tmp_path / "raw", tmp_path / "manual")
    assert ("notes.csv", None) in server.requests, "the retry fetches the whole file anew, no Range on bad data"
    assert (tmp_path / "raw/source/notes.csv").read_bytes() == PAYLOAD


def test_a_missing_file_on_the_server_is_an_error_naming_the_url(server, tmp_path):
    source = Source(f"{server.url}/absent.zip", "source/absent.zip", extract=True, provides=("notes.csv",))
    with pytest.raises(DownloadError, match=r"absent\.zip: HTTP Error 404"):
        fetch_real(spec_with([source]), tmp_path / "raw", tmp_path / "manual")
    assert len(server.requests) == 1, "a 404 is not retried"


def test_a_download_that_is_no_archive_is_set_aside(server, tmp_path):
    server.files["captions.zip"] = b"<html>a login page, not the archive</html>"
    source = Source(f"{server.url}/captions.zip", "source/captions.zip", extract=True, provides=("notes.csv",))
    with pytest.raises(DownloadError, match="captions.zip: expected a zip or tar archive.*moved to"):
        fetch_real(spec_with([source]), tmp_path / "raw", tmp_path / "manual")
    assert (tmp_path / "raw/downloads/captions.zip.corrupt").exists()
    assert not (tmp_path / "raw/downloads/captions.zip").exists(), "the next run fetches it anew"


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(tar_of({"../outside.txt": b"x"}))
    with pytest.raises(DownloadError, match="evil.tar: cannot unpack"):
        download.extract(archive, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()


def test_msvd_through_the_registry_from_a_mirror(server, tmp_path):
    """The real registry entry (CLIP4Clip's msvd_data.zip, YouTubeClips.tar), served by the local mirror."""
    server.files["msvd_data.zip"] = zip_of(FIXTURES / "msvd")
    server.files["YouTubeClips.tar"] = tar_of({f"YouTubeClips/{v}.avi": b"avi" for v in ("-4wsuPCjDBc_5_15",
                                                                                          "2YHU7aw9CYM_1_8")})
    spec = datasets.get("msvd")
    manifest = fetch_real(spec, tmp_path / "raw", tmp_path / "manual", mirror=server.url)
    assert sorted(name for name, _ in server.requests) == ["YouTubeClips.tar", "msvd_data.zip"]
    assert "videos/YouTubeClips/2YHU7aw9CYM_1_8.avi" in manifest["files"]
    entry = manifest["downloads"]["source/msvd_data.zip"]
    assert entry["verified"] is False and entry["url"] == spec.sources[0].url and len(entry["sha256"]) == 64
    assert len(parse("msvd", tmp_path / "raw/source")) == 22


def test_the_mirror_is_a_validated_parameter():
    from hcmi.config import ConfigError, from_dict

    params = tiny_params_dict()
    params["data"]["msvd"]["source"]["mirror"] = "http://127.0.0.1:8000/msvd"
    assert from_dict(params).dataset("msvd").source["mirror"] == "http://127.0.0.1:8000/msvd"
    params["data"]["msvd"]["source"]["mirror"] = "ftp://example/msvd"
    with pytest.raises(ConfigError, match="data.msvd.source.mirror"):
        from_dict(params)


def test_gated_lsmdc_lists_what_to_fetch_from_where_into_which_folder(tmp_path):
    manual = tmp_path / "manual"
    with pytest.raises(MissingFiles) as error:
        fetch_real(datasets.get("lsmdc"), tmp_path / "raw", manual)
    message = str(error.value)
    for name in datasets.LSMDC_FILES:
        assert f"{name} -> {manual / name}" in message
    assert f"video files -> {manual / 'videos/'}" in message
    assert datasets.LSMDC_PORTAL in message and "register" in message.lower()
    assert not (tmp_path / "raw/manifest.json").exists()


def test_gated_files_placed_by_hand_are_linked_and_recorded(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(FIXTURES / "lsmdc", manual)
    clip = manual / "videos/0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.129.avi"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"avi")
    manifest = fetch_real(datasets.get("lsmdc"), tmp_path / "raw", manual)
    assert "videos/0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.129.avi" in manifest["files"]
    placed = tmp_path / "raw/source/LSMDC16_annos_val.csv"
    assert placed.samefile(manual / "LSMDC16_annos_val.csv"), "hard-linked, not copied"
    assert len(parse("lsmdc", tmp_path / "raw/source")) == 10


def test_an_archive_placed_by_hand_replaces_the_download(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "captions.zip").write_bytes(zip_of(FIXTURES / "activitynet"))
    (manual / "videos").mkdir()
    (manual / "videos/v_QOlSCBRmfWY.mp4").write_bytes(b"mp4")
    fetch_real(datasets.get("activitynet"), tmp_path / "raw", manual)  # no server: any HTTP request would fail
    state = DownloadState(tmp_path / "raw/downloads/state.json")
    assert state.complete(datasets.get("activitynet").sources[0], tmp_path / "raw")
    assert len(parse("activitynet", tmp_path / "raw/source")) == 7


# ----------------------------------------------------------------------------------------------------------------
# pretrained weights: fetched once through open_clip, then read from a local file


@pytest.fixture
def fake_hub(monkeypatch):
    """open_clip's pretrained download, replaced: tag "fixture" gives fixed weights, anything else fails offline."""
    import open_clip
    import torch

    real_create = open_clip.create_model
    calls = []

    def create_model(name, pretrained=None, **kwargs):
        calls.append(pretrained)
        if pretrained not in (None, "fixture"):
            raise RuntimeError(f"Failed to download weights for tag '{pretrained}': network unreachable")
        torch.manual_seed(1234 if pretrained else 0)
        return real_create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", create_model)
    return calls


def weights_command(tmp_path, pretrained):
    from hcmi.cli import main

    return main(["--params", str(REPO / "params.yaml"), "--set", f"backbone.pretrained={pretrained}",
                 "--data-root", str(tmp_path), "weights"])


def test_weights_are_saved_once_and_then_loaded_without_the_hub(tmp_path, fake_hub):
    import json

    import torch

    from hcmi.model import create_backbone
    from hcmi.weights import load_backbone_weights, weights_file

    assert weights_command(tmp_path, "fixture") == 0
    saved = weights_file("hcmi-tiny", "fixture", tmp_path / "weights")
    assert saved == tmp_path / "weights/files/hcmi-tiny__fixture.pt" and saved.exists()
    [record] = json.loads((tmp_path / "weights/backbone.json").read_text())["backbones"]
    assert record["kind"] == "open_clip pretrained tag" and record["file"] == str(saved) and len(record["sha256"]) == 64
    fake_hub.clear()
    assert weights_command(tmp_path, "fixture") == 0 and fake_hub == [], "a second run fetches nothing"
    loaded = create_backbone("hcmi-tiny", load_backbone_weights("hcmi-tiny", "fixture", tmp_path / "weights"))
    assert "fixture" not in fake_hub, "the local file is used, not the hub"
    reference = torch.load(saved, weights_only=True)
    assert all(torch.equal(loaded.clip.state_dict()[k], v) for k, v in reference.items())
    assert not torch.equal(create_backbone("hcmi-tiny").clip.state_dict()["text_projection"],
                           reference["text_projection"]), "random init differs from the saved weights"


def test_offline_without_the_weights_file_says_how_to_get_it(tmp_path, fake_hub):
    from hcmi.weights import WeightsError, load_backbone_weights

    with pytest.raises(WeightsError) as error:
        load_backbone_weights("hcmi-tiny", "openai", tmp_path / "weights")
    message = str(error.value)
    assert str(tmp_path / "weights/files/hcmi-tiny__openai.pt") in message and "hcmi weights" in message
    with pytest.raises(WeightsError, match="weights file .*missing.pt not found"):
        load_backbone_weights("hcmi-tiny", str(tmp_path / "missing.pt"), tmp_path / "weights")
    assert weights_command(tmp_path, "openai") == 1, "the weights step fails offline, naming what to do"


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
    import pickle

    from hcmi.weights import WeightsError, read_state_dict

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"visual.proj": Payload()}))
    with pytest.raises(WeightsError, match="loads without running code"):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_random_initialisation_and_local_files_are_recorded_without_fetching(tmp_path, fake_hub):
    import json

    from hcmi.cli import main

    assert main(["--params", str(REPO / "params.yaml"), "--set", "backbone.pretrained=null", "--data-root",
                 str(tmp_path), "weights"]) == 0
    [record] = json.loads((tmp_path / "weights/backbone.json").read_text())["backbones"]
    assert record["kind"] == "random initialisation" and record["file"] is None and fake_hub == []
    local = tmp_path / "mine.pt"
    local.write_bytes(b"weights")
    assert weights_command(tmp_path, str(local)) == 0
    [record] = json.loads((tmp_path / "weights/backbone.json").read_text())["backbones"]
    assert record["kind"] == "local weights file" and record["file"] == str(local) and fake_hub == []


def test_a_variant_on_its_own_backbone_gets_its_weights_too(tmp_path, fake_hub):
    import json

    from hcmi.cli import main

    assert main(["--params", str(REPO / "params.yaml"), "--set", "backbone.pretrained=null",
                 "--set", "variants.hcmi.backbone={pretrained: fixture}", "--data-root", str(tmp_path), "weights"]) == 0
    records = json.loads((tmp_path / "weights/backbone.json").read_text())["backbones"]
    assert [r["kind"] for r in records] == ["random initialisation", "open_clip pretrained tag"]
    assert fake_hub == ["fixture"]
