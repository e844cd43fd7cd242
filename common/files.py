"""
Reading and writing the project's files safely: every script's checkpoints, logs, reports and
prepared data go through here.

A file is never rewritten in place. The new bytes go to a fresh temporary file in the target's
folder, made by tempfile.mkstemp (O_CREAT | O_EXCL: it can't be a file or a link that someone placed
there, so a planted link can't redirect the write), flushed to the disk, then renamed over the
target. A crash leaves the old file or the new one, never half of one.

Reading refuses what can't be trusted: torch_load runs no pickled code, and a text that is missing,
not UTF-8 or a folder is one line naming the file.
"""

import hashlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path

from common.cli import UserError


def atomic_write(path, write, mode="wb", also=()):
    """Call write(f) on a new temporary file beside path, then put it in path's place in one step.
    Each path in also (in the same folder) gets the same file as a second name, a hard link: the bytes
    are written once however many names they have."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # the folder is missing, not a folder, read-only, or its name too long
        raise UserError(f"can't write {path} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on the disk before the name points at them
        for i, other in enumerate(also):
            link = f"{tmp}.{i}"  # tmp's name is ours alone, so this one is too; os.link never follows a link
            os.link(tmp, link)
            os.replace(link, other)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)  # and the new names are too


def fsync_folder(folder):
    """A rename is on the disk only once its folder is flushed (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems can't flush a folder; the rename is still atomic
    finally:
        os.close(fd)


def write_text(text, path):
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(obj, path):
    """meta.json, split.json, metrics.json: plain JSON, which (unlike a pickle) can't run code when read."""
    write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", path)


def write_jsonl(rows, path):
    """One JSON object per line: the prepared examples of a finetuning task."""
    write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), path)


def read_text(path):
    """A whole text file; a missing or non-UTF-8 file is the user's mistake. A UTF-8 byte order mark
    (which some editors write) is not part of the text."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # newline="": the line ends as they are
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:  # a folder, a file we may not read
        raise UserError(f"{path}: {e.strerror}") from None


def read_prompt(spec):
    """A text given on the command line: the text itself, or FILE:path for the text of a file."""
    if not spec.startswith("FILE:"):
        return spec
    return read_text(spec.removeprefix("FILE:"))  # missing, a folder, not UTF-8: one line naming the file


def read_json(path):
    try:
        return json.loads(read_text(path))
    except ValueError as e:  # not JSON
        raise UserError(f"{path} is not valid JSON ({e}); make it again") from None
    except RecursionError:  # nested deeper than the parser can follow (RecursionError is no ValueError)
        raise UserError(f"{path}: JSON nested too deeply to read; make it again") from None


def numbered_lines(path):
    """(line number, line without its line ending) for each line of a text file, counting from 1.
    Only "\\n" ends a line: str.splitlines would also cut a text at a form feed or a Unicode line
    separator, which a message may hold."""
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        yield lineno, line.removesuffix("\r")


def read_jsonl(path):
    """The JSON objects of a .jsonl file, one a line; a line that is not one names the file and line."""
    rows = []
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e})") from None
        except RecursionError:  # see read_json
            raise UserError(f"{path}:{lineno}: JSON nested too deeply to read") from None
    return rows


def sha256(path, h=None):
    """The hex digest of a file's bytes: sha256, or the hasher h given (which may hold a prefix already),
    fed a megabyte at a time so that a large file never sits in memory whole."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def torch_load(path, mmap=False):
    """torch.load with weights_only=True: tensors and plain values only, so no file can run code when
    read. What went wrong is told apart: a file that asks to run code (its pickle names a function to
    call, which weights_only refuses), and one that is damaged or no checkpoint at all."""
    import torch  # here, not at the top: the data scripts use this module and start faster without torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch names the function it refused to load
        if code:
            raise UserError(f"{path} refused: it would run code when unpickled ({code.group(1)}); a checkpoint "
                            f"needs none, so this file is not one to trust") from None
        raise UserError(f"checkpoint {path} is corrupted or truncated, or no checkpoint at all; "
                        f"delete it or retrain") from None
    except Exception as e:  # torch's zip reader raises RuntimeError, an empty file EOFError
        raise UserError(f"checkpoint {path} is corrupted or truncated ({type(e).__name__}); "
                        f"delete it or retrain") from None
