"""
common/huggingface.fetch (--init_from=gpt2) against a local imitation of the Hugging Face hub on
127.0.0.1 that serves the tiny GPT-2 fixture in the hub's layout: the tree API's list of files, a
resolve URL per file, and for the large file a redirect to a "CDN" that answers Range requests. The
imitation can cut a download, ignore Range, damage a file or answer slowly. No test touches the network.
"""

import hashlib
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from common.checkpoint import load_gpt
from common.cli import UserError
from common.huggingface import HUB_FILES, default_cache_dir, fetch, file_digest
from model import GPT

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_gpt2"
REPO = "openai-community/gpt2"


def git_blob_id(data):
    """git's name for a file, written out here independently of the code under test."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """What the local hub lists and serves, how it misbehaves when a test asks, and what it was asked."""

    def __init__(self, base):
        self.base = base
        self.files = {name: (FIXTURE / name).read_bytes() for name in HUB_FILES}  # what the listing describes
        self.served = dict(self.files)  # what the files' URLs answer with: a test may damage it
        self.sha256 = hashlib.sha256(self.files["model.safetensors"]).hexdigest()
        self.cut_after = None  # send only this many bytes of the next weights answer, then drop the connection
        self.ignore_range = False  # answer a Range request with the whole file, as some servers do
        self.delay = 0.0  # seconds before each weights answer
        self.requests = []  # (path, Range header or None), in the order they came
        self.sent = 0  # bytes of weights sent

    def listing(self):
        """The tree API's JSON: a small file is listed by its git id, a large (LFS) one also by its sha256."""
        weights = self.files["model.safetensors"]
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(weights)}\n"
        return [{"type": "file", "path": ".gitattributes", "size": 0, "oid": git_blob_id(b"")},
                {"type": "file", "path": "config.json", "size": len(self.files["config.json"]),
                 "oid": git_blob_id(self.files["config.json"])},
                {"type": "file", "path": "model.safetensors", "size": len(weights), "oid": git_blob_id(pointer.encode()),
                 "lfs": {"oid": self.sha256, "size": len(weights), "pointerSize": len(pointer)}}]


class HubHandler(BaseHTTPRequestHandler):
    """HTTP/1.0 (BaseHTTPRequestHandler's default): the connection closes after each answer."""

    def do_GET(self):
        hub = self.server.hub
        hub.requests.append((self.path, self.headers.get("Range")))
        if self.path == f"/api/models/{REPO}/tree/main":
            self.answer(200, json.dumps(hub.listing()).encode(), {"Content-Type": "application/json"})
        elif self.path == f"/{REPO}/resolve/main/config.json":  # a small file: answered in place, its git id as ETag
            self.answer(200, hub.served["config.json"], {"ETag": f'"{git_blob_id(hub.files["config.json"])}"'})
        elif self.path == f"/{REPO}/resolve/main/model.safetensors":  # a large one: a redirect to the CDN
            # with the hub's X-Linked headers, though fetch reads the size and sha256 from the listing
            size = len(hub.files["model.safetensors"])
            self.answer(302, b"", {"Location": f"{hub.base}/cdn/{hub.sha256}", "X-Linked-Size": str(size),
                                   "X-Linked-Etag": f'"{hub.sha256}"'})
        elif self.path == f"/cdn/{hub.sha256}":
            self.serve_weights(hub)
        else:
            self.answer(404, b"Entry not found", {})

    def answer(self, status, body, headers):
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def serve_weights(self, hub):
        time.sleep(hub.delay)
        data, start, headers = hub.served["model.safetensors"], 0, {}
        if self.headers.get("Range") and not hub.ignore_range:
            start = int(self.headers["Range"].removeprefix("bytes=").removesuffix("-"))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send_response(206 if start or "Content-Range" in headers else 200)
        for key, value in {**headers, "Content-Length": str(len(data) - start)}.items():
            self.send_header(key, value)
        self.end_headers()
        body = data[start:]
        if hub.cut_after is not None:  # the headers promised the whole rest: the client sees a cut
            body, hub.cut_after = body[:hub.cut_after], None
        self.wfile.write(body)
        hub.sent += len(body)

    def log_message(self, *args):
        pass  # no line per request in the test output


