"""
The GPU path measured in one go: the CUDA tests, nanoGPT's Shakespeare-character run trained to the
end, the GPT-2 124M training benchmark and generation with and without the KV cache, printed as one
table and written to out_dir/gpu_check.md and out_dir/gpu_check.json. About 6 minutes on one H100.

    python tools/gpu_check.py                       # on a machine with a CUDA GPU
    python tools/gpu_check.py --dry_run=True        # the same pipeline with tiny sizes on the CPU, in seconds
    python tools/gpu_check.py --stages=gpt2,generate --out_dir=/tmp/check   # some stages only

The Shakespeare run needs data/shakespeare_char/{train,val}.bin and meta.json: train.py prepares them,
which takes tinyshakespeare/input.txt from $GPT_DATA_DIR or ../shared/data, else downloads it. A
machine with neither, offline, needs the three files copied into data/shakespeare_char/ (or
--data_dir=FOLDER holding them).

The targets, from nanoGPT's published figures for the same configs: Shakespeare characters to a val
loss of at most 1.47 (nanoGPT: 1.4697) within 3 minutes on one GPU; GPT-2 124M at 50% or more of the
GPU's data-sheet bf16 peak (989 TFLOP/s on an H100 SXM; nanoGPT reaches about a third of it).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from common import runtime
from common.cli import UserError, parse_config, run_main
from tools.bench import BenchConfig, bench_sample, bench_train

STAGES = ("tests", "shakespeare", "gpt2", "generate")
TARGET_VAL_LOSS = 1.47  # nanoGPT's config/train_shakespeare_char.py reaches 1.4697
TARGET_SECONDS = 180  # "about 3 minutes on one A100" (nanoGPT's README)
TARGET_MFU = 50.0  # percent of the data-sheet peak

# --dry_run: every stage with sizes that take seconds on a CPU (the figures then mean nothing)
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--device=cpu", "--dtype=float32"]
TINY_TRAIN = TINY_MODEL + ["--batch_size=4", "--max_iters=20", "--lr_decay_iters=20", "--warmup_iters=2",
                           "--eval_interval=10", "--eval_iters=2", "--log_interval=5", "--compile=False"]
TINY_BENCH = TINY_MODEL + ["--vocab_size=65", "--batch_size=4", "--warmup_steps=1", "--steps=2",
                           "--compile_modes=eager"]
TINY_SAMPLE = TINY_MODEL + ["--max_new_tokens=40"]


@dataclass
class CheckConfig:
    out_dir: str = "out-gpu-check"  # the table (gpu_check.md, gpu_check.json) and the Shakespeare run
    dry_run: bool = False  # tiny sizes on the CPU: tests this script, measures nothing
    stages: str = ",".join(STAGES)  # comma-separated, in this order: tests, shakespeare, gpt2, generate
    data_dir: str = ""  # the Shakespeare data's folder, when not data/shakespeare_char

    def __post_init__(self):
        for stage in self.stages.split(","):
            if stage not in STAGES:
                raise ValueError(f"--stages takes some of {','.join(STAGES)}, got {stage!r}")


class Table:
    """Rows of (figure, value, target, met), where met is True, False or None (no target, or a dry run)."""

    def __init__(self, dry_run):
        self.rows = []
        self.dry_run = dry_run

    def add(self, figure, value, target="", met=None):
        self.rows.append({"figure": figure, "value": value, "target": target, "met": None if self.dry_run else met})

    def markdown(self):
        lines = ["| figure | value | target | met |", "|---|---|---|---|"]
        for r in self.rows:
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            lines.append(f"| {r['figure']} | {r['value']} | {r['target']} | {met} |")
        return "\n".join(lines)


def stream(argv, timeout, marker=None):
    """Run argv in the repo root, echoing its output. Returns (exit status, seconds, seconds until the
    first line starting with marker or None). A run past timeout is killed (exit status -9)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # each line as it is printed
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    first = None
    for line in proc.stdout:
        print("    " + line, end="")
        if first is None and marker is not None and line.startswith(marker):
            first = time.perf_counter() - t0
    proc.wait()
    watchdog.cancel()
    return proc.returncode, time.perf_counter() - t0, first


# ----------------------------------------------------------------------------- the stages

