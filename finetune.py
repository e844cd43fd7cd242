"""
Finetune a pretrained GPT to classify texts or tag words, evaluate it, and predict with it.

    python data/sms_spam/prepare.py                   # writes data/sms_spam/{train,val,test}.jsonl
    python finetune.py config/finetune_sms_spam.py    # train; out_dir gets best.pt and metrics.json
    python finetune.py config/finetune_sms_spam.py --device=cpu --max_iters=20 --eval_interval=10  # a quick CPU check
    python finetune.py config/finetune_sms_spam.py --train=lora --lora_rank=8 --head=mean
    python finetune.py --out_dir=out-sms-spam --eval_file=data/sms_spam/test.jsonl   # also writes out_dir/eval.json
    python finetune.py --out_dir=out-sms-spam --predict="WINNER!! Claim your prize, call now"
    python finetune.py --out_dir=out-sms-spam --predict=FILE:messages.txt        # one text per line
    python finetune.py config/finetune_sst2.py --zero_shot=True --shots=4         # no training: prompt scoring
    python finetune.py config/finetune_sms_spam.py --resume=True      # continue an interrupted run (out_dir/last.pt)

What happens, top to bottom: the pretrained GPT (a train.py run, GPT-2's weights, or a new model)
gets a head from heads.py; a train mode chooses which weights learn (all, the head only, the last
blocks, or LoRA adapters from lora.py); batches are padded on the right to their longest row; the
checkpoint that scores best on val is saved, then scored on val and test into metrics.json. Until the
run ends, out_dir/last.pt keeps what --resume needs (weights, optimizer, random state) after every
evaluation. With --members=N, N models are finetuned that way (seeds seed, seed+1, ...) and predict
together: their label probabilities are averaged (an Ensemble).
Text is tokenized with the pretrained model's own tokenizer (its checkpoint's "tokenizer" entry).

Every field of FinetuneConfig below is a --key=value option; config/finetune_*.py set several at once.
"""

import copy
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import runtime
from common.checkpoint import (check_new_run, check_resumable, load_checkpoint, load_gpt, model_from_checkpoint,
                               save_checkpoint)
from common.cli import UserError, build_config, parse_options, resumed_config, run_main
from data.conll2003 import prepare as conll2003
from data.sms_spam import prepare as sms_spam
from data.sst2 import prepare as sst2
from finetuning.heads import HEADS, align_word_labels, build_head, decode_iob2, word_predictions
from finetuning.lora import LORA_TARGETS, LoRALinear, apply_lora, merge_lora
from finetuning.metrics import classification_report, format_report, headline, score
from model import GPT, GPTConfig, masked_cross_entropy
from common.sources import numbered_lines
from common.tokenizer import gpt2_tokenizer, load_tokenizer
from train import optimizer_step

ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class Task:
    labels: tuple  # the class names, or for tagging the IOB2 tags: the data's prepare.py lists them
    per_token: bool  # True: one label per word (tagging); False: one per text
    read_raw: Callable  # path -> rows: reads a file in the data set's own format (its prepare.py)
    test_split: str | None  # the held-out split's file, <data_dir>/<test_split>.jsonl; None: not given
    template: str = ""  # zero-shot prompt; {text} is replaced by the example's text
    verbalizers: dict = field(default_factory=dict)  # label -> the word the LM is scored on after the prompt


TASKS = {
    "sms_spam": Task(
        labels=sms_spam.LABELS, per_token=False, read_raw=sms_spam.read_examples, test_split="test",
        template="Text message: {text}\nIs this message spam or ham? Answer:",
        verbalizers={"ham": " ham", "spam": " spam"},
    ),
    "sst2": Task(  # GLUE's dev split is the test: GLUE's own test split has no labels
        labels=sst2.LABELS, per_token=False, read_raw=sst2.read_examples, test_split="dev",
        template="Review: {text}\nIs this review positive or negative? Answer:",
        verbalizers={"negative": " negative", "positive": " positive"},
    ),
    "conll2003": Task(  # CoNLL's test split is not given here: score one with --eval_file
        labels=conll2003.LABELS, per_token=True, read_raw=conll2003.read_examples, test_split=None,
    ),
}


# ----------------------------------------------------------------------------- train modes

TRAIN_MODES = {}  # name -> function(classifier, cfg) that chooses which parameters learn


def train_mode(name):
    def add(fn):
        TRAIN_MODES[name] = fn
        return fn
    return add


@train_mode("full")
def train_everything(classifier, cfg):
    classifier.requires_grad_(True)


