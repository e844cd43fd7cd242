"""
How the model is spread over the processes that torchrun starts, in one of three ways (--parallel):

    ddp   data parallel: every rank holds the whole model and AdamW state and trains on its share of
          the batch; backward averages the gradients over the ranks (an all-reduce of all of them)
    fsdp  sharded data parallel (FSDP2's fully_shard): every rank keeps 1/N of each weight, gradient and
          AdamW moment. A Block's weights are all-gathered just before it runs, in forward and again in
          backward, and the gradients are reduce-scattered: each rank gets the mean over the ranks of its 1/N
    tp    tensor parallel, Megatron-LM's split of each Block (https://arxiv.org/abs/1909.08053): each
          rank holds 1/N of the attention heads and of the MLP's hidden units, all ranks read the same
          batch, and one all-reduce after attention and one after the MLP add up their partial outputs
          (and in backward, one each adds up the gradients of the Block's LayerNorm outputs)

Under fsdp and tp every rank takes part in every forward of the split model, evaluation included: each
brings its shards. train.py's calls, in order (each rank builds the same model from the same seed):

    ddp, device = runtime.setup_distributed(device)
    parallel.check_layout(cfg.parallel, ddp.world_size, cfg.n_head, cfg.gradient_accumulation_steps)
    data_rank, data_ranks = parallel.data_parallel_rank(cfg.parallel, ddp.rank, ddp.world_size)  # its batches
    model = GPT(config).to(device)
    train_model = parallel.parallelize(model, cfg.parallel, ddp, device, dtype)  # DDP(model), or model itself
    optimizer = adamw(model, ...)  # after parallelize: fsdp and tp replace the model's parameters
    parallel.load_full_state_dicts(model, optimizer, ckpt["model"], ckpt["optimizer"])  # resume: every rank
    loss = train_step(train_model, optimizer, ...)  # dropout seeded by data_rank, so tp ranks drop alike
    losses = estimate_loss(model, ...)  # every rank under fsdp and tp, the master alone under ddp
    model_state, optimizer_state = parallel.full_state_dicts(model, optimizer)  # every rank; the master saves
    # the end-of-run sample: the master loads model_state into a plain GPT and samples alone (under tp,
    # ranks sampling apart would each draw other tokens, and their heads would then read different text)

The checkpoint is the one a single process writes (same names, shapes, values and AdamW layout), so
sample.py, finetune.py and a one-process resume read it as they always have.
"""

from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.nn.parallel import DistributedDataParallel as DDP

from common.cli import UserError

MODES = ("ddp", "fsdp", "tp")


