"""
Pretrain a GPT with the next-token loss.

    python train.py                                   # small Shakespeare model on the CPU (4 minutes), then a sample
    python train.py config/train_shakespeare_char.py  # the GPU-sized Shakespeare model
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 \\
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 \\
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
    python train.py --out_dir=out-shakespeare-char --init_from=resume   # continue an interrupted run
    torchrun --standalone --nproc_per_node=4 train.py config/train_shakespeare_char.py   # 4 GPUs, DDP

Every field of TrainConfig below is a --key=value option; config/*.py files set several at once.
"""

import importlib
import importlib.util
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from common import plots, runtime
from common.checkpoint import check_new_run, check_resumable, load_checkpoint, load_gpt, load_model, save_checkpoint
from common.cli import UserError, build_config, check_choice, check_ranges, parse_options, resumed_config, run_main
from common.progress import Logger, format_duration, track
from model import GPT, GPTConfig, adamw
from common.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent


@dataclass
class TrainConfig:
    # the defaults are the built-in CPU run: four minutes of training on a laptop, then a sample.
    # --init_from=resume continues the run in out_dir with the settings saved in its last.pt; of those,
    # the command line may change only the ones marked "resume may change" (RESUME_MAY_CHANGE below)
    # I/O
    out_dir: str = "out-shakespeare-char"  # best.pt, last.pt, log.jsonl, loss.png; resume may change (a moved run)
    eval_interval: int = 1000  # evaluate and checkpoint every this many iterations
    log_interval: int = 50  # print the loss and speed every this many iterations; resume may change
    eval_iters: int = 40  # batches per evaluation of the train and val loss
    eval_only: bool = False  # evaluate once, print the losses and exit, writing nothing; resume may change
    always_save_checkpoint: bool = True  # write last.pt at every evaluation (best.pt only when val improves)
    init_from: str = "scratch"  # "scratch", "resume" (from out_dir/last.pt) or a GPT-2 Hugging Face directory
    overwrite: bool = False  # a new run may replace the run already in out_dir (otherwise refused)
    sample_tokens: int = 300  # print a sample of this many tokens when training ends (0: none); resume may change
    wandb_log: bool = False  # also send the log to Weights & Biases (pip install wandb); wandb_*: resume may change
    wandb_project: str = "gpt"  # the wandb project ...
    wandb_run_name: str = "run"  # ... and run the log goes to
    # data
    dataset: str = "shakespeare_char"  # data/<dataset>/prepare.py makes train.bin, val.bin, meta.json
    data_dir: str = ""  # where those files are; default data/<dataset>; resume may change (the data was moved)
    gradient_accumulation_steps: int = 1  # micro-steps per iteration, over all DDP ranks together
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
    max_seconds: float = 240.0  # or stop sooner, after this many seconds of training (0: no limit); see schedule_position; resume may change
    weight_decay: float = 0.1  # AdamW's pull of the 2-D weights towards 0 (model.adamw)
    beta1: float = 0.9  # AdamW's momentum
    beta2: float = 0.99  # a bit under the usual 0.999: small batches give noisy squared gradients
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 turns clipping off
    decay_lr: bool = True  # False: learning_rate throughout, no warmup
    warmup_iters: int = 100
    lr_decay_iters: int = 5600  # usually max_iters; resume may change, with max_iters
    min_lr: float = 1e-4  # where the cosine decay ends (nanoGPT: learning_rate / 10)
    # system (resume may change all but the seed: they say where the math runs, not what it computes)
    backend: str = "nccl"  # DDP backend: nccl on GPUs, gloo on CPUs
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    compile: bool = True  # torch.compile the model: ~20 s to start, then about twice as fast
    seed: int = 1337

    def __post_init__(self):
        check_ranges(self, positive=("eval_interval", "log_interval", "eval_iters", "gradient_accumulation_steps",
                                     "batch_size", "block_size", "learning_rate"),
                     non_negative=("max_iters", "max_seconds", "warmup_iters", "lr_decay_iters", "min_lr",
                                   "weight_decay", "grad_clip", "sample_tokens"),
                     fractions=("beta1", "beta2"))
        if self.min_lr > self.learning_rate:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        check_choice(self, "dtype", ("auto", *runtime.DTYPES))
        self.model_config(vocab_size=1, device="cpu")  # GPTConfig checks the model's fields

    def model_config(self, vocab_size, device):
        return GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias,
                         attention=runtime.pick_attention(self.attention, device))


