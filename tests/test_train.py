"""
train.py: the known traps of nanoGPT-style trainers, exact resume after SIGKILL, and DDP on CPU.
"""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common import runtime
from common.checkpoint import load_checkpoint, load_model
from common.huggingface import load_state_dict as load_hf_state_dict
from common.cli import UserError
from conftest import FIXTURE_DATA
from model import GPT, GPTConfig
from common.budget import TimeBudget
from train import Batches, TrainConfig, get_lr, train, train_step

ROOT = Path(__file__).resolve().parent.parent

# a model small enough that a few hundred iterations take seconds
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--device=cpu",
        "--dtype=float32", "--compile=False", "--sample_tokens=0", "--eval_iters=2", "--log_interval=1",
        "--dropout=0.0", "--warmup_iters=5", "--max_seconds=0"]  # no time budget: runs that can be compared bit for bit


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    """A char dataset made by the real prepare.py from the 4 KB excerpt of Shakespeare in tests/fixtures."""
    from data.shakespeare_char.prepare import prepare

    folder = tmp_path_factory.mktemp("char_data")
    prepare(input_path=FIXTURE_DATA / "tinyshakespeare" / "input.txt", out_dir=folder)
    return folder


def tiny_config(char_data, out_dir, **overrides):
    args = dict(out_dir=str(out_dir), data_dir=str(char_data), n_layer=2, n_head=2, n_embd=32, block_size=32,
                batch_size=4, device="cpu", dtype="float32", compile=False, sample_tokens=0, eval_iters=2,
                log_interval=1, eval_interval=10, max_iters=20, lr_decay_iters=20, warmup_iters=5, max_seconds=0)
    args.update(overrides)
    return TrainConfig(**args)


def read_log(out_dir):
    """{iter: loss} of the training steps and {iter: (train_loss, val_loss)} of the evaluations;
    where a resumed run logged an iteration again, its record wins."""
    steps, evals = {}, {}
    for line in (Path(out_dir) / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            steps[r["iter"]] = r["loss"]
        else:
            evals[r["iter"]] = (r["train_loss"], r["val_loss"])
    return steps, evals


def run_train(args, **kwargs):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, **kwargs)


# ----------------------------------------------------------------------------- the learning rate

def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110)
    warmup = [get_lr(i, cfg) for i in range(10)]
    assert all(a < b for a, b in zip(warmup, warmup[1:])) and warmup[-1] < 1e-3
    assert get_lr(10, cfg) == pytest.approx(1e-3)
    assert get_lr(60, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the cosine
    assert get_lr(35, cfg) > 1e-4 + 0.75 * (1e-3 - 1e-4)  # a cosine stays high longer than a straight line
    assert get_lr(110, cfg) == pytest.approx(1e-4) and get_lr(500, cfg) == 1e-4


def test_a_time_budget_moves_the_schedule_when_it_runs_out_first():
    """The schedule's position is the further of the iterations done and the budget's used fraction of
    lr_decay_iters: a slow machine still ends its cosine at min_lr, a fast one follows its iterations."""
    def budget(max_seconds, seconds):
        b = TimeBudget(max_seconds, 0.0, share_every=1, ddp=runtime.Distributed(), device="cpu")
        b.seconds = seconds
        return b

    assert budget(100.0, 50.0).schedule_position(100, 10, 1000) == 500  # slow: half the time gone, a tenth of the iterations
    assert budget(100.0, 50.0).schedule_position(700, 10, 1000) == 700  # fast: the iterations are further along
    assert budget(0.0, 50.0).schedule_position(100, 10, 1000) == 100  # no budget: iterations alone
    assert budget(100.0, 50.0).schedule_position(5, 10, 1000) == 5  # the warmup counts iterations, however long compiling took
    assert budget(100.0, 99.0).spent() is False and budget(100.0, 100.0).spent() is True


# ----------------------------------------------------------------------------- the traps

def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=20, n_layer=2, n_head=2, n_embd=16))


def micro_batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(20, (3, 16), generator=g), torch.randint(20, (3, 16), generator=g)) for _ in range(n)]


def no_scaler():
    return torch.amp.GradScaler("cpu", enabled=False)