def check_layout(mode, world_size, n_head, micro_steps):
    """Refuse, in one line, a split that cannot work. micro_steps: of one iteration, over all ranks."""
    if mode not in MODES:
        raise UserError(f"--parallel must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "ddp" and world_size == 1:
        raise UserError(f"--parallel={mode} splits the model over several processes: start them with "
                        f"torchrun --nproc_per_node=N (N >= 2), or use --parallel=ddp for one process")
    if mode == "tp" and n_head % world_size != 0:
        raise UserError(f"--parallel=tp shares the {n_head} attention heads among {world_size} processes: "
                        f"use a number of processes that divides n_head")
    data_ranks = data_parallel_rank(mode, 0, world_size)[1]
    if micro_steps % data_ranks != 0:
        raise UserError(f"gradient_accumulation_steps ({micro_steps}) must be a multiple of the {data_ranks} "
                        f"processes, so each trains on as many micro-batches: e.g. --gradient_accumulation_steps={data_ranks}")


def sync_gradients(model, now):
    """A context for one micro-step's forward and backward. DDP and FSDP average the gradients across
    ranks during backward; over several micro-steps only the last one's needs to (the gradients add
    up locally until then), so the others skip it. One process, and tp, have nothing to skip."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2's switch
        model.set_requires_gradient_sync(now)
    if hasattr(model, "no_sync") and not now:  # DDP's
        return model.no_sync()
    return nullcontext()


def mean_over_ranks(value):
    """The mean of a tensor over the ranks (an all-reduce: every rank must call it), or itself alone."""
    if not dist.is_initialized():
        return value
    dist.all_reduce(value)
    return value / dist.get_world_size()


def data_parallel_rank(mode, rank, world_size):
    """(rank, ranks) of the batches: tp ranks split the model, not the batch, so each reads the whole of
    it as one process would; ddp and fsdp ranks each read their own share."""
    return (0, 1) if mode == "tp" else (rank, world_size)


def parallelize(model, mode, ddp, device, dtype):
    """The module that training steps go through. ddp wraps the model; fsdp and tp change it in place
    (its parameters become DTensors: shards that know how they were cut), so build the optimizer after."""
    if not ddp.enabled:
        return model  # one process: nothing to spread
    if mode == "ddp":
        return DDP(model, device_ids=[ddp.local_rank] if device.startswith("cuda") else None)
    mesh = init_device_mesh(device.split(":")[0], (ddp.world_size,))  # the ranks, in a row
    if mode == "fsdp":
        return shard_fsdp(model, mesh, mixed_precision(device, dtype))
    return split_tensor_parallel(model, mesh)


# ----------------------------------------------------------------------------- fsdp

def mixed_precision(device, dtype):
    """On a GPU in bfloat16, each Block's weights are gathered in bfloat16 (half the bytes to send) and
    its gradients averaged over the ranks in float32 (a sum in bfloat16 would lose digits); the shards
    that AdamW updates stay float32. Elsewhere the weights stay float32 and autocast does the rest."""
    if device.startswith("cuda") and dtype == "bfloat16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_fsdp(model, mesh, policy):
    # fully_shard cuts each rank's own copy, so every rank must start from the same weights: rank 0's,
    # as DDP would copy them
    for p in model.parameters():
        dist.broadcast(p.detach(), src=0)
    # one unit per Block: only a Block or two have their whole weights at a time (FSDP gathers the next
    # Block's while one runs), in forward and in backward
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # the root unit holds the rest: wte, wpe and ln_f. wte's matrix is lm_head's too (tied), and both
    # sit in this one unit, so the shared tensor is sharded and gathered once
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


# ----------------------------------------------------------------------------- tp

def split_tensor_parallel(model, mesh):
    """Megatron's split: in each Block, the first Linear of attention and of the MLP is cut by columns
    (each rank makes its own heads, its own hidden units), the second by rows (each rank's part of the
    output, added up by one all-reduce). Everything else is replicated."""
    n_ranks = mesh.size()
    for block in model.transformer.h:
        c_attn = block.attn.c_attn
        with torch.no_grad():  # see group_by_rank: each rank's slice of rows must be whole heads
            c_attn.weight.copy_(group_by_rank(c_attn.weight, n_ranks))
            if c_attn.bias is not None:
                c_attn.bias.copy_(group_by_rank(c_attn.bias, n_ranks))
        c_attn.heads_by_rank = n_ranks  # tells full_state_dicts to put the rows back in order
        parallelize_module(block, mesh, {
            "attn.c_attn": ColwiseParallel(),  # (B, T, C) -> this rank's (B, T, 3C/N): its heads' q, k, v
            "attn.c_proj": RowwiseParallel(),  # (B, T, C/N) -> (B, T, C), summed over ranks: all-reduce
            "mlp.c_fc": ColwiseParallel(),  # (B, T, C) -> (B, T, 4C/N)
            "mlp.c_proj": RowwiseParallel(),  # (B, T, 4C/N) -> (B, T, C), all-reduce
        })
        block.attn.n_head //= n_ranks  # the one place attention learns it holds only its share of heads
    replicate_the_rest(model, mesh)
    return model


def group_by_rank(t, n_ranks):
    """c_attn's rows (its weight's, or its bias) reordered for a split into n_ranks slices.
    c_attn's output is [q | k | v], each C wide, so a plain cut into slices would give rank 0 all of q
    and half of k. Grouped [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], where q_r is the query rows of rank r's
    heads, each rank's slice holds its heads' q, k and v, in the order attention splits them."""
    # (3C, ...) -> (3, N, C/N, ...) -> (N, 3, C/N, ...) -> (3C, ...)
    return t.unflatten(0, (3, n_ranks, -1)).transpose(0, 1).flatten(0, 2)


def ungroup_by_rank(t, n_ranks):
    """The inverse of group_by_rank: the rows in one process's order, [q | k | v]."""
    return t.unflatten(0, (n_ranks, 3, -1)).transpose(0, 1).flatten(0, 2)


