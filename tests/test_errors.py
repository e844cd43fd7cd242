"""
User mistakes end in one line on stderr and exit status 2, never a traceback, and never touch
what is already on disk.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import sample
import train
from common.cli import run_main
from data.shakespeare_char import prepare as char_prepare
from test_train import TINY, char_data  # noqa: F401  (a pytest fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(char_data, tmp_path_factory):  # noqa: F811
    """A finished tiny run whose files the error cases must leave alone."""
    out_dir = tmp_path_factory.mktemp("run")
    train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=4", "--eval_interval=2"])
    return out_dir


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


def fails_in_one_line(main, argv, capsys, monkeypatch):
    """Run main as its script would; return the error line after checking its form."""
    monkeypatch.setattr(sys, "argv", ["script.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        run_main(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


TRAIN_CASES = {
    "unknown key": (["--max_iter=5"], "unknown option --max_iter"),
    "wrong type": (["--max_iters=lots"], "--max_iters takes a number"),
    "not a bool": (["--compile=maybe"], "--compile takes True or False"),
    "heads do not divide width": (["--n_embd=30", "--n_head=4"], "n_embd (30) must be divisible by n_head (4)"),
    "impossible value": (["--batch_size=0"], "batch_size must be positive"),
    "missing config file": (["config/nope.py"], "config file config/nope.py not found"),
    "bare word": (["max_iters=5"], "neither --key=value nor a config/*.py file"),
    "unknown dataset": (["--dataset=nope", "--data_dir="], "--dataset takes one of"),
    "finetuning task as corpus": (["--dataset=sms_spam", "--data_dir="], "not a pretraining corpus"),
    "no GPU": (["--device=cuda"], "no CUDA GPU"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_rejects_bad_options_without_touching_the_run(case, run_dir, char_data, capsys, monkeypatch):  # noqa: F811
    argv, message = TRAIN_CASES[case]
    before = snapshot(run_dir)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={run_dir}",
                                         "--init_from=resume", "--max_iters=4", *TINY, *argv], capsys, monkeypatch)
    assert message in err
    assert snapshot(run_dir) == before


def test_missing_data_names_the_folder(tmp_path, capsys, monkeypatch):
    err = fails_in_one_line(train.main, [f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}", *TINY],
                            capsys, monkeypatch)
    assert f"no train.bin in {tmp_path}" in err
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint(char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={tmp_path}", "--init_from=resume",
                                         *TINY], capsys, monkeypatch)
    assert "no checkpoint at" in err and "last.pt" in err


def test_a_new_run_never_overwrites_an_old_one(run_dir, char_data, capsys, monkeypatch):  # noqa: F811
    before = snapshot(run_dir)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={run_dir}", *TINY],
                            capsys, monkeypatch)
    assert "already holds a run" in err and "--init_from=resume" in err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_checkpoint_is_reported_and_kept(damage, run_dir, char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    (tmp_path / "log.jsonl").write_text("")
    data = (run_dir / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint" if damage == "garbage" else data[: len(data) // 2])
    before = snapshot(tmp_path)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={tmp_path}", "--init_from=resume",
                                         *TINY], capsys, monkeypatch)
    assert "corrupted or truncated" in err
    assert snapshot(tmp_path) == before


def test_resume_on_data_with_another_vocabulary(run_dir, tmp_path, capsys, monkeypatch):
    other = tmp_path / "data"
    other.mkdir()
    (other / "input.txt").write_text("abcdefgh " * 2000)
    char_prepare.prepare(input_path=other / "input.txt", out_dir=other)
    err = fails_in_one_line(train.main, [f"--data_dir={other}", f"--out_dir={run_dir}", "--init_from=resume", *TINY],
                            capsys, monkeypatch)
    assert "does not match" in err


def test_empty_corpus(tmp_path, capsys, monkeypatch):
    (tmp_path / "input.txt").write_text("")
    err = fails_in_one_line(char_prepare.main, [f"--input={tmp_path / 'input.txt'}", f"--out_dir={tmp_path}"],
                            capsys, monkeypatch)
    assert "is empty" in err
    assert not (tmp_path / "train.bin").exists()


def test_sample_prompt_too_long(run_dir, capsys, monkeypatch):
    err = fails_in_one_line(sample.main, [f"--out_dir={run_dir}", "--start=" + "a" * 100, "--device=cpu"],
                            capsys, monkeypatch)
    assert "100 tokens long, more than the model's block_size (32)" in err


def test_sample_prompt_outside_the_vocabulary(run_dir, capsys, monkeypatch):
    err = fails_in_one_line(sample.main, [f"--out_dir={run_dir}", "--start=héllo ☃", "--device=cpu"],
                            capsys, monkeypatch)
    assert "outside" in err and "é" in err and "☃" in err


def test_sample_window_step_past_block_size(run_dir, capsys, monkeypatch):
    err = fails_in_one_line(sample.main, [f"--out_dir={run_dir}", "--window_step=33", "--device=cpu"],
                            capsys, monkeypatch)
    assert "--window_step=33 is more than the model's block_size (32)" in err


def test_sample_missing_prompt_file(run_dir, capsys, monkeypatch):
    err = fails_in_one_line(sample.main, [f"--out_dir={run_dir}", "--start=FILE:nope.txt"], capsys, monkeypatch)
    assert "prompt file nope.txt not found" in err


def test_sample_works_on_the_run(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sample.py", f"--out_dir={run_dir}", "--start=ROMEO:", "--num_samples=2",
                                      "--max_new_tokens=20", "--device=cpu"])
    run_main(sample.main)
    texts = [t for t in capsys.readouterr().out.split("-" * 40) if t.strip()]
    assert len(texts) == 2 and all(t.strip().startswith("ROMEO:") for t in texts)


def test_the_real_script_prints_one_line(tmp_path):
    """The same through a real process: no traceback reaches the terminal."""
    result = subprocess.run([sys.executable, "train.py", "--n_layers=2"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: unknown option --n_layers")