@train_mode("head")
def train_head_only(classifier, cfg):
    """A linear probe (for --head=mlp, a small MLP): how much the frozen features already know."""
    classifier.gpt.requires_grad_(False)


@train_mode("last_n")
def train_last_blocks(classifier, cfg):
    """The last last_n blocks, the final LayerNorm and the head; the embeddings and early blocks stay."""
    gpt = classifier.gpt
    if cfg.last_n > gpt.config.n_layer:
        raise UserError(f"--last_n={cfg.last_n} but the model has only {gpt.config.n_layer} blocks")
    gpt.requires_grad_(False)
    for block in gpt.transformer.h[-cfg.last_n:]:
        block.requires_grad_(True)
    gpt.transformer.ln_f.requires_grad_(True)


@train_mode("lora")
def train_lora(classifier, cfg):
    """Frozen body, trainable low-rank updates on the chosen Linear layers, and the head."""
    classifier.gpt.requires_grad_(False)
    apply_lora(classifier.gpt, cfg.lora_targets.split(","), cfg.lora_rank, cfg.lora_alpha)


# ----------------------------------------------------------------------------- configuration

@dataclass
class FinetuneConfig:
    # what to start from, and what to learn
    init_from: str = "out-shakespeare"  # a train.py run dir (its best.pt), a GPT-2 Hugging Face dir
    #                                     (config.json; "gpt2:DIR" says so explicitly), or "scratch"
    task: str = "sms_spam"  # one of TASKS: sms_spam, sst2, conll2003
    data_dir: str = ""  # folder with train.jsonl, val.jsonl and the test split; "" = data/<task>
    head: str = "auto"  # one of heads.HEADS; "auto" = last for classification, token for tagging
    train: str = "full"  # full, head (linear probe), last_n or lora
    last_n: int = 2  # --train=last_n: how many of the last blocks learn
    lora_rank: int = 8  # --train=lora: rank r of each update B @ A
    lora_alpha: float = 16.0  # --train=lora: the update is scaled by alpha / r
    lora_targets: str = ",".join(LORA_TARGETS)  # --train=lora: comma-separated Linear layers of each block
    # a new model's size, for --init_from=scratch (GPT-2's tokenizer)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    dropout: float = 0.0  # in the body while finetuning, whatever the pretrained run used
    members: int = 1  # finetune this many models, seeds seed, seed+1, ...; they predict together (Ensemble)
    # optimisation: AdamW, linear warmup, then linear decay to 0
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_iters: int = 20
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 turns clipping off
    batch_size: int = 16
    epochs: float = 3.0  # passes over the training set ...
    max_iters: int = 0  # ... unless this is positive: then exactly this many iterations
    max_train: int = 0  # use only the first max_train training examples (quick runs); 0 = all
    max_len: int = 128  # tokens kept of each example (the rest is cut off); at most the model's block_size
    eval_interval: int = 0  # score val every this many iterations; 0 = once an epoch
    log_interval: int = 20
    seed: int = 1337
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    out_dir: str = "out-finetune"  # where the finetuned run is written, or read by eval_file/predict
    resume: bool = False  # continue the interrupted run in out_dir (its last.pt) with its own options
    overwrite: bool = False  # a new run may replace the run already in out_dir (otherwise refused)
    # instead of training: use the finetuned run in out_dir
    eval_file: str = ""  # score this labelled file (.jsonl, or the task's raw format) -> out_dir/eval.json
    predict: str = ""  # label this text, or every line of FILE:path
    # instead of training: score each label's verbalizer with the pretrained LM (init_from)
    zero_shot: bool = False
    shots: int = 0  # labelled training examples put in the prompt before each question

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.head == "auto":
            self.head = "token" if TASKS[self.task].per_token else "last"
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        per_token = TASKS[self.task].per_token
        if HEADS[self.head].per_token != per_token:
            fitting = [name for name, head in HEADS.items() if head.per_token == per_token]
            raise ValueError(f"--head={self.head} does not fit {self.task}, which labels "
                             f"{'each word' if per_token else 'each text'}; choose from {', '.join(fitting)}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"unknown train mode {self.train!r}; choose one of {', '.join(TRAIN_MODES)}")
        if self.lora_rank < 1:
            raise ValueError(f"--lora_rank must be at least 1, got {self.lora_rank}")
        for name in ("lr", "lora_alpha"):  # 0 would train nothing, a negative value climb the loss
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be in [0, 2**32), got {self.seed}")
        GPTConfig(block_size=self.block_size, vocab_size=1, n_layer=self.n_layer, n_head=self.n_head,
                  n_embd=self.n_embd)  # a scratch model's sizes, checked by GPTConfig
        for target in self.lora_targets.split(","):
            if target not in LORA_TARGETS:
                raise ValueError(f"--lora_targets: no layer {target!r} in a GPT block; "
                                 f"choose from {','.join(LORA_TARGETS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        for name in ("last_n", "members", "batch_size", "max_len", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_iters", "max_train", "eval_interval", "shots", "warmup_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be 0 or more, got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_iters == 0:
            raise ValueError("--epochs must be positive (or set --max_iters)")


# ----------------------------------------------------------------------------- data

@dataclass
class Example:
    row: dict  # {"text", "label"} or, for tagging, {"tokens", "tags"}; no label or tags when predicting
    ids: list  # token ids, cut to max_len
    target: int | list | None  # label index; for tagging one per token (-1: not a word's first piece)
    first_pieces: list | None = None  # tagging: the position of each word's first token


def read_rows(path, task_name):
    """(where, row) pairs of a labelled file, where is "FILE:LINE" for error messages. A .jsonl file
    is read here; any other file is parsed by the task's data/<task>/prepare.py (Task.read_raw)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; run python data/{task_name}/prepare.py first, or check the path")
    if path.suffix != ".jsonl":
        rows = TASKS[task_name].read_raw(path)
        return [(f"{path}: example {i}", row) for i, row in enumerate(rows, start=1)]
    pairs = []
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        pairs.append((where, row))
    return pairs


def check_row(row, task, where):
    """A labelled row's columns, text and labels, with an error naming the file and line."""
    columns = ("tokens", "tags") if task.per_token else ("text", "label")
    for column in columns:
        if column not in row:
            raise UserError(f"{where}: missing column {column!r} (expected {', '.join(columns)})")
    if task.per_token:
        tokens, tags = row["tokens"], row["tags"]
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise UserError(f"{where}: tokens and tags must be lists of the same length")
        if not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
            raise UserError(f"{where}: tokens must be a non-empty list of non-empty strings")
        labels = tags
    else:
        if not isinstance(row["text"], str):
            raise UserError(f"{where}: text must be a string, got {type(row['text']).__name__}")
        if not row["text"].strip():
            raise UserError(f"{where}: empty text")
        labels = [row["label"]]
    for label in labels:
        if label not in task.labels:
            raise UserError(f"{where}: unknown label {label!r}; expected one of {', '.join(task.labels)}")


def encode_example(row, task, tokenizer, max_len, where):
    """Tokenize one row, cut to max_len tokens; a row without its label (a text to predict) gets
    target None."""
    labelled = ("tags" if task.per_token else "label") in row
    try:
        if task.per_token:
            labels = [task.labels.index(t) for t in row["tags"]] if labelled else [-1] * len(row["tokens"])
            ids, targets, first_pieces = align_word_labels(tokenizer, row["tokens"], labels)
            return Example(row, ids[:max_len], targets[:max_len] if labelled else None, first_pieces)
        ids = tokenizer.encode(row["text"])
    except UserError as e:  # a character-level tokenizer meeting a character it has never seen
        raise UserError(f"{where}: {e}; finetune a model whose tokenizer covers this text "
                        f"(a GPT-2 BPE model)") from None
    return Example(row, ids[:max_len], task.labels.index(row["label"]) if labelled else None)


def load_examples(path, task_name, tokenizer, max_len, limit=0):
    task = TASKS[task_name]
    pairs = read_rows(path, task_name)
    if not pairs:
        raise UserError(f"{path}: no examples in the file")
    if limit:
        pairs = pairs[:limit]
    examples = []
    for where, row in pairs:
        check_row(row, task, where)
        examples.append(encode_example(row, task, tokenizer, max_len, where))
    return examples


def split_path(data_dir, task_name, split):
    """<data_dir>/<split>.jsonl, where data_dir "" means data/<task>/ (written by its prepare.py)."""
    return Path(data_dir or ROOT / "data" / task_name) / f"{split}.jsonl"


def collate(examples, device):
    """Right-pad the rows to the longest one. -> idx (B, T) token ids, mask (B, T) True at real tokens,
    targets (B,) label indices or, for tagging, (B, T) with -1 at padding; None when unlabelled."""
    T = max(len(e.ids) for e in examples)
    idx = torch.zeros(len(examples), T, dtype=torch.long)  # the pad id is never read: any id will do
    mask = torch.zeros(len(examples), T, dtype=torch.bool)
    for i, e in enumerate(examples):
        idx[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
    targets = None
    if examples[0].target is not None:
        if isinstance(examples[0].target, list):
            targets = torch.full((len(examples), T), -1, dtype=torch.long)
            for i, e in enumerate(examples):
                targets[i, : len(e.target)] = torch.tensor(e.target)
        else:
            targets = torch.tensor([e.target for e in examples])
        targets = targets.to(device)
    return idx.to(device), mask.to(device), targets


def training_batches(examples, batch_size, seed):
    """Batches forever: a new shuffle of the training set every epoch."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]


# ----------------------------------------------------------------------------- the model

class Classifier(nn.Module):
    """A GPT body and a head reading its final hidden states."""

    def __init__(self, gpt, head):
        super().__init__()
        self.gpt = gpt
        self.head = head

    def forward(self, idx, mask):
        return self.head(self.gpt.hidden_states(idx), mask)  # (B, T, C) -> (B, L) or (B, T, L)


class Ensemble(nn.Module):
    """Classifiers finetuned from the same start with different seeds, predicting together: their label
    probabilities are averaged. Each one's mistakes partly differ, so the average makes fewer."""

    def __init__(self, classifiers):
        super().__init__()
        self.members = nn.ModuleList(classifiers)

    def forward(self, idx, mask):
        probs = torch.stack([m(idx, mask).float().softmax(-1) for m in self.members])  # (M, B, L) or (M, B, T, L)
        return probs.mean(0).log()  # logits whose softmax is the mean probability


def load_pretrained(cfg):
    """The GPT to start from and its tokenizer (checkpoint.load_gpt), or a new GPT with GPT-2's tokenizer."""
    if cfg.init_from == "scratch":
        tokenizer = gpt2_tokenizer()
        gpt = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size, n_layer=cfg.n_layer,
                            n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout))
        return gpt, tokenizer
    return load_gpt(cfg.init_from, dropout=cfg.dropout)


def count_parameters(module):
    """(trainable, total) numbers of parameters; a tied weight is counted once."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def finetuned_checkpoint(classifier, tokenizer, cfg, iter_num, max_iters, val_report):
    """A dict that checkpoint.load_model reads as a plain GPT (LoRA updates merged into the weights),
    plus the head and the task, which load_finetuned adds back."""
    trainable, total = count_parameters(classifier)  # before LoRA is merged away
    gpt = classifier.gpt
    if any(isinstance(m, LoRALinear) for m in gpt.modules()):
        gpt = merge_lora(copy.deepcopy(gpt))
    return {
        "model": gpt.state_dict(),
        "model_args": asdict(gpt.config),
        "tokenizer": tokenizer.meta,
        "head": classifier.head.state_dict(),
        "head_name": cfg.head,
        "task": cfg.task,
        "labels": list(TASKS[cfg.task].labels),
        "config": asdict(cfg),
        "iter_num": iter_num,
        "max_iters": max_iters,
        "trainable_params": trainable,
        "total_params": total,
        "val": val_report,
    }


def save_finetuned(members, out_dir):
    """out_dir/best.pt: a single run's checkpoint dict as it is, several members' as {"members": [...]}."""
    save_checkpoint(members[0] if len(members) == 1 else {"members": members}, Path(out_dir) / "best.pt")


def load_finetuned(out_dir):
    """The Classifier (an Ensemble for a --members run), its tokenizer and the list of checkpoint dicts,
    one per member, saved by a finetune.py run in out_dir."""
    path = Path(out_dir) / "best.pt"
    ckpt = load_checkpoint(path)
    members = ckpt.get("members", [ckpt])
    if "head" not in members[0]:
        raise UserError(f"{path} is a pretrained model, not a finetuned one; finetune it first "
                        f"(python finetune.py --init_from={out_dir} ...)")
    classifiers = []
    for member in members:
        gpt = model_from_checkpoint(member)
        head = build_head(member["head_name"], gpt.config.n_embd, len(member["labels"]))
        head.load_state_dict(member["head"])
        classifiers.append(Classifier(gpt, head))
    classifier = classifiers[0] if len(classifiers) == 1 else Ensemble(classifiers)
    return classifier, load_tokenizer(members[0]["tokenizer"]), members


# ----------------------------------------------------------------------------- predicting and scoring (metrics.py)

@torch.no_grad()
def predict_probs(classifier, examples, batch_size, device, ctx):
    """Label probabilities of each example: (L,) per text, or (n_tokens, L) for tagging."""
    classifier.eval()
    # batches of similar lengths pad less; padding never changes a result, so the order is free
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    probs = [None] * len(examples)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        idx, mask, _ = collate([examples[i] for i in chunk], device)
        with ctx:
            logits = classifier(idx, mask)
        p = F.softmax(logits.float(), dim=-1).cpu()  # (B, L) or (B, T, L)
        for row, i in enumerate(chunk):
            probs[i] = p[row, : len(examples[i].ids)] if p.dim() == 3 else p[row]
    return probs


def predicted_labels(probs, examples, labels):
    """The likeliest label of each text, or the likeliest valid IOB2 tag list of each sentence."""
    outside = F.one_hot(torch.tensor(0), len(labels)).float()  # (L,) certainly "O" (labels[0])
    out = []
    for p, e in zip(probs, examples):
        if e.first_pieces is None:
            out.append(labels[p.argmax().item()])
        else:  # a word cut off by max_len is outside every entity
            word_probs = torch.stack(word_predictions(list(p), e.first_pieces, outside))  # (n_words, L)
            out.append([labels[i] for i in decode_iob2(word_probs.clamp_min(1e-30).log(), labels)])
    return out


def gold_labels(examples):
    return [e.row["tags"] if "tags" in e.row else e.row["label"] for e in examples]


def evaluate(classifier, examples, labels, batch_size, device, ctx):
    probs = predict_probs(classifier, examples, batch_size, device, ctx)
    return score(gold_labels(examples), predicted_labels(probs, examples, labels), labels)


def most_frequent_tag_baseline(train_examples, examples, labels):
    """The classic NER baseline: every word gets the tag it had most often in training; unseen words O."""
    seen = {}
    for e in train_examples:
        for word, tag in zip(e.row["tokens"], e.row["tags"]):
            seen.setdefault(word, Counter())[tag] += 1
    predicted = [[seen[w].most_common(1)[0][0] if w in seen else "O" for w in e.row["tokens"]] for e in examples]
    return score(gold_labels(examples), predicted, labels)


def write_json(obj, path):
    Path(path).write_text(json.dumps(obj, indent=1) + "\n")


# ----------------------------------------------------------------------------- training

def get_lr(it, cfg, max_iters):
    """Linear warmup for warmup_iters, then linear decay to 0 at max_iters (as BERT's finetuning)."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    return cfg.lr * max(0.0, (max_iters - it) / max(1, max_iters - cfg.warmup_iters))


def train_step(classifier, optimizer, scaler, batch, grad_clip, device, ctx):
    """Forward, backward and one optimizer step on a batch of examples; returns the loss."""
    idx, mask, targets = collate(batch, device)
    with ctx:
        logits = classifier(idx, mask)
    loss = masked_cross_entropy(logits.float(), targets)  # targets of -1 (padding, later pieces) skipped
    scaler.scale(loss).backward()
    optimizer_step(classifier, optimizer, scaler, grad_clip)
    return loss


def train_classifier(gpt, tokenizer, train_set, val_set, cfg, device, dtype, done, started, resume=None):
    """Finetune one classifier on gpt. Each time it scores best on val so far, out_dir/best.pt is
    rewritten with it after the members already done; after every evaluation out_dir/last.pt holds
    what it takes to continue from there. resume: that last.pt, when this member was interrupted.
    started: when the run began (time.time()), so the log shows the whole run's time. Returns the
    member's best checkpoint dict."""
    torch.manual_seed(cfg.seed)
    task = TASKS[cfg.task]
    ctx = runtime.autocast(device, dtype)
    classifier = Classifier(gpt, build_head(cfg.head, gpt.config.n_embd, len(task.labels)))
    TRAIN_MODES[cfg.train](classifier, cfg)
    trainable, total = count_parameters(classifier)
    print(f"--train={cfg.train} --head={cfg.head}: {trainable:,} trainable of {total:,} parameters "
          f"({100 * trainable / total:.2f}%)")
    classifier.to(device)

    params = [p for p in classifier.parameters() if p.requires_grad]  # AdamW skips frozen ones
    # the fused kernel updates all parameters in a few passes: ~10x faster on a CPU than the default
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.split(":")[0] in ("cuda", "cpu"))
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")  # float16 gradients underflow without scaling
    batches_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    max_iters = cfg.max_iters or math.ceil(cfg.epochs * batches_per_epoch)
    eval_interval = cfg.eval_interval or batches_per_epoch

    best_ckpt, start = None, 0
    batches = training_batches(train_set, cfg.batch_size, cfg.seed)
    if resume is not None:
        classifier.load_state_dict(resume["classifier"])
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        best_ckpt, start = resume["best"], resume["iter_num"]
        for _ in range(start):  # the batches already trained on
            next(batches)
        runtime.set_rng_state(resume["rng"])
        print(f"resuming at iteration {start} of {max_iters}")
    for it in range(start, max_iters):
        classifier.train()
        lr = get_lr(it, cfg, max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(classifier, optimizer, scaler, next(batches), cfg.grad_clip, device, ctx)
        if it % cfg.log_interval == 0:
            print(f"iter {it}/{max_iters}: loss {loss.item():.4f}, lr {lr:.2e}, {time.time() - started:.0f}s")
        if (it + 1) % eval_interval == 0 or it + 1 == max_iters:
            report = evaluate(classifier, val_set, task.labels, cfg.batch_size, device, ctx)
            print(f"iter {it + 1}: val accuracy {report['accuracy']:.4f}, headline {headline(report):.4f}")
            if best_ckpt is None or headline(report) > headline(best_ckpt["val"]):
                # a copy: the weights in the dict would otherwise go on training
                best_ckpt = copy.deepcopy(finetuned_checkpoint(classifier, tokenizer, cfg, it + 1, max_iters, report))
                save_finetuned(done + [best_ckpt], cfg.out_dir)
            save_checkpoint({"member": len(done), "iter_num": it + 1, "best": best_ckpt,
                             "classifier": classifier.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "rng": runtime.rng_state(),
                             "config": asdict(cfg), "train_seconds": time.time() - started},
                            Path(cfg.out_dir) / "last.pt")
    return best_ckpt


# the options a resumed run takes from the command line; the rest must be the interrupted run's own
RESUME_MAY_CHANGE = ("resume", "out_dir", "overwrite", "device", "dtype", "log_interval")


def load_resume_point(cfg, given):
    """The interrupted run in out_dir: its own options (of which the options given on the command line
    may change only RESUME_MAY_CHANGE), its last.pt, and the members it had finished (best.pt begins
    with them). A resumed run that trained differently would be neither that run nor a new one."""
    path = Path(cfg.out_dir) / "last.pt"
    if not path.is_file():
        raise UserError(f"--resume: no interrupted run in {cfg.out_dir} (no last.pt; a finished run "
                        f"deletes it); start a new run without --resume")
    last = load_checkpoint(path)
    check_resumable(last, path, "finetune.py")
    saved = {**last["config"], "seed": last["config"]["seed"] - last["member"]}  # its member's seed, the run's
    cfg = resumed_config(FinetuneConfig, saved, given, RESUME_MAY_CHANGE,
                         f"--resume: the interrupted run in {cfg.out_dir}")
    finished = load_checkpoint(Path(cfg.out_dir) / "best.pt")
    return cfg, last, finished.get("members", [finished])[: last["member"]]


def finetune(cfg, given):
    """Finetune as cfg says; given (the options on the command line) is checked against a resumed run's."""
    last, members = None, []
    if cfg.resume:
        cfg, last, members = load_resume_point(cfg, given)
    else:
        check_new_run(cfg.out_dir, "finetune.py", cfg.overwrite)
    task = TASKS[cfg.task]
    torch.manual_seed(cfg.seed)  # the weights of a scratch model; each member then seeds its own head and batches
    device = runtime.pick_device(cfg.device)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    ctx = runtime.autocast(device, dtype)

    gpt, tokenizer = load_pretrained(cfg)
    max_len = min(cfg.max_len, gpt.config.block_size)
    train_path = split_path(cfg.data_dir, cfg.task, "train")
    train_set = load_examples(train_path, cfg.task, tokenizer, max_len, cfg.max_train)
    val_set = load_examples(split_path(cfg.data_dir, cfg.task, "val"), cfg.task, tokenizer, max_len)
    print(f"{len(train_set)} training and {len(val_set)} validation examples of {cfg.task}")

    started = time.time() - (last["train_seconds"] if last else 0.0)
    for k in range(len(members), cfg.members):  # each member starts from the same pretrained weights
        member_cfg = replace(cfg, seed=cfg.seed + k)
        if cfg.members > 1:
            print(f"--- member {k + 1} of {cfg.members}, seed {member_cfg.seed}")
        members.append(train_classifier(copy.deepcopy(gpt), tokenizer, train_set, val_set, member_cfg,
                                        device, dtype, members, started, last))
        last = None  # only the member that was interrupted resumes
    train_seconds = time.time() - started

    # score the saved checkpoint, just as --eval_file will: the best on val, LoRA merged
    classifier, _, members = load_finetuned(cfg.out_dir)
    classifier.to(device)
    best_iters = [m["iter_num"] for m in members]
    metrics = {"task": cfg.task, "init_from": cfg.init_from, "head": cfg.head, "train": cfg.train,
               "trainable_params": sum(m["trainable_params"] for m in members),
               "total_params": sum(m["total_params"] for m in members), "iters": members[0]["max_iters"],
               "best_iter": best_iters[0] if len(members) == 1 else best_iters,
               "train_seconds": round(train_seconds, 1)}
    splits = {"val": val_set}
    if task.test_split:
        test_path = split_path(cfg.data_dir, cfg.task, task.test_split)
        splits["test"] = load_examples(test_path, cfg.task, tokenizer, max_len)
    for name, examples in splits.items():
        metrics[name] = evaluate(classifier, examples, task.labels, cfg.batch_size, device, ctx)
        print(f"--- {name}\n{format_report(metrics[name])}")
        if len(members) > 1:  # what the ensemble adds: each member scored alone
            alone = [evaluate(m, examples, task.labels, cfg.batch_size, device, ctx) for m in classifier.members]
            metrics[f"{name}_members"] = alone
            print("each member alone: " + ", ".join(f"accuracy {r['accuracy']:.4f} headline {headline(r):.4f}"
                                                    for r in alone))
        if task.per_token:
            metrics[f"{name}_baseline"] = most_frequent_tag_baseline(train_set, examples, task.labels)
            print(f"most-frequent-tag baseline: entity F1 {headline(metrics[f'{name}_baseline']):.4f}")
    write_json(metrics, Path(cfg.out_dir) / "metrics.json")
    (Path(cfg.out_dir) / "last.pt").unlink()  # the run is complete: nothing left to resume
    print(f"wrote {cfg.out_dir}/best.pt and {cfg.out_dir}/metrics.json")


# ----------------------------------------------------------------------------- using a finetuned run

def texts_to_predict(spec):
    """--predict=TEXT, or FILE:path for every non-empty line of a file: (where, text) pairs."""
    if not spec.startswith("FILE:"):
        return [("--predict", spec)]
    path = spec.removeprefix("FILE:")
    return [(f"{path}:{lineno}", line) for lineno, line in numbered_lines(path) if line.strip()]


def use_finetuned(cfg):
    """--eval_file and --predict with the finetuned run in out_dir."""
    device = runtime.pick_device(cfg.device)
    ctx = runtime.autocast(device, runtime.pick_dtype(cfg.dtype, device))
    classifier, tokenizer, members = load_finetuned(cfg.out_dir)
    classifier.to(device)
    run = members[0]["config"]  # the finetuning run's settings
    task, labels = TASKS[run["task"]], members[0]["labels"]
    max_len = min(run["max_len"], members[0]["model_args"]["block_size"])
    if cfg.eval_file:
        examples = load_examples(cfg.eval_file, run["task"], tokenizer, max_len)
        report = evaluate(classifier, examples, labels, cfg.batch_size, device, ctx)
        report["eval_file"] = cfg.eval_file
        print(f"--- {cfg.eval_file}\n{format_report(report)}")
        train_path = split_path(run["data_dir"], run["task"], "train")
        if task.per_token and train_path.is_file():  # the baseline needs the run's training words
            train_set = load_examples(train_path, run["task"], tokenizer, max_len)
            report["baseline"] = most_frequent_tag_baseline(train_set, examples, labels)
            print(f"most-frequent-tag baseline: entity F1 {headline(report['baseline']):.4f}")
        write_json(report, Path(cfg.out_dir) / "eval.json")
        print(f"wrote {cfg.out_dir}/eval.json")
    if cfg.predict:
        examples = []
        for where, text in texts_to_predict(cfg.predict):
            row = {"tokens": text.split()} if task.per_token else {"text": text}
            if not text.strip():
                raise UserError(f"{where}: empty text")
            examples.append(encode_example(row, task, tokenizer, max_len, where))
        probs = predict_probs(classifier, examples, cfg.batch_size, device, ctx)
        for p, e, predicted in zip(probs, examples, predicted_labels(probs, examples, labels)):
            if task.per_token:
                print(" ".join(f"{word}/{tag}" for word, tag in zip(e.row["tokens"], predicted)))
            else:
                print(f"{predicted}\t{p.max().item():.3f}\t{e.row['text']}")


# ----------------------------------------------------------------------------- zero- and few-shot

@torch.no_grad()
def continuation_logprobs(gpt, contexts, continuations, batch_size, device):
    """log P(continuation | context) under the LM, summed over the continuation's tokens, for each
    pair of token-id lists. A context too long for the block loses its oldest tokens."""
    block = gpt.config.block_size
    scores = []
    for start in range(0, len(contexts), batch_size):
        rows = []
        pairs = zip(contexts[start : start + batch_size], continuations[start : start + batch_size])
        for context, continuation in pairs:
            seq = (context + continuation)[-(block + 1):]
            rows.append(Example({}, seq[:-1], [-1] * (len(seq) - 1 - len(continuation)) + continuation))
        idx, mask, targets = collate(rows, device)  # targets (B, T): the continuation's tokens, else -1
        hidden = gpt.hidden_states(idx)  # (B, T, C)
        scored = targets != -1
        logp = F.log_softmax(gpt.lm_head(hidden[scored]).float(), dim=-1)  # (N, V): only the scored positions
        token_logp = logp.gather(1, targets[scored].unsqueeze(1)).squeeze(1)  # (N,)
        row_of = torch.arange(len(rows), device=device).unsqueeze(1).expand_as(targets)[scored]  # (N,)
        scores += torch.zeros(len(rows), device=device).index_add_(0, row_of, token_logp).tolist()
    return scores


def few_shot_prefix(task, train_rows, shots, seed):
    """shots solved training examples, one after another, the labels taking turns so that the
    prompt shows every label (a random draw from SMS spam would mostly show ham)."""
    rng = random.Random(seed)
    per_label = math.ceil(shots / len(task.labels))
    picks = {}
    for label in task.labels:
        rows = [row for row in train_rows if row["label"] == label]
        if len(rows) < per_label:
            raise UserError(f"--shots={shots} needs {per_label} training examples of {label!r}, found {len(rows)}")
        picks[label] = rng.sample(rows, per_label)
    demos = [picks[task.labels[i % len(task.labels)]][i // len(task.labels)] for i in range(shots)]
    return "".join(task.template.format(text=r["text"]) + task.verbalizers[r["label"]] + "\n\n" for r in demos)


def zero_shot(cfg):
    """Classify with no training: the label whose verbalizer the LM finds likeliest after the prompt,
    which holds cfg.shots solved examples and then the text to classify."""
    task = TASKS[cfg.task]
    if not task.verbalizers:
        raise UserError(f"--zero_shot works for text classification; {cfg.task} has no verbalizers")
    device = runtime.pick_device(cfg.device)
    gpt, tokenizer = load_pretrained(cfg)
    gpt.to(device).eval()
    prefix = ""
    if cfg.shots:
        train_pairs = read_rows(split_path(cfg.data_dir, cfg.task, "train"), cfg.task)
        for where, row in train_pairs:
            check_row(row, task, where)
        prefix = few_shot_prefix(task, [row for _, row in train_pairs], cfg.shots, cfg.seed)
    files = {"eval": cfg.eval_file} if cfg.eval_file else {
        "val": split_path(cfg.data_dir, cfg.task, "val"), "test": split_path(cfg.data_dir, cfg.task, task.test_split)}
    results = {"task": cfg.task, "init_from": cfg.init_from, "shots": cfg.shots, "template": task.template}
    verbalizers = [tokenizer.encode(task.verbalizers[label]) for label in task.labels]
    for name, path in files.items():
        examples = load_examples(path, cfg.task, tokenizer, max_len=None)  # checks the rows, and the tokenizer
        contexts = [tokenizer.encode(prefix + task.template.format(text=e.row["text"])) for e in examples]
        scores = continuation_logprobs(gpt, [c for c in contexts for _ in verbalizers],
                                       verbalizers * len(examples), cfg.batch_size, device)
        scores = torch.tensor(scores).view(len(examples), len(task.labels))  # (N, L)
        predicted = [task.labels[i] for i in scores.argmax(dim=1).tolist()]
        results[name] = classification_report(gold_labels(examples), predicted, task.labels)
        print(f"--- {name}, {cfg.shots}-shot\n{format_report(results[name])}")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    write_json(results, Path(cfg.out_dir) / "zero_shot.json")
    print(f"wrote {cfg.out_dir}/zero_shot.json")


def main(argv):
    given = parse_options(FinetuneConfig, argv)
    cfg = build_config(FinetuneConfig, given)
    if cfg.zero_shot:
        zero_shot(cfg)
    elif cfg.eval_file or cfg.predict:
        use_finetuned(cfg)
    else:
        finetune(cfg, given)


if __name__ == "__main__":
    run_main(main)
