"""
Finetune a pretrained GPT to classify texts or tag words, evaluate it, and predict with it.

    python data/sms_spam/prepare.py                   # writes data/sms_spam/{train,val,test}.jsonl
    python finetune.py config/finetune_sms_spam.py    # train; out_dir gets best.pt and metrics.json
    python finetune.py config/finetune_sms_spam.py --device=cpu --max_iters=20 --eval_interval=10  # a quick CPU check
    python finetune.py config/finetune_sms_spam.py --train=lora --lora_rank=8 --head=mean
    python finetune.py --out_dir=out-sms-spam --eval_file=data/sms_spam/test.jsonl   # writes out_dir/eval_test.json
    python finetune.py --out_dir=out-sms-spam --predict="WINNER!! Claim your prize"   # or FILE:path, a text per line
    python finetune.py config/finetune_sst2.py --zero_shot=True --shots=4         # no training: prompt scoring
    python finetune.py --out_dir=out-sms-spam --resume=True      # continue an interrupted run (out_dir/last.pt)

How a pretrained GPT becomes a classifier, top to bottom: a Classifier is the GPT's body with a
small head (finetuning/heads.py) reading its final hidden states; a train mode chooses which
weights learn; batches of examples (finetuning/tasks.py) are padded on the right; the checkpoint
that scores best on val is kept, then scored on val and test (finetuning/evaluate.py) into
metrics.json beside the baselines fitted on the same rows (bag-of-words for texts; the most frequent
tag and a feature CRF for tags) and combined with them. --members=N finetunes N models that predict
together.

Every field of FinetuneConfig below is a --key=value option; config/finetune_*.py set several at once.
"""

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from common import optim, run_folder, runtime
from common.checkpoint import load_gpt
from common.cli import UserError, build_config, check_choice, check_ranges, parse_options, run_main
from common.files import write_json
from common.progress import Progress
from common.tokenizer import gpt2_tokenizer
from finetuning.checkpoints import (count_parameters, finetuned_checkpoint, load_members, load_resume_point,
                                   save_finetuned, save_resume_point)
from finetuning.evaluate import Ensemble, evaluate, score_run, use_finetuned
from finetuning.heads import build_head, check_head
from finetuning.lora import LORA_TARGETS, check_lora
from finetuning.metrics import headline
from finetuning.prefix import check_prefix_len
from finetuning.prompting import zero_shot
from finetuning.train_modes import TRAIN_MODES
from finetuning.tasks import (READINGS, TASKS, TRUNCATIONS, collate, load_examples, max_tokens, split_path, texts,
                              training_batch)
from model import GPT, GPTConfig


# ----------------------------------------------------------------------------- the model

class Classifier(nn.Module):
    """A GPT body and a head reading its final hidden states."""

    def __init__(self, gpt, head, prefix=None, both_ways=False):
        super().__init__()
        self.gpt = gpt
        self.head = head
        self.prefix = prefix  # --train=prefix: keys and values every layer attends to before the text
        self.both_ways = both_ways  # --reading=both_ways: every token attends to the whole text, not just the past

    def forward(self, idx, mask):
        cache = None if self.prefix is None else self.prefix.cache(idx.size(0))
        hidden = self.gpt.hidden_states(idx, cache, key_mask=mask if self.both_ways else None)  # (B, T, C)
        return self.head(hidden, mask)  # (B, T, C) -> (B, L) or (B, T, L)


# ----------------------------------------------------------------------------- configuration

BASE_MODEL = "out-imdb-base"  # where python train.py config/train_imdb_base.py puts the shared base model

