"""
User mistakes end in one line on stderr and exit status 2, never a traceback, and never touch
what is already on disk: no file created, changed or removed, no run replaced unless asked, no
code run from a config file or a checkpoint. One test per kind of mistake, each case of a kind
a parameter.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import finetune
import model
import sample
import train
from common import runtime
from common.checkpoint import load_checkpoint
from common.cli import UserError, parse_config, parse_options, run_main
from conftest import FIXTURE_DATA
from data.shakespeare_char import prepare as char_prepare
from test_finetune import CHARS, QUICK, interrupt_after, pretrained, save_run, sms_data  # noqa: F401  (pytest fixtures)
from test_train import TINY, char_data  # noqa: F401  (a pytest fixture)

ROOT = Path(__file__).resolve().parent.parent
TINY_GPT2 = ROOT / "tests" / "fixtures" / "tiny_gpt2"


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
    "no GPU": (["--device=cuda"], "no CUDA GPU"),
    "conflicts with the run": (["--n_layer=3"], "used --n_layer=2: drop --n_layer, or start a new run"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_rejects_bad_options_without_touching_the_run(case, run_dir, char_data, capsys, monkeypatch):  # noqa: F811
    argv, message = TRAIN_CASES[case]
    before = snapshot(run_dir)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={run_dir}",
                                         "--resume=True", "--max_iters=4", *TINY, *argv], capsys, monkeypatch)
    assert message in err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("argv,message", [
    (["--data_dir={tmp}"], "no train.bin in {tmp}"),
    (["--dataset=nope", "--data_dir="], "--dataset takes one of"),
    (["--dataset=sms_spam", "--data_dir="], "not a pretraining corpus"),
])
def test_missing_data_names_the_folder(argv, message, tmp_path, capsys, monkeypatch):
    argv = [a.format(tmp=tmp_path) for a in argv]
    err = fails_in_one_line(train.main, [*argv, f"--out_dir={tmp_path / 'out'}", *TINY], capsys, monkeypatch)
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint(char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={tmp_path}", "--resume=True",
                                         *TINY], capsys, monkeypatch)
    assert "no checkpoint in" in err and "last.pt" in err


def test_a_new_run_never_overwrites_an_old_one(run_dir, char_data, capsys, monkeypatch):  # noqa: F811
    before = snapshot(run_dir)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={run_dir}", *TINY],
                            capsys, monkeypatch)
    assert "already holds a run" in err and "--resume=True" in err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_checkpoint_is_reported_and_kept(damage, run_dir, char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    (tmp_path / "log.jsonl").write_text("")
    data = (run_dir / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint" if damage == "garbage" else data[: len(data) // 2])
    before = snapshot(tmp_path)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={tmp_path}", "--resume=True",
                                         *TINY], capsys, monkeypatch)
    assert "corrupted or truncated" in err
    assert snapshot(tmp_path) == before


def test_resume_on_data_with_another_vocabulary(run_dir, tmp_path, capsys, monkeypatch):
    other = tmp_path / "data"
    other.mkdir()
    (other / "input.txt").write_text("abcdefgh " * 2000)
    char_prepare.prepare(input_path=other / "input.txt", out_dir=other)
    err = fails_in_one_line(train.main, [f"--data_dir={other}", f"--out_dir={run_dir}", "--resume=True", *TINY],
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
    assert "nope.txt: no such file" in err


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


# ----------------------------------------------------------------------------- runs are never lost


@pytest.fixture(scope="module")
def finetune_dir(pretrained, sms_data, tmp_path_factory):  # noqa: F811
    """A finished finetune.py run: best.pt and metrics.json, no last.pt."""
    out_dir = tmp_path_factory.mktemp("finetuned")
    finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK])
    assert not (out_dir / "last.pt").exists()
    return out_dir


@pytest.mark.parametrize("script,out_dir,message", [
    ("finetune", "finished", "already holds a run (best.pt, metrics.json); choose another --out_dir, or pass "
                             "--overwrite=True"),
    ("train", "finished", "already holds a run (best.pt, metrics.json)"),
    ("train", "", "--out_dir is empty"),
    ("finetune", "", "--out_dir is empty"),
])
def test_a_run_is_never_replaced_unless_asked(script, out_dir, message, finetune_dir, pretrained, sms_data,
                                              char_data, capsys, monkeypatch):  # noqa: F811
    out_dir = finetune_dir if out_dir == "finished" else out_dir
    before = snapshot(finetune_dir)
    if script == "train":
        argv = train.main, [f"--data_dir={char_data}", f"--out_dir={out_dir}", *TINY]
    else:
        argv = finetune.main, [f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK]
    assert message in fails_in_one_line(*argv, capsys, monkeypatch)
    assert snapshot(finetune_dir) == before


def test_overwrite_replaces_a_finished_run_and_says_so(finetune_dir, pretrained, sms_data, tmp_path, capsys):  # noqa: F811
    out_dir = tmp_path / "run"
    shutil.copytree(finetune_dir, out_dir)
    before = snapshot(out_dir)
    finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK,
                   "--seed=7", "--overwrite=True"])
    assert f"--overwrite=True: this finetune.py run replaces the run in {out_dir}" in capsys.readouterr().out
    assert load_checkpoint(out_dir / "best.pt")["config"]["seed"] == 7 and snapshot(out_dir) != before


@pytest.mark.parametrize("fails", ["wandb missing", "last_n past the model"])
def test_a_failed_start_creates_nothing(fails, pretrained, sms_data, char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "out"
    if fails == "wandb missing":
        monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails, as where it is not installed
        err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={out_dir}", *TINY,
                                             "--wandb_log=True"], capsys, monkeypatch)
        assert "--wandb_log=True needs the wandb package" in err
    else:  # found only once the model is loaded
        err = fails_in_one_line(finetune.main, [f"--init_from={pretrained}", f"--data_dir={sms_data}",
                                                f"--out_dir={out_dir}", *QUICK, "--train=last_n", "--last_n=3"],
                                capsys, monkeypatch)
        assert "--last_n=3 but the model has only 2 blocks" in err
    assert not out_dir.exists()


# ----------------------------------------------------------------------------- a resumed run is the run


def test_resume_restores_the_runs_own_settings(run_dir, tmp_path, capsys, monkeypatch):
    """Only the out_dir and a new max_iters on the command line: the rest is the run's own, and a
    flag that disagrees with the run is refused."""
    out_dir = tmp_path / "run"
    shutil.copytree(run_dir, out_dir)
    before = snapshot(out_dir)
    err = fails_in_one_line(train.main, [f"--out_dir={out_dir}", "--resume=True", "--learning_rate=0.1"],
                            capsys, monkeypatch)
    assert f"the run in {out_dir} used --learning_rate=0.003" in err and "max_iters" in err
    assert snapshot(out_dir) == before

    train.main([f"--out_dir={out_dir}", "--resume=True", "--max_iters=6"])
    was, now = load_checkpoint(run_dir / "last.pt"), load_checkpoint(out_dir / "last.pt")
    assert now["iter_num"] == 6
    changed = {k for k in now["config"] if now["config"][k] != was["config"][k]}
    assert changed == {"max_iters", "resume", "out_dir"}


def test_finetune_resume_restores_the_runs_own_settings(pretrained, sms_data, tmp_path, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK,
                           "--learning_rate=3e-3"])
    finetune.main([f"--out_dir={out_dir}", "--resume=True"])
    assert json.loads((out_dir / "metrics.json").read_text())["iters"] == 4
    assert load_checkpoint(out_dir / "best.pt")["config"]["learning_rate"] == 3e-3


@pytest.mark.parametrize("script", ["train", "finetune"])
def test_each_script_resumes_only_its_own_runs(script, run_dir, pretrained, sms_data, char_data, tmp_path,
                                               capsys, monkeypatch):  # noqa: F811
    if script == "train":  # an interrupted finetuning run's last.pt
        out_dir = tmp_path / "finetuning"
        with monkeypatch.context() as m:
            interrupt_after(m, 3)
            with pytest.raises(KeyboardInterrupt):
                finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK])
        argv = train.main, [f"--out_dir={out_dir}", "--resume=True", *TINY]
        message = f"continue it with python finetune.py --out_dir={out_dir} --resume=True"
    else:
        out_dir = run_dir
        argv = finetune.main, [f"--out_dir={out_dir}", f"--init_from={pretrained}", f"--data_dir={sms_data}",
                               "--resume=True"]
        message = f"continue it with python train.py --out_dir={out_dir} --resume=True"
    before = snapshot(out_dir)
    assert message in fails_in_one_line(*argv, capsys, monkeypatch)
    assert snapshot(out_dir) == before


def test_eval_only_evaluates_a_resumed_run_and_writes_nothing(char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"  # evaluated at 0, 2 and 3: its last iteration is no multiple of eval_interval
    train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=3", "--eval_interval=2"])
    before = snapshot(out_dir)
    capsys.readouterr()
    train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--resume=True", "--eval_only=True",
                       "--max_iters=5"])
    assert "step 3: train loss" in capsys.readouterr().out
    assert snapshot(out_dir) == before


def test_a_resumed_run_logs_each_iteration_once(char_data, tmp_path, monkeypatch):  # noqa: F811
    """log.jsonl of an interrupted and resumed run holds the records of an uninterrupted one."""
    argv = TINY + [f"--data_dir={char_data}", "--max_iters=6", "--eval_interval=2"]
    train.main(argv + [f"--out_dir={tmp_path / 'whole'}"])
    with monkeypatch.context() as m:
        real_step, calls = train.train_step, []

        def step(*args):  # iteration 4 dies: iterations 1-3 and the evaluations at 0 and 2 are logged
            if len(calls) == 3:
                raise KeyboardInterrupt
            calls.append(1)
            return real_step(*args)
        m.setattr(train, "train_step", step)
        with pytest.raises(KeyboardInterrupt):
            train.main(argv + [f"--out_dir={tmp_path / 'resumed'}"])
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["iter_num"] == 2  # iteration 3 is logged, not saved
    train.main(argv + [f"--out_dir={tmp_path / 'resumed'}", "--resume=True"])

    def records(run):
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [(r["iter"], r.get("loss"), r.get("val_loss")) for r in map(json.loads, lines)]
    assert records("resumed") == records("whole")


# ----------------------------------------------------------------------------- config files are data


@pytest.mark.parametrize("text,message", [
    ("import os\nos.mkdir({marker!r})\n", "x.py:1: only `name = literal` lines are allowed"),
    ("max_iters = 5\nmax_iters = 5600 * 2\n", "x.py:2: only `name = literal` lines are allowed in a config file "
                                               "(it is read as data, not run); write the value of '5600 * 2'"),
    ("max_iters = five\n", "x.py:1: only `name = literal`"),
    ("max_iters = 5\nbatch_size = = 3\n", "x.py:2: invalid syntax"),
    ("learning_rate = 1e999\n", "x.py:1: learning_rate must be a finite number"),
    ("max_iters = '5'\n", "x.py:1: max_iters must be int"),
])
def test_config_files_are_read_as_data(text, message, char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    marker = tmp_path / "code_ran"
    (tmp_path / "x.py").write_text(text.format(marker=str(marker)))
    argv = [str(tmp_path / "x.py"), f"--data_dir={char_data}", f"--out_dir={tmp_path / 'out'}", *TINY, "--max_iters=1"]
    err = fails_in_one_line(train.main, argv, capsys, monkeypatch)
    assert message in err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "config").glob("*.py")))
def test_every_config_file_loads(path):
    from tools import bench

    config_cls = {"train": train.TrainConfig, "finetune": finetune.FinetuneConfig, "bench": bench.BenchConfig}
    cfg = parse_config(config_cls[path.split("_")[0]], [str(ROOT / "config" / path)])
    assert cfg.__class__.__name__.endswith("Config")


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "config").glob("train_*.py")))
def test_every_train_config_sets_its_own_time_budget(path):
    # train.py's 240 s default is the quickstart's: a preset left with it would stop after 4 minutes
    assert "max_seconds" in parse_options(train.TrainConfig, [str(ROOT / "config" / path)])


# ----------------------------------------------------------------------------- numbers and names that cannot train


@pytest.mark.parametrize("script,option,message", [
    ("train", "--learning_rate=nan", "--learning_rate must be a finite number, got nan"),
    ("train", "--grad_clip=inf", "grad_clip must be a finite number"),
    ("train", "--beta2=1.5", "beta2 must be in [0, 1)"),
    ("finetune", "--epochs=nan", "epochs must be a finite number"),
    ("finetune", "--learning_rate=0", "--learning_rate must be positive"),
    ("finetune", "--lora_alpha=0", "--lora_alpha must be positive"),
    ("finetune", "--weight_decay=-1", "--weight_decay must be 0 or more"),
    ("finetune", "--n_embd=30", "n_embd (30) must be divisible by n_head (4)"),
    ("sample", "--temperature=inf", "temperature must be a finite number"),
    ("sample", "--top_p=nan", "top_p must be a finite number"),
    ("sample", "--temperature=1e-40", "temperature must be 0 (greedy) or at least 0.001"),
    ("train", "--seed=99999999999999999999999", "seed must be in [0, 2**32)"),
    ("train", "--dtype=fp8", "--dtype must be one of auto, float32, bfloat16, float16, got 'fp8'"),
    ("finetune", "--truncate=middle", "--truncate must be one of head, tail, head_tail, chunks, got 'middle'"),
    ("sample", "--checkpoint=newest", "--checkpoint must be one of best, last, got 'newest'"),
    ("sample", "--attention=flash", "--attention must be one of auto, manual, sdpa, got 'flash'"),
    ("sample", "--num_samples=0", "--num_samples must be at least 1, got 0"),
    ("train", "--device=cpu:x", "--device must be auto, cpu, cuda, cuda:N or mps, got 'cpu:x'"),
    ("finetune", "--device=cpu:x", "--device must be auto, cpu, cuda, cuda:N or mps, got 'cpu:x'"),
    ("sample", "--device=cpu:x", "--device must be auto, cpu, cuda, cuda:N or mps, got 'cpu:x'"),
])
def test_every_option_rejects_what_cannot_train(script, option, message, run_dir, pretrained, sms_data, char_data,
                                                tmp_path, capsys, monkeypatch):  # noqa: F811
    out = f"--out_dir={tmp_path / 'out'}"
    main, argv = {"train": (train.main, [f"--data_dir={char_data}", out, *TINY, "--max_iters=1"]),
                  "finetune": (finetune.main, [f"--init_from={pretrained}", f"--data_dir={sms_data}", out, *QUICK]),
                  "sample": (sample.main, [f"--out_dir={run_dir}", "--device=cpu", "--max_new_tokens=2"])}[script]
    err = fails_in_one_line(main, [*argv, option], capsys, monkeypatch)
    assert message in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- damaged or hostile files


@pytest.mark.parametrize("damage,message", [
    ("no meta.json", "has train.bin but no meta.json"),
    ("no val.bin", "has train.bin but no val.bin"),
    ("meta.json not JSON", "meta.json is not valid JSON"),
    ("meta.json a list", "meta.json holds a list, not a tokenizer"),
    ("char meta without chars", "a char tokenizer needs its alphabet"),
    ("half a token", "val.bin has an odd number of bytes"),
    ("empty val.bin", "val.bin holds 0 tokens"),
    ("meta.json nested too deeply", "meta.json: JSON nested too deeply to read"),
    ("bpe merges not integer pairs", "meta.json: a bpe tokenizer's \"merges\" must be a string of pairs of token ids"),
])
def test_a_damaged_data_folder_is_named(damage, message, char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    {"no meta.json": lambda: (data / "meta.json").unlink(),
     "no val.bin": lambda: (data / "val.bin").unlink(),
     "meta.json not JSON": lambda: (data / "meta.json").write_text("{oops"),
     "meta.json a list": lambda: (data / "meta.json").write_text("[1]"),
     "char meta without chars": lambda: (data / "meta.json").write_text('{"kind": "char"}'),
     "half a token": lambda: (data / "val.bin").write_bytes((data / "val.bin").read_bytes() + b"x"),
     "empty val.bin": lambda: (data / "val.bin").write_bytes(b""),
     "meta.json nested too deeply": lambda: (data / "meta.json").write_text("[" * 100_000 + "]" * 100_000),
     "bpe merges not integer pairs": lambda: (data / "meta.json").write_text('{"kind": "bpe", "merges": "97 98 c d"}'),
     }[damage]()
    err = fails_in_one_line(train.main, [f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", *TINY],
                            capsys, monkeypatch)
    assert message in err
    assert not (tmp_path / "out").exists()


def damaged_gpt2(folder, damage):
    """A copy of the tiny Hugging Face GPT-2 with one thing wrong."""
    shutil.copytree(TINY_GPT2, folder, ignore=shutil.ignore_patterns("reference.pt"))
    config = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    if damage == "relu":
        (folder / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    elif damage == "no weights":
        weights.unlink()
    elif damage == "config.json cut":
        (folder / "config.json").write_text((folder / "config.json").read_text()[:40])
    elif damage == "no sizes":
        (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "n_positions"}))
    elif damage == "weights cut":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


@pytest.mark.parametrize("script", ["train", "sample", "finetune"])
@pytest.mark.parametrize("damage,message", [
    ("relu", "only GPT-2's tanh GELU"),
    ("no weights", "holds neither model.safetensors nor pytorch_model.bin"),
    ("config.json cut", "config.json is not valid JSON"),
    ("no sizes", "config.json lacks GPT-2's sizes"),
    ("weights cut", "model.safetensors is damaged or not a safetensors file"),
])
def test_a_damaged_gpt2_folder_is_named_by_every_script(script, damage, message, char_data, sms_data, tmp_path,
                                                        capsys, monkeypatch):  # noqa: F811
    folder = damaged_gpt2(tmp_path / "gpt2", damage)
    out = f"--out_dir={tmp_path / 'out'}"
    main, argv = {"train": (train.main, [f"--data_dir={char_data}", out, *TINY]),
                  "sample": (sample.main, ["--device=cpu"]),
                  "finetune": (finetune.main, [f"--data_dir={sms_data}", out, *QUICK])}[script]
    assert message in fails_in_one_line(main, [*argv, f"--init_from={folder}"], capsys, monkeypatch)
    assert not (tmp_path / "out").exists()


class RunsCode:
    """Unpickling this calls os.mkdir: the shape of a checkpoint built to run code when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("where", ["train resume", "sample", "finetune predict", "gpt2 pytorch_model.bin"])
