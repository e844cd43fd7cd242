"""
Memory and communication per rank of the three ways common/parallel.py spreads a GPT over processes
(ddp, fsdp, tp), against one process, measured on CPU with gloo: the bytes of each rank's parameters,
gradients and AdamW state, counted from its tensors; its memory (RSS) at rest and at its peak during a
training step; and the bytes of every collective of one step, counted as they run and set beside a
formula. Linux only (the peak is read from /proc). Prints tables (docs: parallelism).

    python tools/bench_parallel.py                   # GPT-2 124M's shape on 2 ranks: ~10 GiB, minutes
    python tools/bench_parallel.py --n_layer=2 --n_head=4 --n_embd=128 --vocab_size=512 --block_size=64
"""

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode

from common import parallel, runtime
from common.cli import parse_config, run_main
from common.optim import adamw
from model import GPT, GPTConfig

MB = 1e6


@dataclass
class BenchConfig:
    # the model: GPT-2 124M's shape, with nanoGPT's vocabulary padded to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50304
    block_size: int = 1024
    bias: bool = True
    attention: str = "sdpa"  # the GPU's kind; the manual path would keep 12 (T, T) maps a layer alive
    # the step: batch_size sequences of block_size tokens in all, shared as each mode shares them
    batch_size: int = 2
    ranks: int = 2
    modes: str = "one,ddp,fsdp,tp"  # "one": a single process, the reference
    seed: int = 1337

    def __post_init__(self):
        for mode in self.modes.split(","):
            if mode != "one" and mode not in parallel.MODES:
                raise ValueError(f"modes takes one, {', '.join(parallel.MODES)}; got {mode!r}")
        if self.batch_size % self.ranks:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of ranks ({self.ranks})")


# ----------------------------------------------------------------------------- counting collectives

c10d, funcol = torch.ops.c10d, torch.ops._c10d_functional
# each collective's payload: the whole tensor it reduces or assembles (all ranks' parts together)
PAYLOAD = {
    c10d.allreduce_: ("all-reduce", lambda args: sum(t.nbytes for t in args[0])),  # DDP's gradient buckets
    funcol.all_reduce: ("all-reduce", lambda args: args[0].nbytes),  # DTensor: tp's activations, norms
    c10d._allgather_base_: ("all-gather", lambda args: args[0].nbytes),  # FSDP: (output, this rank's input)
    funcol.all_gather_into_tensor: ("all-gather", lambda args: args[0].nbytes * args[1]),  # (input, ranks)
    c10d._reduce_scatter_base_: ("reduce-scatter", lambda args: args[1].nbytes),  # FSDP: (this rank's output, input)
    funcol.reduce_scatter_tensor: ("reduce-scatter", lambda args: args[0].nbytes),
    c10d.broadcast_: ("broadcast", lambda args: sum(t.nbytes for t in args[0])),  # none expected in a step
}


class CollectiveBytes(TorchDispatchMode):
    """While active, adds up the payload of every collective this process joins, by kind. It sees them
    where they reach PyTorch's dispatcher, so DDP's C++ reducer, FSDP's and DTensor's are all counted."""

    def __init__(self):
        super().__init__()
        self.bytes, self.calls = defaultdict(int), defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(issubclass(t, DTensor) for t in types):
            return NotImplemented  # let DTensor first turn its op into plain ops and collectives
        if func._overloadpacket in PAYLOAD:
            kind, size = PAYLOAD[func._overloadpacket]
            self.bytes[kind] += size(args)
            self.calls[kind] += 1
        return func(*args, **(kwargs or {}))


def expected_payload(mode, cfg, n_params, root_params, batch_per_rank):
    """The formula for one float32 step of one micro-batch: the payload of each kind of collective.
    ddp: one all-reduce of every gradient. fsdp: each Block's weights all-gathered in forward and
    again in backward, the root's (embeddings, ln_f) once (FSDP keeps them whole between the two);
    every gradient reduce-scattered. tp: per Block two all-reduces of (B, T, C) activations forward
    and two of their gradients backward. (fsdp and tp also all-reduce the gradient norm's few bytes.)"""
    if mode == "ddp":
        return {"all-reduce": 4 * n_params}
    if mode == "fsdp":
        return {"all-gather": 4 * (2 * (n_params - root_params) + root_params), "reduce-scatter": 4 * n_params}
    return {"all-reduce": 4 * cfg.n_layer * batch_per_rank * cfg.block_size * cfg.n_embd * 4}


# ----------------------------------------------------------------------------- one rank's measurement

