"""
The choices the GPU path makes, checked on a CPU: the dtype of an emulating GPU, data-sheet peaks by
exact model name, when torch.compile can work, whose random state a checkpoint holds, the mask that
cached decoding gives sdpa, the attention a loaded checkpoint runs with, batches read per rank and
one iteration ahead, and how often the loop waits for the device. tests/test_cuda.py runs the same
path on a real GPU.

    python -m pytest tests/test_gpu_path.py -q
"""

import importlib.util
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

import sample
import train
from common import runtime
from common.checkpoint import load_model, save_checkpoint
from conftest import assert_close, tiny_gpt
from finetune import FinetuneConfig, load_pretrained
from model import KVCache
from test_train import TINY, ROOT, char_data, read_log, tiny_config  # noqa: F401  (char_data is a fixture)


# ----------------------------------------------------------------------------- dtype, peaks, compile

def test_auto_dtype_is_float16_on_a_gpu_that_only_emulates_bfloat16(monkeypatch):
    """A V100 or T4 answers is_bf16_supported() with True (torch emulates bfloat16 there, slowly);
    only including_emulation=False says it lacks it."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert runtime.pick_dtype("auto", "cuda") == "float16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert runtime.pick_dtype("auto", "cuda:1") == "bfloat16"


def test_auto_dtype_with_a_torch_whose_check_takes_no_argument(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # a torch without the argument
    assert runtime.pick_dtype("auto", "cuda") == "bfloat16"


# names as torch.cuda.get_device_name() reports them, and each one's dense bf16 (V100, T4: fp16) peak
@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),  # the SXM module
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA H200 NVL", 835e12),
    ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100-SXM4-40GB", 312e12),
    ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40", 181e12),
    ("NVIDIA L40S", 362e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA A10G", None),  # NVIDIA publishes no peak for it; A10's would be wrong
    ("Tesla V100-SXM2-16GB", 125e12),
    ("Tesla V100-PCIE-32GB", 112e12),
    ("Tesla T4", 65e12),
    ("NVIDIA GeForce RTX 4090", 165e12),
    ("NVIDIA GeForce RTX 3090", 71e12),
    ("NVIDIA GeForce RTX 3090 Ti", None),  # a different card from the 3090
    ("NVIDIA RTX A6000", None),
])
def test_gpu_peaks_are_matched_by_exact_model_name(name, peak):
    assert runtime.gpu_peak_flops(name) == peak


def test_an_unknown_gpu_gets_no_mfu_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10G")
    assert runtime.peak_flops("cuda", "bfloat16") is None
    assert "no data-sheet peak known for NVIDIA A10G" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert runtime.peak_flops("cuda", "bfloat16") == 756e12


def test_compile_on_cuda_needs_triton_and_is_not_used_on_mps(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else real_find_spec(name))
    assert "triton" in runtime.compile_blocker("cuda") and "triton" in runtime.compile_blocker("cuda:1")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # triton installed
    assert runtime.compile_blocker("cuda") is None
    assert runtime.compile_blocker("mps") is not None
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert "C++ compiler" in runtime.compile_blocker("cpu")


def test_compile_in_place_stays_eager_and_says_why(monkeypatch, capsys):
    monkeypatch.setenv("CXX", "no-such-compiler")
    model = tiny_gpt()
    runtime.compile_in_place(model, "cpu")
    assert "C++ compiler" in capsys.readouterr().out
    assert model._compiled_call_impl is None  # Module.compile() was not called


# ----------------------------------------------------------------------------- random state

class FakeCudaRng:
    """Stands in for torch.cuda's RNG functions; the *_all ones, which touch every GPU, must not be called."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.record("get", device))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.record("set", device, state))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("get_rng_state_all touches every GPU"))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("set_rng_state_all touches every GPU"))

    def record(self, *call):
        self.calls.append(call)
        return torch.tensor([7], dtype=torch.uint8)


def test_rng_state_holds_only_this_processs_gpu(monkeypatch):
    fake = FakeCudaRng(monkeypatch)
    state = runtime.rng_state("cuda:1")
    runtime.set_rng_state(state, "cuda:1")
    assert [c[:2] for c in fake.calls] == [("get", "cuda:1"), ("set", "cuda:1")]
    assert torch.equal(fake.calls[1][2], state["cuda"])

    fake.calls.clear()
    cpu_state = runtime.rng_state("cpu")
    runtime.set_rng_state(state, "cpu")  # a GPU run's state resumed on a CPU: the GPU part is not used
    assert "cuda" not in cpu_state and fake.calls == []