def test_a_checkpoint_that_would_run_code_is_refused_as_such(where, char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    marker, run = tmp_path / "code_ran", tmp_path / "run"
    run.mkdir()
    if where == "gpt2 pytorch_model.bin":
        shutil.copy(TINY_GPT2 / "config.json", run)
        torch.save({"transformer.wte.weight": RunsCode(marker)}, run / "pytorch_model.bin")
    else:
        for name in ("best.pt", "last.pt"):
            torch.save({"model": RunsCode(marker)}, run / name)
    main, argv = {"train resume": (train.main, [f"--out_dir={run}", "--resume=True"]),
                  "sample": (sample.main, [f"--out_dir={run}"]),
                  "finetune predict": (finetune.main, [f"--out_dir={run}", "--predict=hi"]),
                  "gpt2 pytorch_model.bin": (sample.main, [f"--init_from={run}"])}[where]
    err = fails_in_one_line(main, argv, capsys, monkeypatch)
    assert "refused: it would run code when unpickled (posix.mkdir)" in err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["sample prompt", "finetune predict"])
@pytest.mark.parametrize("bad", ["latin-1", "a folder"])
def test_a_text_file_that_is_not_utf8_text_is_named(where, bad, run_dir, finetune_dir, tmp_path, capsys, monkeypatch):
    path = tmp_path / "text.txt"
    if bad == "latin-1":
        path.write_bytes("café\n".encode("latin-1"))
    else:
        path.mkdir()
    main, argv = {"sample prompt": (sample.main, [f"--out_dir={run_dir}", f"--start=FILE:{path}", "--device=cpu"]),
                  "finetune predict": (finetune.main, [f"--out_dir={finetune_dir}", f"--predict=FILE:{path}"])}[where]
    err = fails_in_one_line(main, argv, capsys, monkeypatch)
    assert f"{path}: " in err and ("not UTF-8 text" if bad == "latin-1" else "Is a directory") in err


