"""
The SMS spam task's training messages as a GPT-2 BPE language-modelling corpus, for pretraining a
small model on the kind of text it will classify (digits, prices, URLs, "txt", "FREE") before
finetuning it with finetune.py (see data/lm_corpus.py). Writes train.bin, val.bin and meta.json here.

    python data/sms_spam_lm/prepare.py          # reads data/sms_spam/train.jsonl, making it if missing
    python train.py --dataset=sms_spam_lm ...   # or let train.py run this script itself
    python data/sms_spam_lm/prepare.py --input=path/to/train.jsonl --out_dir=somewhere/else
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from data import lm_corpus
from data.sms_spam import prepare as sms_spam
from common.sources import PrepareArgs

HERE = Path(__file__).resolve().parent


def prepare(input_path=None, out_dir=HERE):
    lm_corpus.prepare(sms_spam, input_path, out_dir)


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
