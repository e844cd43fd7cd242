"""
The choices the GPU path makes, checked on a CPU: the dtype of an emulating GPU, data-sheet peaks by
exact model name, when torch.compile can work, the seeds of a step's random draws, the mask that
cached decoding gives sdpa, the attention a loaded checkpoint runs with, batches read per rank, how
often the loop waits for the device, the closing sample kept out of recompiles, and one write per
checkpoint. tests/test_cuda.py runs the same path on a real GPU.

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
from common import budget, optim, parallel, runtime
from common.checkpoint import load_model, save_checkpoint
from common.tokenizer import load_tokenizer
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


# names as torch.cuda.get_device_name() reports them -> the key of runtime.GPU_PEAK_FLOPS they must find
@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 80GB HBM3", "H100"),  # the SXM module: memory words dropped
    ("NVIDIA H100 PCIe", "H100 PCIE"),  # a PCIe card is slower: not the SXM's entry
    ("NVIDIA A100-SXM4-80GB", "A100"),  # dashes, the form factor and the memory dropped
    ("Tesla V100-PCIE-32GB", "V100 PCIE"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA L40S", "L40S"),
])
def test_a_gpu_name_finds_its_own_row(name, key):
    assert runtime.gpu_model(name) == key and key in runtime.GPU_PEAK_FLOPS


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA GeForce RTX 3090 Ti", "NVIDIA RTX A6000", "NVIDIA L4 Max"])
def test_a_name_that_only_contains_a_known_one_finds_none(name):
    """Matching by substring would give the A10G the A10's peak and the 3090 Ti the 3090's: wrong MFU."""
    assert runtime.gpu_peak_flops(name) is None


def test_every_row_can_be_found():
    """Each key is what gpu_model makes of a name: a key it can never produce is a row no GPU reaches."""
    for key in runtime.GPU_PEAK_FLOPS:
        assert runtime.gpu_model(f"NVIDIA {key}") == key


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

def test_step_seeds_differ_by_rank_and_iteration_and_nothing_else():
    seeds = {runtime.step_seed(1337, rank, it) for rank in range(4) for it in range(100)}
    assert len(seeds) == 400  # a sum such as seed + rank + it would give (1, 0) and (0, 1) one seed
    assert runtime.step_seed(1337, 1, 5) == runtime.step_seed(1337, 1, 5)
    assert runtime.step_seed(1337, 1, 5) != runtime.step_seed(1338, 1, 5)


def test_gloo_ranks_with_dropout_resume_exactly(char_data, tmp_path):
    """Two ranks with dropout, stopped at iteration 10 and resumed, log the losses of a run never
    stopped. Each rank's dropout comes from (seed, rank, iteration); a checkpoint holding rank 0's
    random state alone would give rank 1 rank 0's dropout after the resume."""
    common = TINY + [f"--data_dir={char_data}", "--lr_decay_iters=20", "--eval_interval=10", "--log_interval=5",
                     "--gradient_accumulation_steps=2", "--dropout=0.2"]

    def torchrun(*args):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "train.py", *common, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]

    torchrun("--max_iters=20", f"--out_dir={tmp_path / 'whole'}")
    torchrun("--max_iters=10", f"--out_dir={tmp_path / 'resumed'}")
    torchrun("--max_iters=20", f"--out_dir={tmp_path / 'resumed'}", "--resume=True")
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
    model, _ = train.init_model(tiny_config(char_data, tmp_path, resume=True, attention="sdpa"), 65, "cpu")
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


def test_a_rank_reads_only_its_own_rows(char_data):
    one = train.Batches(char_data, 32, 4, 4, seed=3, device="cpu").iteration(4)
    batches = train.Batches(char_data, 32, 4, 4, seed=3, device="cpu", rank=1, world_size=2)
    batches.data["train"] = CountingReads(batches.data["train"])
    rank1 = batches.iteration(4)
    assert batches.data["train"].reads == 2  # its two micro-steps, not all four
    for (x, y), (x1, y1) in zip(one[2:], rank1):
        assert torch.equal(x, x1) and torch.equal(y, y1)


def test_an_iterations_batches_depend_on_the_seed_and_the_iteration_alone(char_data):
    """So a resumed run, and the loop that reads the next iteration's batches before it needs them,
    get the very batches of an uninterrupted run, with no generator state to save."""
    fresh = train.Batches(char_data, 32, 4, 2, seed=5, device="cpu").iteration(7)
    used = train.Batches(char_data, 32, 4, 2, seed=5, device="cpu")
    for it in range(7):
        used.iteration(it)
    again = used.iteration(7)
    other = train.Batches(char_data, 32, 4, 2, seed=6, device="cpu").iteration(7)
    for (x, y), (x2, y2) in zip(fresh, again):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(fresh[0][0], fresh[1][0]) and not torch.equal(fresh[0][0], other[0][0])


