"""
Pretrain a GPT with the next-token loss.

    python train.py                                   # small Shakespeare model on the CPU (4 minutes), then a sample
    python train.py config/train_shakespeare_char.py  # the GPU-sized Shakespeare model
    python train.py --out_dir=out-shakespeare-char --resume=True      # continue an interrupted run
    torchrun --standalone --nproc_per_node=4 train.py config/train_shakespeare_char.py \\
        --gradient_accumulation_steps=4               # 4 GPUs (or CPU processes), each a quarter of the batches

Every field of TrainConfig below is a --key=value option; config/*.py files set several at once.
Read it top to bottom: the data (get_batch), the learning rate (get_lr), one step (train_step), an
evaluation (estimate_loss), a checkpoint (make_checkpoint), then the loop that calls them (train).
"""

import importlib.util
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from common import datasets, optim, parallel, run_folder, runtime
from common.budget import TimeBudget
from common.checkpoint import load_checkpoint, load_gpt, load_model, save_checkpoint
from common.cli import UserError, build_config, check_choice, check_ranges, parse_options, resumed_config, run_main
from common.progress import Logger, format_duration, track
from common.tokenizer import load_tokenizer
from finetuning.tasks import TASKS
from model import GPT, GPTConfig


@dataclass
class TrainConfig:
    # the defaults are the built-in CPU run: four minutes of training on a laptop, then a sample.
    # --resume=True continues the run in out_dir with the settings saved in its checkpoint; of those,
    # the command line may change only the ones marked "resume may change" (RESUME_MAY_CHANGE below)
    # I/O
    out_dir: str = "out-shakespeare-char"  # best.pt, last.pt, log.jsonl, loss.png; resume may change (a moved run)
    eval_interval: int = 1000  # evaluate and checkpoint every this many iterations
    log_interval: int = 50  # print the loss and speed every this many iterations; resume may change
    eval_iters: int = 40  # batches per evaluation of the train and val loss
    eval_only: bool = False  # evaluate once, print the losses and exit, writing nothing; resume may change
    always_save_checkpoint: bool = True  # last.pt at every evaluation; False: only best.pt, when val improves
    init_from: str = "scratch"  # "scratch", a train.py run's folder, or a GPT-2 Hugging Face folder
    resume: bool = False  # continue the interrupted run in out_dir, as it was started; resume may change
    overwrite: bool = False  # a new run may replace the run already in out_dir (otherwise refused)
    sample_tokens: int = 300  # print a sample of this many tokens when training ends (0: none); resume may change
    wandb_log: bool = False  # also send the log to Weights & Biases (pip install wandb); wandb_*: resume may change
    wandb_project: str = "gpt"  # the wandb project ...
    wandb_run_name: str = "run"  # ... and run the log goes to
    # data
    dataset: str = "shakespeare_char"  # data/<dataset>/prepare.py makes train.bin, val.bin, meta.json
    data_dir: str = ""  # where those files are; default data/<dataset>; resume may change (the data was moved)
    gradient_accumulation_steps: int = 1  # micro-steps per iteration, over all torchrun processes together
    batch_size: int = 8  # sequences per micro-step
    block_size: int = 128  # tokens per sequence: the longest context the model learns to use
    # model
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # the residual stream's width; each head reads n_embd // n_head channels
    dropout: float = 0.0  # 0 when the data is plentiful; 0.1-0.2 when a small model overfits it
    bias: bool = False  # biases in Linear and LayerNorm: GPT-2 has them, without is a bit faster and as good
    attention: str = "auto"  # "manual", "sdpa", or auto: sdpa on a GPU, manual elsewhere (runtime.pick_attention)
    # AdamW with linear warmup, then cosine decay to min_lr
    learning_rate: float = 3e-3  # the peak, after warmup; small models take larger rates than GPT-2's 6e-4
    max_iters: int = 5600  # optimizer steps in all; resume may change: a finished run goes on to a new max_iters
    max_seconds: float = 240.0  # or stop sooner, after this many seconds of training (0: no limit); see common/budget.py; resume may change
    weight_decay: float = 0.1  # AdamW's pull of the 2-D weights towards 0 (common/optim.py's adamw)
    beta1: float = 0.9  # AdamW's momentum
    beta2: float = 0.99  # a bit under the usual 0.999: small batches give noisy squared gradients
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 turns clipping off
    decay_lr: bool = True  # False: learning_rate throughout, no warmup
    warmup_iters: int = 100
    lr_decay_iters: int = 5600  # usually max_iters; resume may change, with max_iters
    min_lr: float = 1e-4  # where the cosine decay ends (nanoGPT: learning_rate / 10)
    # system (resume may change all but the seed: they say where the math runs, not what it computes)
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    compile: bool = True  # torch.compile the model: ~20 s to start, then about twice as fast
    parallel: str = "ddp"  # how torchrun's processes share the work: ddp, fsdp or tp (common/parallel.py)
    seed: int = 1337

    def __post_init__(self):
        check_ranges(self, positive=("eval_interval", "log_interval", "eval_iters", "gradient_accumulation_steps",
                                     "batch_size", "block_size", "learning_rate"),
                     non_negative=("max_iters", "max_seconds", "warmup_iters", "lr_decay_iters", "min_lr",
                                   "weight_decay", "grad_clip", "sample_tokens"),
                     fractions=("beta1", "beta2"))
        if self.min_lr > self.learning_rate:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        if self.init_from == "resume":  # nanoGPT's spelling
            raise ValueError("--init_from=resume is spelled --resume=True here (with --out_dir=the run's folder)")
        if self.dataset in TASKS:  # its prepare.py writes labelled examples, not a token stream
            raise ValueError(f"--dataset={self.dataset} is a finetuning task, not a pretraining corpus; use it with finetune.py")
        check_choice(self, "dtype", ("auto", *runtime.DTYPES))
        self.model_config(vocab_size=1, device="cpu")  # GPTConfig checks the model's fields

    def model_config(self, vocab_size, device):
        return GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias,
                         attention=runtime.pick_attention(self.attention, device))