def test_compile_without_a_cpu_compiler_trains_eager(char_data, tmp_path, monkeypatch, capsys):
    """torch.compile builds CPU kernels with a C++ compiler; without one the run says so and trains eager."""
    monkeypatch.setenv("CXX", "no-such-compiler")
    result = train(tiny_config(char_data, tmp_path, compile=True, max_iters=4, eval_interval=2))
    assert "torch.compile needs a C++ compiler" in capsys.readouterr().out
    assert result["iter_num"] == 4


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU's flags from Linux's /proc/cpuinfo")
def test_auto_dtype_on_a_cpu_is_bfloat16_only_with_native_bf16():
    """A CPU emulates bfloat16 without AVX512-BF16 or AMX, slower than float32: auto must then stay float32."""
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert runtime.pick_dtype("auto", "cpu") == ("bfloat16" if native else "float32")


@pytest.mark.parametrize("name,device,expected", [("auto", "cuda", "sdpa"), ("auto", "cuda:1", "sdpa"),
                                                  ("auto", "cpu", "manual"), ("auto", "mps", "manual"),
                                                  ("sdpa", "cpu", "sdpa"), ("manual", "cuda", "manual")])
def test_attention_auto_is_flash_on_a_gpu_only(name, device, expected):
    cfg = TrainConfig(attention=name)
    assert cfg.model_config(vocab_size=65, device=device).attention == expected


def test_logged_loss_is_the_mean_over_all_micro_steps():
    model = tiny_model()
    batches = micro_batches(4)
    with torch.no_grad():
        expected = [model(x, y)[1].item() for x, y in batches]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = train_step(model, optimizer, no_scaler(), batches, 0.0, runtime.autocast("cpu", "float32"))
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-6)
    assert loss.item() != pytest.approx(expected[-1], rel=1e-6)  # the data really differs per micro-step


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_accumulated_step_equals_one_big_batch_even_with_clipping(grad_clip):
    """Each micro-loss is divided by the number of micro-steps, so the summed gradient is the gradient
    of the mean loss, and clipping sees the same norm as one big batch would."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    batches = micro_batches(4)
    x = torch.cat([b[0] for b in batches])  # (12, 16): one batch of all micro-batches
    y = torch.cat([b[1] for b in batches])
    reference(x, y)[1].backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), grad_clip or float("inf"))
    assert grad_clip == 0 or norm > grad_clip  # the clip really acts in the second case

    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is minus the gradient
    train_step(model, optimizer, no_scaler(), batches, grad_clip, runtime.autocast("cpu", "float32"))
    for p0, p, ref in zip(before, model.parameters(), reference.parameters()):
        torch.testing.assert_close(p0 - p, ref.grad, rtol=1e-4, atol=1e-6)


def test_a_compiled_run_saves_a_checkpoint_a_plain_model_loads(char_data, tmp_path, monkeypatch):
    """train.py compiles in place (model.compile()), so the checkpoint's names carry no "_orig_mod."
    prefix, which torch.compile(model)'s wrapper would add and a plain GPT would refuse. The run goes
    through train.py's own path; only the compiler's backend is the quick one (no C++ to build)."""
    compiled = []
    real_compile = torch.nn.Module.compile
    def quick_compile(module, **kwargs):
        compiled.append(type(module).__name__)
        return real_compile(module, backend="eager")
    monkeypatch.setattr(torch.nn.Module, "compile", quick_compile)
    train(tiny_config(char_data, tmp_path, compile=True, max_iters=4, eval_interval=4))
    assert compiled == ["GPT"]  # the run took the compiled path
    state = load_checkpoint(tmp_path / "best.pt")
    plain = GPT(GPTConfig(**state["model_args"]))
    plain.load_state_dict(state["model"])  # strict: every name matches, no prefix


class CreatesAFile:
    """Unpickling this object calls open(path, "w"): a harmless stand-in for a checkpoint that runs
    code when it is loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


LOADERS = {  # every way our scripts read a pickled file
    "load_checkpoint": lambda run_dir, hf_dir: load_checkpoint(run_dir / "best.pt"),
    "load_model": lambda run_dir, hf_dir: load_model(run_dir),
    "load_hf_state_dict": lambda run_dir, hf_dir: load_hf_state_dict(hf_dir),
    "GPT.from_pretrained": lambda run_dir, hf_dir: GPT.from_pretrained(hf_dir),
}


