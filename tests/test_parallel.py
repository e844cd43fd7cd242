"""
common/parallel.py on 2 gloo CPU ranks, against one process as the reference: fsdp and tp (and ddp)
take the same AdamW steps, each rank stores about half the bytes, the gathered checkpoint is one
process's and resumes exactly, a split that cannot work is refused in one line, and train.py itself,
launched with torchrun in each mode, logs one process's losses.

    python -m pytest tests/test_parallel.py -q

The two ranks are started once for the whole file (the ranks fixture): each runs every mode and
saves what it saw; the tests then compare it with one process here.
"""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import parallel, runtime
from common.checkpoint import load_model
from common.cli import UserError
from conftest import FIXTURE_DATA, assert_close, max_error, tiny_gpt
from common.optim import adamw
from test_train import ROOT, read_log

# train.py's options for the runs through torchrun: tiny, float32, no time budget, 2 micro-steps
SCRIPT_ARGS = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--device=cpu",
               "--dtype=float32", "--compile=False", "--sample_tokens=20", "--eval_iters=2", "--log_interval=1",
               "--warmup_iters=2", "--max_seconds=0", "--max_iters=6", "--lr_decay_iters=6", "--eval_interval=3",
               "--gradient_accumulation_steps=2", "--learning_rate=1e-3"]


def prepare_char_data(folder):
    from data.shakespeare_char.prepare import prepare

    prepare(input_path=FIXTURE_DATA / "tinyshakespeare" / "input.txt", out_dir=folder)

RANKS = 2
# Adam moves every weight by about LR a step, whatever its gradient's size; but where a gradient is as
# small as Adam's eps (1e-8), its rounding error changes the step by up to ~1% of LR: one process in
# float32 is then 1.1e-5 away from float64 at LR 1e-3. At 1e-4 the weights move ~3e-4 in 3 steps, 30
# times the tolerance, while rounding stays 10 times under it
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-4, (0.9, 0.99), 0.1, 1.0
STEPS, MORE_STEPS = 3, 2  # steps before the checkpoint, and after it
# bias=False: a key bias has no effect on attention (softmax ignores a shift shared by all keys), so its
# gradient is rounding noise, which Adam divides by its own size into whole lr-sized steps; two correct
# runs would then differ there by about lr
MODEL = dict(bias=False)


def batch(step, rank=0, ranks=1):
    """Step's global batch of 4 sequences, or this rank's rows of it: (4 / ranks, 16) inputs and targets."""
    g = torch.Generator().manual_seed(step)
    x, y = torch.randint(0, 37, (2, 4, 16), generator=g)  # tiny_gpt: vocab 37, block 16
    rows = slice(rank * 4 // ranks, (rank + 1) * 4 // ranks)
    return x[rows], y[rows]


def train_step(model, optimizer, x, y):
    """Forward, backward, clip, AdamW: what train.py does with one micro-step. Returns the loss of the
    global batch (the mean of the ranks' losses; under tp they are all the same)."""
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)  # DTensor gradients: the norm of the whole
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if dist.is_initialized():
        loss = loss.detach()
        dist.all_reduce(loss)
        loss = loss / dist.get_world_size()
    return loss.item()


def new_run(mode, ddp, seed=0, **model_args):
    """A tiny GPT split as mode says, the module that steps go through, and AdamW built after the split."""
    model = tiny_gpt(seed, **{**MODEL, **model_args})
    train_model = parallel.parallelize(model, mode, ddp, "cpu", "float32")
    return model, train_model, adamw(model, WEIGHT_DECAY, LR, BETAS, "cpu")