# the options a resumed run takes from the command line; the rest must be the run's own (see TrainConfig)
RESUME_MAY_CHANGE = ("init_from", "out_dir", "data_dir", "overwrite", "max_iters", "max_seconds", "lr_decay_iters", "eval_only",
                     "log_interval", "sample_tokens", "wandb_log", "wandb_project", "wandb_run_name",
                     "backend", "device", "dtype", "compile")


# ----------------------------------------------------------------------------- data

class Batches:
    """Random windows of a token stream held in memory-mapped .bin files (opened once), delivered on
    the training device.

    All DDP ranks draw the same random offsets for a whole iteration and each reads only the rows of
    its own micro-steps, so N ranks see exactly the batches that one process with N times the
    accumulation would. The generator's state goes into checkpoints, so a resumed run continues
    with the very batches it would have seen."""

    def __init__(self, data_dir, block_size, batch_size, seed, device="cpu"):
        # memory-mapped: the files stay on disk and each batch reads only its rows, so any corpus fits
        self.splits = {split: open_tokens(data_dir / f"{split}.bin", block_size) for split in ("train", "val")}
        self.block_size = block_size
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.resume_state = self.generator.get_state()  # what a checkpoint keeps: see iteration()

    def iteration(self, micro_steps, ddp):
        """The (x, y) micro-batches of one training iteration for this rank."""
        # every rank draws all micro-steps' offsets, so the generators of all ranks stay in step
        # the loop asks for an iteration's batches one iteration ahead; a checkpoint written before they
        # are trained on keeps the state before they were drawn, so a resumed run draws them again
        self.resume_state = self.generator.get_state()
        offsets = [self.offsets("train", self.generator) for _ in range(micro_steps)]
        per_rank = micro_steps // ddp.world_size
        return [self.read("train", ix) for ix in offsets[ddp.rank * per_rank : (ddp.rank + 1) * per_rank]]

    def get(self, split, generator):
        """One random batch of split, drawn with generator."""
        return self.read(split, self.offsets(split, generator))

    def offsets(self, split, generator):
        """Where each of a batch's windows starts: (B,) random positions."""
        # batch_size windows of block_size + 1 tokens, each starting anywhere in the split
        return torch.randint(len(self.splits[split]) - self.block_size, (self.batch_size,), generator=generator)

    def read(self, split, ix):
        """The windows starting at ix, as inputs and targets, each (B, T): targets are inputs shifted by one."""
        rows = self.splits[split][ix.numpy()[:, None] + np.arange(self.block_size + 1)]  # (B, T+1) numpy, one read
        rows = torch.from_numpy(rows.astype(np.int64))  # embeddings index with int64; uint16 only saves disk
        if self.device.startswith("cuda"):
            # copied from pinned (page-locked) memory, the transfer runs while the GPU computes; from
            # ordinary memory non_blocking would quietly wait for it
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        else:
            rows = rows.to(self.device)
        return rows[:, :-1], rows[:, 1:]


def open_tokens(path, block_size):
    size = path.stat().st_size  # checked before mapping: numpy can't map an empty file or half a token
    if size % 2:
        raise UserError(f"{path} has an odd number of bytes ({size}), so it is not uint16 tokens; "
                        f"prepare the data again")
    if size // 2 <= block_size:
        raise UserError(f"{path} holds {size // 2} tokens, too few for block_size {block_size}; "
                        f"use more text or a smaller --block_size")
    return np.memmap(path, dtype=np.uint16, mode="r")


