"""
The SST-2 task's training phrases (snippets of movie reviews) as a GPT-2 BPE language-modelling
corpus, for pretraining a small model on the kind of text it will classify before finetuning it with
finetune.py (see data/lm_corpus.py). GLUE's dev sentences stay unseen. Writes train.bin, val.bin and
meta.json here.

    python data/sst2_lm/prepare.py          # reads data/sst2/train.jsonl, making it if missing
    python train.py --dataset=sst2_lm ...   # or let train.py run this script itself
    python data/sst2_lm/prepare.py --input=path/to/train.jsonl --out_dir=somewhere/else
"""

import sys
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.cli import parse_config, run_main
from data import lm_corpus
from data.sst2 import prepare as sst2
from common.sources import PrepareArgs

HERE = Path(__file__).resolve().parent


def prepare(input_path=None, out_dir=HERE):
    lm_corpus.prepare(sst2, input_path, out_dir)


def main(argv):
    args = parse_config(PrepareArgs, argv)
    prepare(args.input, args.out_dir or HERE)


if __name__ == "__main__":
    run_main(main)