def test_dropout_seed_differs_by_rank_and_iteration_and_nothing_else():
    seeds = {train.dropout_seed(1337, rank, it) for rank in range(4) for it in range(100)}
    assert len(seeds) == 400
    assert train.dropout_seed(1337, 1, 5) == train.dropout_seed(1337, 1, 5)
    assert train.dropout_seed(1337, 1, 5) != train.dropout_seed(1338, 1, 5)


def test_gloo_ranks_with_dropout_resume_exactly(char_data, tmp_path):
    """Two ranks with dropout, stopped at iteration 10 and resumed, log the losses of a run never
    stopped. Each rank's dropout comes from (seed, rank, iteration); a checkpoint holding rank 0's
    random state alone would give rank 1 rank 0's dropout after the resume."""
    common = TINY + [f"--data_dir={char_data}", "--lr_decay_iters=20", "--eval_interval=10", "--log_interval=5",
                     "--gradient_accumulation_steps=2", "--backend=gloo", "--dropout=0.2"]

    def torchrun(*args):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "train.py", *common, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]

    torchrun("--max_iters=20", f"--out_dir={tmp_path / 'whole'}")
    torchrun("--max_iters=10", f"--out_dir={tmp_path / 'resumed'}")
    torchrun("--max_iters=20", f"--out_dir={tmp_path / 'resumed'}", "--init_from=resume")
    whole_steps, whole_evals = read_log(tmp_path / "whole")
    steps, evals = read_log(tmp_path / "resumed")
    assert sorted(steps) == [5, 10, 15, 20]
    assert steps == whole_steps and evals == whole_evals  # bit for bit, after the resume too


# ----------------------------------------------------------------------------- attention

def test_cached_decoding_gives_sdpa_no_mask_for_one_new_token(monkeypatch):
    """A boolean mask rules out the flash kernel; one new token may see every cached key, so it needs
    none. Several new tokens after a cache still need one."""
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        seen.append((q.size(2), k.size(2), attn_mask, is_causal))
        return real_sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = tiny_gpt(attention="sdpa", block_size=16)
    idx = torch.randint(37, (2, 5), generator=torch.Generator().manual_seed(0))  # (B, T)
    cache = KVCache(model.config.n_layer, model.config.block_size)
    with torch.no_grad():
        model(idx[:, :3], cache=cache)  # the prompt: no cache yet
        model(idx[:, 3:4], cache=cache)  # one new token
        model(idx[:, 4:], cache=cache)
        model(idx[:, :2], cache=cache)  # two new tokens after the cache
    prompt, one, another, two = seen[::model.config.n_layer]
    assert prompt == (3, 3, None, True)
    assert one == (1, 4, None, False) and another == (1, 5, None, False)
    assert two[:2] == (2, 7) and two[2] is not None and not two[3]


def write_run(path, attention):
    """A train.py-like checkpoint of a tiny model trained with the given attention kind."""
    model = tiny_gpt(attention=attention)
    path.mkdir()
    chars = "".join(chr(ord("a") + i) for i in range(26)) + "0123456789 "  # 37: tiny_gpt's vocabulary
    save_checkpoint({"model": model.state_dict(), "model_args": asdict(model.config),
                     "tokenizer": {"kind": "char", "chars": chars}}, path / "best.pt")
    return model


