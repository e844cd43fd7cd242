"""
The GPU path measured in one go, each stage a command a user would run: the CUDA tests, nanoGPT's
Shakespeare-character run trained to the end, the GPT-2 124M training benchmark, and generation with
and without the KV cache. Each figure is printed beside nanoGPT's published figure for the same
config, where there is one, with no verdict: one run of each is not enough to judge a difference.

    python tools/gpu_check.py                        # on a machine with a CUDA GPU, from any folder
    python tools/gpu_check.py --budget_seconds=420   # every stage within 7 minutes in all
    python tools/gpu_check.py --dry_run=True         # the same pipeline with tiny sizes on the CPU, in seconds
    python tools/gpu_check.py --stages=gpt2,generate --out_dir=/tmp/check

The table (out_dir/gpu_check.md and gpu_check.json) is written again after every stage, so a stage
that runs out of time, or a machine that is taken back, leaves the figures of the stages before it.
All stages share one budget: a stage gets what the stages before it left, and is stopped at its end.

What the GPU machine must be given: this checkout, and the Shakespeare data, either prepared
(data/shakespeare_char/train.bin, val.bin and meta.json, which git ignores: carry them) or a source
that train.py can prepare it from (tinyshakespeare/input.txt under $GPT_DATA_DIR, or a network).
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from common.cli import UserError, parse_config, run_main
from common.files import read_json, write_json, write_text

STAGES = ("tests", "shakespeare", "gpt2", "generate")
# nanoGPT's README: config/train_shakespeare_char.py "in about 3 minutes on one A100 GPU ... best
# validation loss is 1.4697"; GPT-2 124M trains at about a third of an A100's bf16 peak
NANOGPT = {"val": "1.4697 (A100)", "wall": "about 3 minutes (A100)", "mfu": "about 30% (A100)"}

# --dry_run: every stage with sizes that take seconds on a CPU (the figures then mean nothing)
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--device=cpu", "--dtype=float32"]
TINY_TRAIN = TINY_MODEL + ["--batch_size=4", "--max_iters=20", "--lr_decay_iters=20", "--warmup_iters=2",
                           "--eval_interval=10", "--eval_iters=2", "--log_interval=5", "--compile=False"]
TINY_BENCH = TINY_MODEL + ["--vocab_size=65", "--batch_size=4", "--warmup_steps=1", "--steps=2",
                           "--compile_modes=eager"]


@dataclass
class CheckConfig:
    out_dir: str = "out-gpu-check"  # the table (gpu_check.md, gpu_check.json) and the Shakespeare run
    dry_run: bool = False  # tiny sizes on the CPU: tests this script, measures nothing
    stages: str = ",".join(STAGES)  # comma-separated, in this order: tests, shakespeare, gpt2, generate
    budget_seconds: float = 540.0  # all stages together; each is stopped when the budget runs out
    data_dir: str = ""  # the Shakespeare data's folder, when not data/shakespeare_char

    def __post_init__(self):
        for stage in self.stages.split(","):
            if stage not in STAGES:
                raise ValueError(f"--stages takes some of {','.join(STAGES)}, got {stage!r}")
        if self.budget_seconds <= 0:
            raise ValueError(f"--budget_seconds must be positive, got {self.budget_seconds}")


class Table:
    """The figures so far: (stage, figure, value, nanoGPT's figure), rewritten to disk after each stage."""

    def __init__(self, cfg, header):
        self.cfg, self.header, self.rows = cfg, header, []

    def add(self, stage, figure, value, nanogpt=""):
        self.rows.append({"stage": stage, "figure": figure, "value": value, "nanogpt": nanogpt})

    def write(self, seconds):
        lines = [f"{self.header}; {seconds:.0f} s so far", "", "| stage | figure | value | nanoGPT |", "|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['figure']} | {r['value']} | {r['nanogpt']} |" for r in self.rows]
        write_text("\n".join(lines) + "\n", Path(self.cfg.out_dir) / "gpu_check.md")
        write_json({"header": self.header, "seconds": round(seconds, 1), "config": asdict(self.cfg), "rows": self.rows},
                   Path(self.cfg.out_dir) / "gpu_check.json")
        return "\n".join(lines)


def run(argv, seconds):
    """Run a command in the repository root, echoing its output, stopped after `seconds`. Returns
    (exit status, wall seconds); the status is "timeout" when it was stopped."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, timeout=seconds, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return done.returncode, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0


# ----------------------------------------------------------------------------- the stages

def check_tests(cfg, table, seconds):
    """tests/test_cuda.py in a fresh process: how many passed, failed and were skipped."""
    report = Path(cfg.out_dir).resolve() / "cuda_tests.xml"
    status, wall = run([sys.executable, "-m", "pytest", "tests/test_cuda.py", "-p", "no:cacheprovider", "-q",
                        f"--junitxml={report}"], seconds)
    counts = ""
    if report.is_file():
        suite = ElementTree.parse(report).getroot().find("testsuite")
        counts = ", ".join(f"{suite.get(kind)} {kind}" for kind in ("tests", "failures", "errors", "skipped")) + "; "
    table.add("tests", "tests/test_cuda.py", f"{counts}exit status {status} in {wall:.0f} s")


def check_shakespeare(cfg, table, seconds):
    """config/train_shakespeare_char.py trained to the end, in its own process, as a user runs it."""
    out = Path(cfg.out_dir).resolve() / "shakespeare"
    argv = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--out_dir={out}", "--sample_tokens=0",
            "--overwrite=True"] + ([f"--data_dir={cfg.data_dir}"] if cfg.data_dir else []) + (TINY_TRAIN if cfg.dry_run else [])
    status, wall = run(argv, seconds)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()] if (out / "log.jsonl").is_file() else []
    evals, steps = [r for r in records if "val_loss" in r], [r for r in records if "loss" in r]
    table.add("shakespeare", "exit status, wall time start to end", f"{status}, {wall:.0f} s", NANOGPT["wall"])
    if evals:
        best = min(evals, key=lambda r: r["val_loss"])
        table.add("shakespeare", "best val loss", f"{best['val_loss']:.4f} at iteration {best['iter']}", NANOGPT["val"])
    if len(steps) > 1:
        middle = sorted(steps[1:], key=lambda r: r["ms"])[len(steps[1:]) // 2]  # the median step, past compiling
        table.add("shakespeare", "median ms/iteration, tokens/s, MFU",
                  f"{middle['ms']:.1f} ms, {middle['tokens_per_s']:,.0f} tok/s"
                  + (f", {middle['mfu'] * 100:.1f}%" if middle.get("mfu") else ""))


def check_gpt2(cfg, table, seconds):
    """tools/bench.py config/bench_gpt2.py: GPT-2 124M, block 1024, bfloat16, sdpa; eager and compiled."""
    result = Path(cfg.out_dir).resolve() / "gpt2.json"
    status, wall = run([sys.executable, "tools/bench.py", "config/bench_gpt2.py", f"--json={result}"]
                       + (TINY_BENCH if cfg.dry_run else []), seconds)
    if status != 0:
        table.add("gpt2", "tools/bench.py config/bench_gpt2.py", f"exit status {status} after {wall:.0f} s")
        return
    bench = read_json(result)
    for row in bench["rows"]:
        mfu = f", MFU {row['MFU %']:.1f}%" if row["MFU %"] else ""
        table.add("gpt2", f"training, {row['mode']}, {row['attention']}, {bench['dtype']}",
                  f"{row['tokens/s']:,.0f} tok/s, {row['ms/iter']:.1f} ms/iter{mfu}",
                  NANOGPT["mfu"] if row["mode"] == "compile" else "")


def check_generate(cfg, table, seconds):
    """Tokens/s of generate() for the Shakespeare model's size (random weights), with and without the cache."""
    result = Path(cfg.out_dir).resolve() / "generate.json"
    argv = ["--what=sample", "--n_layer=6", "--n_head=6", "--n_embd=384", "--block_size=256", "--max_new_tokens=500",
            f"--attentions={'manual' if cfg.dry_run else 'sdpa'}"]  # what --attention=auto runs on the device
    status, wall = run([sys.executable, "tools/bench.py", *argv, f"--json={result}"]
                       + (TINY_MODEL + ["--vocab_size=65", "--max_new_tokens=40"] if cfg.dry_run else []), seconds)
    if status != 0:
        table.add("generate", "tools/bench.py --what=sample", f"exit status {status} after {wall:.0f} s")
        return
    for row in read_json(result)["rows"]:
        table.add("generate", f"{row['attention']}, KV cache {row['kv cache']}", f"{row['tokens/s']:,.0f} tok/s")


CHECKS = {"tests": check_tests, "shakespeare": check_shakespeare, "gpt2": check_gpt2, "generate": check_generate}


def main(argv):
    cfg = parse_config(CheckConfig, argv)
    if not cfg.dry_run and not torch.cuda.is_available():
        raise UserError("no CUDA GPU here: run this on a GPU machine, or --dry_run=True to try the pipeline on a CPU")
    where = torch.cuda.get_device_name() if not cfg.dry_run else "CPU (dry run: tiny sizes, figures mean nothing)"
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    table = Table(cfg, f"{where}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    started = time.perf_counter()
    for stage in cfg.stages.split(","):
        left = cfg.budget_seconds - (time.perf_counter() - started)
        if left > 0:
            print(f"=== {stage} ({left:.0f} s of the budget left)")
            CHECKS[stage](cfg, table, left)
        else:
            table.add(stage, "not run", f"the {cfg.budget_seconds:.0f} s budget was spent")
        print(table.write(time.perf_counter() - started))  # the figures so far are on disk after every stage
    print(f"wrote {cfg.out_dir}/gpu_check.md and gpu_check.json")


if __name__ == "__main__":
    run_main(main)