# ----------------------------------------------------------------------------- no write follows a planted link
# Anyone who may write into a shared run folder can plant a link there. Every file is written under a
# fresh name (tempfile.mkstemp: O_CREAT | O_EXCL never opens a name that exists, link or not), then
# renamed over its target, and a rename replaces a link instead of writing through it. The names
# planted below: the fixed temporary names that earlier versions wrote through, and the names a run
# writes itself.

VICTIM = "another file, which the run must leave alone\n"


def plant_links(folder, names, outside):
    """A link at folder/name for each name, to outside/name: a file holding VICTIM, except for a name
    a new run must find free (an existing best.pt reads as a run already there), whose link dangles:
    a write through it would create the file."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir()
    for name in names:
        if not name.endswith((".pt", ".json")):
            (outside / name).write_text(VICTIM)
        (folder / name).symlink_to(outside / name)


def untouched(outside, names):
    """The files behind the links hold what they held, and no file appeared behind a dangling link."""
    return sorted(p.name for p in outside.iterdir()) == sorted(n for n in names if not n.endswith((".pt", ".json"))) \
        and all(p.read_bytes() == VICTIM.encode() for p in outside.iterdir())


@pytest.mark.parametrize("script", ["train", "finetune"])
def test_a_run_never_writes_through_a_planted_link(script, char_data, pretrained, sms_data, tmp_path):  # noqa: F811
    out_dir, outside = tmp_path / "out", tmp_path / "outside"
    if script == "train":
        names = ["last.pt.tmp", "best.pt.tmp", "log.jsonl.tmp", "log.jsonl", "last.pt", "best.pt"]
        plant_links(out_dir, names, outside)
        train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=2", "--eval_interval=1"])
    else:
        names = ["last.pt.tmp", "best.pt.tmp", "last.pt", "best.pt", "metrics.json"]
        plant_links(out_dir, names, outside)
        finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK])
    assert untouched(outside, names)
    # and the run saved all the same, in files of its own
    assert not (out_dir / "best.pt").is_symlink() and load_checkpoint(out_dir / "best.pt")["iter_num"] > 0
    if script == "train":
        assert load_checkpoint(out_dir / "last.pt")["iter_num"] == 2
        log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
        assert [r["iter"] for r in log if "val_loss" in r] == [0, 1, 2]
    else:
        assert "val" in json.loads((out_dir / "metrics.json").read_text())


def test_a_link_planted_at_the_lock_file_stops_the_run_in_one_line(char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    out_dir, outside = tmp_path / "out", tmp_path / "outside"
    plant_links(out_dir, [".lock"], outside)
    err = fails_in_one_line(train.main, TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}"], capsys, monkeypatch)
    assert f"--out_dir={out_dir}: can't write there (Too many levels of symbolic links)" in err
    assert untouched(outside, [".lock"]) and os.listdir(out_dir) == [".lock"]


def test_the_loss_plot_is_not_written_through_a_planted_link(char_data, tmp_path):  # noqa: F811
    pytest.importorskip("matplotlib")
    out_dir, outside = tmp_path / "out", tmp_path / "outside"
    plant_links(out_dir, ["loss.png"], outside)
    train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=1"])
    assert untouched(outside, ["loss.png"])
    assert not (out_dir / "loss.png").is_symlink() and (out_dir / "loss.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("what", ["prepared data", "download"])
def test_data_files_are_not_written_through_a_planted_link(what, tmp_path):
    from common import sources

    folder, outside = tmp_path / "data", tmp_path / "outside"
    corpus = tmp_path / "input.txt"
    corpus.write_text((FIXTURE_DATA / "tinyshakespeare" / "input.txt").read_text())
    if what == "prepared data":
        names = ["train.bin", "val.bin", "meta.json"]  # earlier versions wrote these in place
        plant_links(folder, names, outside)
        char_prepare.prepare(input_path=corpus, out_dir=folder)
        assert untouched(outside, names)
        assert json.loads((folder / "meta.json").read_text())["kind"] == "char"
        assert (folder / "train.bin").stat().st_size > 0 and not (folder / "train.bin").is_symlink()
    else:  # a half-downloaded file's fixed name in earlier versions
        plant_links(folder, ["input.txt.part"], outside)
        path = sources.download(corpus.as_uri(), folder)
        assert untouched(outside, ["input.txt.part"])
        assert path.read_bytes() == corpus.read_bytes()


def test_a_temporary_name_is_made_fresh_and_a_planted_one_is_passed_over(tmp_path, monkeypatch):
    """Plant a link at the very name mkstemp draws first: it must take the next name, not open the link."""
    from common.files import atomic_write  # here: the module is new, and the other cases run on older code

    outside = tmp_path / "outside"
    plant_links(tmp_path / "run", [".metrics.json.planted.tmp"], outside)
    drawn = iter(["planted", "fresh"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: drawn)  # mkstemp's source of names
    atomic_write(tmp_path / "run" / "metrics.json", lambda f: f.write(b"{}\n"))
    assert untouched(outside, [".metrics.json.planted.tmp"])
    assert (tmp_path / "run" / "metrics.json").read_bytes() == b"{}\n"
    assert sorted(os.listdir(tmp_path / "run")) == [".metrics.json.planted.tmp", "metrics.json"]  # no temporary left


# ----------------------------------------------------------------------------- one run per folder


def start(script, argv):
    """script run as its own process, as a user would start it; one thread, as in these tests (conftest)."""
    return subprocess.Popen([sys.executable, script, *map(str, argv)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def holds_lock(out_dir, process):
    """Whether process has claimed out_dir: the lock file names the process that holds it."""
    try:
        return (out_dir / ".lock").read_text().strip() == str(process.pid)
    except OSError:
        return False


def test_two_runs_started_together_one_is_refused_the_other_whole(char_data, tmp_path):  # noqa: F811
    # a long first evaluation (eval_iters) keeps the folder empty of checkpoints for a moment, so that
    # both runs pass the new-run check, as two runs started at the same instant would
    out_dir = tmp_path / "run"
    argv = TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=1", "--eval_interval=1",
                   "--eval_iters=60"]
    runs = [start("train.py", argv) for _ in range(2)]
    results = [(run, *run.communicate(timeout=300)) for run in runs]
    refused = [(run, err) for run, _, err in results if run.returncode == 2]
    finished = [run for run, _, _ in results if run.returncode == 0]
    assert len(refused) == 1 and len(finished) == 1, [(run.returncode, err[-500:]) for run, _, err in results]
    (_, err), winner = refused[0], finished[0]
    assert err.strip() == (f"error: another run (process {winner.pid}) is writing to {out_dir}; wait for it to end, "
                           f"or choose another --out_dir")
    log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "val_loss" in r] == [0, 1]  # each evaluation once
    assert load_checkpoint(out_dir / "last.pt")["iter_num"] == 1 and load_checkpoint(out_dir / "best.pt")


def test_a_running_run_cannot_be_resumed_and_a_killed_one_can(char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"
    first = start("train.py", TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=1000000",
                                      "--eval_interval=1000000"])
    try:
        wait_for(lambda: (out_dir / "last.pt").exists(), "the first checkpoint")  # iteration 0's
        err = fails_in_one_line(train.main, [f"--out_dir={out_dir}", "--resume=True", "--max_iters=2"],
                                capsys, monkeypatch)
        assert f"another run (process {first.pid}) is writing to {out_dir}" in err
    finally:
        first.kill()  # SIGKILL: no Python code runs to let go of anything
        first.wait()
    # the kernel released the lock with the process, though the lock file is still there
    assert (out_dir / ".lock").read_text().strip() == str(first.pid)
    train.main([f"--out_dir={out_dir}", "--resume=True", "--max_iters=2"])
    assert load_checkpoint(out_dir / "last.pt")["iter_num"] == 2


def test_a_second_finetuning_run_into_a_busy_folder_is_refused(pretrained, sms_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"
    argv = [f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK]
    first = start("finetune.py", [*argv, "--max_iters=1000000", "--eval_interval=1000000"])
    try:
        wait_for(lambda: holds_lock(out_dir, first), "the first run to claim its folder")
        err = fails_in_one_line(finetune.main, argv, capsys, monkeypatch)
        assert f"another run (process {first.pid}) is writing to {out_dir}" in err
        assert sorted(os.listdir(out_dir)) == [".lock"]  # the refused run wrote nothing
    finally:
        first.kill()
        first.wait()


# ----------------------------------------------------------------------------- checked before anything is built


@pytest.fixture
def blocks_built(monkeypatch):
    """A list that grows by one for every Transformer block built, on any device (the meta device
    included): a file's claims must be refused before its model is built, however small each block."""
    built, real_init = [], model.Block.__init__

    def init(self, config):
        built.append(1)
        real_init(self, config)
    monkeypatch.setattr(model.Block, "__init__", init)
    return built


