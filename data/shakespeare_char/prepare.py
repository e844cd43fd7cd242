"""
Tiny Shakespeare at the character level: one token per distinct character, the first 90% of the
text for training and the last 10% for validation. Writes train.bin and val.bin (uint16 token ids)
and meta.json (the alphabet) beside this file.

    python data/shakespeare_char/prepare.py
    python data/shakespeare_char/prepare.py --input=path/to/input.txt --out_dir=somewhere/else
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import UserError, parse_config, run_main
from common.sources import PrepareArgs, find_source, make_out_dir, read_text, write_json, write_tokens
from common.tokenizer import CharTokenizer

HERE = Path(__file__).resolve().parent
RELPATH = "tinyshakespeare/input.txt"
URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9


def read_corpus(input_path, out_dir):
    path = find_source(RELPATH, URL, out_dir, input_path)
    text = read_text(path)
    if not text:
        raise UserError(f"{path} is empty: there is nothing to train on")
    print(f"{path}: {len(text):,} characters")
    return text


def split_corpus(text):
    """A cut rather than a shuffle: validation text comes from later plays, not from between
    training lines it would share whole sentences with."""
    n = int(len(text) * TRAIN_FRACTION)
    if n == 0 or n == len(text):
        raise UserError(f"a corpus of {len(text)} characters is too short to split into train and val")
    return text[:n], text[n:]


def write_dataset(tokenizer, train_ids, val_ids, out_dir):
    """train.bin goes last: train.py prepares the data when train.bin is missing, so its presence
    means the other files are complete too."""
    make_out_dir(out_dir)
    write_json(tokenizer.meta, out_dir / "meta.json")
    write_tokens(val_ids, out_dir / "val.bin")
    write_tokens(train_ids, out_dir / "train.bin")
    print(f"vocab_size {tokenizer.vocab_size:,}; train {len(train_ids):,} tokens, "
          f"val {len(val_ids):,} tokens; written to {out_dir}")


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    text = read_corpus(input_path, out_dir)
    tokenizer = CharTokenizer.from_text(text)
    train, val = split_corpus(text)
    write_dataset(tokenizer, tokenizer.encode(train), tokenizer.encode(val), out_dir)


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