def test_evaluation_waits_for_the_device_once_per_split(char_data, monkeypatch):
    model = tiny_gpt(vocab_size=65, block_size=32)
    batches = train.Batches(char_data, 32, 4, 1, seed=0, device="cpu")
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: calls.append(1) or real_item(t))
    losses = train.estimate_loss(model, batches, 5, runtime.autocast("cpu", "float32"), seed=0)
    assert len(calls) == 2 and set(losses) == {"train", "val"}


def pretend_rank_0_of_2(monkeypatch):
    """One process plays rank 0 of 2, with DDP and the collectives stubbed out; returns the calls
    {"all_reduce": [...], "broadcast": [...]} it made."""
    calls = {"all_reduce": [], "broadcast": []}
    monkeypatch.setattr(runtime, "setup_distributed", lambda device: (runtime.Distributed(0, 0, 2), device))
    monkeypatch.setattr(parallel, "parallelize", lambda model, mode, ddp, device, dtype: model)
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(parallel.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(parallel.dist, "all_reduce", lambda tensor: calls["all_reduce"].append(tensor.clone()))
    monkeypatch.setattr(budget.dist, "broadcast", lambda tensor, src: calls["broadcast"].append(tensor.clone()))
    monkeypatch.setattr(runtime, "end_distributed", lambda: None)  # a real rank would exit here
    return calls


def test_ranks_average_the_loss_only_on_log_steps(char_data, tmp_path, monkeypatch):
    """The loss all-reduce makes every rank wait for the slowest: only logging needs it."""
    calls = pretend_rank_0_of_2(monkeypatch)
    train.train(tiny_config(char_data, tmp_path, max_iters=12, log_interval=4, gradient_accumulation_steps=2))
    assert len(calls["all_reduce"]) == 3  # iterations 4, 8 and 12 of 12


def test_ranks_share_the_clock_only_on_log_steps(char_data, tmp_path, monkeypatch):
    """Under a time budget every rank follows rank 0's clock, which costs a broadcast and a wait for
    the GPU: once every log_interval iterations, not every iteration."""
    calls = pretend_rank_0_of_2(monkeypatch)
    train.train(tiny_config(char_data, tmp_path, max_iters=12, log_interval=4, gradient_accumulation_steps=2,
                            max_seconds=600.0))
    assert len(calls["broadcast"]) == 4  # at iterations 0, 4, 8 and 12


def test_the_closing_sample_runs_eager_under_autocast(monkeypatch, capsys):
    """The end-of-run sample feeds the model new shapes at every token: through the compiled model it
    would compile again and again. It runs eager, under the run's autocast (so sdpa takes the fused
    kernels on a GPU)."""
    model = tiny_gpt(vocab_size=65, block_size=32)
    graphs, autocast_on = [], []
    model.compile(backend=lambda graph, inputs: graphs.append(graph) or graph.forward)
    real_generate = model.generate
    def watch(*args, **kwargs):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return real_generate(*args, **kwargs)
    monkeypatch.setattr(model, "generate", watch)
    tokenizer = load_tokenizer({"kind": "char", "chars": "\n" + "".join(chr(i) for i in range(33, 97))})
    train.print_sample(model, tokenizer, 5, runtime.autocast("cpu", "bfloat16"))
    assert graphs == [] and autocast_on == [True]
    model(torch.zeros(1, 4, dtype=torch.long))
    assert len(graphs) == 1  # the same model outside the sample: compiled, so the check above can fail


def count_writes(monkeypatch):
    """Every checkpoint's bytes go through torch.save once per write: count them."""
    writes = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, **kw: writes.append(1) or real_save(obj, f, **kw))
    return writes


@pytest.mark.parametrize("always_save", [True, False])
def test_an_improvement_writes_its_checkpoint_once(char_data, tmp_path, monkeypatch, always_save):
    writes = count_writes(monkeypatch)
    train.train(tiny_config(char_data, tmp_path, max_iters=20, eval_interval=10, always_save_checkpoint=always_save,
                            learning_rate=3e-3))
    assert len(writes) == 3  # iterations 0, 10 and 20, each improving on the one before
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file() == always_save
    if always_save:  # one file under two names
        assert os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt")


def test_a_loss_scaler_goes_on_from_a_checkpoint_of_its_own_dtype_only():
    """A resume may change the dtype: float16 after bfloat16 gets a fresh scaler (the saved state is {}),
    float16 after float16 goes on from the saved scale, and a run in another dtype needs none."""
    trained = optim.grad_scaler("cpu", "float16")
    trained.scale(torch.ones(1))  # the scale tensor is made at the first use
    trained.update(new_scale=1024.0)
    assert optim.grad_scaler("cpu", "float16", trained.state_dict()).get_scale() == 1024.0
    assert optim.grad_scaler("cpu", "float16", {}).get_scale() == 65536.0  # GradScaler's first scale
    assert not optim.grad_scaler("cpu", "bfloat16", trained.state_dict()).is_enabled()
