"""
The IMDb reviews as the pretraining corpus of the shared base model: the 50,000 unlabelled reviews and
the reviews of the IMDb task's train split (text only), minus every text that is also in an evaluation
split (IMDb val or test), each distinct text once. The split is data/imdb_reviews.py's, the one that
data/imdb writes, so the corpus can't hold a text that the task holds out. Each text is normalised
first (data/corpus.py: "\\n" for every line end, no byte order mark), so neither becomes a token. A
byte-level BPE of VOCAB_SIZE tokens is learned from the corpus (common/bpe.py) and kept in meta.json;
train.bin and val.bin hold the token ids, each review ended by <|endoftext|>; split.json records how
the corpus was made.

    python data/imdb_lm/prepare.py
    python data/imdb_lm/prepare.py --input=path/to/imdb      # a folder with train.tsv, test.tsv, unsup.txt
    python train.py config/train_imdb_base.py                # or let train.py run this script itself

GPT-2's 50,257 tokens would make the lm_head most of a small model's work; a vocabulary learned from
the reviews is a sixth of the size and cuts them nearly as short (measured on IMDb val: 4.0 characters
a token, GPT-2's 4.5). The unlabelled reviews were collected apart from the labelled ones, but the
original release has 266 of them in test: they go. SST-2's sentences come from another site (Rotten
Tomatoes) and are written lower-cased and split into words, so they are not looked for here (measured
once: none of its dev sentences of 8 words or more occurs in a review, even compared lower-cased
without punctuation).
"""

import random
import sys
import time
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common import bpe
from common.cli import parse_config, run_main
from common.files import write_json
from common.sources import PrepareArgs
from common.tokenizer import BPETokenizer
from data.corpus import encode_documents, normalise_text, write_dataset
from data.formats import read_imdb_unlabelled
from data.imdb_reviews import find_raw, split_reviews

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 8192  # 256 bytes + 7,935 merges + <|endoftext|>
VAL_FRACTION = 0.02  # of the reviews, drawn at random: the LM's own val split
SEED = 1337


def corpus_texts(input_dir, download_dir):
    """The corpus's reviews, unsup's first then train's, and a record of what was kept and dropped."""
    parts, _ = split_reviews(input_dir, download_dir)
    unsup = read_imdb_unlabelled(find_raw("unsup.txt", input_dir, download_dir))
    train = [e["text"] for e in parts["train"]]
    # compared normalised, so that a review can't slip past as a copy that differs by a BOM alone
    held_out = {normalise_text(e["text"]) for e in parts["val"] + parts["test"]}
    kept = [text for text in map(normalise_text, unsup + train) if text not in held_out]
    texts = list(dict.fromkeys(kept))  # each distinct text once, in first-seen order
    record = {"unsup reviews": len(unsup), "train reviews": len(train),
              "dropped: also in IMDb val or test": len(unsup) + len(train) - len(kept),
              "dropped: repeats": len(kept) - len(texts), "reviews": len(texts)}
    return texts, record


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    texts, record = corpus_texts(input_path, out_dir)
    random.Random(SEED).shuffle(texts)  # val: a random sample of reviews, unsup's and train's alike
    n_val = max(1, round(VAL_FRACTION * len(texts)))
    val, train = texts[:n_val], texts[n_val:]
    print(f"{len(texts):,} reviews ({sum(map(len, texts)):,} characters); learning {VOCAB_SIZE:,} BPE tokens "
          f"from the {len(train):,} of the LM's train split")
    tokenizer = BPETokenizer(bpe.train(train, VOCAB_SIZE - 257, verbose=True))
    train_ids, val_ids = encode_documents(tokenizer, train), encode_documents(tokenizer, val)
    write_dataset(tokenizer, train_ids, val_ids, out_dir)
    record |= {"seed": SEED, "val reviews": len(val), "train reviews of the LM": len(train),
               "vocab_size": tokenizer.vocab_size, "train tokens": len(train_ids), "val tokens": len(val_ids),
               "seconds": round(time.perf_counter() - t0)}
    write_json(record, out_dir / "split.json")
    print(f"done in {record['seconds']} s")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
