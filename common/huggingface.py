"""
OpenAI's GPT-2 weights in Hugging Face's layout: a folder holding config.json and model.safetensors
(or pytorch_model.bin). Reading one needs no extra package: GPT.from_pretrained calls read_config and
load_state_dict, and maps the names onto our model.

fetch downloads such a folder from the Hugging Face hub, once, for users online:

    from common.huggingface import fetch
    folder = fetch("gpt2")   # or gpt2-medium, gpt2-large, gpt2-xl: ~/.cache/gpt/gpt2, or $GPT_CACHE_DIR/gpt2
    model = GPT.from_pretrained(folder)

It needs no extra package either (urllib). A cut download resumes where it stopped, each file is
checked against the size and hash the hub lists before it gets its name, and offline it says where to
put the two files by hand.
"""

import hashlib
import http.client
import json
import os
import struct
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from common.cli import UserError
from common.files import fsync_folder, read_json, sha256, torch_load
from common.progress import Progress

SIZES = ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd")  # what GPT.from_pretrained reads


def read_config(directory):
    """config.json of a GPT-2 folder, with what can be wrong with it said in one line."""
    path = Path(directory) / "config.json"
    hf = read_json(path)
    if not isinstance(hf, dict) or any(key not in hf for key in SIZES):
        raise UserError(f"{path} lacks GPT-2's sizes ({', '.join(SIZES)}); is this a GPT-2 folder?")
    return hf


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "U8": torch.uint8, "BOOL": torch.bool}


def load_safetensors(path):
    """A .safetensors file is an 8-byte header length, a JSON header giving each tensor's dtype, shape
    and byte range, then the raw bytes. Reading it needs no extra package."""
    data = Path(path).read_bytes()
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_len])
        body = bytearray(data[8 + header_len :])
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            flat = torch.frombuffer(body, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
            tensors[name] = flat.reshape(info["shape"]).clone()
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        # a header cut short or not JSON, a byte range past the end of the file, an unknown dtype
        raise UserError(f"{path} is damaged or not a safetensors file ({type(e).__name__}); "
                        f"download it again") from None
    return tensors


def load_state_dict(directory):
    """GPT-2 weights from a Hugging Face directory, keyed like our model ("transformer.h.0.ln_1.weight").
    OpenAI's files name them without the "transformer." prefix; files saved by GPT2LMHeadModel with it."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        raw = load_safetensors(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        raw = torch_load(directory / "pytorch_model.bin")
    else:
        raise UserError(f"{directory} holds neither model.safetensors nor pytorch_model.bin")
    if not isinstance(raw, dict):
        raise UserError(f"{directory}: the weights file holds a {type(raw).__name__}, not named tensors")
    if not all(isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in raw.items()):
        raise UserError(f"{directory}: the weights file holds more than named tensors; it is damaged")
    state = {}
    for name, tensor in raw.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # HF's causal-mask buffers, and the lm_head tied to wte
        state["transformer." + name] = tensor
    return state


# ----------------------------------------------------------------------------- downloading GPT-2 from the hub
# What this relies on (Hugging Face's public conventions; checked here only against a local imitation):
# - a file of a repository is at HUB/<repo>/resolve/<revision>/<file>. A small file is answered there;
#   a large one (kept in git LFS or Xet) is a redirect to a CDN, which urllib follows and which
#   answers HTTP Range requests (206 Partial Content, with Content-Range).
# - HUB/api/models/<repo>/tree/<revision> lists the files as JSON: for each, "path", "size" and "oid"
#   (git's id of the file), and for a large one "lfs": {"oid": its sha256, "size": ...}.
# The redirect itself also carries the size and sha256 (X-Linked-Size, X-Linked-Etag), but urllib
# follows it without showing its headers; the listing gives the same facts in one plain request.

HUB_REPOS = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
             "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
HUB_FILES = ("config.json", "model.safetensors")  # what GPT.from_pretrained reads
REVISION = "main"
TIMEOUT = 30  # seconds without a byte before a request gives up
CHUNK = 1 << 20  # bytes received at a time: a 6 GB file never sits in memory whole
MB = 10**6


@dataclass
class Listed:
    """What the hub lists for one file: its size, and a hash of its bytes to check a download against."""
    size: int
    hash_name: str  # "sha256" for a large (LFS) file; "git sha1" for a small one kept in git itself
    digest: str


def default_cache_dir():
    """$GPT_CACHE_DIR, else ~/.cache/gpt."""
    return Path(os.environ.get("GPT_CACHE_DIR") or Path.home() / ".cache" / "gpt")


def hub_url():
    """The hub's address: $HF_ENDPOINT where set (a mirror, as huggingface_hub reads it; the tests'
    local server), else huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def resolve_url(repo, filename):
    return f"{hub_url()}/{repo}/resolve/{REVISION}/{filename}"