# the options a resumed run takes from the command line; the rest must be the run's own (see TrainConfig)
RESUME_MAY_CHANGE = ("resume", "out_dir", "data_dir", "overwrite", "max_iters", "max_seconds", "lr_decay_iters",
                     "eval_only", "log_interval", "sample_tokens", "wandb_log", "wandb_project", "wandb_run_name",
                     "device", "dtype", "compile", "parallel")


# ----------------------------------------------------------------------------- data

class Batches:
    """Random windows of the token streams in data_dir/train.bin and val.bin, memory-mapped: the files
    stay on disk and each batch reads only its rows, so any corpus fits.

    Which windows training iteration i reads depends on the seed and i alone, so a resumed run reads
    the very batches it would have read, and there is no random state to save. Its micro-steps are
    split between the torchrun processes: N of them see the batches one process sees with N times
    the accumulation."""

    def __init__(self, data_dir, block_size, batch_size, micro_steps, seed, device, rank=0, world_size=1):
        self.data = {split: datasets.open_tokens(data_dir / f"{split}.bin", block_size) for split in ("train", "val")}
        self.block_size, self.batch_size, self.seed, self.device = block_size, batch_size, seed, device
        self.micro_steps = micro_steps  # of one iteration, over all processes
        per_rank = micro_steps // world_size
        self.mine = range(rank * per_rank, (rank + 1) * per_rank)  # the micro-steps this process trains on

    def get_batch(self, split, generator):
        """batch_size random windows of split, as inputs x and targets y, each (B, T): the targets are
        the inputs shifted by one token, so position t learns to predict token t + 1."""
        data = self.data[split]
        ix = torch.randint(len(data) - self.block_size, (self.batch_size,), generator=generator)  # (B,) starts
        rows = data[ix.numpy()[:, None] + np.arange(self.block_size + 1)]  # (B, T+1): one read
        rows = torch.from_numpy(rows.astype(np.int64))  # embeddings index with int64; uint16 only saves disk
        if self.device.startswith("cuda"):
            # copied from pinned (page-locked) memory, the transfer runs while the GPU computes
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        else:
            rows = rows.to(self.device)
        return rows[:, :-1], rows[:, 1:]

    def iteration(self, iter_num):
        """This process's micro-batches of training iteration iter_num: micro-step m draws its windows
        with a generator seeded by (seed, iter_num, m) alone."""
        micro_batches = []
        for m in self.mine:
            generator = torch.Generator().manual_seed(runtime.step_seed(self.seed, iter_num, m))
            micro_batches.append(self.get_batch("train", generator))
        return micro_batches


# ----------------------------------------------------------------------------- model and learning rate

def init_model(cfg, vocab_size, device):
    """A new model, the interrupted run's (out_dir's last.pt, else its best.pt, returned with its
    checkpoint so the optimizer resumes too), or a pretrained one (checkpoint.load_gpt)."""
    if cfg.resume:
        # a checkpoint's attention kind says how it was trained, not how it must run: choose for this device
        return load_model(cfg.out_dir, run_folder.resume_file(cfg.out_dir), attention=runtime.pick_attention(cfg.attention, device))
    if cfg.init_from == "scratch":
        return GPT(cfg.model_config(vocab_size, device)), None
    model, _ = load_gpt(cfg.init_from, dropout=cfg.dropout, attention=runtime.pick_attention(cfg.attention, device))
    if cfg.block_size < model.config.block_size:
        model.crop_block_size(cfg.block_size)  # e.g. GPT-2's 1024 positions cut to a shorter block
    return model, None


