"""
CoNLL-2003 English named-entity recognition as a finetuning task: tag each token with one of the
IOB2 tags in LABELS. Only the training split is given, so a seeded 10% of its sentences is held out
as val. Writes train.jsonl and val.jsonl ({"tokens": [...], "tags": [...]}) and split.json (source's
sha256, seed, counts) beside this file. CoNLL-2003 has no public download: give the file.

    python data/conll2003/prepare.py --input=path/to/train.txt
    GPT_DATA_DIR=/path/to/data python data/conll2003/prepare.py      # reads conll2003/train.txt there

The raw format is what read_examples reads, and finetune.py uses for an --eval_file: one `token TAG`
per line (any middle columns, such as the original POS and chunk tags, are ignored), a blank line
between sentences, and -DOCSTART- lines between documents.
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import UserError, parse_config, run_main
from common.sources import PrepareArgs, find_source, numbered_lines, sha256, split_examples, write_splits

HERE = Path(__file__).resolve().parent
RELPATH = "conll2003/train.txt"
LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
FRACTIONS = {"train": 0.9, "val": 0.1}
SEED = 1337


def read_examples(path):
    """[{"tokens": [...], "tags": [...]}], one per sentence, from a CoNLL file; a malformed line is a
    UserError that names the file and line."""
    sentences, tokens, tags = [], [], []
    for lineno, line in numbered_lines(path):
        columns = line.split()
        if columns and columns[0] != "-DOCSTART-":
            if len(columns) < 2:
                raise UserError(f"{path}:{lineno}: expected 'token TAG', found one column {line.strip()!r}")
            if columns[-1] not in LABELS:
                raise UserError(f"{path}:{lineno}: unknown tag {columns[-1]!r}; "
                                f"expected one of {', '.join(LABELS)}")
            tokens.append(columns[0])
            tags.append(columns[-1])
        elif tokens:  # a blank line or -DOCSTART- ends the sentence
            sentences.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
    if tokens:  # the last sentence, in a file that doesn't end with a blank line
        sentences.append({"tokens": tokens, "tags": tags})
    if not sentences:
        raise UserError(f"{path}: no sentences")
    return sentences


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    path = find_source(RELPATH, None, out_dir, input_path)
    parts = split_examples(read_examples(path), FRACTIONS, SEED)
    counts = {name: {"sentences": len(rows), "tokens": sum(len(r["tokens"]) for r in rows)}
              for name, rows in parts.items()}
    write_splits(parts, out_dir, {"source": str(path), "sha256": sha256(path), "seed": SEED,
                                  "fractions": FRACTIONS, "counts": counts})
    for name, count in counts.items():
        print(f"{name}: {count['sentences']:,} sentences, {count['tokens']:,} tokens")
    print(f"written to {out_dir}")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