def is_complete(folder):
    """A file gets its final name only once downloaded whole and checked: both names mean a complete folder."""
    return all((folder / filename).is_file() for filename in HUB_FILES)


def fetch(name, cache_dir=None):
    """The folder holding config.json and model.safetensors of OpenAI's GPT-2 called name (gpt2,
    gpt2-medium, gpt2-large or gpt2-xl): cache_dir/name, where cache_dir defaults to $GPT_CACHE_DIR,
    else ~/.cache/gpt. The first call downloads the files from the Hugging Face hub; a folder that
    already holds both is returned without touching the network."""
    if name not in HUB_REPOS:
        raise UserError(f"--init_from={name}: not a GPT-2 on the hub; choose {', '.join(HUB_REPOS)}, "
                        f"or pass a folder holding {' and '.join(HUB_FILES)}")
    folder = Path(cache_dir or default_cache_dir()) / name
    if is_complete(folder):
        return folder
    urls = [resolve_url(HUB_REPOS[name], filename) for filename in HUB_FILES]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder):
            if not is_complete(folder):  # another process may have fetched it while this one waited
                listing = list_files(HUB_REPOS[name])
                for filename, url in zip(HUB_FILES, urls):
                    if not (folder / filename).is_file():
                        download(url, folder / filename, listed(listing, filename, url))
    except urllib.error.URLError as e:  # no network, or the hub refused (see open_url)
        raise UserError(f"can't download {name} ({e.reason}); put {' and '.join(urls)} in {folder} by hand, "
                        f"or pass --init_from=FOLDER holding those two files") from None
    except OSError as e:  # the cache folder can't be made or written
        raise UserError(f"can't write {name} into {folder} ({e.strerror or e}); set GPT_CACHE_DIR to a "
                        f"folder you may write to") from None
    return folder