@dataclass
class FinetuneConfig:
    # what to start from, and what to learn
    init_from: str = BASE_MODEL  # a train.py run dir (its best.pt; this one: config/train_imdb_base.py),
    #                                   a GPT-2 Hugging Face dir (config.json; "gpt2:DIR" says so), or "scratch"
    task: str = "sms_spam"  # one of TASKS: sms_spam, sst2, imdb, conll2003
    data_dir: str = ""  # folder with train.jsonl, val.jsonl and the test split; "" = data/<task>
    head: str = "auto"  # one of heads.HEADS; "auto" = last for classification, token for tagging
    train: str = "full"  # one of TRAIN_MODES: full, head (a linear probe), last_n, lora, adapter, prefix
    last_n: int = 2  # --train=last_n: how many of the last blocks learn
    lora_rank: int = 8  # --train=lora: rank r of each update B @ A
    lora_alpha: float = 16.0  # --train=lora: the update is scaled by alpha / r
    lora_targets: str = ",".join(LORA_TARGETS)  # --train=lora: comma-separated Linear layers of each block
    adapter_size: int = 16  # --train=adapter: the bottleneck's width
    prefix_len: int = 8  # --train=prefix: learned key/value positions per layer
    # a new model's size, for --init_from=scratch (GPT-2's tokenizer)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    dropout: float = 0.0  # in the body while finetuning, whatever the pretrained run used
    members: int = 1  # finetune this many models, seeds seed, seed+1, ...; they predict together (Ensemble)
    # optimisation: AdamW, linear warmup, then linear decay to 0
    learning_rate: float = 1e-4  # the peak, after warmup
    weight_decay: float = 0.01
    warmup_iters: int = 20
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 turns clipping off
    batch_size: int = 16
    epochs: float = 3.0  # passes over the training set ...
    max_iters: int = 0  # ... unless this is positive: then exactly this many iterations
    max_train: int = 0  # use only the first max_train training examples (quick runs); 0 = all
    max_len: int = 128  # tokens kept of each example (the rest is cut off); at most the model's block_size
    truncate: str = "head"  # which of a longer text's tokens: head, tail, head_tail, or all of them in
    #                         chunks whose label probabilities are averaged (finetuning/tasks.py)
    eval_truncate: str = ""  # how val and test are read when scored at the end: "" = as truncate; chunks: whole
    reading: str = "causal"  # tagging: left to right, the sentence "twice", or "both_ways" (finetuning/tasks.py)
    eval_interval: int = 0  # score val every this many iterations; 0 = once an epoch
    test: bool = True  # score the test split at the end; False while settings are still being chosen on val
    log_interval: int = 20
    seed: int = 1337
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    compile: bool | None = None  # torch.compile the classifier; None: on a CUDA GPU only (docs/finetuning.md)
    out_dir: str = "out-finetune"  # where the finetuned run is written, or read by eval_file/predict
    resume: bool = False  # continue the interrupted run in out_dir (its last.pt) with its own options
    overwrite: bool = False  # a new run may replace the run already in out_dir (otherwise refused)
    # instead of training: use the finetuned run in out_dir
    eval_file: str = ""  # score this labelled file (.jsonl, or the task's raw format) -> out_dir/eval_<name>.json
    #                      (with --truncate, long texts are read its way, not the run's: eval_<name>_<truncate>.json)
    predict: str = ""  # label this text, or every line of FILE:path
    # instead of training: score each label's verbalizer with the pretrained LM (init_from)
    zero_shot: bool = False
    shots: int = 0  # labelled training examples put in the prompt before each question

    def __post_init__(self):
        check_choice(self, "task", TASKS)
        if self.head == "auto":
            self.head = "token" if TASKS[self.task].per_token else "last"
        check_head(self.head, self.task, TASKS[self.task].per_token)
        check_choice(self, "train", TRAIN_MODES)
        check_choice(self, "truncate", TRUNCATIONS)
        check_choice(self, "eval_truncate", ("", *TRUNCATIONS))
        if self.head == "token_crf" and self.members > 1:
            raise ValueError(f"--members={self.members} averages label probabilities, but --head=token_crf decodes "
                             f"whole tag sequences with its CRF; use --members=1 with it")
        check_choice(self, "reading", READINGS)
        if self.reading != "causal" and not TASKS[self.task].per_token:
            raise ValueError(f"--reading={self.reading} is for tagging; {self.task} labels whole texts")
        if self.reading == "both_ways" and self.train == "prefix":
            raise ValueError("--reading=both_ways can't be used with --train=prefix: the prefix's keys have no padding mask")
        check_lora(self.lora_rank, self.lora_targets.split(","))
        # lr 0 would train nothing, and a negative one climb the loss
        check_ranges(self, positive=("learning_rate", "lora_alpha", "epochs"),
                     at_least_one=("last_n", "adapter_size", "prefix_len", "members", "batch_size", "max_len",
                                   "log_interval"),
                     non_negative=("weight_decay", "grad_clip", "max_iters", "max_train", "eval_interval", "shots",
                                   "warmup_iters"),
                     fractions=("dropout",))
        GPTConfig(block_size=self.block_size, vocab_size=1, n_layer=self.n_layer, n_head=self.n_head,
                  n_embd=self.n_embd)  # a scratch model's sizes, checked by GPTConfig


