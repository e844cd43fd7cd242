"""
The IMDb reviews (Maas et al., 2011) that two scripts are made from: data/imdb (the finetuning task)
and data/imdb_lm (the pretraining corpus of the shared base model). Both take the raw files and the
one split of them into train, val and test from here, so the corpus can never hold a review that the
task holds out.

    from data.imdb_reviews import split_reviews
    parts, record = split_reviews(None, "data/imdb")   # {"train", "val", "test"}: lists of {"text", "label"}

The raw files are the layout of ../shared/data/imdb: train.tsv and test.tsv (data/formats.py reads
them) and unsup.txt, one unlabelled review a line. Without them the original archive is downloaded
and turned into that layout (make_raw_files).
"""

import re
import tarfile
from pathlib import Path

from common.files import sha256
from common.sources import find_source, label_counts, local_copy, split_examples
from data.formats import IMDB_HEADER, read_imdb

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
FRACTIONS = {"train": 0.9, "val": 0.1}  # of the official train split
SEED = 1337


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
    on this order (split_reviews sorts the rows first)."""
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
        (out_dir / f"{split}.tsv").write_text("\n".join([IMDB_HEADER, *rows]) + "\n", encoding="utf-8")
    unsup = [text for _, text in sorted(reviews.get(("train", "unsup"), []))]
    (out_dir / "unsup.txt").write_text("".join(line + "\n" for line in unsup), encoding="utf-8")


# ----------------------------------------------------------------------------- the split

def split_reviews(input_dir, download_dir):
    """The task's parts {"train", "val", "test"} and the record of how they were made. The official
    test split is the test; a seeded, stratified FRACTIONS["val"] of the official train split is val.
    No training text is an evaluation text: train drops the reviews whose text is also in val (a few
    reviews are in the train split twice) or in test (the original release has 123 in both).
    input_dir: the folder of the raw files (--input), or None to look for them; download_dir: where
    the original archive goes when it must be downloaded."""
    train_path = find_raw("train.tsv", input_dir, download_dir)
    test_path = find_raw("test.tsv", input_dir, download_dir)
    official_train, test = read_imdb(train_path), read_imdb(test_path)
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
