"""
The finetuning tasks, and their data on its way to the model: labelled rows (a .jsonl file, or the
data set's own format) -> checked rows -> Examples (token ids and targets) -> padded batches.

    from finetuning.tasks import TASKS, load_examples, split_path
    examples = load_examples(split_path("", "sst2", "val"), "sst2", tokenizer, max_len=128)

A new task is one entry in TASKS, a reader of its raw format with its labels in data/formats.py, and
a data/<task>/prepare.py that writes train.jsonl, val.jsonl and its test split.
"""

import functools
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.cli import UserError
from common.runtime import step_seed
from common.files import numbered_lines
from data import formats
from finetuning.tagging import align_word_labels

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Task:
    labels: tuple  # the class names, or for tagging the IOB2 tags: data/formats.py lists them
    per_token: bool  # True: one label per word (tagging); False: one per text
    read_raw: Callable  # path -> rows: reads a file in the data set's own format (data/formats.py)
    test_split: str | None  # the held-out split's file, <data_dir>/<test_split>.jsonl; None: not given
    template: str = ""  # zero-shot prompt; {text} is replaced by the example's text
    verbalizers: dict = field(default_factory=dict)  # label -> the word the LM is scored on after the prompt


TASKS = {
    "sms_spam": Task(
        labels=formats.SMS_SPAM_LABELS, per_token=False, read_raw=formats.read_sms_spam, test_split="test",
        template="Text message: {text}\nIs this message spam or ham? Answer:",
        verbalizers={"ham": " ham", "spam": " spam"},
    ),
    "sst2": Task(  # GLUE's dev split is the test: GLUE's own test split has no labels
        labels=formats.SST2_LABELS, per_token=False, read_raw=formats.read_sst2, test_split="dev",
        template="Review: {text}\nIs this review positive or negative? Answer:",
        verbalizers={"negative": " negative", "positive": " positive"},
    ),
    "imdb": Task(  # the official 25,000 test reviews; val is 10% of the official train
        labels=formats.IMDB_LABELS, per_token=False, read_raw=formats.read_imdb, test_split="test",
        template="Review: {text}\nIs this review positive or negative? Answer:",
        verbalizers={"negative": " negative", "positive": " positive"},
    ),
    "conll2003": Task(  # test: documents held out of the training file; CoNLL's own test split is not given here
        labels=formats.CONLL2003_LABELS, per_token=True, read_raw=formats.read_conll2003, test_split="test",
    ),
}



# ----------------------------------------------------------------------------- rows and examples

@dataclass
class Example:
    row: dict  # {"text", "label"} or, for tagging, {"tokens", "tags"}; no label or tags when predicting
    ids: list  # token ids, cut to max_len
    target: int | list | None  # label index; for tagging one per token (-1: not a word's first piece)
    first_pieces: list | None = None  # tagging: the position of each word's first token
    chunk: int = 0  # --truncate=chunks: which window of its text (0, 1, ...); the text's others follow it


def read_rows(path, task_name):
    """(where, row) pairs of a labelled file, where is "FILE:LINE" for error messages. A .jsonl file
    is read here; any other file is parsed by the task's reader in data/formats.py (Task.read_raw)."""
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
        except RecursionError:  # nested deeper than the parser can follow (RecursionError is no JSONDecodeError)
            raise UserError(f"{where}: JSON nested too deeply to be a row") from None
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


TRUNCATIONS = ("head", "tail", "head_tail", "chunks")
# how a tagger reads a sentence: left to right (the model's own way), the sentence twice with tags on the
# second copy (read_twice), or with the causal mask lifted (model.CausalSelfAttention.attend's key_mask)
READINGS = ("causal", "twice", "both_ways")


def cut(ids, max_len, truncate):
    """The pieces of a text's tokens that the model reads, each at most max_len long. One piece: the
    first tokens (head), the last (tail), or a quarter from the start and the rest from the end
    (head_tail: a review's opening and its verdict; Sun et al. 2019 found it best for BERT on IMDb,
    https://arxiv.org/abs/1905.05583). Or every token (chunks): windows of max_len one after another,
    the last one ending at the text's end (so it overlaps the one before it, and is never short)."""
    if max_len is None or len(ids) <= max_len:  # None: keep every token
        return [ids]
    if truncate == "chunks":
        starts = list(range(0, len(ids) - max_len, max_len)) + [len(ids) - max_len]
        return [ids[s : s + max_len] for s in starts]
    if truncate == "tail":
        return [ids[-max_len:]]
    if truncate == "head_tail":
        head = max_len // 4
        return [ids[:head] + ids[len(ids) - (max_len - head):]]
    return [ids[:max_len]]


