"""
Where a GPT's parameters, compute and memory go: one row per module with its parameters, FLOPs per
token (forward, and training = 3 x forward), the activations of one sequence, and each one's share
of the whole. The FLOPs add up to what GPT.estimate_mfu counts (train.py's MFU); common/costs.py
says how each row is counted.

    python tools/inspect_model.py                                   # train.py's default model
    python tools/inspect_model.py config/train_shakespeare_char.py  # a config file, as train.py takes it
    python tools/inspect_model.py config/train_imdb_base.py         # the shared base model
    python tools/inspect_model.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --vocab_size=50257
    python tools/inspect_model.py --init_from=out-shakespeare-char  # a train.py run (or a GPT-2 folder)
    python tools/inspect_model.py --init_from=out-shakespeare-char --checkpoint=last
"""

import sys
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common import runtime
from common.checkpoint import load_gpt
from common.cli import parse_config, run_main
from common.tokenizer import load_tokenizer
from common.costs import cost_rows, total
from common.datasets import find_data
from common.runtime import Distributed
from model import GPT, GPTConfig


@dataclass
class InspectConfig:
    """The model's sizes as train.py takes them (its config files work here: the options they set that
    do not size the model are left alone), or a saved model to read them from."""
    init_from: str = "scratch"  # "scratch": the model these options describe; or a train.py run or GPT-2 folder
    checkpoint: str = "best"  # of a train.py run: "best" or "last"
    dataset: str = "shakespeare_char"  # its meta.json gives the vocabulary (prepared first if missing)
    data_dir: str = ""
    vocab_size: int = 0  # 0: the dataset's
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    bias: bool = False
    batch_size: int = 8  # for the size of a micro-step
    device: str = "auto"
    dtype: str = "auto"  # the activations' size


def model_to_inspect(cfg):
    """The GPT that cfg describes (init_from=scratch), or the one saved in a run or a GPT-2 folder."""
    if cfg.init_from != "scratch":
        return load_gpt(cfg.init_from, cfg.checkpoint)[0]
    vocab_size = cfg.vocab_size or load_tokenizer(find_data(cfg.dataset, cfg.data_dir, Distributed())[1]).vocab_size
    config = GPTConfig(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                       n_embd=cfg.n_embd, bias=cfg.bias)
    with torch.device("meta"):  # shapes only: no memory is allocated and no weights drawn
        return GPT(config)


def share(part, whole):
    return f"{100 * part / whole:.1f}%" if whole else "-"


def table(rows, bytes_per_element):
    """The rows and their total as Markdown, with each row's share of the total."""
    whole = total(rows)
    lines = ["| module | params | share | forward FLOPs/token | training FLOPs/token | share "
             "| activations/sequence | share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [whole]:
        lines.append(f"| {r.name} | {r.params:,} | {share(r.params, whole.params)} | {r.forward_flops:,} "
                     f"| {r.train_flops:,} | {share(r.train_flops, whole.train_flops)} "
                     f"| {mebibytes(r.activations * bytes_per_element)} | {share(r.activations, whole.activations)} |")
    return "\n".join(lines)


def mebibytes(n_bytes):
    return f"{n_bytes / 2**20:,.2f} MiB"


def checks(model, rows):
    """The table's totals beside the model's own parameter count and estimate_mfu's FLOPs per token."""
    c, whole = model.config, total(rows)
    per_token = model.estimate_mfu(fwdbwd_per_iter=1, dt=1.0, peak_flops=1.0) / c.block_size  # 1 sequence's FLOPs / T
    return [f"parameters: the model has {sum(p.numel() for p in model.parameters()):,}, the table {whole.params:,}",
            f"training FLOPs per token: estimate_mfu counts 6N + 12*L*H*Q*T = 6 x {model.get_num_params():,} + "
            f"12 x {c.n_layer} x {c.n_head} x {c.n_embd // c.n_head} x {c.block_size} = {per_token:,.0f}, "
            f"the table {whole.train_flops:,}"]


def main(argv):
    cfg = parse_config(InspectConfig, argv, files_may_set_others=True)
    model = model_to_inspect(cfg)
    c, rows = model.config, cost_rows(model.config)
    dtype = runtime.pick_dtype(cfg.dtype, runtime.pick_device(cfg.device))
    itemsize = runtime.DTYPES[dtype].itemsize  # bytes per activation
    print(f"{c.n_layer} layers, {c.n_head} heads, {c.n_embd} dims, block {c.block_size}, vocabulary "
          f"{c.vocab_size:,}, bias {c.bias}; activations at {itemsize} bytes each ({dtype})\n")
    print(table(rows, itemsize))
    print("\n" + "\n".join(checks(model, rows)))
    whole, tokens = total(rows), cfg.batch_size * c.block_size
    print(f"a micro-step of batch_size={cfg.batch_size} x {c.block_size} tokens: "
          f"{whole.train_flops * tokens / 1e9:,.2f} GFLOP (forward and backward), "
          f"{mebibytes(whole.activations * cfg.batch_size * itemsize)} of activations")


if __name__ == "__main__":
    run_main(main)
