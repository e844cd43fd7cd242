"""
tools/gpu_check.py, the one-command check of the GPU path, run with --dry_run=True: the same stages
with tiny sizes on the CPU, so the script a GPU machine runs once is known to work before it does.
"""

import json

import torch

from test_train import char_data  # noqa: F401  (a pytest fixture)
from tools import gpu_check


def test_the_dry_run_fills_every_row_of_the_table(char_data, tmp_path):  # noqa: F811
    gpu_check.main(["--dry_run=True", f"--out_dir={tmp_path}", f"--data_dir={char_data}"])
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["figure"]: r for r in result["rows"]}
    assert not [f for f in rows if "FAILED" in f], rows
    tests = rows["CUDA tests (tests/test_cuda.py)"]["value"]
    assert ("passed" in tests) if torch.cuda.is_available() else ("skipped" in tests and "passed" not in tests)
    best = rows["Shakespeare char: best val loss"]["value"]
    assert float(best.split()[0]) < 4.2  # ln(65): the tiny run learned something
    assert any(f.startswith("tiny model training, eager") for f in rows)
    assert sum(f.startswith("generation") for f in rows) == 2  # with and without the cache
    assert all(r["met"] is None for r in rows.values())  # a dry run judges no target
    assert (tmp_path / "gpu_check.md").read_text().count("\n|") == len(rows) + 2  # header, rule, rows