def split_run(mode, ddp):
    """On each rank: STEPS steps, the gathered checkpoint, MORE_STEPS steps on, and MORE_STEPS steps of a
    fresh model (other weights) that loaded the checkpoint."""
    rank, ranks = parallel.data_parallel_rank(mode, ddp.rank, ddp.world_size)
    model, train_model, optimizer = new_run(mode, ddp)
    losses = [train_step(train_model, optimizer, *batch(i, rank, ranks)) for i in range(STEPS)]
    # copied, as saving it would: like state_dict(), what needed no gathering is the live tensors
    model_state, optimizer_state = copy.deepcopy(parallel.full_state_dicts(model, optimizer))
    nbytes = parallel.bytes_per_rank(model, optimizer)
    later = range(STEPS, STEPS + MORE_STEPS)
    going_on = [train_step(train_model, optimizer, *batch(i, rank, ranks)) for i in later]
    fresh, train_fresh, fresh_optimizer = new_run(mode, ddp, seed=1)
    # a copy, as a checkpoint read from disk is: AdamW's load_state_dict keeps the step counts it is given
    parallel.load_full_state_dicts(fresh, fresh_optimizer, *copy.deepcopy((model_state, optimizer_state)))
    resumed = [train_step(train_fresh, fresh_optimizer, *batch(i, rank, ranks)) for i in later]
    return {"losses": losses, "model": model_state, "optimizer": optimizer_state, "bytes": nbytes,
            "going_on": going_on, "resumed": resumed}


def tp_with_biases(ddp):
    """Right after a tp split of a model with biases (c_attn's rows regrouped): its logits and its
    gathered state dict, to compare with the model unsplit."""
    model, _, _ = new_run("tp", ddp, bias=True)
    with torch.no_grad():
        logits, _ = model(*batch(0))
    return {"logits": logits, "model": parallel.full_state_dicts(model, adamw(model, 0.0, LR, BETAS, "cpu"))[0]}


def split_from_different_weights(mode, ddp):
    """Each rank builds other weights (seed = rank): the gathered weights after the split."""
    model, _, optimizer = new_run(mode, ddp, seed=ddp.rank)
    return parallel.full_state_dicts(model, optimizer)[0]


def rank_main(rank, folder):
    """One of the 2 ranks: every mode in turn, and its results saved to folder/rank{rank}.pt."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=RANKS)
    ddp = runtime.Distributed(rank=rank, local_rank=rank, world_size=RANKS)
    results = {mode: split_run(mode, ddp) for mode in parallel.MODES}
    results["tp_with_biases"] = tp_with_biases(ddp)
    results["different_weights"] = {mode: split_from_different_weights(mode, ddp) for mode in parallel.MODES}
    torch.save(results, folder / f"rank{rank}.pt")
    runtime.end_distributed()  # waits for both ranks, then exits at once (see its docstring)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """[rank 0's results, rank 1's]: both ranks are started once for all the tests of this file."""
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(rank_main, args=(folder,), nprocs=RANKS)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(RANKS)]


@pytest.fixture(scope="module")
def one_process():
    """The reference: one process, the whole batch, STEPS steps, its state dicts, then MORE_STEPS steps."""
    model = tiny_gpt(0, **MODEL)
    optimizer = adamw(model, WEIGHT_DECAY, LR, BETAS, "cpu")
    losses = [train_step(model, optimizer, *batch(i)) for i in range(STEPS)]
    model_state, optimizer_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    going_on = [train_step(model, optimizer, *batch(i)) for i in range(STEPS, STEPS + MORE_STEPS)]
    return {"losses": losses, "model": model_state, "optimizer": optimizer_state, "going_on": going_on,
            "bytes": parallel.bytes_per_rank(model, optimizer)}


# ----------------------------------------------------------------------------- the same math as one process

@pytest.mark.parametrize("mode", parallel.MODES)
def test_a_few_adamw_steps_match_one_process(ranks, one_process, mode):
    for rank in range(RANKS):
        assert_close(torch.tensor(ranks[rank][mode]["losses"]), torch.tensor(one_process["losses"]), 1e-5,
                     f"{mode} rank {rank}: losses of {STEPS} steps")
        for name, expected in one_process["model"].items():
            assert_close(ranks[rank][mode]["model"][name], expected, 1e-5, f"{mode} rank {rank}: {name}")
    moved = max(max_error(t, tiny_gpt(0, **MODEL).state_dict()[name]) for name, t in one_process["model"].items())
    assert moved > 20e-5  # the steps really moved the weights, by far more than the tolerance


def test_tp_split_keeps_each_heads_q_k_and_v_together(ranks):
    """With biases, so that c_attn's bias rows are regrouped too: a wrong grouping of the rows mixes one
    head's queries with another's keys and changes the logits."""
    model = tiny_gpt(0, bias=True)
    with torch.no_grad():
        expected, _ = model(*batch(0))
    for rank in range(RANKS):
        assert_close(ranks[rank]["tp_with_biases"]["logits"], expected, 1e-5, f"tp rank {rank}: logits")
        for name, t in model.state_dict().items():  # gathered back into one process's order, exactly
            assert torch.equal(ranks[rank]["tp_with_biases"]["model"][name], t), name


@pytest.mark.parametrize("mode", parallel.MODES)
def test_every_rank_starts_from_rank_0s_weights(ranks, mode):
    """Ranks that built different weights (a seed forgotten) train rank 0's, as DDP has always made them."""
    for rank in range(RANKS):
        for name, t in tiny_gpt(0, **MODEL).state_dict().items():
            assert torch.equal(ranks[rank]["different_weights"][mode][name], t), f"{mode} rank {rank}: {name}"


