"""
User mistakes end in one line on stderr and exit status 2, never a traceback, and never touch
what is already on disk: no file created, changed or removed, no run replaced unless asked, no
code run from a config file or a checkpoint. One test per kind of mistake, each case of a kind
a parameter.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import finetune
import sample
import train
from common.checkpoint import load_checkpoint
from common.cli import run_main
from data.shakespeare_char import prepare as char_prepare
from test_finetune import QUICK, interrupt_after, pretrained, sms_data  # noqa: F401  (pytest fixtures)
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
                                         "--init_from=resume", "--max_iters=4", *TINY, *argv], capsys, monkeypatch)
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
    err = fails_in_one_line(train.main, [f"--out_dir={out_dir}", "--init_from=resume", "--learning_rate=0.1"],
                            capsys, monkeypatch)
    assert f"the run in {out_dir} used --learning_rate=0.003" in err and "max_iters" in err
    assert snapshot(out_dir) == before

    train.main([f"--out_dir={out_dir}", "--init_from=resume", "--max_iters=6"])
    was, now = load_checkpoint(run_dir / "last.pt"), load_checkpoint(out_dir / "last.pt")
    assert now["iter_num"] == 6
    changed = {k for k in now["config"] if now["config"][k] != was["config"][k]}
    assert changed == {"max_iters", "init_from", "out_dir"}


def test_finetune_resume_restores_the_runs_own_settings(pretrained, sms_data, tmp_path, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK,
                           "--lr=3e-3"])
    finetune.main([f"--out_dir={out_dir}", "--resume=True"])
    assert json.loads((out_dir / "metrics.json").read_text())["iters"] == 4
    assert load_checkpoint(out_dir / "best.pt")["config"]["lr"] == 3e-3


@pytest.mark.parametrize("script", ["train", "finetune"])
def test_each_script_resumes_only_its_own_runs(script, run_dir, pretrained, sms_data, char_data, tmp_path,
                                               capsys, monkeypatch):  # noqa: F811
    if script == "train":  # an interrupted finetuning run's last.pt
        out_dir = tmp_path / "finetuning"
        with monkeypatch.context() as m:
            interrupt_after(m, 3)
            with pytest.raises(KeyboardInterrupt):
                finetune.main([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out_dir}", *QUICK])
        argv = train.main, [f"--out_dir={out_dir}", "--init_from=resume", *TINY]
        message = f"continue it with python finetune.py --out_dir={out_dir} --resume=True"
    else:
        out_dir = run_dir
        argv = finetune.main, [f"--out_dir={out_dir}", f"--init_from={pretrained}", f"--data_dir={sms_data}",
                               "--resume=True"]
        message = f"continue it with python train.py --out_dir={out_dir} --init_from=resume"
    before = snapshot(out_dir)
    assert message in fails_in_one_line(*argv, capsys, monkeypatch)
    assert snapshot(out_dir) == before


def test_eval_only_evaluates_a_resumed_run_and_writes_nothing(char_data, tmp_path, capsys, monkeypatch):  # noqa: F811
    out_dir = tmp_path / "run"  # evaluated at 0, 2 and 3: its last iteration is no multiple of eval_interval
    train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--max_iters=3", "--eval_interval=2"])
    before = snapshot(out_dir)
    capsys.readouterr()
    train.main(TINY + [f"--data_dir={char_data}", f"--out_dir={out_dir}", "--init_from=resume", "--eval_only=True",
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
    train.main(argv + [f"--out_dir={tmp_path / 'resumed'}", "--init_from=resume"])

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
    from common.cli import parse_config
    from tools import bench

    config_cls = {"train": train.TrainConfig, "finetune": finetune.FinetuneConfig, "bench": bench.BenchConfig}
    cfg = parse_config(config_cls[path.split("_")[0]], [str(ROOT / "config" / path)])
    assert cfg.__class__.__name__.endswith("Config")


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "config").glob("train_*.py")))
def test_every_train_config_sets_its_own_time_budget(path):
    # train.py's 240 s default is the quickstart's: a preset left with it would stop after 4 minutes
    from common.cli import parse_options

    assert "max_seconds" in parse_options(train.TrainConfig, [str(ROOT / "config" / path)])


# ----------------------------------------------------------------------------- numbers and names that cannot train


@pytest.mark.parametrize("script,option,message", [
    ("train", "--learning_rate=nan", "--learning_rate must be a finite number, got nan"),
    ("train", "--grad_clip=inf", "grad_clip must be a finite number"),
    ("train", "--beta2=1.5", "beta2 must be in [0, 1)"),
    ("finetune", "--epochs=nan", "epochs must be a finite number"),
    ("finetune", "--lr=0", "--lr must be positive"),
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
    ("meta.json not JSON", "meta.json is damaged"),
    ("meta.json a list", "meta.json holds a list, not a tokenizer"),
    ("char meta without chars", "a char tokenizer needs its alphabet"),
    ("half a token", "val.bin has an odd number of bytes"),
    ("empty val.bin", "val.bin holds 0 tokens"),
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
     "empty val.bin": lambda: (data / "val.bin").write_bytes(b"")}[damage]()
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
    main, argv = {"train resume": (train.main, [f"--out_dir={run}", "--init_from=resume"]),
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