def damaged_checkpoint(run_dir, folder, damage):
    """A copy of run_dir whose best.pt has one thing wrong (another damage: an unchanged copy). The run is
    2 blocks of n_embd 32, block_size 32 and 56 characters; the huge claims would take memory that no
    machine has, if anything were built from them before they are checked."""
    folder.mkdir()
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    args, weights = ckpt["model_args"], ckpt["model"]
    if damage == "a list":
        ckpt = [ckpt["model"]]
    elif damage == "claims block_size 2**40":
        args["block_size"] = 2**40
    elif damage == "claims vocab_size 10**6":
        args["vocab_size"] = 10**6
    elif damage == "claims 200 layers":
        args["n_layer"] = 200
    elif damage == "n_head does not divide n_embd":
        args["n_head"] = 3
    elif damage == "block_size not an integer":
        args["block_size"] = 32.5
    elif damage == "n_layer not positive":
        args["n_layer"] = -2
    elif damage == "unknown key":
        args["n_layers"] = 2
    elif damage == "weights of another shape":
        weights["transformer.wpe.weight"] = weights["transformer.wpe.weight"][:16]
    torch.save(ckpt, folder / "best.pt")
    return folder


@pytest.mark.parametrize("damage,message", [
    ("a list", "holds a list, not a checkpoint"),
    ("claims block_size 2**40", "wpe.weight has shape (32, 32), but the sizes given (block_size 1099511627776"),
    ("claims vocab_size 10**6", "has shape (56, 32), but the sizes given (block_size 32, vocab_size 1000000"),
    ("claims 200 layers", "n_layer is 200, but the weights hold 2 blocks"),
    ("n_head does not divide n_embd", "n_embd (32) must be divisible by n_head (3)"),
    ("block_size not an integer", "block_size must be a positive integer, got 32.5"),
    ("n_layer not positive", "n_layer must be a positive integer, got -2"),
    ("unknown key", "model_args holds n_layers, which this version's GPTConfig does not have"),
    ("weights of another shape", "transformer.wpe.weight has shape (16, 32), but the sizes given (block_size 32"),
])
def test_a_checkpoint_is_checked_before_its_model_is_built(damage, message, run_dir, tmp_path, blocks_built, capsys,
                                                           monkeypatch):
    folder = damaged_checkpoint(run_dir, tmp_path / "run", damage)
    before = snapshot(folder)
    err = fails_in_one_line(sample.main, [f"--out_dir={folder}", "--device=cpu"], capsys, monkeypatch)
    assert message in err
    assert len(blocks_built) <= 2  # the meta device's shapes of the 2 blocks the file holds, at most
    assert snapshot(folder) == before