def get_lr(it, cfg):
    """Linear warmup for warmup_iters, then a cosine decay to min_lr at lr_decay_iters, then min_lr
    (GPT-3's schedule, and nanoGPT's). `it` may be fractional: the time budget moves it (common/budget.py)."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    progress = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


# ----------------------------------------------------------------------------- one step, one evaluation

def train_step(model, optimizer, scaler, micro_batches, grad_clip, ctx):
    """Forward and backward over the micro-batches (x, y pairs already on the device), one optimizer step.
    Returns the iteration's loss: the mean over all micro-steps (not the last one's, which is noisier
    and biased by chance)."""
    total = 0.0
    for i, (x, y) in enumerate(micro_batches):
        # under torchrun the gradients are averaged across ranks in backward: after the last micro-step only
        with parallel.sync_gradients(model, i == len(micro_batches) - 1):
            with ctx:
                _, loss = model(x, y)
            # dividing by the number of micro-steps makes the summed gradients the gradient of the mean
            # loss, so clipping and the learning rate see the same gradient as one big batch would
            scaler.scale(loss / len(micro_batches)).backward()
        total += loss.detach()  # detached: the running sum must not keep every micro-step's graph alive
    optim.optimizer_step(model, optimizer, scaler, grad_clip)
    return total / len(micro_batches)


@torch.no_grad()
def estimate_loss(model, batches, eval_iters, ctx, seed):
    """Mean loss over eval_iters batches of each split. The same batches every time (a fixed seed),
    so evaluations differ only through the model. The losses stay on the device until the mean: one
    wait for the GPU per split, not one per batch."""
    model.eval()  # dropout off: the loss of the model itself, not of a random thinning of it
    out = {}
    for split in ("train", "val"):
        generator = torch.Generator().manual_seed(seed)  # its own generator: training's batches stay as they were
        losses = []
        for _ in track(range(eval_iters), f"evaluating {split}", "batches"):
            x, y = batches.get_batch(split, generator)
            with ctx:
                losses.append(model(x, y)[1])
        out[split] = torch.stack(losses).mean().item()
    model.train()  # back to training: dropout on again
    return out


# ----------------------------------------------------------------------------- checkpoints

def make_checkpoint(model, model_state, optimizer_state, scaler, cfg, meta, iter_num, best_val_loss, seconds):
    """Everything a run needs to go on exactly as if it had never stopped, in plain tensors and dicts that
    weights_only loading reads (no pickled code rides along). The states are one process's, however the
    model is split. No random state: every draw is seeded by the step's numbers (runtime.step_seed)."""
    return {
        "model": model_state,  # the weights
        "model_args": asdict(model.config),  # the sizes, to build the same GPT before loading them
        "optimizer": optimizer_state,  # AdamW's moments: without them a resumed run jolts
        "scaler": scaler.state_dict(),  # float16's loss scale, as far as it has adapted ({} otherwise)
        "config": asdict(cfg),  # how this run was trained
        "tokenizer": meta,  # how text becomes this model's tokens (common/tokenizer.py)
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "seconds": seconds,  # of training so far, for the time budget of a resumed run
    }


def save_checkpoints(state, out_dir, improved, always_save):
    """best.pt (what sample.py and finetune.py read) when val improved; last.pt (what a resume reads)
    at every evaluation when always_save. Written once either way: where both are due, the file has
    two names (common/files.atomic_write)."""
    names = (["best.pt"] if improved else []) + (["last.pt"] if always_save else [])
    if names:
        save_checkpoint(state, *(Path(out_dir) / name for name in names))


# ----------------------------------------------------------------------------- the training loop

