"""
Where raw data comes from, and the helpers the data/*/prepare.py scripts share to read, split and
write it.

    python data/shakespeare_char/prepare.py                          # local copy, or download
    python data/shakespeare_char/prepare.py --input=path/to/input.txt
    GPT_DATA_DIR=/path/to/data python data/shakespeare_char/prepare.py

A raw file such as "tinyshakespeare/input.txt" is looked for, in this order: the --input=PATH
the user gave; $GPT_DATA_DIR/tinyshakespeare/input.txt; ../shared/data/tinyshakespeare/input.txt
beside the repository; a copy downloaded earlier; and last a download of the canonical URL.
"""

import os
import random
import shutil
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import UserError
from common.files import atomic_write, write_json, write_jsonl
from common.progress import Progress

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class PrepareArgs:
    """The options every data/*/prepare.py takes on its command line."""
    input: str | None = None  # the raw data at this path, instead of searching for it or downloading it
    out_dir: str | None = None  # where to write; None = the dataset's own folder under data/


def local_copy(relpath):
    """relpath under $GPT_DATA_DIR or ../shared/data, or None if neither holds it."""
    roots = [Path(os.environ["GPT_DATA_DIR"])] if os.environ.get("GPT_DATA_DIR") else []
    for root in roots + [SHARED_DATA]:
        if (root / relpath).is_file():
            return root / relpath
    return None


def find_source(relpath, url, download_dir, input_path=None, member=None):
    """The path of a raw data file: input_path if given, else a local copy of relpath, else a download
    of url into download_dir/downloads/, kept there for the next run. When url is a zip file, member
    names the file to take out of it. url=None: no public source, so the file must be found locally."""
    if input_path is not None:
        if not Path(input_path).is_file():
            raise UserError(f"--input={input_path}: no such file")
        return Path(input_path)
    found = local_copy(relpath)
    if found is not None:
        return found
    where = (f"pass --input=PATH, or set GPT_DATA_DIR to a folder holding {relpath} "
             f"(looked in {os.environ.get('GPT_DATA_DIR') or '$GPT_DATA_DIR (unset)'} and {SHARED_DATA})")
    if url is None:
        raise UserError(f"{relpath} has no public download; {where}")
    cache = Path(download_dir) / "downloads"
    try:
        archive = download(url, cache)
    except OSError as e:  # urllib's URLError included
        raise UserError(f"could not download {url} ({e}); {where}") from None
    return extract(archive, member, cache) if member else archive


def download(url, cache):
    """Fetch url into the cache folder, unless an earlier run already did. The bytes go to a fresh
    temporary file that is renamed into place when complete (common/files.atomic_write): an interrupted
    download, or two processes fetching at once, never leave a partial file under the final name."""
    path = cache / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} -> {path}")
    with urllib.request.urlopen(url, timeout=60) as response:
        atomic_write(path, lambda f: copy_with_progress(response, f, path.name))
    return path


def copy_with_progress(response, f, name):
    """Copy a download into the file f, showing how much has come when the server says how much will."""
    total_kib = int(response.headers.get("Content-Length") or 0) // 1024
    if not total_kib:
        shutil.copyfileobj(response, f)
        return
    progress, done = Progress(total_kib, f"downloading {name}", "KiB"), 0
    while chunk := response.read(1 << 16):
        f.write(chunk)
        done += len(chunk)
        progress.update(min(done // 1024, total_kib))
    progress.close()


def extract(archive, member, cache):
    """Take one file out of a downloaded zip, into the cache folder."""
    path = cache / Path(member).name
    if not path.is_file():
        with zipfile.ZipFile(archive) as z:
            data = z.read(member)
        atomic_write(path, lambda f: f.write(data))
    return path


def label_counts(parts):
    """{part name: {label: number of examples}}, for a split.json."""
    return {name: dict(sorted(Counter(row["label"] for row in rows).items())) for name, rows in parts.items()}


def split_examples(examples, fractions, seed, label_key=None):
    """Shuffle examples (seeded) and cut them into named parts of the given fractions, the last part
    taking what rounding leaves. With label_key the cut is stratified: each label is cut on its own,
    so every part keeps the label proportions of the whole."""
    groups = {}
    for example in examples:
        groups.setdefault(example[label_key] if label_key else None, []).append(example)
    rng = random.Random(seed)
    parts = {name: [] for name in fractions}
    for group in groups.values():
        rng.shuffle(group)
        start = 0
        for i, (name, fraction) in enumerate(fractions.items()):
            end = len(group) if i == len(fractions) - 1 else start + round(fraction * len(group))
            parts[name].extend(group[start:end])
            start = end
    for part in parts.values():
        rng.shuffle(part)  # mix the labels, which were appended group by group
    return parts


def write_tokens(ids, path):
    """A token stream as raw uint16, the format train.py memory-maps; GPT-2's 50,257 ids fit."""
    ids = np.asarray(ids, dtype=np.int64)
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < 2**16), "token ids must fit in uint16"
    atomic_write(path, lambda f: ids.astype(np.uint16).tofile(f))


def read_tokens(path):
    """The token stream written by write_tokens, memory-mapped rather than read into memory."""
    return np.memmap(path, dtype=np.uint16, mode="r")


def make_out_dir(out_dir):
    """The folder that prepared files go to, made when they are written: a prepare script that fails
    before (no raw file, a bad one) leaves no empty folder behind."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"--out_dir={out_dir} is a file, not a folder")
    Path(out_dir).mkdir(parents=True, exist_ok=True)


def write_splits(parts, out_dir, record):
    """Each part of a finetuning task as out_dir/<name>.jsonl, and split.json: the record of how the
    parts were made (source, seed, counts), so that anyone can check and redo the split."""
    make_out_dir(out_dir)
    for name, rows in parts.items():
        write_jsonl(rows, Path(out_dir) / f"{name}.jsonl")
    write_json(record, Path(out_dir) / "split.json")


