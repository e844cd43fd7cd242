"""
The baselines the GPT is measured against, fitted and scored on their own.

    python tools/baseline.py --task=imdb     # bag-of-words (finetuning/bow.py) on data/imdb/{train,val,test}.jsonl
    python tools/baseline.py --task=sst2     # on val and GLUE's dev
    python tools/baseline.py --task=conll2003   # a CRF over hand-made word features (finetuning/feature_crf.py)
    python tools/baseline.py --task=imdb --data_dir=path/to/folder   # train.jsonl, val.jsonl and the test split there
    python tools/baseline.py --dataset=shakespeare_char   # a pretraining corpus: n-gram models' val loss

For a finetuning task, finetune.py fits the same baseline on the same rows and writes it into every
run's metrics.json; this prints its details. Val chooses the baseline's settings (its penalty) and
nothing else; the test split is only scored. For a pretraining corpus (train.py's --dataset), the
bar for a language model's val loss: a unigram model (how often each token occurs) and a bigram
model (which token follows which), counted on train.bin and scored on val.bin as train.py scores its
model, in nats a token. The report goes to out_dir/baseline.json.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from common.cli import UserError, check_choice, parse_config, run_main
from common.files import read_json, read_jsonl, write_json
from common.tokenizer import load_tokenizer
from finetuning import bow, feature_crf
from finetuning.metrics import format_report, headline
from finetuning.tasks import TASKS, split_path


@dataclass
class BaselineConfig:
    task: str = "imdb"  # one of finetune.py's tasks; data/<task>/prepare.py writes its splits
    dataset: str = ""  # or a pretraining corpus (train.py's --dataset): then the n-gram baselines
    data_dir: str = ""  # the folder of the splits; "" = data/<task> (or data/<dataset>)
    out_dir: str = ""  # where baseline.json goes; "" = out-baseline-<task or dataset>

    def __post_init__(self):
        check_choice(self, "task", TASKS)


def ngram_losses(train, val, vocab_size):
    """Val loss (mean nats a token) of a unigram and of a bigram model counted on the train tokens. The
    bigram's P(b | a) is interpolated with the unigram's P(b), lam of one to 1 - lam of the other
    (a pair never seen in train must not cost infinity); lam is chosen on the last 5% of train, which
    the counts then leave out, so val chooses nothing."""
    held = len(train) // 20
    counted, tuning = train[:-held], train[-held:]
    unigram = (np.bincount(counted, minlength=vocab_size) + 1) / (len(counted) + vocab_size)  # add-one: no zero
    pairs, n = np.unique(counted[:-1].astype(np.int64) * vocab_size + counted[1:], return_counts=True)
    follows = np.bincount(counted[:-1], minlength=vocab_size)  # how often each token has a successor

    def bigram_loss(tokens, lam):
        codes = tokens[:-1].astype(np.int64) * vocab_size + tokens[1:]
        at = np.searchsorted(pairs, codes).clip(max=len(pairs) - 1)
        seen = np.where(pairs[at] == codes, n[at], 0)  # count of the pair (a, b) in train
        p_pair = seen / np.maximum(follows[tokens[:-1]], 1)
        return -np.log(lam * p_pair + (1 - lam) * unigram[tokens[1:]]).mean()

    lam = min((0.5, 0.7, 0.8, 0.9, 0.95, 0.99), key=lambda lam: bigram_loss(tuning, lam))
    return {"unigram": float(-np.log(unigram[val]).mean()), "bigram": float(bigram_loss(val, lam)), "lambda": lam,
            "uniform": float(np.log(vocab_size))}


def corpus_baselines(cfg):
    data_dir = Path(cfg.data_dir) if cfg.data_dir else ROOT / "data" / cfg.dataset
    for name in ("train.bin", "val.bin", "meta.json"):
        if not (data_dir / name).is_file():
            raise UserError(f"{data_dir / name}: no such file; run python data/{cfg.dataset}/prepare.py first")
    vocab_size = load_tokenizer(read_json(data_dir / "meta.json"), data_dir / "meta.json").vocab_size
    train, val = (np.fromfile(data_dir / f"{split}.bin", dtype=np.uint16) for split in ("train", "val"))
    losses = ngram_losses(train, val, vocab_size)
    print(f"{cfg.dataset}, val loss in nats a token: uniform over {vocab_size:,} tokens {losses['uniform']:.4f}, "
          f"unigram {losses['unigram']:.4f}, bigram {losses['bigram']:.4f} (interpolated with the unigram, "
          f"lambda {losses['lambda']} chosen on held-out train)")
    return {"dataset": cfg.dataset, "train tokens": len(train), "val tokens": len(val), **losses}


def read_splits(cfg):
    """The training rows, and {name: rows} of val and the task's test split (where it has one)."""
    task = TASKS[cfg.task]
    names = ["train", "val"] + ([task.test_split] if task.test_split else [])
    paths = {name: split_path(cfg.data_dir, cfg.task, name) for name in names}
    for name, path in paths.items():
        if not path.is_file():
            raise UserError(f"{path}: no such file; run python data/{cfg.task}/prepare.py first")
    rows = {name: read_jsonl(path) for name, path in paths.items()}
    return rows.pop("train"), rows


def main(argv):
    cfg = parse_config(BaselineConfig, argv)
    if cfg.dataset:
        out_dir = Path(cfg.out_dir or f"out-baseline-{cfg.dataset}")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(corpus_baselines(cfg), out_dir / "baseline.json")
        print(f"wrote {out_dir / 'baseline.json'}")
        return
    task = TASKS[cfg.task]
    train_rows, splits = read_splits(cfg)
    # the same baselines finetune.py fits: a feature CRF for tags, bag-of-words for texts
    kind, baseline = ("feature CRF", feature_crf) if task.per_token else ("bag-of-words", bow)
    t0 = time.perf_counter()
    model, val_reports = baseline.fit(train_rows, splits["val"], list(task.labels))
    reports = baseline.score_splits(model, splits)
    seconds = time.perf_counter() - t0
    for l2, report in val_reports.items():
        print(f"l2 {l2:g}: val accuracy {report['accuracy']:.4f}, headline {headline(report):.4f}")
    print(f"{kind}: chose l2 {model.l2:g} on val; {len(model.features):,} features; {seconds:.0f} s in all")
    for name, report in reports.items():
        print(f"--- {name}\n{format_report(report)}")
    out_dir = Path(cfg.out_dir or f"out-baseline-{cfg.task}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json({"task": cfg.task, "baseline": kind, "l2": model.l2, "features": len(model.features),
                "seconds": round(seconds, 1), "val_by_l2": {str(l2): headline(r) for l2, r in val_reports.items()},
                "reports": reports}, out_dir / "baseline.json")
    print(f"wrote {out_dir / 'baseline.json'}")


if __name__ == "__main__":
    run_main(main)
