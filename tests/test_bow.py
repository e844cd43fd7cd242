"""The bag-of-words baseline (finetuning/bow.py): n-grams and TF-IDF rows checked by hand, a fit that
reaches the minimum of its loss, a separable task learned perfectly, features and weights that come
from the train split alone, and the command line's report (tools/baseline.py); and the n-gram
language models that a pretraining run's val loss stands beside."""

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.cli import UserError
from common.files import write_jsonl
from finetuning import bow
from tools import baseline

ROOT = Path(__file__).resolve().parents[1]


def toy_rows(n, seed):
    """Texts of filler words with one sentiment word: the label is a function of that word alone."""
    rng = random.Random(seed)
    filler = ["the", "film", "plot", "was", "a", "movie", "actor", "scene", "really", "quite"]
    rows = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        word = rng.choice({"negative": ["awful", "dull", "boring"], "positive": ["superb", "moving", "fun"]}[label])
        words = rng.sample(filler, 5) + [word]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def test_ngrams_by_hand():
    assert bow.ngrams("Not good, NOT bad! Don't") == [
        "not", "good", ",", "not", "bad", "!", "don't",
        "not good", "good ,", ", not", "not bad", "bad !", "! don't"]


def test_vocabulary_comes_from_train_texts_only():
    features = bow.Features(["a b", "a c", "a b d"], min_df=2)
    assert sorted(features.index) == ["a", "a b", "b"]  # c, d, "a c", "b d" are in one text only
    assert list(features.index)[0] == "a"  # most common first
    assert len(bow.Features(["a b", "a c", "a b d"], min_df=1, max_features=2)) == 2


def test_vocabulary_order_is_the_same_in_every_process():
    """The columns must not follow Python's string hashing, which changes with each process: two fits
    on the same rows would then sum in another order and could disagree on a text."""
    code = ("from finetuning import bow; "
            "print(list(bow.Features([' '.join(f'w{i}' for i in range(60))] * 2, min_df=1).index))")
    orders = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
              for seed in ("1", "2", "3")}
    assert len(orders) == 1


def test_tfidf_rows_by_hand():
    features = bow.Features(["a b", "a c", "a b d", "a"], min_df=1)
    X = features.matrix(["a a b", "zzz"]).to_dense()  # (2, V)
    known = [features.index[g] for g in ("a", "b", "a b")]  # "a a" is no feature: no training text has it
    idf_a, idf_b = 1.0, math.log(5 / 3) + 1  # a is in 4 texts of 4, b and "a b" in 2
    expected = torch.tensor([(1 + math.log(2)) * idf_a, idf_b, idf_b])  # a's tf of 2 damped; tf 1 is 1
    expected /= expected.norm()
    assert torch.allclose(X[0, known], expected) and X[0].count_nonzero() == 3
    assert X[1].count_nonzero() == 0  # no known n-gram: a row of zeros


def test_fit_reaches_the_minimum():
    rows = toy_rows(60, seed=0)
    features = bow.Features([r["text"] for r in rows], min_df=1)
    X = features.matrix([r["text"] for r in rows])
    y = torch.tensor([int(r["label"] == "positive") for r in rows])
    W, b = (t.clone().requires_grad_(True) for t in bow.fit_softmax(X, y, 2, l2=1e-2))
    loss = F.cross_entropy(X @ W + b, y) + 1e-2 / 2 * (W**2).sum()  # autograd: no use of fit's own gradient
    loss.backward()
    gradient = torch.cat([W.grad.flatten(), b.grad])
    print(f"[max error] gradient at the fit's minimum: {gradient.abs().max():.2e}")
    assert gradient.abs().max() < 1e-4 and W.abs().max() > 0.1  # a minimum, and not the zero start


def test_separable_task_is_learned_perfectly():
    train, val, test = toy_rows(80, seed=1), toy_rows(20, seed=2), toy_rows(40, seed=3)
    _, reports = bow.bow_baseline(train, {"val": val, "test": test}, ["negative", "positive"])
    assert reports["val"]["accuracy"] == reports["test"]["accuracy"] == 1.0
    assert reports["test"]["n"] == 40


def test_val_labels_only_choose_the_penalty():
    """The weights for a penalty are the same whatever val's labels; test's labels are not read."""
    train, val = toy_rows(80, seed=1), toy_rows(20, seed=2)
    flipped = [{"text": r["text"], "label": "negative" if r["label"] == "positive" else "positive"} for r in val]
    for l2 in (1e-3, 1e-5):
        a, _ = bow.fit(train, val, ["negative", "positive"], l2_grid=(l2,))
        b, _ = bow.fit(train, flipped, ["negative", "positive"], l2_grid=(l2,))
        assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    unlabelled_test = [{"text": r["text"]} for r in toy_rows(10, seed=4)]
    assert len(a.predict([r["text"] for r in unlabelled_test])) == 10


def test_val_chooses_among_the_penalties():
    train, val = toy_rows(80, seed=1), toy_rows(20, seed=2)
    model, val_reports = bow.fit(train, val, ["negative", "positive"], l2_grid=(10.0, 1e-4))
    assert list(val_reports) == [10.0, 1e-4]
    assert model.l2 == max(val_reports, key=lambda l2: val_reports[l2]["macro_f1"])


def test_command_line_writes_the_reports(tmp_path):
    for name, seed in (("train", 1), ("val", 2), ("test", 3)):
        write_jsonl(toy_rows(40, seed), tmp_path / f"{name}.jsonl")
    baseline.main(["--task=imdb", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}"])
    result = json.loads((tmp_path / "out" / "baseline.json").read_text())
    assert set(result["reports"]) == {"val", "test"} and result["reports"]["test"]["accuracy"] > 0.9
    assert result["l2"] in bow.L2_GRID


def test_missing_val_split_is_a_user_error(tmp_path):
    write_jsonl(toy_rows(10, 1), tmp_path / "train.jsonl")
    with pytest.raises(UserError, match="val.jsonl: no such file"):
        baseline.main(["--task=imdb", f"--data_dir={tmp_path}"])


def test_ngram_baselines_of_a_corpus():
    """The unigram loss is add-one-smoothed frequencies, counted independently here; on a text where
    each token fixes the next, the bigram model is nearly certain and the unigram is not."""
    train = np.array([0, 1, 2] * 400, dtype=np.uint16)  # 0 -> 1 -> 2 -> 0 ...
    val = np.array([0, 1, 2, 0, 1, 2, 0], dtype=np.uint16)
    losses = baseline.ngram_losses(train, val, vocab_size=4)
    counted = train[: -len(train) // 20]  # the counts leave out the last 5%, which choose lambda
    freq = Counter(counted.tolist())
    expected = -sum(math.log((freq[t] + 1) / (len(counted) + 4)) for t in val.tolist()) / len(val)
    assert losses["unigram"] == pytest.approx(expected)
    assert losses["bigram"] < 0.1 < losses["unigram"] and losses["lambda"] == 0.99
    assert losses["uniform"] == pytest.approx(math.log(4))
    unseen = baseline.ngram_losses(train, np.array([0, 3, 1], dtype=np.uint16), vocab_size=4)  # 3: never in train
    assert math.isfinite(unseen["bigram"]) and math.isfinite(unseen["unigram"])