def train(cfg):
    """Train as cfg says; returns {"iter_num", "best_val_loss", "last_eval"}."""
    # where the math runs: one process, or one of several that torchrun started (DDP)
    ddp, device = runtime.setup_distributed(runtime.pick_device(cfg.device))
    parallel.check_layout(cfg.parallel, ddp.world_size, cfg.n_head, cfg.gradient_accumulation_steps)
    data_rank, data_ranks = parallel.data_parallel_rank(cfg.parallel, ddp.rank, ddp.world_size)  # its share of the batches
    dtype = runtime.pick_dtype(cfg.dtype, device)
    ctx = runtime.autocast(device, dtype)  # mixed precision: matmuls in bfloat16 or float16, the rest in float32

    # the data, and the model: new, pretrained, or the interrupted run's (returned with its checkpoint)
    data_dir, meta = datasets.find_data(cfg.dataset, cfg.data_dir, ddp)
    vocab_size = load_tokenizer(meta, data_dir / "meta.json").vocab_size
    if cfg.init_from == "scratch" and not cfg.resume:  # a new model too big for this memory: refused before it is built
        runtime.check_training_memory(cfg.model_config(vocab_size, device), cfg.batch_size, device,
                                      shards=1 if cfg.parallel == "ddp" else ddp.world_size)
    torch.manual_seed(cfg.seed)  # the initial weights (DDP copies rank 0's to every rank anyway)
    model, ckpt = init_model(cfg, vocab_size, device)
    if model.config.vocab_size != vocab_size:
        raise UserError(f"the model's vocabulary ({model.config.vocab_size} tokens) does not match the "
                        f"{cfg.dataset} data's ({vocab_size}); prepare the data with the model's tokenizer")
    batches = Batches(data_dir, model.config.block_size, cfg.batch_size, cfg.gradient_accumulation_steps,
                      cfg.seed, device, data_rank, data_ranks)
    model.to(device)
    if device.startswith("cuda"):
        runtime.enable_tf32()
    if cfg.eval_only:  # the losses of the model as it is, and nothing written
        losses, iter_num = estimate_loss(model, batches, cfg.eval_iters, ctx, cfg.seed), ckpt["iter_num"] if ckpt else 0
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        return {"iter_num": iter_num, "best_val_loss": None, "last_eval": losses}

    # the model spread over the processes (DDP, or sharded: fsdp, tp), the optimizer made after (a sharded
    # model's parameters are new tensors), float16's loss scaler, and where an interrupted run left off
    train_model = parallel.parallelize(model, cfg.parallel, ddp, device, dtype)
    optimizer = optim.adamw(model, cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.split(":")[0])
    scaler = optim.grad_scaler(device, dtype, ckpt.get("scaler") if ckpt else None)
    iter_num, best_val_loss, seconds_before = 0, float("inf"), 0.0
    if ckpt is not None:
        parallel.load_full_state_dicts(model, optimizer, ckpt["model"], ckpt["optimizer"])
        iter_num, best_val_loss, seconds_before = ckpt["iter_num"], ckpt["best_val_loss"], ckpt["seconds"]
        if iter_num > cfg.max_iters:
            raise UserError(f"the run in {cfg.out_dir} is at iteration {iter_num}, past --max_iters={cfg.max_iters}; "
                            f"give a larger --max_iters to train it further")
    resumed_at, ckpt = (iter_num if ckpt else None), None  # the CPU copy of the checkpoint is freed

    # compile in place: `model` stays the GPT whose state_dict is saved and sampled, with no prefix
    if cfg.compile:
        runtime.compile_in_place(model, device)

    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * model.config.block_size
    budget = TimeBudget(cfg.max_seconds, seconds_before, cfg.log_interval, ddp, device)
    peak = runtime.peak_flops(device, dtype) if ddp.is_master else None
    logger = Logger(cfg, iter_num) if ddp.is_master else None  # the run's files start here
    if ddp.is_master:
        limit = f" or {format_duration(cfg.max_seconds)} of training, whichever ends first" if cfg.max_seconds else ""
        print(f"{model.get_num_params() / 1e6:.2f}M parameters on {device} in {dtype}; "
              f"{tokens_per_iter:,} tokens per iteration; {cfg.max_iters:,} iterations{limit}")

    last_eval = None
    micro_batches = batches.iteration(iter_num)
    t0 = time.perf_counter()
    while True:
        # the learning rate of this iteration; the run ends at max_iters, or sooner when the time is up
        budget.tick(iter_num)
        finished = iter_num >= cfg.max_iters or budget.spent()
        position = budget.schedule_position(iter_num, cfg.warmup_iters, cfg.lr_decay_iters)
        lr = get_lr(position, cfg) if cfg.decay_lr else cfg.learning_rate
        for group in optimizer.param_groups:
            group["lr"] = lr

        # evaluate and checkpoint, every eval_interval iterations and at the end (a resumed run already
        # did at the iteration it resumes from)
        if (iter_num % cfg.eval_interval == 0 or finished) and iter_num != resumed_at:
            last_eval = estimate_loss(model, batches, cfg.eval_iters, ctx, cfg.seed)  # every rank: sharded models need all
            model_state, optimizer_state = parallel.full_state_dicts(model, optimizer)  # gathered on every rank
            improved, best_val_loss = last_eval["val"] < best_val_loss, min(best_val_loss, last_eval["val"])
            if ddp.is_master:
                print(f"step {iter_num}: train loss {last_eval['train']:.4f}, val loss {last_eval['val']:.4f}")
                logger.log_evaluation(iter_num, last_eval)  # log.jsonl and loss.png
                state = make_checkpoint(model, model_state, optimizer_state, scaler, cfg, meta, iter_num,
                                        best_val_loss, budget.seconds)
                save_checkpoints(state, cfg.out_dir, improved, cfg.always_save_checkpoint)
            t0 = time.perf_counter()  # keep evaluation out of the timing
        if finished:
            break

        # one step: forward and backward over this process's micro-batches, then the optimizer
        torch.manual_seed(runtime.step_seed(cfg.seed, data_rank, iter_num))  # this step's dropout (alike on tp ranks)
        loss = train_step(train_model, optimizer, scaler, micro_batches, cfg.grad_clip, ctx)
        micro_batches = batches.iteration(iter_num + 1)  # on a GPU the step is only queued: read on meanwhile
        iter_num += 1

        # log the loss and the speed every log_interval iterations
        if iter_num % cfg.log_interval == 0:
            loss = parallel.mean_over_ranks(loss)  # every rank takes part: the mean over all their micro-steps
            if ddp.is_master:
                loss = loss.item()  # waits for the GPU: only on logging steps
                dt = (time.perf_counter() - t0) / cfg.log_interval
                # MFU: the share of the hardware's peak FLOP/s that the model's own math used
                mfu = model.estimate_mfu(tokens_per_iter / model.config.block_size / ddp.world_size, dt, peak) if peak else None
                left = min((cfg.max_iters - iter_num) * dt, budget.left())
                print(f"iter {iter_num}/{cfg.max_iters}: loss {loss:.4f}, {dt * 1000:.1f} ms, {tokens_per_iter / dt:,.0f} tok/s"
                      + (f", mfu {mfu * 100:.1f}%" if mfu is not None else "") + f", eta {format_duration(left)}")
                logger.log({"iter": iter_num, "loss": loss, "lr": lr, "ms": dt * 1000,
                            "tokens_per_s": tokens_per_iter / dt, "mfu": mfu})
            t0 = time.perf_counter()

    # the end: show what the model learned, and let every rank finish together
    if ddp.is_master and cfg.sample_tokens:  # a sharded model can't run alone: a whole one from its last state
        whole = model if cfg.parallel == "ddp" else GPT.from_state_dict(model.config, model_state, cfg.out_dir).to(device)
        print_sample(whole, load_tokenizer(meta), cfg.sample_tokens, ctx)
    if logger is not None:
        logger.close()
    if ddp.enabled:
        runtime.end_distributed()  # does not return
    return {"iter_num": iter_num, "best_val_loss": best_val_loss, "last_eval": last_eval}


