"""
A pretraining corpus as train.py reads it: data/<dataset>/ holding train.bin and val.bin (the token
ids as uint16, one stream each) and meta.json (the tokenizer that made them), written by the
dataset's prepare.py. train.py memory-maps the .bin files: they stay on disk, and each batch reads
only its rows, so any corpus fits.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from common.cli import UserError
from common.files import read_json

ROOT = Path(__file__).resolve().parents[1]


def open_tokens(path, block_size):
    size = path.stat().st_size  # checked before mapping: numpy can't map an empty file or half a token
    if size % 2:
        raise UserError(f"{path} has an odd number of bytes ({size}), so it is not uint16 tokens; prepare the data again")
    if size // 2 <= block_size:
        raise UserError(f"{path} holds {size // 2} tokens, too few for block_size {block_size}; "
                        f"use more text or a smaller --block_size")
    return np.memmap(path, dtype=np.uint16, mode="r")


def find_data(dataset, data_dir, ddp):
    """data/<dataset>/ (or data_dir, when given) with train.bin, val.bin and meta.json, and meta.json's
    tokenizer description. The first run makes them by running data/<dataset>/prepare.py, so `python
    train.py` alone is enough; under torchrun one process per machine prepares (local rank 0) and the
    others wait for it."""
    given = bool(data_dir)
    data_dir = Path(data_dir) if given else ROOT / "data" / dataset
    script = ROOT / "data" / dataset / "prepare.py"
    if not (data_dir / "train.bin").is_file():
        if given or not script.is_file():
            known = sorted(p.parent.name for p in (ROOT / "data").glob("*/prepare.py"))
            raise UserError(f"no train.bin in {data_dir}; --dataset takes one of {', '.join(known)}, "
                            f"or --data_dir a folder holding train.bin, val.bin and meta.json")
        if ddp.local_rank == 0:
            print(f"{data_dir / 'train.bin'} is missing: running python data/{dataset}/prepare.py")
            if subprocess.run([sys.executable, str(script)]).returncode != 0:
                raise UserError(f"data/{dataset}/prepare.py failed (see its message above)")
        if ddp.enabled:
            dist.barrier()
        if not (data_dir / "train.bin").is_file():
            raise UserError(f"data/{dataset}/prepare.py wrote no train.bin; is {dataset} a pretraining corpus?")
    for name in ("val.bin", "meta.json"):
        if not (data_dir / name).is_file():
            raise UserError(f"{data_dir} has train.bin but no {name}; prepare the data again")
    return data_dir, read_json(data_dir / "meta.json")