def encode_row(row, task, tokenizer, max_len, where, truncate="head", reading="causal"):
    """Tokenize one row into its Examples: one, cut to max_len tokens (a tagged sentence keeps its head,
    or read twice as reading says; a text as truncate says), or for --truncate=chunks one per window of
    a long text, each with the text's label. A row without its label (a text to predict) gets target None."""
    labelled = ("tags" if task.per_token else "label") in row
    try:
        if task.per_token:
            labels = [task.labels.index(t) for t in row["tags"]] if labelled else [-1] * len(row["tokens"])
            ids, targets, first_pieces = align_word_labels(tokenizer, row["tokens"], labels)
            if reading == "twice":  # the copies apart: the end-of-text token, or for characters a space
                separator = [tokenizer.eot_token] if hasattr(tokenizer, "eot_token") else tokenizer.encode(" ")
                ids, targets, first_pieces = read_twice(ids, targets, first_pieces, separator, max_len)
            return [Example(row, ids[:max_len], targets[:max_len] if labelled else None, first_pieces)]
        ids = tokenizer.encode(row["text"])
    except UserError as e:  # a character-level tokenizer meeting a character it has never seen
        raise UserError(f"{where}: {e}; finetune a model whose tokenizer covers this text "
                        f"(a GPT-2 BPE model)") from None
    target = task.labels.index(row["label"]) if labelled else None
    return [Example(row, piece, target, chunk=k) for k, piece in enumerate(cut(ids, max_len, truncate))]


def read_twice(ids, targets, first_pieces, separator, max_len):
    """A sentence's tokens, a separator, then the sentence again, tagged on the second copy: there each
    word has already read the whole sentence, the words after it included, though the model reads left
    to right. Where both copies don't fit in max_len, the first keeps its end."""
    room = max(0, min(len(ids), max_len - len(separator) - len(ids)))  # of the first copy
    offset = room + len(separator)  # where the second copy starts
    first = ids[len(ids) - room:]
    return (first + separator + ids, [-1] * offset + targets, [p + offset for p in first_pieces])


def texts(examples):
    """The rows behind examples, each once (a text cut into chunks is several examples)."""
    return [e.row for e in examples if e.chunk == 0]


def load_examples(path, task_name, tokenizer, max_len, limit=0, truncate="head", reading="causal"):
    """The Examples of a labelled file's first limit rows (0: all), in its order: a text cut into
    chunks is several Examples, one after another. truncate and reading: see encode_row."""
    task = TASKS[task_name]
    pairs = read_rows(path, task_name)
    if not pairs:
        raise UserError(f"{path}: no examples in the file")
    if limit:
        pairs = pairs[:limit]
    examples = []
    for where, row in pairs:
        check_row(row, task, where)
        examples.extend(encode_row(row, task, tokenizer, max_len, where, truncate, reading))
    return examples


def max_tokens(config, block_size):
    """Tokens kept of each example (the rest is cut off): the run's max_len, at most what the
    model's block_size leaves after a --train=prefix run's learned positions. config: the run's options."""
    prefix = config["prefix_len"] if config["train"] == "prefix" else 0
    return min(config["max_len"], block_size - prefix)


def split_path(data_dir, task_name, split):
    """<data_dir>/<split>.jsonl, where data_dir "" means data/<task>/ (written by its prepare.py)."""
    return Path(data_dir or ROOT / "data" / task_name) / f"{split}.jsonl"



# ----------------------------------------------------------------------------- batches

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


def training_batch(examples, batch_size, seed, it):
    """Batch number `it` of training: the examples of one epoch come in a new shuffle each epoch, and that
    shuffle is made from (seed, epoch) alone, so any batch can be found without drawing the ones before
    it (a resumed run goes on with the very batch it would have had)."""
    per_epoch = math.ceil(len(examples) / batch_size)
    epoch, k = divmod(it, per_epoch)
    order = epoch_order(len(examples), seed, epoch)
    return [examples[i] for i in order[k * batch_size : (k + 1) * batch_size]]


@functools.lru_cache(maxsize=1)  # an epoch's batches all use the same order: make it once
def epoch_order(n, seed, epoch):
    order = list(range(n))
    random.Random(step_seed(seed, epoch)).shuffle(order)
    return order
