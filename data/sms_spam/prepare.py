"""
The UCI SMS Spam Collection as a finetuning task: is a text message spam or ham? The messages are
split 70/10/20 into train/val/test, stratified by label and seeded, and written beside this file as
train.jsonl, val.jsonl and test.jsonl ({"text": ..., "label": "ham" or "spam"}), with split.json
recording the source's sha256, the seed and the counts, so the split can be checked and redone.
Repeated messages (mostly spam sent many times) are kept, as in the collection, so a few texts are
in both train and test.

    python data/sms_spam/prepare.py
    python data/sms_spam/prepare.py --input=path/to/SMSSpamCollection

The raw format, one `label<TAB>text` per line with no header, is read by data/formats.py
(read_sms_spam); finetune.py uses it for an --eval_file in that format.
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from common.files import sha256
from common.sources import PrepareArgs, find_source, label_counts, split_examples, write_splits
from data.formats import read_sms_spam

HERE = Path(__file__).resolve().parent
RELPATH = "sms_spam/SMSSpamCollection"
URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
MEMBER = "SMSSpamCollection"  # the file inside the zip
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SEED = 1337


def prepare(input_path=None, out_dir=HERE):
    out_dir = Path(out_dir)
    path = find_source(RELPATH, URL, out_dir, input_path, member=MEMBER)
    parts = split_examples(read_sms_spam(path), FRACTIONS, SEED, label_key="label")
    counts = label_counts(parts)
    write_splits(parts, out_dir, {"source": str(path), "sha256": sha256(path), "seed": SEED,
                                  "fractions": FRACTIONS, "counts": counts})
    for name, by_label in counts.items():
        print(f"{name}: {sum(by_label.values()):,} messages {by_label}")
    print(f"written to {out_dir}")


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
