"""
CoNLL-2003 English named-entity recognition as a finetuning task: tag each token with one of the
IOB2 tags (data/formats.py lists them). Only the training file is given, so it is cut into train,
val and test, 80/10/10 of its documents, seeded. Writes train.jsonl, val.jsonl and test.jsonl
({"tokens": [...], "tags": [...]}) and split.json (source's sha256, seed, how the documents were
found, counts) beside this file. CoNLL-2003 has no public download: give the file.

    python data/conll2003/prepare.py --input=path/to/train.txt
    GPT_DATA_DIR=/path/to/data python data/conll2003/prepare.py      # reads conll2003/train.txt there

The cut is by document, never by sentence: a news story names the same people and places again and
again, so with its sentences on both sides, test would ask for names that training just taught.
A CoNLL file marks each document with a -DOCSTART- line, and those are used where there are any.
A file without them (../shared/data's has none) is cut at its datelines: each Reuters story opens
with a headline, sometimes a byline or a correction note, then a dateline such as "BRUSSELS
1996-08-22" (see split_at_datelines). A story with no dateline stays joined to the one before it:
a missed boundary only keeps more sentences together, it never puts a story on two sides.

The raw format (one `token TAG` a line, a blank line between sentences) is read by data/formats.py
(read_conll2003); finetune.py uses it for an --eval_file in that format.
"""

import re
import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import UserError, parse_config, run_main
from common.files import sha256
from common.sources import PrepareArgs, find_source, split_examples, write_splits
from data.formats import read_conll2003_documents

HERE = Path(__file__).resolve().parent
RELPATH = "conll2003/train.txt"
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}  # of the documents
SEED = 1337
DATE = re.compile(r"\d{4}-\d\d-\d\d")  # a dateline's date, "1996-08-22"
DATELINE_MAX_TOKENS = 6  # "AKRON , Ohio 1996-08-22"; a longer sentence with a date is the story's text
BY_DOCSTART = "-DOCSTART- lines"
BY_DATELINE = (f"datelines: a document starts at the headline above each sentence of at most "
               f"{DATELINE_MAX_TOKENS} tokens that holds a date (YYYY-MM-DD)")


# ----------------------------------------------------------------------------- finding the documents

def is_dateline(sentence):
    return len(sentence["tokens"]) <= DATELINE_MAX_TOKENS and any(DATE.fullmatch(t) for t in sentence["tokens"])


def is_byline(sentence):
    """The reporter's name under a headline ("Peter Blackburn"): every token part of a person's name."""
    return all(tag.endswith("-PER") for tag in sentence["tags"])


def headline_before(sentences, dateline):
    """The index of the headline of the story whose dateline is sentences[dateline]: the sentence above
    it, after stepping up over the place when the dateline is the date alone ("MONTGOMERY , Ala ." above
    "1996-08-22"), then over a byline and a bracketed note ("[ CORRECTED 18:00 GMT ]")."""
    i = dateline - 1
    if len(sentences[dateline]["tokens"]) == 1:
        i -= 1
    while i > 0 and (is_byline(sentences[i]) or sentences[i]["tokens"][0] == "["):
        i -= 1
    return max(i, 0)


def split_at_datelines(sentences):
    """The documents of a run of sentences without -DOCSTART- lines: a new one at each dated story's
    headline. What comes before the first headline is a document of its own."""
    starts = sorted({0} | {headline_before(sentences, i) for i, s in enumerate(sentences) if is_dateline(s)})
    return [sentences[a:b] for a, b in zip(starts, starts[1:] + [len(sentences)])]


def find_documents(path):
    """(documents, how they were found): by the file's -DOCSTART- lines, or where it marks fewer than
    two documents, by its datelines."""
    documents = read_conll2003_documents(path)
    if len(documents) > 1:
        return documents, BY_DOCSTART
    return split_at_datelines(documents[0]), BY_DATELINE


# ----------------------------------------------------------------------------- the split

def split_documents(documents, path):
    """{part: its documents}, FRACTIONS of the documents each, drawn at random (seeded)."""
    parts = split_examples(documents, FRACTIONS, SEED)
    if not all(parts.values()):
        raise UserError(f"{path}: {len(documents)} documents are too few to cut into "
                        f"{', '.join(FRACTIONS)} ({', '.join(f'{f:.0%}' for f in FRACTIONS.values())} of "
                        f"the documents); give a larger file")
    return parts


def count(documents):
    sentences = [s for document in documents for s in document]
    return {"documents": len(documents), "sentences": len(sentences),
            "tokens": sum(len(s["tokens"]) for s in sentences)}


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    path = find_source(RELPATH, None, out_dir, input_path)
    documents, method = find_documents(path)
    parts = split_documents(documents, path)
    counts = {name: count(docs) for name, docs in parts.items()}
    rows = {name: [s for document in docs for s in document] for name, docs in parts.items()}
    write_splits(rows, out_dir, {"source": str(path), "sha256": sha256(path), "seed": SEED,
                                 "fractions of the documents": FRACTIONS, "documents found by": method,
                                 "counts": counts})
    print(f"{len(documents):,} documents, found by {method}")
    for name, c in counts.items():
        print(f"{name}: {c['documents']:,} documents, {c['sentences']:,} sentences, {c['tokens']:,} tokens")
    print(f"written to {out_dir}")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