def find_data(cfg):
    """data/<dataset>/ with train.bin, val.bin and meta.json, made by its prepare.py when missing."""
    data_dir = Path(cfg.data_dir) if cfg.data_dir else ROOT / "data" / cfg.dataset
    if not (data_dir / "train.bin").is_file():
        if cfg.data_dir or not (ROOT / "data" / cfg.dataset / "prepare.py").is_file():
            known = sorted(p.parent.name for p in (ROOT / "data").glob("*/prepare.py"))
            raise UserError(f"no train.bin in {data_dir}; --dataset takes one of {', '.join(known)}, "
                            f"or --data_dir a folder holding train.bin, val.bin and meta.json")
        prepare = importlib.import_module(f"data.{cfg.dataset}.prepare")
        if hasattr(prepare, "LABELS"):  # a finetuning task's prepare.py writes labelled examples, not tokens
            raise UserError(f"data/{cfg.dataset} is a finetuning task, not a pretraining corpus; "
                            f"use it with finetune.py")
        print(f"{data_dir / 'train.bin'} is missing: preparing the {cfg.dataset} dataset")
        # the first run prepares its data itself, so `python train.py` alone is enough
        prepare.prepare()
    for name in ("val.bin", "meta.json"):
        if not (data_dir / name).is_file():
            raise UserError(f"{data_dir} has train.bin but no {name}; prepare the data again")
    try:
        return data_dir, json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    except ValueError as e:  # not JSON, or not UTF-8
        raise UserError(f"{data_dir / 'meta.json'} is damaged ({e}); prepare the data again") from None


# ----------------------------------------------------------------------------- model and optimizer

def init_model(cfg, vocab_size, device):
    """A new model, the interrupted run's (out_dir/last.pt, returned with its checkpoint so the
    optimizer and random state resume too), or a pretrained one (checkpoint.load_gpt)."""
    if cfg.init_from == "scratch":
        return GPT(cfg.model_config(vocab_size, device)), None
    # a checkpoint's attention kind says how it was trained, not how it must run: choose for this device
    attention = runtime.pick_attention(cfg.attention, device)
    if cfg.init_from == "resume":
        return load_model(cfg.out_dir, "last", attention=attention)
    model, _ = load_gpt(cfg.init_from, dropout=cfg.dropout, attention=attention)
    if cfg.block_size < model.config.block_size:
        model.crop_block_size(cfg.block_size)  # e.g. GPT-2's 1024 positions cut to a shorter block
    return model, None