@pytest.mark.parametrize("loader", LOADERS)
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, loader):
    """Our checkpoints and Hugging Face's pytorch_model.bin are pickles, which can run code on loading."""
    marker = tmp_path / "the_code_ran"
    torch.save({"model": {"x": torch.ones(2)}, "model_args": {}, "trap": CreatesAFile(marker)}, tmp_path / "unsafe.pt")
    torch.load(tmp_path / "unsafe.pt", weights_only=False)  # the trap works: a load that trusts the file runs it
    assert marker.exists()
    marker.unlink()

    run_dir, hf_dir = tmp_path / "run", tmp_path / "hf"
    run_dir.mkdir()
    hf_dir.mkdir()
    shutil.copy(tmp_path / "unsafe.pt", run_dir / "best.pt")
    shutil.copy(tmp_path / "unsafe.pt", hf_dir / "pytorch_model.bin")
    shutil.copy(ROOT / "tests" / "fixtures" / "tiny_gpt2" / "config.json", hf_dir)
    with pytest.raises(UserError, match="would run code"):
        LOADERS[loader](run_dir, hf_dir)
    assert not marker.exists()


def test_ddp_ranks_split_one_iteration_between_them(char_data):
    """Rank r takes micro-steps r*k..(r+1)*k-1 of the batches a single process would draw."""
    one = Batches(char_data, 32, 4, 4, seed=3, device="cpu").iteration(4)
    rank0 = Batches(char_data, 32, 4, 4, seed=3, device="cpu", rank=0, world_size=2).iteration(4)
    rank1 = Batches(char_data, 32, 4, 4, seed=3, device="cpu", rank=1, world_size=2).iteration(4)
    assert len(rank0) == len(rank1) == 2
    for (x, y), (x2, y2) in zip(one, rank0 + rank1):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    x, y = one[0]
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one


# ----------------------------------------------------------------------------- whole runs

def test_training_lowers_the_loss_and_writes_checkpoints_and_logs(char_data, tmp_path, capsys):
    result = train(tiny_config(char_data, tmp_path, max_iters=60, eval_interval=30, lr_decay_iters=60,
                               learning_rate=3e-3))
    assert "iter 30/60: loss" in capsys.readouterr().out  # step i of n, then the time left
    steps, evals = read_log(tmp_path)
    assert sorted(evals) == [0, 30, 60] and sorted(steps) == list(range(1, 61))
    assert evals[60][1] < evals[0][1] - 0.5  # val loss falls from ~ln(56 characters) = 4.0
    assert result["best_val_loss"] == min(v for _, v in evals.values())
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "last.pt")
    assert last["iter_num"] == 60 and best["best_val_loss"] == result["best_val_loss"]
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[1])
    assert set(record) >= {"iter", "loss", "lr", "ms", "tokens_per_s"}


def read_lrs(out_dir):
    return [json.loads(line)["lr"] for line in (Path(out_dir) / "log.jsonl").read_text().splitlines() if '"lr"' in line]


def test_a_time_budget_ends_the_run_with_the_cosine_done_and_a_checkpoint(char_data, tmp_path):
    cfg = tiny_config(char_data, tmp_path, max_iters=10**6, lr_decay_iters=10**6, eval_interval=10**6,
                      max_seconds=3.0, learning_rate=1e-3, min_lr=1e-4)
    result = train(cfg)
    steps, evals = read_log(tmp_path)
    assert 0 < result["iter_num"] < 10**6  # the time ran out long before the iterations
    assert sorted(evals) == [0, result["iter_num"]]  # evaluated at the end, too
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["iter_num"] == result["iter_num"] and last["seconds"] >= 3.0
    assert read_lrs(tmp_path)[-1] < 1e-4 + 0.02 * (1e-3 - 1e-4)  # the cosine ran its course