@pytest.mark.parametrize("change,message", [
    ({"n_positions": 10**9}, "transformer.wpe.weight has shape (64, 32), but the sizes given (block_size 1000000000"),
    ({"n_layer": 200}, "n_layer is 200, but the weights hold 2 blocks"),
])
def test_a_gpt2_config_is_checked_before_its_model_is_built(change, message, tmp_path, blocks_built, capsys,
                                                            monkeypatch):
    folder = damaged_gpt2(tmp_path / "gpt2", "none")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    err = fails_in_one_line(sample.main, [f"--init_from={folder}", "--device=cpu"], capsys, monkeypatch)
    assert message in err
    assert len(blocks_built) <= 2


def test_a_checkpoint_whose_bpe_merges_are_not_integer_pairs(run_dir, tmp_path, capsys, monkeypatch):
    folder = damaged_checkpoint(run_dir, tmp_path / "run", "none")
    ckpt = torch.load(folder / "best.pt", weights_only=True)
    ckpt["tokenizer"] = {"kind": "bpe", "merges": "97 98 c d"}
    torch.save(ckpt, folder / "best.pt")
    err = fails_in_one_line(sample.main, [f"--out_dir={folder}", "--device=cpu"], capsys, monkeypatch)
    assert "best.pt: a bpe tokenizer's \"merges\" must be a string of pairs of token ids" in err