def memory(field):
    """This process's VmRSS (resident now) or VmHWM (the peak since the last reset_peak), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak():
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def train_step(model, train_model, optimizer, x, y):
    """A training step as train.py takes it; returns the bytes held after backward, before the step
    (when the gradients exist), with AdamW's state counted after it."""
    _, loss = train_model(x, y)
    loss.backward()
    held = parallel.bytes_per_rank(model, optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    held["optimizer"] = parallel.bytes_per_rank(model, optimizer)["optimizer"]
    return held


def measure_rank(rank, cfg, mode, folder):
    """One rank (or the one process) of mode: warm-up steps, then a measured one. Writes its figures
    to folder/{mode}{rank}.json."""
    torch.set_num_threads(1)  # one core per rank
    ddp = runtime.Distributed()
    if mode != "one":
        dist.init_process_group("gloo", init_method=f"file://{folder}/{mode}.rendezvous", rank=rank,
                                world_size=cfg.ranks)
        ddp = runtime.Distributed(rank=rank, local_rank=rank, world_size=cfg.ranks)
    base = memory("VmRSS")  # Python and torch, before the model
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, bias=cfg.bias, attention=cfg.attention))
    root_params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.transformer.h.parameters())
    train_model = parallel.parallelize(model, "ddp" if mode == "one" else mode, ddp, "cpu", "float32")
    optimizer = adamw(model, 0.1, 6e-4, (0.9, 0.95), "cpu")
    data_rank, data_ranks = parallel.data_parallel_rank("ddp" if mode == "one" else mode, ddp.rank, ddp.world_size)
    rows = cfg.batch_size // data_ranks
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1), generator=generator)
    x, y = tokens[data_rank * rows : (data_rank + 1) * rows, :-1], tokens[data_rank * rows : (data_rank + 1) * rows, 1:]

    # two warm-up steps: the first makes AdamW's state, the second lets DDP rebuild its gradient buckets
    # in the order backward made the gradients (a one-off broadcast); the third step is the steady one
    for _ in range(2):
        train_step(model, train_model, optimizer, x, y)
    rest = memory("VmRSS")
    reset_peak()
    counter = CollectiveBytes()
    t0 = time.perf_counter()
    with counter:
        held = train_step(model, train_model, optimizer, x, y)
    seconds = time.perf_counter() - t0
    result = {"held": held, "base": base, "rest": rest, "peak": memory("VmHWM"), "seconds": seconds,
              "comm": dict(counter.bytes), "calls": dict(counter.calls),
              "n_params": model.get_num_params(non_embedding=False), "root_params": root_params, "rows": rows}
    (folder / f"{mode}{rank}.json").write_text(json.dumps(result))
    if ddp.enabled:
        runtime.end_distributed()  # waits for every rank, then exits at once (see its docstring)


# ----------------------------------------------------------------------------- tables

def print_memory(results):
    """A row per rank: the bytes its tensors hold, and its memory above Python's and torch's own."""
    base = next(iter(results.values()))[0]["base"]
    print(f"\nper rank, MB: what its tensors hold after backward, and its resident memory (RSS) above the "
          f"{base / MB:,.0f} MB of Python and torch, before the step and at its peak during it")
    print(f"{'':9} {'parameters':>11} {'gradients':>10} {'AdamW':>8} {'sum':>8} {'at rest':>8} {'peak':>8} "
          f"{'s/step':>7}")
    for mode, ranks in results.items():
        for rank, r in enumerate(ranks):
            held = {kind: b / MB for kind, b in r["held"].items()}
            rest, peak = (r["rest"] - r["base"]) / MB, (r["peak"] - r["base"]) / MB
            print(f"{mode:6} r{rank} {held['parameters']:11,.1f} {held['gradients']:10,.1f} {held['optimizer']:8,.1f} "
                  f"{sum(held.values()):8,.1f} {rest:8,.0f} {peak:8,.0f} {r['seconds']:7.1f}")


def print_communication(results, cfg):
    """A row per mode (every rank joins the same collectives): the payload counted, beside the formula."""
    print("\ncommunication per step, MB of payload (the whole tensor a collective reduces or assembles): "
          "counted / formula (calls)")
    # a ring algorithm sends from each rank (N-1)/N of an all-gather's or reduce-scatter's payload, and
    # twice that of an all-reduce's (a reduce-scatter, then an all-gather); a broadcast's root sends it all
    share = (cfg.ranks - 1) / cfg.ranks
    for mode, (r, *_) in results.items():
        if mode == "one":
            continue
        expected = expected_payload(mode, cfg, r["n_params"], r["root_params"], r["rows"])
        cells = [f"{kind} {r['comm'].get(kind, 0) / MB:,.1f} / {formula(expected.get(kind))} "
                 f"({r['calls'].get(kind, 0)})"
                 for kind in ("all-reduce", "all-gather", "reduce-scatter", "broadcast")
                 if kind in r["comm"] or kind in expected]
        sent = sum(b * {"all-reduce": 2 * share, "broadcast": 1}.get(kind, share) for kind, b in r["comm"].items())
        print(f"{mode:6} {'; '.join(cells)}; sent by each rank in a ring: {sent / MB:,.1f}")


def formula(nbytes):
    return "-" if nbytes is None else f"{nbytes / MB:,.1f}"


def main(argv):
    cfg = parse_config(BenchConfig, argv)
    # glibc's malloc keeps freed memory for reuse, so a process's RSS would stay at its highest even
    # after its activations are freed; with a fixed threshold every block of 64 KB or more is handed back
    # to the system when freed, and RSS follows the tensors alive. The ranks inherit it at their start
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    started = time.perf_counter()
    results = {}  # mode -> [rank 0's figures, rank 1's, ...]
    with tempfile.TemporaryDirectory() as folder:
        for mode in cfg.modes.split(","):
            # each mode in fresh processes, so that one's memory does not linger in the next one's peak
            n = 1 if mode == "one" else cfg.ranks
            mp.spawn(measure_rank, args=(cfg, mode, Path(folder)), nprocs=n)
            results[mode] = [json.loads((Path(folder) / f"{mode}{rank}.json").read_text()) for rank in range(n)]
            print(f"{mode}: done after {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nGPT of {next(iter(results.values()))[0]['n_params'] / 1e6:.2f}M parameters, float32, "
          f"{cfg.batch_size} x {cfg.block_size} tokens per step in all, gloo on {os.cpu_count()} CPU cores: "
          f"{json.dumps(asdict(cfg))}")
    print_memory(results)
    print_communication(results, cfg)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    run_main(main)