def check_tests(cfg, table):
    """tests/test_cuda.py in a fresh process: pass, fail and skip counts."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_cuda.py", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(done.stdout[-3000:])
    counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", done.stdout))
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or f"pytest exit status {done.returncode}"
    all_passed = done.returncode == 0 and counts.get("passed", 0) > 0 and not counts.get("skipped")
    table.add("CUDA tests (tests/test_cuda.py)", f"{summary} in {time.perf_counter() - t0:.0f} s",
              "all pass", all_passed)


def check_shakespeare(cfg, table):
    """config/train_shakespeare_char.py trained to the end, in its own process, as a user runs it."""
    out = Path(cfg.out_dir) / "shakespeare"
    shutil.rmtree(out, ignore_errors=True)  # this script's own previous run: train.py won't overwrite one
    argv = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--out_dir={out}", "--sample_tokens=0"]
    argv += [f"--data_dir={cfg.data_dir}"] if cfg.data_dir else []
    argv += TINY_TRAIN if cfg.dry_run else []
    status, wall, first_log = stream(argv, timeout=420, marker="iter ")
    if status != 0:
        raise RuntimeError(f"train.py exited with status {status}")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "loss" in r]
    typical_ms = sorted(r["ms"] for r in steps[1:])[len(steps[1:]) // 2] if len(steps) > 1 else float("nan")
    interval = steps[1]["iter"] - steps[0]["iter"] if len(steps) > 1 else 1
    best = min(r["val_loss"] for r in evals)
    table.add("Shakespeare char: best val loss", f"{best:.4f} (at iteration {min(evals, key=lambda r: r['val_loss'])['iter']})",
              f"<= {TARGET_VAL_LOSS}", best <= TARGET_VAL_LOSS)
    table.add("Shakespeare char: val loss at the end", f"{evals[-1]['val_loss']:.4f} (iteration {evals[-1]['iter']})")
    table.add("Shakespeare char: wall time, start to end", f"{wall:.0f} s", f"<= {TARGET_SECONDS} s", wall <= TARGET_SECONDS)
    table.add("Shakespeare char: start to first logged iteration", f"{first_log:.1f} s (imports, data, compiling, "
              f"the step-0 evaluation, {steps[0]['iter']} iterations)" if first_log else "-")
    table.add("Shakespeare char: compiling the training step (first log interval minus a typical one)",
              f"{(steps[0]['ms'] - typical_ms) * interval / 1000:.1f} s")
    mfus = sorted(r["mfu"] for r in steps[1:] if r.get("mfu"))
    table.add("Shakespeare char: median ms/iteration, tokens/s, MFU",
              f"{typical_ms:.1f} ms, {sorted(r['tokens_per_s'] for r in steps[1:])[len(steps[1:]) // 2]:,.0f} tok/s"
              + (f", {mfus[len(mfus) // 2] * 100:.1f}%" if mfus else "") if len(steps) > 1 else "-")


def check_gpt2(cfg, table):
    """tools/bench.py config/bench_gpt2.py: GPT-2 124M, block 1024, bfloat16, sdpa; eager and compiled."""
    bench = parse_config(BenchConfig, ["config/bench_gpt2.py"] + (TINY_BENCH if cfg.dry_run else []))
    device = runtime.pick_device(bench.device)
    dtype = runtime.pick_dtype(bench.dtype, device)
    peak = runtime.peak_flops(device, dtype)
    name = "GPT-2 124M" if not cfg.dry_run else "tiny model"
    for mode in bench.compile_modes.split(","):
        t0 = time.perf_counter()
        result = bench_train(bench, device, dtype, "sdpa", mode, peak)
        warmup = time.perf_counter() - t0 - bench.steps * result["ms/iter"] / 1000  # the untimed steps, compiling included
        mfu = result["MFU %"]
        compiled = mode == "compile"
        table.add(f"{name} training, {mode}, {dtype}, block {bench.block_size}, batch {bench.batch_size}",
                  f"{result['tokens/s']:,.0f} tok/s, {result['ms/iter']:.1f} ms/iter, MFU "
                  + (f"{mfu:.1f}% of {peak / 1e12:.3g} TFLOP/s" if mfu else "unknown (no data-sheet peak)")
                  + f"; {bench.warmup_steps} warm-up steps {warmup:.1f} s",
                  f">= {TARGET_MFU:.0f}% MFU" if compiled else "",
                  (mfu is not None and mfu >= TARGET_MFU) if compiled else None)


def check_generate(cfg, table):
    """Tokens/s of generate() for the Shakespeare model's size (random weights), with and without the cache."""
    argv = ["--what=sample", "--n_layer=6", "--n_head=6", "--n_embd=384", "--block_size=256", "--max_new_tokens=500"]
    bench = parse_config(BenchConfig, argv + (TINY_SAMPLE if cfg.dry_run else []))
    device = runtime.pick_device(bench.device)
    dtype = runtime.pick_dtype(bench.dtype, device)
    attention = runtime.pick_attention("auto", device)
    for use_cache in (False, True):
        result = bench_sample(bench, device, dtype, attention, use_cache, window_step=1)
        table.add(f"generation, {bench.n_layer} layers x {bench.n_embd}, block {bench.block_size}, "
                  f"{bench.max_new_tokens} tokens, {'with' if use_cache else 'without'} the KV cache",
                  f"{result['tokens/s']:,.0f} tok/s ({attention}, {dtype})")


CHECKS = {"tests": check_tests, "shakespeare": check_shakespeare, "gpt2": check_gpt2, "generate": check_generate}


def main(argv):
    cfg = parse_config(CheckConfig, argv)
    if not cfg.dry_run and not torch.cuda.is_available():
        raise UserError("no CUDA GPU here: run this on a GPU machine, or --dry_run=True to try the pipeline on a CPU")
    device = "cpu" if cfg.dry_run else "cuda"
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run: tiny sizes, figures mean nothing)"
    header = f"{where}; torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(header)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    table = Table(cfg.dry_run)
    started = time.perf_counter()
    for stage in cfg.stages.split(","):
        print(f"=== {stage}")
        try:
            CHECKS[stage](cfg, table)
        except Exception as e:  # one broken stage must not cost the others' figures on a rented GPU
            table.add(f"{stage}: FAILED", f"{type(e).__name__}: {e}", "", False)
    total = time.perf_counter() - started
    text = f"{header}; {total:.0f} s in all\n\n{table.markdown()}\n"
    print("\n" + text)
    (Path(cfg.out_dir) / "gpu_check.md").write_text(text)
    result = {"device": where, "torch": torch.__version__, "cuda": torch.version.cuda, "seconds": round(total, 1),
              "config": asdict(cfg), "rows": table.rows}
    (Path(cfg.out_dir) / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {cfg.out_dir}/gpu_check.md and gpu_check.json")


if __name__ == "__main__":
    run_main(main)