def test_a_resume_whose_sizes_disagree_with_its_weights(run_dir, char_data, tmp_path, blocks_built, capsys,
                                                        monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"
    shutil.copytree(run_dir, out_dir)
    ckpt = torch.load(out_dir / "last.pt", weights_only=True)
    ckpt["model_args"]["n_layer"] = 3
    torch.save(ckpt, out_dir / "last.pt")
    before = snapshot(out_dir)
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--resume=True"],
                            capsys, monkeypatch)
    assert "last.pt: n_layer is 3, but the weights hold 2 blocks" in err
    assert not blocks_built and snapshot(out_dir) == before


def test_a_finetuned_head_no_head_has(finetune_dir, tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "run"
    shutil.copytree(finetune_dir, out_dir)
    ckpt = torch.load(out_dir / "best.pt", weights_only=True)
    ckpt["head_name"] = "no_such_head"
    torch.save(ckpt, out_dir / "best.pt")
    before = snapshot(out_dir)
    err = fails_in_one_line(finetune.main, [f"--out_dir={out_dir}", "--predict=hello", "--device=cpu"],
                            capsys, monkeypatch)
    assert "best.pt: can't rebuild the finetuned head (unknown head 'no_such_head'" in err
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("script", ["train", "finetune"])
def test_a_block_size_too_large_for_memory_is_refused_naming_the_memory(script, char_data, sms_data, tmp_path, tiny_bpe,
                                                                        blocks_built, capsys, monkeypatch):  # noqa: F811
    out = f"--out_dir={tmp_path / 'out'}"
    main, argv = {"train": (train.main, [f"--data_dir={char_data}", out, *TINY]),
                  "finetune": (finetune.main, ["--init_from=scratch", f"--data_dir={sms_data}", out, *QUICK])}[script]
    err = fails_in_one_line(main, [*argv, "--block_size=1000000000"], capsys, monkeypatch)
    needs = r"block_size 1,000,000,000, .* needs at least [\d,.]+ GiB .* more than the [\d,.]+ GiB of cpu"
    assert re.search(needs, err), err
    assert not blocks_built and not (tmp_path / "out").exists()


def test_no_config_of_ours_is_refused_for_memory(monkeypatch):
    """The bound refuses only what can't run: not the configs in config/ on a 24 GiB machine, nor
    nanoGPT's GPT-2 124M (batch 12 of 1024 tokens) on a 40 GB GPU."""
    from tools import bench

    gib = 2**30
    monkeypatch.setattr(runtime, "memory_bytes", lambda device: 24 * gib if device == "cpu" else 40 * gib)
    for path in sorted((ROOT / "config").glob("*.py")):  # with GPT-2's vocabulary, the largest we use
        kind = path.name.split("_")[0]
        cfg = parse_config({"train": train.TrainConfig, "finetune": finetune.FinetuneConfig,
                            "bench": bench.BenchConfig}[kind], [str(path)])
        config = model.GPTConfig(block_size=cfg.block_size, vocab_size=50304, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                 n_embd=cfg.n_embd)
        runtime.check_training_memory(config, cfg.batch_size, "cpu", seq_len=getattr(cfg, "max_len", None))
    runtime.check_training_memory(model.GPTConfig(vocab_size=50304), 12, "cuda")
    with pytest.raises(UserError, match=r"needs at least [\d,.]+ GiB .* more than the 24.0 GiB of cpu"):
        runtime.check_training_memory(model.GPTConfig(vocab_size=50304), 200, "cpu")


# ----------------------------------------------------------------------------- folders, options and files, found early


@pytest.mark.parametrize("script", ["train", "finetune", "zero_shot"])
@pytest.mark.parametrize("where", ["under a file", "under /proc", "300 characters"])
def test_an_out_dir_that_cannot_be_made_is_found_before_the_model(where, script, char_data, pretrained, sms_data,
                                                                  tmp_path, blocks_built, capsys, monkeypatch):  # noqa: F811
    (tmp_path / "file").write_text("a file\n")
    out_dir = {"under a file": tmp_path / "file" / "out", "under /proc": Path("/proc/gpt-out"),
               "300 characters": tmp_path / ("x" * 300)}[where]
    out = f"--out_dir={out_dir}"
    main, argv = {"train": (train.main, [f"--data_dir={char_data}", out, *TINY]),
                  "finetune": (finetune.main, [f"--init_from={pretrained}", f"--data_dir={sms_data}", out, *QUICK]),
                  "zero_shot": (finetune.main, [f"--init_from={pretrained}", f"--data_dir={sms_data}", out,
                                                "--zero_shot=True", "--device=cpu"])}[script]
    assert f"--out_dir={out_dir}: can't" in fails_in_one_line(main, argv, capsys, monkeypatch)
    assert not blocks_built
    assert sorted(os.listdir(tmp_path)) == ["file"] and (tmp_path / "file").read_text() == "a file\n"


def test_an_out_dir_the_user_may_not_write_is_refused(tmp_path):
    """train.py in a process that gives up root (who may write anywhere) for an unprivileged user, once
    its modules are imported, then aims at a folder that user may read but not write."""
    if not hasattr(os, "setuid") or os.getuid() != 0:
        pytest.skip("needs root, to become an unprivileged user (nobody)")
    shared = Path(tempfile.mkdtemp())  # not under tmp_path: pytest's folders are closed to other users
    shared.chmod(0o755)
    out_dir = shared / "out"
    as_nobody = ("import os, sys; import train; from common.cli import run_main; os.setgid(65534); os.setuid(65534); "
                 f"sys.argv = ['train.py', '--out_dir={out_dir}', '--device=cpu']; run_main(train.main)")
    try:
        result = subprocess.run([sys.executable, "-c", as_nobody], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2, result.stderr[-1000:]
        assert result.stderr.strip() == f"error: --out_dir={out_dir}: can't write there (Permission denied)"
        assert not os.listdir(shared)
    finally:
        shutil.rmtree(shared)


def test_rank_set_without_torchrun_is_refused(char_data, tmp_path, blocks_built, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RANK", "0")
    err = fails_in_one_line(train.main, [f"--data_dir={char_data}", f"--out_dir={tmp_path / 'out'}", *TINY],
                            capsys, monkeypatch)
    assert "LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT unset while RANK is set: start several processes with " \
           "torchrun" in err
    assert not blocks_built and not (tmp_path / "out").exists()


def test_a_prefix_as_long_as_the_block_is_refused_before_the_data_is_read(pretrained, sms_data, tmp_path, capsys,
                                                                          monkeypatch):  # noqa: F811
    def read(*args, **kwargs):
        pytest.fail("the data was read before --prefix_len was checked")
    monkeypatch.setattr(finetune, "load_examples", read)
    err = fails_in_one_line(finetune.main, [f"--init_from={pretrained}", f"--data_dir={sms_data}",
                                            f"--out_dir={tmp_path / 'out'}", *QUICK, "--train=prefix",
                                            "--prefix_len=48"], capsys, monkeypatch)
    assert "--prefix_len must be between 1 and block_size - 1 (47), got 48" in err
    assert not (tmp_path / "out").exists()


def test_an_eval_file_row_nested_too_deeply(finetune_dir, tmp_path, capsys, monkeypatch):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "ham"}\n')
    before = snapshot(finetune_dir)
    err = fails_in_one_line(finetune.main, [f"--out_dir={finetune_dir}", f"--eval_file={path}", "--device=cpu"],
                            capsys, monkeypatch)
    assert f"{path}:1: JSON nested too deeply" in err
    assert snapshot(finetune_dir) == before


# ----------------------------------------------------------------------------- what was silent is said


def test_zero_shot_calibrates_without_a_text_the_model_cannot_write_and_says_so(sms_data, tmp_path, capsys):  # noqa: F811
    chars = CHARS.replace("/", "")  # a character model whose corpus held no "/": "N/A" can't be written
    pre = save_run(tmp_path / "pre", len(chars), {"kind": "char", "chars": chars})
    finetune.main([f"--init_from={pre}", f"--data_dir={sms_data}", f"--out_dir={tmp_path / 'zs'}", "--zero_shot=True",
                   "--device=cpu"])
    assert "note: calibrating without the content-free text 'N/A'" in capsys.readouterr().out
    assert "test_calibrated" in json.loads((tmp_path / "zs" / "zero_shot.json").read_text())


def test_zero_shot_says_when_its_own_prompt_does_not_fit_the_vocabulary(sms_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    chars = CHARS.replace("?", "")  # the sms_spam prompt asks "spam or ham?"
    pre = save_run(tmp_path / "pre", len(chars), {"kind": "char", "chars": chars})
    err = fails_in_one_line(finetune.main, [f"--init_from={pre}", f"--data_dir={sms_data}",
                                            f"--out_dir={tmp_path / 'zs'}", "--zero_shot=True", "--device=cpu"],
                            capsys, monkeypatch)
    assert "this model's vocabulary lacks '?', which the sms_spam task's own prompt" in err
    assert not (tmp_path / "zs").exists()


def test_an_empty_predict_file_is_refused(finetune_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty.txt").write_text("\n \n")
    err = fails_in_one_line(finetune.main, [f"--out_dir={finetune_dir}", f"--predict=FILE:{tmp_path / 'empty.txt'}",
                                            "--device=cpu"], capsys, monkeypatch)
    assert f"{tmp_path / 'empty.txt'}: no text to predict" in err


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "bom.py").write_bytes("\ufeffmax_iters = 7\n".encode())  # as Windows' Notepad saves UTF-8
    assert parse_options(train.TrainConfig, [str(tmp_path / "bom.py")]) == {"max_iters": 7}


def test_sample_says_when_the_checkpoint_is_a_finetuned_classifier(finetune_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sample.py", f"--out_dir={finetune_dir}", "--max_new_tokens=3",
                                      "--num_samples=1", "--device=cpu"])
    run_main(sample.main)
    assert f"note: {finetune_dir / 'best.pt'} is a finetuned classifier" in capsys.readouterr().out