def print_sample(model, tokenizer, max_new_tokens, ctx):
    """A sample from a newline. Eager, since the compiled model would compile again for the shapes
    generation brings; under autocast, as in training (and so on a GPU in sdpa's fused kernels)."""
    model.eval()
    start = torch.tensor([tokenizer.encode("\n")], device=next(model.parameters()).device)  # (1, 1)
    with torch.compiler.set_stance("force_eager"), ctx:
        out = model.generate(start, max_new_tokens, temperature=0.8, top_k=200)
    print("-" * 40)
    print(tokenizer.decode(out[0].tolist()))


def main(argv):
    given = parse_options(TrainConfig, argv)
    cfg = build_config(TrainConfig, given)
    if cfg.resume:  # the run's own settings, saved in its checkpoint, not the defaults
        path = Path(cfg.out_dir) / f"{run_folder.resume_file(cfg.out_dir)}.pt"
        ckpt = load_checkpoint(path, peek=True)
        run_folder.check_resumable(ckpt, path, "train.py")
        cfg = resumed_config(TrainConfig, ckpt["config"], given, RESUME_MAY_CHANGE, f"the run in {cfg.out_dir}")
    elif not cfg.eval_only:
        run_folder.check_new_run(cfg.out_dir, "train.py", cfg.overwrite)
    if cfg.wandb_log and importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb_log=True needs the wandb package: pip install wandb, or leave the flag out")
    # one run per folder: rank 0 holds out_dir's lock for all ranks until the run ends (--eval_only writes nothing)
    writes = os.environ.get("RANK", "0") == "0" and not cfg.eval_only
    with run_folder.claim(cfg.out_dir) if writes else nullcontext():
        train(cfg)


if __name__ == "__main__":
    run_main(main)