@contextmanager
def folder_lock(folder):
    """Hold folder/.lock while fetching into it: a second process fetching the same model waits here,
    then finds the files complete, so two never append to one partial file. The kernel releases the
    lock when the process ends, however it ends."""
    # fcntl is POSIX only: imported here, not at the top, so that model.py (which reads weights through
    # this module) imports anywhere
    import fcntl
    with open(folder / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process downloading into {folder}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def open_url(url, headers=None):
    """GET url, following redirects. Every way of getting no usable answer (no network, no such host,
    a refused or dropped connection, a timeout, an error status) is raised as URLError, so fetch can
    tell the network's failures from the disk's (OSError)."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=TIMEOUT)
    except urllib.error.HTTPError as e:  # an answer, with an error status
        raise urllib.error.URLError(f"HTTP {e.code} {e.reason} from {url}") from None
    except urllib.error.URLError:  # no connection
        raise
    except (OSError, http.client.HTTPException) as e:  # the connection dropped or timed out before the headers
        raise urllib.error.URLError(f"{type(e).__name__} from {url}") from None


def list_files(repo):
    """{path: Listed} for the files at the top of a hub repository, from the hub's tree API."""
    url = f"{hub_url()}/api/models/{repo}/tree/{REVISION}"
    with open_url(url) as response:
        try:
            entries = json.load(response)
            return {entry["path"]: Listed(entry["lfs"]["size"], "sha256", entry["lfs"]["oid"]) if "lfs" in entry
                    else Listed(entry["size"], "git sha1", entry["oid"]) for entry in entries}
        except (ValueError, KeyError, TypeError) as e:  # not JSON, or not the layout this code reads
            raise UserError(f"{url}: the hub's list of files is not in the layout this code reads "
                            f"({type(e).__name__}: {e}); download the files by hand") from None


def listed(listing, filename, url):
    """What the listing says of filename."""
    if filename not in listing:
        raise UserError(f"{url}: the hub lists no {filename} in this repository")
    return listing[filename]


def download(url, path, expected):
    """url's file into path, through path.partial. The bytes a cut download left there are not asked
    for again (an HTTP Range request), and path gets its name only once the whole file has the size
    and hash the hub lists: no partial or damaged file is ever under the final name."""
    partial = path.with_name(path.name + ".partial")
    have = partial.stat().st_size if partial.is_file() else 0
    if have < expected.size:
        receive(url, partial, have, expected.size)
    check_file(partial, expected, url)
    os.replace(partial, path)  # one step: path is absent or complete
    fsync_folder(path.parent)


def receive(url, partial, have, size):
    """Ask for url's bytes from byte `have` on and append them to partial. A server that ignores the
    Range header answers 200 with the whole file: partial then starts again from its first byte."""
    with open_url(url, {"Range": f"bytes={have}-"} if have else {}) as response:
        first = have if response.status == 206 else 0
        check_answer(response, first, size, url)
        print(f"downloading {url} -> {partial}" + (f", from byte {first:,}" if first else ""))
        with open(partial, "ab" if first else "wb") as f:
            write_answer(response, f, first, size, partial.name.removesuffix(".partial"))
            f.flush()
            os.fsync(f.fileno())  # the bytes are on the disk before the file gets its final name


def check_answer(response, first, size, url):
    """Refuse, before writing a byte, an answer whose headers say it is not the rest of a file of the
    size the hub lists: a 206 names its bytes in Content-Range ("bytes 100-999/1000"), a 200 is the
    whole file, Content-Length bytes long. A header the server leaves out is not checked here."""
    header = "Content-Range" if response.status == 206 else "Content-Length"
    expected = f"bytes {first}-{size - 1}/{size}" if response.status == 206 else str(size)
    served = response.headers.get(header)
    if served is not None and served != expected:
        raise UserError(f"{url} is not the file the hub lists ({size:,} bytes): its {header} is {served}, "
                        f"not {expected}; nothing was written, try again later")


def write_answer(response, f, done, size, name):
    """Copy an answer's bytes into f until it ends or its connection drops: what came is kept either
    way, and check_file then finds the file short."""
    progress = Progress(size // MB, f"downloading {name}", "MB", start=done // MB)
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException):  # the connection dropped or timed out mid-file
            break
        if not chunk:  # the end, or (with http.client) a connection closed before Content-Length bytes
            break
        f.write(chunk)
        done += len(chunk)
        progress.update(min(done, size) // MB)
    progress.close()


def check_file(partial, expected, url):
    """A short file is a cut download: kept, so that the next call resumes it. A longer one, or one
    whose hash is not the listed one, is damaged: removed, so that the next call starts afresh."""
    size = partial.stat().st_size
    if size < expected.size:
        raise UserError(f"the download of {url} was cut at {size:,} of {expected.size:,} bytes; run the same "
                        f"command again to resume it")
    digest = file_digest(partial, expected.hash_name)
    if size > expected.size or digest != expected.digest:
        partial.unlink()
        raise UserError(f"{url} came damaged ({size:,} bytes, {expected.hash_name} {digest[:12]}...; the hub "
                        f"lists {expected.size:,} bytes, {expected.digest[:12]}...); it was not kept, run again")


def file_digest(path, hash_name):
    """The sha256 of a file's bytes, or its git blob id ("git sha1"): git names a file by the sha1 of
    "blob <size>", a zero byte, then the file's bytes, and the hub lists a small file by that name."""
    if hash_name == "sha256":
        return sha256(path)
    return sha256(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode()))
