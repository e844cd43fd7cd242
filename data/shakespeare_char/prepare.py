"""
Tiny Shakespeare at the character level: one token per distinct character, the first 90% of the
text for training and the last 10% for validation. Writes train.bin and val.bin (uint16 token ids)
and meta.json (the alphabet) beside this file.

    python data/shakespeare_char/prepare.py
    python data/shakespeare_char/prepare.py --input=path/to/input.txt --out_dir=somewhere/else

Any text file can stand in for Tiny Shakespeare. It is normalised first (data/corpus.py): every line
end becomes "\\n" and byte order marks are dropped, so a file saved on Windows gets no "\\r" or "\\ufeff"
character in its alphabet. A text too uniform to learn from is written with a warning.
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from common.sources import PrepareArgs
from common.tokenizer import CharTokenizer
from data.corpus import read_shakespeare, split_corpus, write_dataset

HERE = Path(__file__).resolve().parent


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    text = read_shakespeare(input_path, out_dir)
    tokenizer = CharTokenizer.from_text(text)
    train, val = split_corpus(text)
    write_dataset(tokenizer, tokenizer.encode(train), tokenizer.encode(val), out_dir)


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
