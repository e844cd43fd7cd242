"""
tools/gpu_check.py, the one-command check of the GPU path, run with --dry_run=True: the same stages
with tiny sizes on the CPU, so the script a GPU machine runs once is known to work before it does.
"""

import json
import subprocess
import sys
from pathlib import Path

from test_train import char_data  # noqa: F401  (a pytest fixture)

ROOT = Path(__file__).resolve().parent.parent


def gpu_check(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry_run=True", *args],
                          cwd=cwd, capture_output=True, text=True)


def test_the_dry_run_fills_the_table_from_another_folder(char_data, tmp_path):  # noqa: F811
    out = tmp_path / "check"
    done = gpu_check([f"--out_dir={out}", f"--data_dir={char_data}", "--stages=shakespeare,gpt2,generate"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((out / "gpu_check.json").read_text())["rows"]
    figures = {(r["stage"], r["figure"]): r for r in rows}
    assert figures["shakespeare", "exit status, wall time start to end"]["value"].startswith("0,")
    assert float(figures["shakespeare", "best val loss"]["value"].split()[0]) < 4.2  # ln(65): it learned something
    assert figures["shakespeare", "best val loss"]["nanogpt"].startswith("1.4697")  # the reference, beside it
    assert any(stage == "gpt2" and figure.startswith("training, eager") for stage, figure in figures)
    assert sum(stage == "generate" for stage, _ in figures) == 2  # with and without the cache
    assert (out / "gpu_check.md").read_text().count("\n|") == len(rows) + 2  # header, rule, rows


def test_a_spent_budget_stops_the_stages_and_keeps_what_was_measured(char_data, tmp_path):  # noqa: F811
    """A stage stopped by the budget leaves the table of the stages before it, and the rest say they did not run."""
    out = tmp_path / "check"
    done = gpu_check([f"--out_dir={out}", f"--data_dir={char_data}", "--stages=generate,shakespeare,gpt2",
                      "--budget_seconds=1"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((out / "gpu_check.json").read_text())["rows"]
    assert [r["stage"] for r in rows if r["figure"] == "not run"] == ["shakespeare", "gpt2"]
    assert any(r["stage"] == "generate" for r in rows)  # stopped, but in the table