def network(monkeypatch, allowed=None):
    """Replace conftest's offline block with this test's own: requests under the address `allowed` (the
    local hub) go through, any other fails as it does without a network. Returns the refused URLs."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy between us and 127.0.0.1
    refused = []

    def urlopen(request, *args, **kwargs):
        if allowed and request.full_url.startswith(allowed + "/"):
            return opener.open(request, *args, **kwargs)
        refused.append(request.full_url)
        raise urllib.error.URLError("network unreachable (tests never download)")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return refused


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """fetch's default cache folder, inside the test's own folder: no test writes to ~/.cache."""
    monkeypatch.setenv("GPT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def hub(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    base = f"http://127.0.0.1:{server.server_port}"
    server.hub = Hub(base)
    # it checks for shutdown every poll_interval seconds: 0.5 by default, half a second per test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", base)  # where fetch finds the hub, as huggingface_hub reads it
    network(monkeypatch, allowed=base)
    yield server.hub
    server.shutdown()
    server.server_close()
    thread.join()


def assert_fixture_bytes(folder):
    for name in HUB_FILES:
        assert (folder / name).read_bytes() == (FIXTURE / name).read_bytes(), f"{name} differs from the fixture's"
    assert not list(folder.glob("*.partial")), "a partial file was left behind"


def test_fresh_download_loads_as_the_fixture(hub, cache, capsys):
    folder = fetch("gpt2")
    assert folder == cache / "gpt2"
    assert_fixture_bytes(folder)
    assert (f"/cdn/{hub.sha256}", None) in hub.requests, "the weights did not come through the redirect, whole"
    expected, loaded = GPT.from_pretrained(FIXTURE).state_dict(), GPT.from_pretrained(folder).state_dict()
    assert loaded.keys() == expected.keys()
    for name in expected:
        assert torch.equal(loaded[name], expected[name]), f"{name} differs from the fixture's"
    assert f"downloading {hub.base}/{REPO}/resolve/main/model.safetensors" in capsys.readouterr().out


def test_cut_download_resumes_with_a_range(hub, cache):
    size, cut = len(hub.files["model.safetensors"]), 50_000
    hub.cut_after = cut
    with pytest.raises(UserError, match=f"cut at {cut:,} of {size:,} bytes; run the same command again") as e:
        fetch("gpt2")
    assert "\n" not in str(e.value)
    folder = cache / "gpt2"
    assert not (folder / "model.safetensors").exists(), "a cut download got the final name"
    assert (folder / "model.safetensors.partial").read_bytes() == hub.files["model.safetensors"][:cut]
    hub.requests.clear()
    hub.sent = 0
    assert fetch("gpt2") == folder
    assert (f"/cdn/{hub.sha256}", f"bytes={cut}-") in hub.requests, "the second call did not ask for the rest"
    assert hub.sent == size - cut, "bytes already on the disk were sent again"
    assert (f"/{REPO}/resolve/main/config.json", None) not in hub.requests, "the complete config.json was fetched again"
    assert_fixture_bytes(folder)


def test_server_ignoring_range_restarts_cleanly(hub, cache):
    """A 200 answer to a Range request holds the whole file: appended to the partial bytes, it would
    make a file too long; it must replace them."""
    hub.cut_after = 50_000
    with pytest.raises(UserError, match="cut at"):
        fetch("gpt2")
    hub.ignore_range = True
    fetch("gpt2")
    assert (f"/cdn/{hub.sha256}", "bytes=50000-") in hub.requests
    assert_fixture_bytes(cache / "gpt2")


def flip_a_byte(data):
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def add_bytes(data):
    return data + b"\0" * 8


@pytest.mark.parametrize("filename,damage,said", [
    ("model.safetensors", flip_a_byte, "sha256"),  # the right size, the wrong bytes
    ("model.safetensors", add_bytes, "Content-Length"),  # refused from the answer's headers, before a byte is written
    ("config.json", flip_a_byte, "git sha1"),  # a small file, checked by its git id
])
def test_damaged_file_is_refused_and_not_kept(hub, cache, filename, damage, said):
    hub.served[filename] = damage(hub.files[filename])
    with pytest.raises(UserError, match=said) as e:
        fetch("gpt2")
    assert "\n" not in str(e.value)
    folder = cache / "gpt2"
    assert not (folder / filename).exists(), "a damaged file got the final name"
    assert not (folder / f"{filename}.partial").exists(), "a damaged file was kept to be resumed"
    hub.served[filename] = hub.files[filename]  # the hub mended: the next call fetches the file afresh
    fetch("gpt2")
    assert_fixture_bytes(folder)


def test_offline_says_where_to_put_the_files(monkeypatch, cache):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    refused = network(monkeypatch)
    with pytest.raises(UserError) as e:
        fetch("gpt2")
    message, folder = str(e.value), cache / "gpt2"
    assert refused, "fetch never tried the network"
    assert "\n" not in message
    for name in HUB_FILES:
        assert f"https://huggingface.co/{REPO}/resolve/main/{name}" in message
    assert f"in {folder} by hand, or pass --init_from=FOLDER" in message
    for name in HUB_FILES:  # doing what the message says works, still offline
        shutil.copy(FIXTURE / name, folder / name)
    refused.clear()
    assert fetch("gpt2") == folder and not refused


def test_complete_folder_is_used_without_the_network(monkeypatch, tmp_path):
    refused = network(monkeypatch)
    folder = tmp_path / "elsewhere" / "gpt2-xl"
    folder.mkdir(parents=True)
    for name in HUB_FILES:
        shutil.copy(FIXTURE / name, folder / name)
    assert fetch("gpt2-xl", cache_dir=tmp_path / "elsewhere") == folder
    assert refused == []


def test_two_fetches_at_once_download_once(hub, cache, capsys):
    """Two processes (here two threads, each with its own lock file handle) fetching the same model: one
    downloads, the other waits for the lock and then finds the folder complete."""
    hub.delay = 0.3  # the first download is still going when the second fetch starts
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(fetch("gpt2"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert folders == [cache / "gpt2"] * 2
    assert_fixture_bytes(cache / "gpt2")
    assert sum(path.startswith("/cdn/") for path, _ in hub.requests) == 1, "the weights were downloaded twice"
    assert "waiting for another process downloading into" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["gpt3", "gpt2-small"])
def test_unknown_name_lists_the_four(name):
    with pytest.raises(UserError, match=f"--init_from={name}: not a GPT-2 on the hub; choose gpt2, gpt2-medium, "
                                        f"gpt2-large, gpt2-xl, or pass a folder"):
        fetch(name)


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("GPT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "gpt"


@pytest.mark.parametrize("data,blob_id", [(b"", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"),
                                          (b"hello\n", "ce013625030ba8dba906f756967f9e9ca394464a")])
def test_git_blob_id_is_gits(tmp_path, data, blob_id):
    """The ids `git hash-object` gives, the name by which the hub lists a small file."""
    (tmp_path / "file").write_bytes(data)
    assert file_digest(tmp_path / "file", "git sha1") == blob_id == git_blob_id(data)


def test_every_script_takes_gpt2_by_name(hub, cache, tiny_bpe):  # tiny_bpe: GPT-2's tokenizer, without its files
    """--init_from=gpt2 goes through the one loader that train.py, sample.py and finetune.py share: the
    first use downloads, and the next finds the folder in the cache."""
    model, tokenizer = load_gpt("gpt2")
    assert (cache / "gpt2" / "model.safetensors").is_file() and tokenizer.meta == {"kind": "gpt2"}
    expected = GPT.from_pretrained(FIXTURE).state_dict()
    assert all(torch.equal(model.state_dict()[name], expected[name]) for name in expected)
    requests = len(hub.requests)
    load_gpt("gpt2")
    assert len(hub.requests) == requests  # nothing fetched again
