"""
The finetuning table: every starting point x train mode x head on one task, each a finetune.py run
scored on val and test, printed as a Markdown table and saved as out_dir/table.md.

    python tools/bench_finetune.py --config=config/finetune_sms_spam.py --inits=out-imdb-base,scratch
    python tools/bench_finetune.py --config=config/finetune_conll2003.py --modes=full,head,lora
    python tools/bench_finetune.py --config=config/finetune_sms_spam.py --heads=last,mean --modes=head,lora \\
        --max_iters=20 --max_train=200 --device=cpu          # a quick look, not a measurement

Each run writes its own out_dir/<init>-<mode>-<head>/ (best.pt, metrics.json). A run whose
metrics.json is already there is read, not redone, and an interrupted run resumes (--resume): an
interrupted table continues where it stopped, and deleting a run's folder reruns it.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import UserError, parse_config, run_main
from common.progress import Progress
from finetuning.heads import HEADS
from finetuning.metrics import headline
from finetuning.tasks import TASKS
from finetuning.train_modes import TRAIN_MODES

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    config: str = "config/finetune_sms_spam.py"  # finetune.py options shared by every run (task among them)
    inits: str = "out-imdb-base,scratch"  # comma-separated --init_from values
    modes: str = ",".join(TRAIN_MODES)  # comma-separated --train values
    heads: str = ""  # comma-separated --head values; "" = every head that fits the task
    max_iters: int = 0  # per run; 0 = the config's epochs
    max_train: int = 0  # training examples per run; 0 = all
    device: str = "auto"
    out_dir: str = "out-bench-finetune"


@dataclass
class TaskOf:
    """What the table needs to know of the finetune.py config file: its task."""
    task: str = "sms_spam"


def run_dir_name(init, mode, head):
    return f"{Path(init.removeprefix('gpt2:')).name}-{mode}-{head}"


def one_run(cfg, init, mode, head):
    """metrics.json of one finetune.py run, training it first unless it is already there."""
    out = Path(cfg.out_dir) / run_dir_name(init, mode, head)
    if not (out / "metrics.json").is_file():
        argv = [cfg.config, f"--init_from={init}", f"--train={mode}", f"--head={head}", f"--out_dir={out}",
                f"--device={cfg.device}", f"--max_iters={cfg.max_iters}", f"--max_train={cfg.max_train}",
                "--members=1"]  # the table compares single models, whatever the config's ensemble
        if (out / "last.pt").is_file():
            argv.append("--resume=True")
        print(f"=== python finetune.py {' '.join(argv)}")
        if subprocess.run([sys.executable, "finetune.py", *argv], cwd=ROOT).returncode != 0:
            raise UserError(f"finetune.py failed on the cell {out.name} (its message is above)")
    return json.loads((out / "metrics.json").read_text())


def table_row(m):
    """One line of the table. The headline is macro-F1, or entity F1 for tagging (metrics.headline)."""
    cells = [m["init_from"], m["train"], m["head"], f"{m['trainable_params']:,}", f"{m['train_seconds']:.0f}",
             f"{m['val']['accuracy']:.4f}", f"{headline(m['val']):.4f}"]
    test = m.get("test")
    cells += [f"{test['accuracy']:.4f}", f"{headline(test):.4f}"] if test else ["", ""]
    if "entities" not in m["val"]:  # per-class F1 of a classification task, e.g. spam's
        split = test or m["val"]
        cells.append(" ".join(f"{label} {c['f1']:.3f}" for label, c in split["per_class"].items()))
    return "| " + " | ".join(cells) + " |"


def main(argv):
    cfg = parse_config(BenchConfig, argv)
    task_name = parse_config(TaskOf, [cfg.config], files_may_set_others=True).task
    per_token = TASKS[task_name].per_token
    heads = cfg.heads.split(",") if cfg.heads else [n for n, h in HEADS.items() if h.per_token == per_token]
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    cells = [(init, mode, head) for init in cfg.inits.split(",") for mode in cfg.modes.split(",") for head in heads]
    progress = Progress(len(cells), "table", "cells")
    rows = []
    for done, (init, mode, head) in enumerate(cells, start=1):
        rows.append(table_row(one_run(cfg, init, mode, head)))
        print(progress.describe(done))  # a line of its own: finetune.py's output comes between
    score = "entity F1" if per_token else "macro-F1"
    table = "\n".join([
        f"{task_name}: {cfg.config}, max_iters={cfg.max_iters or 'epochs'}, max_train={cfg.max_train or 'all'}",
        "",
        f"| init | train | head | trainable | seconds | val acc | val {score} | test acc | test {score} |"
        + ("" if per_token else " test F1 per class |"),
        "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("" if per_token else "---|"),
        *rows,
    ])
    print(table)
    (Path(cfg.out_dir) / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    run_main(main)