# ----------------------------------------------------------------------------- the starting point, and a finetuned run

def load_pretrained(cfg, device):
    """The GPT to start from and its tokenizer: a new GPT-2-sized-vocabulary model for "scratch",
    else the pretrained one init_from names (checkpoint.load_gpt), with the attention kind for device
    whatever the pretrained run used."""
    attention = runtime.pick_attention("auto", device)
    if cfg.init_from == "scratch":
        tokenizer = gpt2_tokenizer()
        config = GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size, n_layer=cfg.n_layer,
                           n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, attention=attention)
        runtime.check_training_memory(config, cfg.batch_size, device, seq_len=min(cfg.max_len, cfg.block_size))
        return GPT(config), tokenizer
    if cfg.init_from == BASE_MODEL and not Path(BASE_MODEL).exists():  # the default, not made yet
        raise UserError(f"no {BASE_MODEL} here: pretrain the shared base model first, python train.py "
                        f"config/train_imdb_base.py, or pass --init_from=...")
    return load_gpt(cfg.init_from, dropout=cfg.dropout, attention=attention)


def load_finetuned(out_dir, device="cpu"):
    """The Classifier saved by a finetune.py run in out_dir (an Ensemble for a --members run), its
    tokenizer, and the checkpoint dicts, one per member; with the attention kind for device."""
    parts, tokenizer, members = load_members(out_dir, runtime.pick_attention("auto", device))
    classifiers = [Classifier(gpt, head, prefix, both_ways=member["config"].get("reading") == "both_ways")
                   for (gpt, head, prefix), member in zip(parts, members)]
    return classifiers[0] if len(classifiers) == 1 else Ensemble(classifiers), tokenizer, members


# ----------------------------------------------------------------------------- training

@dataclass
class Run:
    """What a run carries from member to member, for its files in out_dir: best.pt holds the finished
    members and then the running member's best so far; last.pt what it takes to resume that member."""
    tokenizer: object  # its meta goes into every checkpoint, so the run reads text as it was trained to
    done: list  # the finished members' best checkpoint dicts
    started: float  # time.time() when the run began; a resumed run counts its earlier time too
    resume: dict | None = None  # out_dir/last.pt, when the member about to train was interrupted


def new_classifier(gpt, cfg):
    """gpt with the head cfg names, the weights cfg.train says learning and the others frozen. The new
    weights (the head's, LoRA's) are drawn from the member's seed: a resumed run draws them again alike."""
    torch.manual_seed(cfg.seed)
    classifier = Classifier(gpt, build_head(cfg.head, gpt.config.n_embd, len(TASKS[cfg.task].labels)),
                            both_ways=cfg.reading == "both_ways")
    TRAIN_MODES[cfg.train](classifier, cfg)
    trainable, total = count_parameters(classifier)
    print(f"--train={cfg.train} --head={cfg.head}: {trainable:,} trainable of {total:,} parameters "
          f"({100 * trainable / total:.2f}%)")
    return classifier


