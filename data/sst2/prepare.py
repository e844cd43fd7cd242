"""
GLUE SST-2, sentence-level sentiment, as a finetuning task. GLUE gives a train and a dev split; a
seeded, stratified 10% of train's sentences is held out as val (for choosing checkpoints), so dev
stays unseen until the end. Writes train.jsonl, val.jsonl and dev.jsonl ({"text": ..., "label":
"negative" or "positive"}) and split.json (the sources' sha256, the seed, the counts) beside this file.

    python data/sst2/prepare.py
    python data/sst2/prepare.py --input=path/to/SST-2     # the unzipped folder: train.tsv, dev.tsv

GLUE's train holds every labelled phrase of the treebank's training sentences: "the movie", "the
movie is n't bad", and the whole sentence, each a row. A val of random rows would be spans of train
rows and reward memorising them (3 epochs of finetuning scored 92% on such a val, 75% on dev). So
val is whole sentences, the rows that are no span of another row, and train drops the phrases found
only inside them: like dev's sentences, val's were never seen, though their common short phrases
were.

The raw format, GLUE's `sentence<TAB>label` under that header with label 0 or 1, is read by
data/formats.py (read_sst2); finetune.py uses it for an --eval_file in that format.
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from common.files import sha256
from common.progress import track
from common.sources import PrepareArgs, find_source, label_counts, split_examples, write_splits
from data.formats import read_sst2

HERE = Path(__file__).resolve().parent
URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
FRACTIONS = {"train": 0.9, "val": 0.1}  # of the sentences
SEED = 1337


def phrase(text):
    """text with single spaces between words: GLUE ends many rows with a space, and spans have none."""
    return " ".join(text.split())


def word_spans(text):
    """Every run of consecutive words in text, the text itself included."""
    words = text.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def split_by_sentence(examples, fractions, seed):
    """Hold out whole sentences as val: see the docstring at the top. -> ({"train", "val"}, n_sentences)"""
    phrases = {phrase(e["text"]) for e in examples}
    inside = set()  # phrases that are a span of a longer phrase
    for text in track(phrases, "finding the sentences", "phrases"):
        inside |= (word_spans(text) & phrases) - {text}
    sentences = {}  # phrase -> its example, for the rows that are no span of another (a dict: GLUE repeats a few)
    for e in examples:
        if phrase(e["text"]) not in inside:
            sentences[phrase(e["text"])] = e
    parts = split_examples(list(sentences.values()), fractions, seed, label_key="label")
    seen = set()  # what training may read: the train sentences and all their spans
    for e in parts["train"]:
        seen |= word_spans(e["text"])
    train = [e for e in examples if phrase(e["text"]) in seen]
    return {"train": train, "val": parts["val"]}, len(sentences)


def find_split(name, input_dir, out_dir):
    """GLUE's train.tsv or dev.tsv: from --input=DIR, a local copy, or the SST-2 zip."""
    input_path = Path(input_dir) / name if input_dir else None
    return find_source(f"sst2/{name}", URL, out_dir, input_path, member=f"SST-2/{name}")


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    train_path = find_split("train.tsv", input_path, out_dir)
    dev_path = find_split("dev.tsv", input_path, out_dir)
    train = read_sst2(train_path)
    parts, n_sentences = split_by_sentence(train, FRACTIONS, SEED)
    parts["dev"] = read_sst2(dev_path)
    counts = label_counts(parts)
    write_splits(parts, out_dir, {"sources": {str(p): sha256(p) for p in (train_path, dev_path)},
                                  "seed": SEED, "fractions of train.tsv's sentences": FRACTIONS,
                                  "sentences in train.tsv": n_sentences,
                                  "phrases dropped with val's sentences": len(train) - len(parts["train"]),
                                  "counts": counts})
    for name, by_label in counts.items():
        print(f"{name}: {sum(by_label.values()):,} examples {by_label}")
    print(f"written to {out_dir}")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
