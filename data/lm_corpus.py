"""
A finetuning task's training texts as a GPT-2 BPE language-modelling corpus, for pretraining a small
model with train.py on the kind of text it will later classify. Only the task's train split is read,
without labels: its val and test texts stay unseen. Each text ends with <|endoftext|> (a document
boundary); the last 10% of the texts are the LM's val split. data/sms_spam_lm and data/sst2_lm use it.
"""

from pathlib import Path

from common.cli import UserError
from data.shakespeare_char.prepare import write_dataset
from common.sources import read_jsonl
from common.tokenizer import gpt2_tokenizer

TRAIN_FRACTION = 0.9  # of the texts; the rest is the LM's val split


def read_train_texts(task, input_path):
    """The texts of a task's train split: input_path, else task.HERE/train.jsonl (prepared if missing).
    task is the task's prepare module, e.g. data.sms_spam.prepare."""
    path = Path(input_path) if input_path else task.HERE / "train.jsonl"
    if not input_path and not path.is_file():
        task.prepare()
    if not path.is_file():
        raise UserError(f"{path}: no such file; run python {task.__name__.replace('.', '/')}.py first")
    texts = [row["text"] for row in read_jsonl(path)]
    if len(texts) < 2:
        raise UserError(f"{path}: {len(texts)} texts are too few to split into train and val")
    print(f"{path}: {len(texts):,} texts")
    return texts


def encode_documents(tokenizer, texts):
    """One token stream: each text's tokens, then <|endoftext|>."""
    ids = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        ids.append(tokenizer.eot_token)
    return ids


def prepare(task, input_path, out_dir):
    out_dir = Path(out_dir)
    texts = read_train_texts(task, input_path)
    n = max(1, int(len(texts) * TRAIN_FRACTION))  # the task's split is shuffled: a cut is a random sample
    tokenizer = gpt2_tokenizer()
    write_dataset(tokenizer, encode_documents(tokenizer, texts[:n]), encode_documents(tokenizer, texts[n:]), out_dir)
