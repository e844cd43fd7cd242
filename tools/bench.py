"""
Measure speed: training tokens/s and MFU for a model size, eager vs torch.compile and manual vs sdpa
attention; and sampling tokens/s with and without the KV cache. Prints tables (docs/benchmarks.md).

    python tools/bench.py                               # the nanoGPT CPU recipe's model (4 layers, 128 dims, block 64)
    python tools/bench.py --compile_modes=eager,compile --attentions=manual,sdpa
    python tools/bench.py config/bench_gpt2.py          # GPT-2 124M, block 1024, bf16 on a GPU
    python tools/bench.py --what=sample --block_size=256 --max_new_tokens=500 --window_step=128
    python tools/bench.py config/bench_gpt2.py --json=gpt2.json   # the rows as JSON too
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common import runtime
from common.cli import parse_config, run_main
from common.files import write_json
from common.optim import adamw
from common.progress import track
from model import GPT, GPTConfig


@dataclass
class BenchConfig:
    what: str = "train"  # "train": forward, backward and optimizer step; "sample": generate()
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    vocab_size: int = 65
    bias: bool = False
    # training step
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    compile_modes: str = "eager"  # comma-separated: eager, compile
    attentions: str = "manual,sdpa"  # comma-separated: manual, sdpa
    warmup_steps: int = 5  # untimed steps first (compilation happens here)
    steps: int = 30
    # sampling
    max_new_tokens: int = 500
    num_samples: int = 1
    window_step: int = 1  # above 1, also time generate(window_step=...) with the cache
    # system
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 1337
    json: str = ""  # also write the table's rows to this file, for tools/gpu_check.py

    def __post_init__(self):
        if self.what not in ("train", "sample"):
            raise ValueError(f"what must be train or sample, got {self.what!r}")
        for mode in self.compile_modes.split(","):
            if mode not in ("eager", "compile"):
                raise ValueError(f"compile_modes takes eager and/or compile, got {mode!r}")
        if not 1 <= self.window_step <= self.block_size:
            raise ValueError(f"window_step must be between 1 and block_size ({self.block_size}), got {self.window_step}")
        if self.steps <= 0 or self.warmup_steps < 0:
            raise ValueError("steps must be positive and warmup_steps zero or more")


def build_model(cfg, attention, device):
    torch.manual_seed(cfg.seed)
    config = GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                       n_head=cfg.n_head, n_embd=cfg.n_embd, bias=cfg.bias, attention=attention)
    return GPT(config).to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_train(cfg, device, dtype, attention, compile_mode, peak):
    """Seconds per iteration of the training step, random tokens in, AdamW step out."""
    model = build_model(cfg, attention, device)
    optimizer = adamw(model, 0.1, 1e-4, (0.9, 0.95), device.split(":")[0])
    step_model = torch.compile(model) if compile_mode == "compile" else model
    ctx = runtime.autocast(device, dtype)
    x = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.block_size), device=device)  # (B, T)
    y = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.block_size), device=device)

    def step():
        for _ in range(cfg.gradient_accumulation_steps):
            with ctx:
                _, loss = step_model(x, y)
            (loss / cfg.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(cfg.warmup_steps):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / cfg.steps
    tokens = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    mfu = model.estimate_mfu(cfg.gradient_accumulation_steps * cfg.batch_size, dt, peak) if peak else None
    return {"ms/iter": dt * 1000, "tokens/s": tokens / dt, "MFU %": mfu * 100 if mfu else None}


def bench_sample(cfg, device, dtype, attention, use_cache, window_step):
    """Tokens/s of generate() from a one-token prompt, greedy, with or without the KV cache."""
    model = build_model(cfg, attention, device).eval()
    idx = torch.zeros((cfg.num_samples, 1), dtype=torch.long, device=device)
    with runtime.autocast(device, dtype):
        model.generate(idx, 8, temperature=0, use_cache=use_cache)  # warm up
        sync(device)
        t0 = time.perf_counter()
        model.generate(idx, cfg.max_new_tokens, temperature=0, use_cache=use_cache, window_step=window_step)
        sync(device)
    dt = time.perf_counter() - t0
    return {"tokens/s": cfg.num_samples * cfg.max_new_tokens / dt, "ms/token": dt * 1000 / cfg.max_new_tokens}


def print_table(rows):
    columns = list(rows[0])
    cells = [[format_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths)))


def format_cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"
    return str(value)


def main(argv):
    cfg = parse_config(BenchConfig, argv)
    device = runtime.pick_device(cfg.device)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    if device.startswith("cuda"):
        runtime.enable_tf32()
    print(f"{cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} dims, block {cfg.block_size}, "
          f"batch {cfg.batch_size}x{cfg.gradient_accumulation_steps}, on {device} in {dtype}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    rows = []
    attentions = cfg.attentions.split(",")
    if cfg.what == "train":
        peak = runtime.peak_flops(device, dtype)
        runs = [(mode, attention) for mode in cfg.compile_modes.split(",") for attention in attentions]
        for compile_mode, attention in track(runs, "benchmark", "runs"):
            result = bench_train(cfg, device, dtype, attention, compile_mode, peak)
            rows.append({"mode": compile_mode, "attention": attention, **result})
    else:
        caches = [(False, 1), (True, 1)] + ([(True, cfg.window_step)] if cfg.window_step > 1 else [])
        runs = [(attention, use_cache, window_step) for attention in attentions for use_cache, window_step in caches]
        for attention, use_cache, window_step in track(runs, "benchmark", "runs"):
            result = bench_sample(cfg, device, dtype, attention, use_cache, window_step)
            rows.append({"attention": attention, "kv cache": "yes" if use_cache else "no",
                         "window_step": window_step, **result})
    print_table(rows)
    if cfg.json:
        write_json({"device": device, "dtype": dtype, "rows": rows}, cfg.json)


if __name__ == "__main__":
    run_main(main)
