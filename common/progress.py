"""
How far a long job has got: step i of n, the rate, and the time left, on one line.

    from common.progress import track
    for batch in track(batches, "val"):          # val: 12/40 batches, 3.1 batches/s, eta 9s
        ...

In a terminal the line is redrawn in place: a carriage return ("\\r") moves back to its start.
In a log file or CI, where every redraw would pile up in one endless line, a plain line is
printed now and then instead. A job that ends within a few seconds leaves no line behind, so
short evaluations inside a training loop don't bury its log. train.py, finetune.py, downloads
and the slower data preparation steps, and tools/bench*.py report progress through this module.
train.py's Logger also keeps a run's figures: out_dir/log.jsonl, and wandb when asked for.
"""

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from common import plots
from common.files import write_text

TERMINAL_EVERY = 0.2  # seconds between redraws in a terminal
LOG_EVERY = 30.0  # seconds between lines in a log file
KEEP_AFTER = 5.0  # a job that took longer than this keeps its last line


def format_duration(seconds):
    """190 -> "3m10s", 7.4 -> "7s", 3725 -> "1h02m": short enough for a log line."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(steps, seconds, unit):
    """"3.1 batches/s", "5,241 characters/s", or "2.5 s each" for steps slower than one a second."""
    if steps <= 0 or seconds <= 0:
        return f"- {unit}/s"
    per_second = steps / seconds
    if per_second >= 100:
        return f"{per_second:,.0f} {unit}/s"
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    return f"{seconds / steps:,.1f} s each"


class Progress:
    """Reports done of total steps. start: steps done before this process began (a resumed job),
    left out of the rate. clock is injectable so that tests need not wait."""

    def __init__(self, total, what, unit="steps", start=0, file=None, clock=time.perf_counter):
        self.total, self.what, self.unit, self.start = total, what, unit, start
        self.file = file if file is not None else sys.stdout
        self.terminal = self.file.isatty()
        self.clock = clock
        self.t0 = clock()
        self.shown_at = None  # when the latest line was shown; None: not yet
        self.width = 0  # of the line on screen, so that a shorter one can blank out its tail

    def eta(self, done):
        """The time left at the rate of this process's steps so far: "3m10s" ("-" before the first)."""
        steps = done - self.start
        if steps <= 0:
            return "-"
        return format_duration((self.total - done) * (self.clock() - self.t0) / steps)

    def describe(self, done):
        """"val: 12/40 batches, 3.1 batches/s, eta 9s", or "... done in 13s" once done == total."""
        elapsed = self.clock() - self.t0
        text = f"{self.what}: {done:,}/{self.total:,} {self.unit}, {format_rate(done - self.start, elapsed, self.unit)}"
        if done >= self.total:
            return f"{text}, done in {format_duration(elapsed)}"
        return f"{text}, eta {self.eta(done)}"

    def update(self, done):
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun the first process speaks for all: the others would repeat its lines
        now = self.clock()
        if not self.terminal and now - self.t0 < KEEP_AFTER:
            return  # in a log, a short job stays silent
        every = TERMINAL_EVERY if self.terminal else LOG_EVERY
        if self.shown_at is None or now - self.shown_at >= every or done >= self.total:
            self.show(self.describe(done))
            self.shown_at = now

    def show(self, text):
        if self.terminal:
            self.file.write("\r" + text.ljust(self.width))  # the padding blanks out a longer earlier line
            self.width = len(text)
        else:
            self.file.write(text + "\n")
        self.file.flush()

    def close(self):
        """End the line in a terminal: kept after a long job, wiped after a short one."""
        if not self.terminal or self.shown_at is None:
            return
        if self.clock() - self.t0 >= KEEP_AFTER:
            self.file.write("\n")
        else:
            self.file.write("\r" + " " * self.width + "\r")
        self.file.flush()


def track(iterable, what, unit="steps"):
    """Yield the items of iterable (a list, range, set: anything with a len), reporting progress after each."""
    progress = Progress(len(iterable), what, unit)
    try:
        for done, item in enumerate(iterable, start=1):
            yield item
            progress.update(done)
    finally:
        progress.close()


class Logger:
    """A training run's figures: out_dir/log.jsonl (one JSON object per line), its curves in loss.png
    (with matplotlib), and wandb if asked. Making one starts the run's files: out_dir is created, and
    log.jsonl begins empty for a new run or, for a resumed one, is cut back to the iteration it resumes
    from (it trains and logs the later ones again)."""

    def __init__(self, cfg, iter_num):
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cfg.out_dir) / "log.jsonl"
        kept = log_lines_until(self.path, iter_num) if cfg.resume else []
        write_text("".join(line + "\n" for line in kept), self.path)  # replaced in one step, as checkpoints are
        if not plots.have_matplotlib():
            print("no loss.png: drawing it needs matplotlib: pip install matplotlib")
        self.wandb = None
        if cfg.wandb_log:
            import wandb  # imported only when asked for: it is an optional package
            self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg))

    def log(self, record):
        # appended and closed at once: a crash loses no earlier line; O_NOFOLLOW: never through a link
        # that someone put in log.jsonl's place while the run went on
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log(record, step=record["iter"])

    def log_evaluation(self, iter_num, losses):
        """An evaluation's losses {"train", "val"}, in the log and in loss.png's curves."""
        self.log({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"]})
        if plots.have_matplotlib():
            plots.plot_losses(self.path, self.path.with_name("loss.png"))

    def close(self):
        if self.wandb is not None:
            self.wandb.finish()  # uploads what is left now: a torchrun rank exits without Python's shutdown


def log_lines_until(path, iter_num):
    """The lines of a log.jsonl up to iteration iter_num; a line cut short by a killed run is dropped."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= iter_num:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    return kept
