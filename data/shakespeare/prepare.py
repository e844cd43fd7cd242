"""
Tiny Shakespeare through GPT-2's BPE tokenizer: the same text and the same train/val cut as
data/shakespeare_char, for finetuning GPT-2 or training a model with GPT-2's vocabulary. Writes
train.bin and val.bin (uint16 token ids) and meta.json ({"kind": "gpt2"}) beside this file.

    python data/shakespeare/prepare.py
    python data/shakespeare/prepare.py --input=path/to/input.txt --out_dir=somewhere/else

The text is normalised first, as for data/shakespeare_char (data/corpus.py): every line end becomes
"\\n" and byte order marks are dropped, so neither "\\r" nor "\\ufeff" is ever encoded.
"""

import re
import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from common.progress import Progress
from common.sources import PrepareArgs
from common.tokenizer import gpt2_tokenizer
from data.corpus import read_shakespeare, split_corpus, write_dataset

HERE = Path(__file__).resolve().parent
CHUNK_CHARS = 100_000  # encode this much text at a time, to show progress on a large corpus

# Cutting just after a newline that sits between two non-space characters changes none of the pieces
# that GPT-2's pre-tokenizer regex splits the text into, so encoding chunk by chunk gives the same ids
# as encoding the whole. A cut elsewhere can change them: "\n\n" is one token at the end of a text,
# but two ("\n", "\n") before a word.
SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


def chunks(text, chunk_chars):
    start = 0
    while start < len(text):
        cut = SAFE_CUT.search(text, start + chunk_chars)
        end = cut.start() if cut else len(text)
        yield text[start:end]
        start = end


def encode_with_progress(tokenizer, text, name, chunk_chars=CHUNK_CHARS):
    ids, done = [], 0
    progress = Progress(len(text), f"encoding {name}", "characters")
    for chunk in chunks(text, chunk_chars):
        ids.extend(tokenizer.encode(chunk))
        done += len(chunk)
        progress.update(done)
    progress.close()
    print(f"{name}: {len(text):,} characters -> {len(ids):,} tokens")
    return ids


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    train, val = split_corpus(read_shakespeare(input_path, out_dir))
    tokenizer = gpt2_tokenizer()
    train_ids = encode_with_progress(tokenizer, train, "train")
    val_ids = encode_with_progress(tokenizer, val, "val")
    write_dataset(tokenizer, train_ids, val_ids, out_dir)


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
