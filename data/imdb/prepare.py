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

The raw files are the layout of ../shared/data/imdb: train.tsv and test.tsv under the header
`text<TAB>label` (0 negative, 1 positive), unsup.txt one unlabelled review a line. Without them the
original archive is downloaded and turned into that layout (make_raw_files). read_examples reads the
.tsv format; finetune.py uses it for an --eval_file in that format. data/imdb_lm builds its
pretraining corpus from the same split (splits), so the two can't disagree on what is held out.
"""

import re
import sys
import tarfile
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import UserError, parse_config, run_main
from common.sources import (PrepareArgs, find_source, label_counts, local_copy, numbered_lines, sha256,
                            split_examples, write_splits)

HERE = Path(__file__).resolve().parent
URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
HEADER = "text\tlabel"
LABEL_NAMES = {"0": "negative", "1": "positive"}  # the label column -> our label
LABELS = tuple(LABEL_NAMES.values())
FRACTIONS = {"train": 0.9, "val": 0.1}  # of the official train split
SEED = 1337


def read_examples(path):
    """[{"text": ..., "label": ...}] from a `text<TAB>label` file with that header; a malformed line is a
    UserError that names the file and line. The label is after the last tab: a review may hold quotes."""
    lines = numbered_lines(path)
    _, header = next(lines)
    if header != HEADER:
        raise UserError(f"{path}:1: expected the header text<TAB>label, found {header[:80]!r}")
    examples = []
    for lineno, line in lines:
        if not line:
            continue
        text, tab, label = line.rpartition("\t")
        if not tab:
            raise UserError(f"{path}:{lineno}: expected text<TAB>label, found no tab")
        if label not in LABEL_NAMES:
            raise UserError(f"{path}:{lineno}: unknown label {label!r}; expected 0 (negative) or 1 (positive)")
        if not text.strip():
            raise UserError(f"{path}:{lineno}: empty text")
        examples.append({"text": text, "label": LABEL_NAMES[label]})
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def read_unlabelled(path):
    """The reviews of unsup.txt, one a line; blank lines are skipped."""
    return [line for _, line in numbered_lines(path) if line.strip()]


# ----------------------------------------------------------------------------- the raw files

def find_raw(name, input_dir, download_dir):
    """train.tsv, test.tsv or unsup.txt: from --input=DIR, a local copy of imdb/<name>, or made from
    the original archive (found locally as imdb/aclImdb_v1.tar.gz, or downloaded)."""
    if input_dir:
        return find_source(f"imdb/{name}", None, download_dir, Path(input_dir) / name)
    found = local_copy(f"imdb/{name}")
    if found is not None:
        return found
    made = Path(download_dir) / "downloads" / name
    if not made.is_file():
        archive = find_source(f"imdb/{URL.rsplit('/', 1)[-1]}", URL, download_dir)
        make_raw_files(archive, made.parent)
    return made


def clean(review):
    """A review on one line: the archive's HTML line breaks and real line breaks become spaces, and runs
    of white space one space (what ../shared/data/imdb did, nothing else)."""
    return re.sub(r"\s+", " ", review.replace("<br />", " ")).strip()


def make_raw_files(archive, out_dir):
    """The aclImdb tree (aclImdb/{train,test}/{neg,pos,unsup}/<id>_<rating>.txt) as train.tsv, test.tsv
    and unsup.txt: negative reviews first, then positive, each by id. The split itself does not depend
    on this order (splits sorts the rows first)."""
    reviews = {}  # (split, folder) -> [(id, text)]
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts  # ("aclImdb", "train", "pos", "0_9.txt")
            if member.isfile() and len(parts) == 4 and parts[3].endswith(".txt") and parts[2] in ("neg", "pos", "unsup"):
                text = clean(tar.extractfile(member).read().decode("utf-8"))
                reviews.setdefault(parts[1:3], []).append((int(parts[3].split("_")[0]), text))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [f"{text}\t{label}" for label, folder in (("0", "neg"), ("1", "pos"))
                for _, text in sorted(reviews.get((split, folder), []))]
        (out_dir / f"{split}.tsv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    unsup = [text for _, text in sorted(reviews.get(("train", "unsup"), []))]
    (out_dir / "unsup.txt").write_text("".join(line + "\n" for line in unsup), encoding="utf-8")


# ----------------------------------------------------------------------------- the split

def splits(input_dir=None, download_dir=HERE):
    """The task's parts {"train", "val", "test"} and the record of how they were made."""
    train_path = find_raw("train.tsv", input_dir, download_dir)
    test_path = find_raw("test.tsv", input_dir, download_dir)
    official_train, test = read_examples(train_path), read_examples(test_path)
    # sorted first, so the split depends only on which reviews there are, not on the file's order
    official_train.sort(key=lambda e: (e["label"], e["text"]))
    parts = split_examples(official_train, FRACTIONS, SEED, label_key="label")
    held_out = {e["text"] for e in parts["val"]} | {e["text"] for e in test}
    train = [e for e in parts["train"] if e["text"] not in held_out]
    parts = {"train": train, "val": parts["val"], "test": test}
    record = {"sources": {str(p): sha256(p) for p in (train_path, test_path)}, "seed": SEED,
              "fractions of train.tsv": FRACTIONS,
              "train rows dropped as copies of a val or test text": len(official_train) - len(train) - len(parts["val"]),
              "counts": label_counts(parts)}
    return parts, record


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, record = splits(input_path, out_dir)
    write_splits(parts, out_dir, record)
    for name, by_label in record["counts"].items():
        print(f"{name}: {sum(by_label.values()):,} reviews {by_label}")
    print(f"written to {out_dir}")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
