"""
A run's folder (out_dir), and the rules that keep runs from destroying each other's work:
- a new run refuses a folder that already holds a run, unless --overwrite=True (check_new_run);
- each script resumes only its own runs (check_resumable);
- one run writes to a folder at a time: a run holds an exclusive lock on out_dir/.lock for its whole
  life (claim). The kernel releases it when the process ends, however it ends, so a killed run never
  leaves a stale lock behind.
"""

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from common.checkpoint import load_checkpoint, written_by
from common.cli import UserError

RUN_FILES = ("last.pt", "best.pt", "metrics.json")  # what a train.py or finetune.py run leaves behind
RESUME_FLAG = "--resume=True"  # how both scripts continue an interrupted run
LOCK = ".lock"


def check_resumable(ckpt, path, script):
    """Each script continues only its own runs: the other's last.pt holds other things."""
    owner = written_by(ckpt)
    if owner != script:
        raise UserError(f"{path} is the checkpoint of a {owner} run, not of a {script} run; continue it with "
                        f"python {owner} --out_dir={Path(path).parent} {RESUME_FLAG}")
    if not isinstance(ckpt.get("config"), dict):  # the settings a resumed run takes back
        raise UserError(f"{path} holds no run settings ('config'), so it can't be resumed; it is damaged")


def check_new_run(out_dir, script, overwrite):
    """Before a new run of script: refuse an out_dir that already holds a run (finished or not), so a
    repeated command never replaces work, unless overwrite says to. Nothing is written here."""
    if not out_dir:
        raise UserError("--out_dir is empty; name the folder the run is written to (--out_dir=. for this one)")
    out_dir = reachable(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out_dir={out_dir} is a file, not a folder")
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        return
    if overwrite:
        print(f"--overwrite=True: this {script} run replaces the run in {out_dir} ({', '.join(found)})")
        return
    choices = "choose another --out_dir, or pass --overwrite=True to replace it"
    if "last.pt" in found:  # it can go on: say with which script
        owner = written_by(load_checkpoint(out_dir / "last.pt", peek=True))
        choices = f"continue it with python {owner} --out_dir={out_dir} {RESUME_FLAG}, {choices}"
    raise UserError(f"{out_dir} already holds a run ({', '.join(found)}); {choices}")


def resume_file(out_dir):
    """"last" (last.pt), or for a run that saves only improvements (always_save_checkpoint=False) "best"."""
    for which in ("last", "best"):
        if (reachable(out_dir) / f"{which}.pt").is_file():
            return which
    raise UserError(f"--resume=True: no checkpoint in {out_dir} (last.pt or best.pt) to continue; start a new "
                    f"run without --resume, or check --out_dir")


def reachable(out_dir):
    """Path(out_dir), once the system can look there. A name it refuses outright (a part longer than
    it allows, a folder we may not enter) would make every later look raise; say so in one line first."""
    try:
        Path(out_dir).exists()  # False, not an error, for a missing folder or one under a file
    except OSError as e:
        raise UserError(f"--out_dir={out_dir}: can't use it ({e.strerror or e}); choose another --out_dir") from None
    return Path(out_dir)


@contextmanager
def claim(out_dir):
    """Make out_dir if needed and hold its lock while the body runs: a second run into the same folder
    (or a resume of a run that is still going) stops at once, naming the process that holds it. A
    folder made here that the run left empty (it failed before writing anything) is removed again."""
    if not out_dir:  # "" would be the current folder: a slip, never a choice
        raise UserError("--out_dir is empty; name the folder the run is written to (--out_dir=. for this one)")
    out_dir = reachable(out_dir)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:  # under a file, in a read-only or /proc folder, a link planted at .lock
        raise UserError(f"--out_dir={out_dir}: can't write there ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"another run (process {holder}) is writing to {out_dir}; wait for it to end, "
                            f"or choose another --out_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message above
        yield out_dir
    finally:
        if made and set(os.listdir(out_dir)) <= {LOCK}:
            (out_dir / LOCK).unlink(missing_ok=True)
            out_dir.rmdir()
        os.close(fd)  # releases the lock (the kernel does it too if the process dies first)