def get_lr(it, learning_rate, warmup_iters, decay_iters, min_lr, decay="cosine"):
    """Linear warmup for warmup_iters, then a decay to min_lr at decay_iters, then min_lr. The decay
    is a cosine for pretraining (GPT-3, nanoGPT) and a straight line for finetuning (BERT)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= decay_iters:
        return min_lr
    progress = (it - warmup_iters) / max(1, decay_iters - warmup_iters)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)


def schedule_position(iter_num, seconds, cfg):
    """How far the learning-rate schedule has got, in iterations. With a time budget (max_seconds) it is
    the further of iter_num and the budget's used fraction of lr_decay_iters: the cosine then reaches
    min_lr when the time runs out, on a machine too slow for max_iters as on a fast one. The warmup
    is always counted in iterations: the seconds spent compiling must not skip it, since Adam's first
    steps at the full learning rate set this model back for thousands of iterations."""
    if not cfg.max_seconds or iter_num < cfg.warmup_iters:
        return iter_num
    return max(iter_num, seconds / cfg.max_seconds * cfg.lr_decay_iters)


def shared_seconds(seconds, cfg, ddp, device):
    """Rank 0's clock on every rank: ranks that disagreed on when the time is up would each wait for
    the others' gradients forever. Without a time budget no rank needs it, and none waits for it."""
    if not ddp.enabled or not cfg.max_seconds:
        return seconds
    t = torch.tensor(seconds, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.item()


# ----------------------------------------------------------------------------- one step, one evaluation

def train_step(model, optimizer, scaler, micro_batches, grad_clip, ctx, device):
    """Forward and backward over the micro-batches (x, y pairs already on device), one optimizer step.
    Returns the iteration's loss: the mean over all micro-steps (not the last one's, which is noisier
    and biased by chance)."""
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # DDP averages the gradients across ranks in backward: only after the last micro-step, not after each
        sync = model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext()
        with sync:
            with ctx:
                _, loss = model(x, y)
            # dividing by the number of micro-steps makes the summed gradients the gradient of the mean
            # loss, so clipping and the learning rate see the same gradient as one big batch would
            scaler.scale(loss / len(micro_batches)).backward()
        total += loss.detach()  # detached: the running sum must not keep every micro-step's graph alive
    optimizer_step(model, optimizer, scaler, grad_clip)
    return total / len(micro_batches)


def optimizer_step(model, optimizer, scaler, grad_clip):
    """Clip the gradient's norm to grad_clip (0: no clipping), step, and clear the gradients."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradient, not the float16-scaled one
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # skipped if float16 gradients overflowed to inf; a plain step otherwise
    scaler.update()  # float16: a smaller scale after an overflow, a larger one after a run of good steps
    optimizer.zero_grad(set_to_none=True)  # None rather than zeros: backward then writes instead of adding


@torch.no_grad()
def estimate_loss(model, batches, eval_iters, ctx, device, seed):
    """Mean loss over eval_iters batches of each split. The same batches every time (a fixed seed),
    so evaluations differ only through the model. The losses stay on the device until the mean: one
    wait for the GPU per split, not one per batch."""
    model.eval()  # dropout off: the loss of the model itself, not of a random thinning of it
    out = {}
    for split in ("train", "val"):
        generator = torch.Generator().manual_seed(seed)  # its own generator: training's batches stay as they were
        losses = torch.zeros(eval_iters, device=device)
        for k in track(range(eval_iters), f"evaluating {split}", "batches"):
            x, y = batches.get(split, generator)
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss
        out[split] = losses.mean().item()
    model.train()  # back to training: dropout on again
    return out


# ----------------------------------------------------------------------------- checkpoints (the log: common/progress.Logger)

def make_checkpoint(model, optimizer, scaler, batches, cfg, meta, iter_num, best_val_loss, seconds=0.0):
    """Everything a run needs to go on exactly as if it had never stopped, in plain tensors and
    dicts (weights_only loading can read them, and no pickled code rides along)."""
    # the batch sampler's state is the only random state to keep: dropout is reseeded every iteration
    rng = {"batches": batches.resume_state}
    return {
        "model": model.state_dict(),  # the weights
        "model_args": asdict(model.config),  # the sizes, to build the same GPT before loading them
        "optimizer": optimizer.state_dict(),  # AdamW's moments: without them a resumed run jolts
        "scaler": scaler.state_dict(),  # float16's loss scale, as far as it has adapted ({} otherwise)
        "config": asdict(cfg),  # how this run was trained
        "tokenizer": meta,  # how text becomes this model's tokens (common/tokenizer.py)
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "seconds": seconds,  # of training so far, for the time budget of a resumed run
        "rng": rng,  # the batches' random state: the same batches after a resume
    }


def restore_rng(rng, batches):
    batches.generator.set_state(rng["batches"])


def dropout_seed(seed, rank, iter_num):
    """The seed of one rank's dropout at one iteration. It depends on nothing else, so every rank
    drops different units, and a resumed run (on any rank) drops exactly the units the uninterrupted
    run would, with no per-rank random state to save. SeedSequence mixes the three numbers well."""
    return int(np.random.SeedSequence([seed, rank, iter_num]).generate_state(1)[0])


# ----------------------------------------------------------------------------- the training loop

def train(cfg):
    """Train as cfg says; returns {"iter_num", "best_val_loss", "last_eval"}."""
    # first refuse what would replace a run or stop halfway; nothing is written until the run starts
    if cfg.init_from != "resume" and not cfg.eval_only:
        check_new_run(cfg.out_dir, "train.py", cfg.overwrite)
    if cfg.wandb_log and importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb_log=True needs the wandb package: pip install wandb, or leave the flag out")

    # where the math runs: one process, or one of several started by torchrun (DDP)
    ddp = runtime.setup_distributed(cfg.backend)
    device = runtime.pick_device(cfg.device)
    if ddp.enabled and device.startswith("cuda"):
        device = f"cuda:{ddp.local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    if cfg.gradient_accumulation_steps % ddp.world_size != 0:
        raise UserError(f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be a multiple "
                        f"of the number of processes ({ddp.world_size})")
    out_dir = Path(cfg.out_dir)

    # data and model
    data_dir, meta = find_data(cfg)
    vocab_size = load_tokenizer(meta, data_dir / "meta.json").vocab_size
    torch.manual_seed(cfg.seed)  # the initial weights (DDP copies rank 0's to every rank anyway)
    model, ckpt = init_model(cfg, vocab_size, device)
    if model.config.vocab_size != vocab_size:
        raise UserError(f"the model's vocabulary ({model.config.vocab_size} tokens) does not match the "
                        f"{cfg.dataset} data's ({vocab_size}); prepare the data with the model's tokenizer")
    batches = Batches(data_dir, model.config.block_size, cfg.batch_size, cfg.seed, device)
    if device.startswith("cuda"):
        runtime.enable_tf32()
    model.to(device)

    # the optimizer, float16's loss scaler, and where a resumed run left off
    optimizer = adamw(model, cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.split(":")[0])
    scaler = runtime.grad_scaler(device, dtype, ckpt.get("scaler") if ckpt is not None else None)
    iter_num, best_val_loss, seconds_before = 0, float("inf"), 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
        seconds_before = ckpt.get("seconds", 0.0)
        restore_rng(ckpt["rng"], batches)
        ckpt = None  # free the CPU copy
        if iter_num > cfg.max_iters:
            raise UserError(f"the run in {out_dir} is at iteration {iter_num}, past --max_iters={cfg.max_iters}; "
                            f"give a larger --max_iters to train it further")
    ctx = runtime.autocast(device, dtype)

    # compile in place: `model` stays the GPT whose state_dict is saved and sampled, with no prefix
    if cfg.compile:
        runtime.compile_in_place(model, device)
    # DDP averages gradients across ranks in backward; only training steps go through it, since only
    # the master evaluates and an evaluation through DDP would wait for the other ranks
    ddp_model = runtime.wrap_ddp(model, device, ddp)

    micro_steps_per_rank = cfg.gradient_accumulation_steps // ddp.world_size
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * model.config.block_size
    peak = runtime.peak_flops(device, dtype) if ddp.is_master else None
    if ddp.is_master:
        budget = f" or {format_duration(cfg.max_seconds)} of training, whichever ends first" if cfg.max_seconds else ""
        print(f"{model.get_num_params() / 1e6:.2f}M parameters on {device} in {dtype}; "
              f"{tokens_per_iter:,} tokens per iteration; {cfg.max_iters:,} iterations{budget}")
        if not plots.have_matplotlib():
            print("no loss.png: drawing it needs matplotlib: pip install matplotlib")
    logger = Logger(cfg, iter_num) if ddp.is_master and not cfg.eval_only else None  # the run starts here

    # a resumed run evaluated and saved at the iteration it resumes from: don't do it twice
    skip_eval_at = iter_num if cfg.init_from == "resume" and not cfg.eval_only else None
    last_eval = None
    micro_batches = batches.iteration(cfg.gradient_accumulation_steps, ddp)  # the first iteration's
    t0 = started = time.perf_counter()
    while True:
        # how far the run has got: max_iters, or the time budget if that runs out first, ends it
        seconds = shared_seconds(seconds_before + time.perf_counter() - started, cfg, ddp, device)
        finished = iter_num >= cfg.max_iters or 0 < cfg.max_seconds <= seconds

        # set this iteration's learning rate
        lr = cfg.learning_rate
        if cfg.decay_lr:
            position = schedule_position(iter_num, seconds, cfg)
            lr = get_lr(position, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # every eval_interval iterations, at the end, and for --eval_only: evaluate, write checkpoints, plot
        due = iter_num % cfg.eval_interval == 0 or finished or cfg.eval_only
        if due and iter_num != skip_eval_at:
            if ddp.is_master:
                last_eval = estimate_loss(model, batches, cfg.eval_iters, ctx, device, cfg.seed)
                print(f"step {iter_num}: train loss {last_eval['train']:.4f}, val loss {last_eval['val']:.4f}")
            if ddp.is_master and not cfg.eval_only:  # --eval_only reports the losses and changes no file
                logger.log({"iter": iter_num, "train_loss": last_eval["train"], "val_loss": last_eval["val"]})
                improved = last_eval["val"] < best_val_loss
                best_val_loss = min(best_val_loss, last_eval["val"])
                state = make_checkpoint(model, optimizer, scaler, batches, cfg, meta, iter_num, best_val_loss, seconds)
                if improved:
                    save_checkpoint(state, out_dir / "best.pt")  # what sample.py and finetune.py read
                if cfg.always_save_checkpoint or improved:
                    save_checkpoint(state, out_dir / "last.pt")  # what --init_from=resume reads
                if plots.have_matplotlib():
                    plots.plot_losses(out_dir / "log.jsonl", out_dir / "loss.png")
            t0 = time.perf_counter()  # keep evaluation out of the timing
        if finished or cfg.eval_only:
            break

        # one iteration: forward and backward over this rank's micro-batches, then one optimizer step
        torch.manual_seed(dropout_seed(cfg.seed, ddp.rank, iter_num))
        loss = train_step(ddp_model, optimizer, scaler, micro_batches, cfg.grad_clip, ctx, device)
        # on a GPU the step is only queued so far: read the next iteration's batches while it runs
        micro_batches = batches.iteration(cfg.gradient_accumulation_steps, ddp)
        iter_num += 1

        # log the loss and the speed every log_interval iterations
        if iter_num % cfg.log_interval == 0 and ddp.enabled:
            dist.all_reduce(loss)  # every rank takes part; sum / world_size is the mean over all micro-steps
            loss = loss / ddp.world_size
        if iter_num % cfg.log_interval == 0 and ddp.is_master:
            loss = loss.item()  # waits for the GPU: only on logging steps
            dt = (time.perf_counter() - t0) / cfg.log_interval
            # MFU: the share of the hardware's peak FLOP/s that the model's own math used
            mfu = model.estimate_mfu(micro_steps_per_rank * cfg.batch_size, dt, peak) if peak else None
            mfu_text = f", mfu {mfu * 100:.1f}%" if mfu is not None else ""
            # time left: the iterations left at this speed, or what is left of the time budget
            left = (cfg.max_iters - iter_num) * dt
            if cfg.max_seconds:
                left = min(left, cfg.max_seconds - seconds)
            print(f"iter {iter_num}/{cfg.max_iters}: loss {loss:.4f}, {dt * 1000:.1f} ms, "
                  f"{tokens_per_iter / dt:,.0f} tok/s{mfu_text}, eta {format_duration(max(0.0, left))}")
            logger.log({"iter": iter_num, "loss": loss, "lr": lr, "ms": dt * 1000,
                        "tokens_per_s": tokens_per_iter / dt, "mfu": mfu})
            t0 = time.perf_counter()

    # the end: show what the model learned, and let every rank finish together
    if ddp.is_master and cfg.sample_tokens:
        print_sample(model, load_tokenizer(meta), cfg.sample_tokens)
    if logger is not None:
        logger.close()
    if ddp.enabled:
        runtime.end_distributed()  # does not return
    return {"iter_num": iter_num, "best_val_loss": best_val_loss, "last_eval": last_eval}


def print_sample(model, tokenizer, max_new_tokens):
    from sample import generate_text

    model.eval()
    print("-" * 40)
    print(generate_text(model, tokenizer, "\n", max_new_tokens, temperature=0.8, top_k=200)[0])


def main(argv):
    given = parse_options(TrainConfig, argv)
    cfg = build_config(TrainConfig, given)
    if cfg.init_from == "resume":  # the run's own settings, saved in its checkpoint, not the defaults
        path = Path(cfg.out_dir) / "last.pt"
        ckpt = load_checkpoint(path, peek=True)
        check_resumable(ckpt, path, "train.py")
        cfg = resumed_config(TrainConfig, ckpt["config"], given, RESUME_MAY_CHANGE, f"the run in {cfg.out_dir}")
    train(cfg)


if __name__ == "__main__":
    run_main(main)
