"""
The IMDb Large Movie Review Dataset (Maas et al., 2011) as a finetuning task: is a movie review
negative or positive? The official test split's 25,000 reviews are the test; a seeded, stratified 10%
of the official train split is held out as val (for choosing checkpoints and settings), so test stays
unseen until the end. Writes train.jsonl, val.jsonl and test.jsonl ({"text": ..., "label": "negative"
or "positive"}) and split.json (the sources' sha256, the seed, the counts) beside this file.

    python data/imdb/prepare.py
    python data/imdb/prepare.py --input=path/to/imdb      # a folder with train.tsv, test.tsv, unsup.txt

No training text is an evaluation text: train drops the reviews whose text is also in val (a few
reviews are in the train split twice) or in test (the original release has 123 reviews in both).
The split is made in data/imdb_reviews.py, which data/imdb_lm's pretraining corpus takes its split
from too, so the two can't disagree on what is held out. The raw format is read by
data/formats.py (read_imdb); finetune.py uses it for an --eval_file in that format.
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from common.sources import PrepareArgs, write_splits
from data.imdb_reviews import split_reviews

HERE = Path(__file__).resolve().parent


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    parts, record = split_reviews(input_path, out_dir)
    write_splits(parts, out_dir, record)
    for name, by_label in record["counts"].items():
        print(f"{name}: {sum(by_label.values()):,} reviews {by_label}")
    print(f"written to {out_dir}")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
