"""
The SMS spam task's training messages as a GPT-2 BPE language-modelling corpus, for pretraining a
small model on the kind of text it will classify (digits, prices, URLs, "txt", "FREE") before
finetuning it with finetune.py. Only the train split's texts are used, without their labels: the
val and test messages stay unseen. Each message ends with <|endoftext|>; the last 10% of the
messages are the LM's val split. Writes train.bin, val.bin and meta.json ({"kind": "gpt2"}) here.

    python data/sms_spam_lm/prepare.py          # reads data/sms_spam/train.jsonl, making it if missing
    python train.py --dataset=sms_spam_lm ...   # or let train.py run this script itself
    python data/sms_spam_lm/prepare.py --input=path/to/train.jsonl --out_dir=somewhere/else
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cli import UserError, parse_config, run_main
from data.shakespeare_char.prepare import write_dataset
from data.sms_spam import prepare as sms_spam
from sources import PrepareArgs, read_jsonl
from tokenizer import gpt2_tokenizer

HERE = Path(__file__).resolve().parent
TRAIN_FRACTION = 0.9  # of the messages; the rest is the LM's val split


def read_messages(input_path):
    """The texts of the SMS task's train split (data/sms_spam/train.jsonl, prepared if missing)."""
    path = Path(input_path) if input_path else sms_spam.HERE / "train.jsonl"
    if not input_path and not path.is_file():
        sms_spam.prepare()
    if not path.is_file():
        raise UserError(f"{path}: no such file; run python data/sms_spam/prepare.py first")
    texts = [row["text"] for row in read_jsonl(path)]
    if len(texts) < 2:
        raise UserError(f"{path}: {len(texts)} messages are too few to split into train and val")
    print(f"{path}: {len(texts):,} messages")
    return texts


def encode_messages(tokenizer, texts):
    """One token stream: each message's tokens, then <|endoftext|> (a document boundary)."""
    ids = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        ids.append(tokenizer.eot_token)
    return ids


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = read_messages(input_path)
    n = max(1, int(len(texts) * TRAIN_FRACTION))  # the split is already shuffled: a cut is a random sample
    tokenizer = gpt2_tokenizer()
    write_dataset(tokenizer, encode_messages(tokenizer, texts[:n]), encode_messages(tokenizer, texts[n:]), out_dir)


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