# ----------------------------------------------------------------------------- memory

def tp_split_bytes(one_process_model):
    """The bytes of the tensors Megatron's split cuts in two: each Block's four Linear weights and the
    biases of the column-split Linears (c_attn, c_fc). Embeddings, LayerNorms and the row-split
    Linears' biases stay whole on every rank."""
    cut = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_fc.bias",
           "mlp.c_proj.weight")
    return sum(t.nbytes for name, t in one_process_model.items() if name.endswith(cut))


@pytest.mark.parametrize("mode", ["fsdp", "tp"])
def test_each_rank_stores_about_half_the_bytes(ranks, one_process, mode):
    """fsdp is not exactly half: it cuts each tensor by rows, so a tensor with an odd number of rows
    (wte: 37) leaves rank 0 one row more, and each rank keeps AdamW's step count of every parameter
    (4 bytes each). tp keeps embeddings and LayerNorms whole on each rank: 54% of this tiny model's
    bytes, 66% of GPT-2 124M's, where wte alone is a third of the weights (tools/bench_parallel.py)."""
    one = one_process["bytes"]
    for rank in range(RANKS):
        mine = ranks[rank][mode]["bytes"]
        for kind in ("parameters", "optimizer"):
            share = mine[kind] / one[kind]
            print(f"[bytes] {mode} rank {rank} {kind}: {mine[kind]:,} of one process's {one[kind]:,} ({share:.3f})")
            assert (0.495 < share < 0.505) if mode == "fsdp" else (0.5 < share < 0.6)
        if mode == "tp":  # exactly: half of what the split cuts, all of the rest
            assert mine["parameters"] == one["parameters"] - tp_split_bytes(one_process["model"]) // 2
    total = sum(ranks[rank][mode]["bytes"]["parameters"] for rank in range(RANKS))
    assert mode != "fsdp" or total == one["parameters"]  # fsdp: every weight on exactly one rank, no padding


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("mode", parallel.MODES)
def test_the_gathered_checkpoint_is_one_process_checkpoint(ranks, one_process, mode):
    """Same names, shapes and values, and AdamW's state in one process's layout (keyed by index), so a
    one-process run loads it with the plain load_state_dict and goes on as one process would."""
    gathered = ranks[0][mode]
    expected = one_process["optimizer"]
    assert gathered["optimizer"]["param_groups"] == expected["param_groups"]
    assert gathered["optimizer"]["state"].keys() == expected["state"].keys()
    for i, state in expected["state"].items():
        assert gathered["optimizer"]["state"][i].keys() == state.keys()
        for key, t in state.items():
            assert_close(gathered["optimizer"]["state"][i][key], t, 1e-5, f"{mode}: AdamW state {i} {key}")
    model = tiny_gpt(1, **MODEL)
    model.load_state_dict(gathered["model"])  # strict: every name, every shape
    optimizer = adamw(model, WEIGHT_DECAY, LR, BETAS, "cpu")
    optimizer.load_state_dict(copy.deepcopy(gathered["optimizer"]))  # it keeps the step counts it is given
    going_on = [train_step(model, optimizer, *batch(i)) for i in range(STEPS, STEPS + MORE_STEPS)]
    assert_close(torch.tensor(going_on), torch.tensor(one_process["going_on"]), 1e-5, f"{mode}: one process resumed")


@pytest.mark.parametrize("mode", parallel.MODES)
def test_a_resume_in_the_same_mode_is_exact(ranks, mode):
    """A fresh model of other weights, loaded from the gathered checkpoint, takes the very steps that
    the run that never stopped took."""
    for rank in range(RANKS):
        assert ranks[rank][mode]["resumed"] == ranks[rank][mode]["going_on"]