def test_a_checkpoint_runs_with_the_attention_asked_for_not_the_one_it_trained_with(tmp_path):
    trained = write_run(tmp_path / "run", "manual")
    kept, _ = load_model(tmp_path / "run")
    switched, _ = load_model(tmp_path / "run", attention="sdpa")
    assert kept.config.attention == "manual" and switched.config.attention == "sdpa"
    idx = torch.randint(37, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(switched.eval()(idx)[0], trained(idx)[0], 1e-5, "sdpa vs manual logits", relative=True)


def test_sample_and_finetune_choose_the_attention_for_their_device(tmp_path, monkeypatch):
    write_run(tmp_path / "run", "manual")
    loaded = []
    real_load_gpt = sample.load_gpt
    monkeypatch.setattr(sample, "load_gpt", lambda *a, **k: loaded.append(real_load_gpt(*a, **k)[0]) or (loaded[-1], None))
    monkeypatch.setattr(sample, "generate_text", lambda *a, **k: [])
    sample.main([f"--out_dir={tmp_path / 'run'}", "--device=cpu", "--attention=sdpa"])
    assert loaded[-1].config.attention == "sdpa"  # forced
    sample.main([f"--out_dir={tmp_path / 'run'}", "--device=cpu"])
    assert loaded[-1].config.attention == "manual"  # auto, on a CPU

    cfg = FinetuneConfig(task="sms_spam", init_from=str(tmp_path / "run"))
    assert load_pretrained(cfg, "cuda")[0].config.attention == "sdpa"  # trained manual, runs flash on a GPU
    assert load_pretrained(cfg, "cpu")[0].config.attention == "manual"


def test_resume_chooses_the_attention_for_its_device(char_data, tmp_path):
    train.train(tiny_config(char_data, tmp_path, max_iters=2, eval_interval=2, attention="manual"))
    model, _ = train.init_model(tiny_config(char_data, tmp_path, init_from="resume", attention="sdpa"), 65, "cpu")
    assert model.config.attention == "sdpa"


# ----------------------------------------------------------------------------- batches and waits

class CountingReads:
    """A token array that counts how often it is read."""

    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads += 1
        return self.data[index]


def test_a_rank_reads_only_its_own_rows_but_draws_every_ranks_offsets(char_data):
    one = train.Batches(char_data, 32, 4, seed=3).iteration(4, runtime.Distributed())
    batches = train.Batches(char_data, 32, 4, seed=3)
    batches.splits["train"] = CountingReads(batches.splits["train"])
    rank1 = batches.iteration(4, runtime.Distributed(rank=1, world_size=2))
    assert batches.splits["train"].reads == 2  # its two micro-steps, not all four
    for (x, y), (x1, y1) in zip(one[2:], rank1):
        assert torch.equal(x, x1) and torch.equal(y, y1)


def test_a_checkpoint_taken_after_prefetching_resumes_with_the_prefetched_batches(char_data):
    """The loop draws an iteration's batches one iteration early; the checkpoint written in between
    must hold the state before that draw, or a resumed run would skip those batches."""
    ddp = runtime.Distributed()
    batches = train.Batches(char_data, 32, 4, seed=5)
    batches.iteration(2, ddp)
    prefetched = batches.iteration(2, ddp)  # drawn, not yet trained on, when a checkpoint is written
    resumed = train.Batches(char_data, 32, 4, seed=99)
    train.restore_rng({"batches": batches.resume_state}, resumed)
    for (x, y), (x2, y2) in zip(prefetched, resumed.iteration(2, ddp)):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_evaluation_waits_for_the_device_once_per_split(char_data, monkeypatch):
    model = tiny_gpt(vocab_size=65, block_size=32)
    batches = train.Batches(char_data, 32, 4, seed=0)
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: calls.append(1) or real_item(t))
    losses = train.estimate_loss(model, batches, 5, runtime.autocast("cpu", "float32"), "cpu", seed=0)
    assert len(calls) == 2 and set(losses) == {"train", "val"}


def test_ranks_average_the_loss_only_on_log_steps(char_data, tmp_path, monkeypatch):
    """The loss all-reduce makes every rank wait for the slowest: only logging needs it. One process
    plays rank 0 of 2, with the collectives stubbed out, and counts them."""
    reduced = []
    monkeypatch.setattr(runtime, "setup_distributed", lambda backend: runtime.Distributed(0, 0, 2))
    monkeypatch.setattr(runtime, "wrap_ddp", lambda model, device, ddp: model)
    monkeypatch.setattr(train.dist, "all_reduce", lambda tensor: reduced.append(tensor.clone()))
    monkeypatch.setattr(runtime, "end_distributed", lambda: None)  # a real rank would exit here
    train.train(tiny_config(char_data, tmp_path, max_iters=12, log_interval=4, gradient_accumulation_steps=2))
    assert len(reduced) == 3  # iterations 4, 8 and 12 of 12


def test_a_loss_scaler_goes_on_from_a_checkpoint_of_its_own_dtype_only():
    """A resume may change the dtype: float16 after bfloat16 gets a fresh scaler (the saved state is {}),
    float16 after float16 goes on from the saved scale, and a run in another dtype needs none."""
    trained = runtime.grad_scaler("cpu", "float16")
    trained.scale(torch.ones(1))  # the scale tensor is made at the first use
    trained.update(new_scale=1024.0)
    assert runtime.grad_scaler("cpu", "float16", trained.state_dict()).get_scale() == 1024.0
    assert runtime.grad_scaler("cpu", "float16", {}).get_scale() == 65536.0  # GradScaler's first scale
    assert not runtime.grad_scaler("cpu", "bfloat16", trained.state_dict()).is_enabled()