def get_lr(it, learning_rate, warmup_iters, max_iters):
    """Linear warmup for warmup_iters, then a straight line down to 0 at max_iters, as BERT was finetuned
    (pretraining's cosine, train.get_lr, ends at min_lr after a long run; a finetuning run is short and
    ends on its last step)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    return learning_rate * max(0.0, 1.0 - (it - warmup_iters) / max(1, max_iters - warmup_iters))


def finetune_step(classifier, optimizer, scaler, batch, grad_clip, device, ctx):
    """Forward, backward and one optimizer step on one batch of examples (train.py's train_step does a
    pretraining iteration: several micro-batches of token windows); returns the loss."""
    idx, mask, targets = collate(batch, device)
    with ctx:
        logits = classifier(idx, mask)
    loss = classifier.head.loss(logits, targets)  # cross-entropy, skipping targets of -1 (padding, later pieces)
    scaler.scale(loss).backward()
    optim.optimizer_step(classifier, optimizer, scaler, grad_clip)
    return loss


def train_classifier(classifier, train_set, val_set, cfg, device, dtype, run):
    """Finetune one classifier; returns its best checkpoint dict (the best val score). Every time it
    scores best so far, out_dir/best.pt is rewritten; after every evaluation, out_dir/last.pt."""
    labels = TASKS[cfg.task].labels
    ctx = runtime.autocast(device, dtype)
    classifier.to(device)
    if cfg.compile or (cfg.compile is None and device.startswith("cuda")):
        runtime.compile_in_place(classifier, device)  # batches vary in length: it compiles for dynamic shapes
    # finetuning uses pretraining's optimizer (AdamW, no decay of biases and gains) and its warmup,
    # then decays linearly to 0 (as BERT's finetuning) over a run of whole epochs
    optimizer = optim.adamw(classifier, cfg.weight_decay, cfg.learning_rate, (0.9, 0.999), device.split(":")[0])
    scaler = optim.grad_scaler(device, dtype, run.resume["scaler"] if run.resume is not None else None)
    batches_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    max_iters = cfg.max_iters or math.ceil(cfg.epochs * batches_per_epoch)
    eval_interval = cfg.eval_interval or batches_per_epoch

    best, start = None, 0
    if run.resume is not None:  # continue exactly where the interrupted run saved last.pt
        classifier.load_state_dict(run.resume["classifier"])
        optimizer.load_state_dict(run.resume["optimizer"])
        best, start = run.resume["best"], run.resume["iter_num"]
        print(f"resuming at iteration {start} of {max_iters}")
    progress = Progress(max_iters, "finetuning", "iterations", start=start)  # for the time left
    for it in range(start, max_iters):
        # one step on batch `it` of the shuffled training set; the batch and the dropout depend on the
        # seed and `it` alone (as in train.py), so a resumed run goes on exactly as if never stopped
        classifier.train()
        lr = get_lr(it, cfg.learning_rate, cfg.warmup_iters, max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(runtime.step_seed(cfg.seed, it))
        batch = training_batch(train_set, cfg.batch_size, cfg.seed, it)
        loss = finetune_step(classifier, optimizer, scaler, batch, cfg.grad_clip, device, ctx)
        if it % cfg.log_interval == 0:
            print(f"iter {it}/{max_iters}: loss {loss.item():.4f}, lr {lr:.2e}, {time.time() - run.started:.0f}s, "
                  f"eta {progress.eta(it + 1)}")

        # every eval_interval iterations and at the end: score val, keep the best, save what resumes
        if (it + 1) % eval_interval == 0 or it + 1 == max_iters:
            report = evaluate(classifier, val_set, labels, cfg.batch_size, device, ctx)
            print(f"iter {it + 1}: val accuracy {report['accuracy']:.4f}, headline {headline(report):.4f}")
            if best is None or headline(report) > headline(best["val"]):
                # a copy: the weights in the dict would otherwise go on training
                best = copy.deepcopy(finetuned_checkpoint(classifier, run.tokenizer, cfg, it + 1, max_iters, report))
                save_finetuned(run.done + [best], cfg.out_dir)
            save_resume_point(classifier, optimizer, scaler, cfg, len(run.done), it + 1, best, run.started)
    return best


# the options a resumed run takes from the command line; the rest must be the interrupted run's own
RESUME_MAY_CHANGE = ("resume", "out_dir", "overwrite", "device", "dtype", "log_interval")


def finetune(cfg, given):
    """Finetune cfg.members classifiers from the pretrained model, then score the best on val and on
    the test split into out_dir/metrics.json. given: the options on the command line, which a resumed
    run checks against its own."""
    # an interrupted run continues only when asked to, and with its own options; a new run never
    # replaces an old one unless --overwrite=True says so
    run_files, done = None, []
    if cfg.resume:
        cfg, run_files, done = load_resume_point(cfg, given, FinetuneConfig, RESUME_MAY_CHANGE)
    else:
        run_folder.check_new_run(cfg.out_dir, "finetune.py", cfg.overwrite)
    task = TASKS[cfg.task]
    torch.manual_seed(cfg.seed)  # the weights of a scratch model; each member then seeds its own head and batches
    device = runtime.pick_device(cfg.device)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    if device.startswith("cuda"):
        runtime.enable_tf32()  # float32 matmuls on tensor cores

    # the pretrained model, and the task's examples in its tokens
    gpt, tokenizer = load_pretrained(cfg, device)
    if cfg.train == "prefix":  # its positions come out of the model's block: checked before the data is read
        check_prefix_len(cfg.prefix_len, gpt.config.block_size)
    max_len = max_tokens(asdict(cfg), gpt.config.block_size)
    def examples(split, limit=0, truncate=cfg.truncate):
        return load_examples(split_path(cfg.data_dir, cfg.task, split), cfg.task, tokenizer, max_len, limit,
                             truncate, cfg.reading)

    train_set, val_set = examples("train", cfg.max_train), examples("val")
    print(f"{len(texts(train_set))} training and {len(texts(val_set))} validation examples of {cfg.task}"
          + (f" ({len(train_set)} and {len(val_set)} chunks)" if cfg.truncate == "chunks" else ""))

    # each member starts from the same pretrained weights, with its own seed
    run = Run(tokenizer, done, time.time() - (run_files["train_seconds"] if run_files else 0.0), run_files)
    for k in range(len(done), cfg.members):
        member_cfg = replace(cfg, seed=cfg.seed + k)
        if cfg.members > 1:
            print(f"--- member {k + 1} of {cfg.members}, seed {member_cfg.seed}")
        classifier = new_classifier(copy.deepcopy(gpt), member_cfg)
        run.done.append(train_classifier(classifier, train_set, val_set, member_cfg, device, dtype, run))
        run.resume = None  # only the member that was interrupted resumes
    train_seconds = time.time() - run.started

    # score the saved checkpoint, just as --eval_file will (the best on val, LoRA merged), beside the baselines;
    # with eval_truncate reading long texts another way than training did (e.g. whole, in chunks)
    classifier, _, members = load_finetuned(cfg.out_dir, device)
    truncate = cfg.eval_truncate or cfg.truncate
    splits = {"val": val_set if truncate == cfg.truncate else examples("val", truncate=truncate),
              **({"test": examples(task.test_split, truncate=truncate)} if task.test_split and cfg.test else {})}
    metrics = {"task": cfg.task, "init_from": cfg.init_from, "head": cfg.head, "train": cfg.train,
               "truncate": truncate, "train_seconds": round(train_seconds, 1)}
    metrics.update(score_run(classifier.to(device), members, splits, train_set, task, cfg.batch_size, device,
                             runtime.autocast(device, dtype)))
    write_json(metrics, Path(cfg.out_dir) / "metrics.json")
    (Path(cfg.out_dir) / "last.pt").unlink()  # the run is complete: nothing left to resume
    print(f"wrote {cfg.out_dir}/best.pt and {cfg.out_dir}/metrics.json")


def main(argv):
    given = parse_options(FinetuneConfig, argv)
    cfg = build_config(FinetuneConfig, given)
    device = runtime.pick_device(cfg.device)
    if cfg.zero_shot:  # no training: the pretrained LM itself, prompted; out_dir gets zero_shot.json
        with run_folder.claim(cfg.out_dir):
            zero_shot(*load_pretrained(cfg, device), cfg, device)
    elif cfg.eval_file or cfg.predict:  # no training: the finetuned run in out_dir
        use_finetuned(*load_finetuned(cfg.out_dir, device), cfg, device, given.get("truncate"))
    else:  # one run per folder: out_dir's lock is held until the run ends
        with run_folder.claim(cfg.out_dir):
            finetune(cfg, given)


if __name__ == "__main__":
    run_main(main)