def replicate_the_rest(model, mesh):
    """Embeddings, LayerNorms and lm_head, whole on every rank, as DTensors too: clip_grad_norm_ and
    the fused AdamW refuse a mix of DTensors and plain tensors. Their modules take and give plain
    tensors, so model.py's code around them stays as it is."""
    for module in model.modules():
        if any(not isinstance(p, DTensor) for p in module.parameters(recurse=False)):
            distribute_module(module, mesh, input_fn=as_replicated, output_fn=as_local)
    # distribute_module gave wte and lm_head a copy each: make them one tensor again (tied)
    model.lm_head.weight = model.transformer.wte.weight


def as_replicated(module, inputs, mesh):
    return tuple(DTensor.from_local(x, mesh, [Replicate()]) for x in inputs)  # the same on every rank


def as_local(module, output, mesh):
    return output.to_local()


# ----------------------------------------------------------------------------- checkpoints and memory

def full_state_dicts(model, optimizer):
    """(model state dict, AdamW state dict), whole, as one process would save them: the same names and
    shapes, c_attn's rows in order, and AdamW's state keyed by parameter index. Every rank must call
    it (the shards are all-gathered) and every rank gets the whole of both. As with state_dict(), the
    tensors that needed no gathering are the live ones: save them before the next step.
    (torch.distributed.checkpoint.state_dict gathers too, but keys AdamW's state by parameter name.)"""
    reshard(model)
    regrouped = regrouped_rows(model)
    names = parameter_names(model, optimizer)
    model_state = {name: whole(t, regrouped.get(name)) for name, t in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()  # one process's layout already; its tensors are this rank's shards
    optimizer_state["state"] = {i: {key: whole(t, regrouped.get(names[i])) for key, t in state.items()}
                                for i, state in optimizer_state["state"].items()}
    return model_state, optimizer_state


def load_full_state_dicts(model, optimizer, model_state, optimizer_state):
    """The inverse: whole state dicts (a checkpoint's) into the split model and its AdamW, each rank
    keeping its shards. Every rank must call it."""
    reshard(model)
    regrouped = regrouped_rows(model)
    model.load_state_dict({name: cut_like(t, model_state[name], regrouped.get(name))
                           for name, t in model.state_dict().items()})
    names = parameter_names(model, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # AdamW's moments are shaped and split like their parameter; its step count is one number on every rank
    state = {i: {key: cut_like(params[i], t, regrouped.get(names[i])) if t.shape == params[i].shape else t
                 for key, t in s.items()}
             for i, s in optimizer_state["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": optimizer_state["param_groups"]})


def reshard(model):
    """FSDP keeps a unit's weights whole after a forward that no backward follows (an evaluation): cut
    them back into the shards that the optimizer holds, so the model's parameters are the optimizer's."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def regrouped_rows(model):
    """{parameter name: number of ranks} of the tensors whose rows group_by_rank reordered (tp's c_attn)."""
    return {f"{name}.{kind}": module.heads_by_rank for name, module in model.named_modules()
            if hasattr(module, "heads_by_rank") for kind in ("weight", "bias")}


def parameter_names(model, optimizer):
    """[name of parameter i], i being the index AdamW's state dict keys it by."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def whole(t, n_ranks):
    """The whole tensor that t is a shard of (an all-gather), rows back in order; a plain tensor as it is."""
    if not isinstance(t, DTensor):
        return t
    t = t.full_tensor()
    return t if n_ranks is None else ungroup_by_rank(t, n_ranks)


def cut_like(local, full, n_ranks):
    """This rank's piece of the whole tensor full, cut as local was cut; full itself if local is plain."""
    if not isinstance(local, DTensor):
        return full
    if n_ranks is not None:
        full = group_by_rank(full, n_ranks)
    return distribute_tensor(full.to(local.device), local.device_mesh, local.placements)


def bytes_per_rank(model, optimizer):
    """What this rank stores, in bytes, counted from its own tensors (a DTensor's local shard): the
    parameters, their gradients, and AdamW's state (two moments per parameter, and a step count)."""
    params = list(model.parameters())  # a tied tensor once
    return {
        "parameters": local_bytes(params),
        "gradients": local_bytes(p.grad for p in params if p.grad is not None),
        "optimizer": local_bytes(t for state in optimizer.state.values() for t in state.values()),
    }


def local_bytes(tensors):
    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors)