# ----------------------------------------------------------------------------- layouts

@pytest.mark.parametrize("mode,world_size,n_head,micro_steps,message", [
    ("tp", 1, 4, 1, "several processes"),
    ("fsdp", 1, 4, 1, "several processes"),
    ("tp", 3, 4, 1, "divides n_head"),
    ("pipeline", 2, 4, 2, "must be one of ddp, fsdp, tp"),
    ("ddp", 4, 4, 1, "gradient_accumulation_steps=4"),  # nanoGPT's Shakespeare config, as is, on 4 processes
    ("fsdp", 2, 4, 3, "multiple of the 2 processes"),
])
def test_a_split_that_cannot_work_is_refused_in_one_line(mode, world_size, n_head, micro_steps, message):
    with pytest.raises(UserError, match=message) as e:
        parallel.check_layout(mode, world_size, n_head, micro_steps)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode,world_size,n_head,micro_steps", [
    ("ddp", 1, 4, 1), ("ddp", 3, 4, 3), ("fsdp", 3, 4, 6), ("tp", 2, 4, 1), ("tp", 4, 12, 1),
])
def test_a_split_that_works_is_accepted(mode, world_size, n_head, micro_steps):
    parallel.check_layout(mode, world_size, n_head, micro_steps)


def test_tp_ranks_read_the_whole_batch_and_the_others_their_share():
    assert parallel.data_parallel_rank("tp", 1, 2) == (0, 1)
    assert parallel.data_parallel_rank("fsdp", 1, 2) == parallel.data_parallel_rank("ddp", 1, 2) == (1, 2)


@pytest.mark.parametrize("device,dtype,param_dtype", [
    ("cuda:1", "bfloat16", torch.bfloat16), ("cuda", "float32", None), ("cpu", "bfloat16", None),
])
def test_fsdp_gathers_bfloat16_weights_on_a_gpu_only(device, dtype, param_dtype):
    policy = parallel.mixed_precision(device, dtype)
    assert policy.param_dtype == param_dtype
    assert policy.reduce_dtype == (torch.float32 if param_dtype else None)


# ----------------------------------------------------------------------------- through train.py

def torchrun_train(args, timeout=300):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}",
                           "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The reference: train.py in one process on the tiny Shakespeare data, 6 iterations of 2 micro-steps."""
    folder = tmp_path_factory.mktemp("one_process")
    data = folder / "data"
    prepare_char_data(data)
    args = [*SCRIPT_ARGS, f"--data_dir={data}"]
    done = subprocess.run([sys.executable, "train.py", *args, f"--out_dir={folder / 'run'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return args, read_log(folder / "run")


@pytest.mark.parametrize("mode", ["fsdp", "tp"])
def test_train_py_in_each_mode_logs_one_processs_losses(mode, one_process_run, tmp_path):
    """The whole path a user takes: torchrun train.py --parallel=MODE, its evaluations, its gathered
    checkpoint and its closing sample. fsdp is also stopped halfway and resumed, to the same losses."""
    args, (steps, evals) = one_process_run
    done = torchrun_train([*args, f"--parallel={mode}", f"--out_dir={tmp_path / 'whole'}"])
    assert done.returncode == 0, done.stderr[-2000:]
    split_steps, split_evals = read_log(tmp_path / "whole")
    assert sorted(split_steps) == sorted(steps) and sorted(split_evals) == sorted(evals)
    worst = max(max(abs(split_steps[i] - steps[i]) for i in steps),
                max(abs(a - b) for i in evals for a, b in zip(split_evals[i], evals[i])))
    print(f"[max error] {mode} through train.py vs one process: {worst:.2e}")
    assert worst < 1e-5
    model, _ = load_model(tmp_path / "whole", "last")  # one process's checkpoint: a plain GPT loads it
    assert model.config.n_head == 2 and all(block.attn.n_head == 2 for block in model.transformer.h)
    if mode == "fsdp":
        stopped = torchrun_train([*args, "--parallel=fsdp", "--max_iters=3", f"--out_dir={tmp_path / 'resumed'}"])
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        resumed = torchrun_train([*args, "--parallel=fsdp", "--resume=True", f"--out_dir={tmp_path / 'resumed'}"])
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert read_log(tmp_path / "resumed") == (split_steps, split_evals)  # bit for bit