def test_a_resumed_run_spends_what_is_left_of_its_time_budget(char_data, tmp_path):
    budget = dict(max_seconds=8.0, lr_decay_iters=10**6, eval_interval=10**6, learning_rate=1e-3, min_lr=1e-4)
    train(tiny_config(char_data, tmp_path, max_iters=30, **budget))  # stopped early, as if interrupted
    spent = load_checkpoint(tmp_path / "last.pt")["seconds"]
    assert 0 < spent < 8.0
    result = train(tiny_config(char_data, tmp_path, max_iters=10**6, resume=True, **budget))
    lrs = read_lrs(tmp_path)
    # the first resumed step is at least as far down the cosine as the time already spent puts it
    # (a resumed run that started its clock at 0 would be back near the top)
    assert lrs[30] <= get_lr(spent / 8.0 * 10**6, tiny_config(char_data, tmp_path, **budget))
    assert load_checkpoint(tmp_path / "last.pt")["seconds"] >= 8.0 and result["iter_num"] > 30
    assert lrs[-1] < 1e-4 + 0.02 * (1e-3 - 1e-4)


def test_sigkill_then_resume_gives_bit_identical_losses(char_data, tmp_path):
    common = TINY + [f"--data_dir={char_data}", "--max_iters=400", "--lr_decay_iters=400", "--eval_interval=25",
                     "--dropout=0.1"]  # dropout: a resumed run must drop the units the uninterrupted one would
    reference = tmp_path / "reference"
    done = run_train(common + [f"--out_dir={reference}"], timeout=300)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *common, f"--out_dir={killed}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"iter": 60,' in log.read_text()):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    resumed_from = load_checkpoint(killed / "last.pt")["iter_num"]
    assert 50 <= resumed_from < 400  # killed mid-run, after a checkpoint

    resumed = run_train(common + [f"--out_dir={killed}", "--resume=True"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ref_steps, ref_evals = read_log(reference)
    steps, evals = read_log(killed)
    assert sorted(steps) == sorted(ref_steps)
    assert steps == ref_steps  # every loss, before and after the kill, bit for bit
    assert evals == ref_evals


def test_a_resumed_float16_run_keeps_its_loss_scaler(char_data, tmp_path):
    """float16's GradScaler adapts its scale as it trains (it doubles after growth_interval good steps
    in a row); a resume must go on from that state, not from a fresh scaler's."""
    common = TINY + [f"--data_dir={char_data}", "--dtype=float16", "--lr_decay_iters=8", "--eval_interval=4",
                     f"--out_dir={tmp_path}"]
    assert run_train(common + ["--max_iters=4"], timeout=300).returncode == 0
    done = run_train(common + ["--max_iters=8", "--resume=True"], timeout=300)
    assert done.returncode == 0, done.stderr
    scaler = load_checkpoint(tmp_path / "last.pt")["scaler"]
    assert scaler["_growth_tracker"] == 8  # good steps in a row: 4 before the stop and 4 after it


def test_two_gloo_ranks_match_one_process_with_twice_the_accumulation(char_data, tmp_path):
    common = TINY + [f"--data_dir={char_data}", "--max_iters=20", "--lr_decay_iters=20", "--eval_interval=10",
                     "--gradient_accumulation_steps=2"]
    single = run_train(common + [f"--out_dir={tmp_path / 'single'}"], timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train.py", *common, f"--out_dir={tmp_path / 'ddp'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single_steps, single_evals = read_log(tmp_path / "single")
    ddp_steps, ddp_evals = read_log(tmp_path / "ddp")
    assert sorted(ddp_steps) == list(range(1, 21))
    worst = max(abs(single_steps[i] - ddp_steps[i]) for i in single_steps)
    print(f"[max error] DDP vs single-process loss: {worst:.2e}")
    assert worst < 1e-5
    assert max(abs(a - b) for i in single_evals for a, b in zip(single_evals[i], ddp_evals[i])) < 1e-5


def test_gloo_ranks_stop_together_when_the_time_budget_runs_out(char_data, tmp_path):
    """Every rank follows rank 0's clock: a rank that stopped one iteration early would leave the
    others waiting for its gradients forever (the timeout would fail this test)."""
    args = [a for a in TINY if not a.startswith("--max_seconds")]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train.py", *args, f"--data_dir={char_data}", "--max_iters=1000000",
                          "--lr_decay_iters=1000000", "--eval_interval=1000000", "--max_seconds=3",
                          "--gradient_accumulation_steps=2", f"--out_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    steps, evals = read_log(tmp_path)
    assert 0 < max(steps) < 1000000 and sorted(evals) == [0, max(steps)]  # stopped by the clock, then evaluated

