"""
The bag-of-words baseline a finetuned GPT has to beat: logistic regression on the words and word pairs
(1-2-grams) of a text, TF-IDF weighted, fitted on a task's train split, its L2 penalty chosen on val,
scored on every split like finetune.py's models (finetuning.metrics).

    python tools/baseline.py --task=imdb    # fitted and scored alone: data/imdb/{train,val,test}.jsonl

From finetune.py: bow_baseline(train_rows, {"val": rows, "test": rows}, labels) -> (model, {split: report}).

What each step does, and why:
1. n-grams: the lower-cased words (and single punctuation marks, since "!" carries sentiment), and
   each pair of adjacent ones, so "not good" is a feature of its own.
2. The vocabulary: the n-grams in at least MIN_DF training texts, at most MAX_FEATURES of them, the
   most common first. Only train's texts are read: an n-gram seen only in val or test has no weight
   to learn, and reading them would let test shape the features.
3. Features: TF-IDF, each row scaled to length 1. A count is damped (1 + log tf: the tenth "bad"
   says less than the first) and weighted by how rare the n-gram is (idf: "the" says nothing). The
   texts' features are a sparse matrix: a review holds a few hundred of the vocabulary's n-grams.
4. Softmax regression with an L2 penalty, fitted by L-BFGS on the whole train split (the loss is
   convex and smooth, so a quasi-Newton method converges in tens of steps). One fit per penalty of
   L2_GRID, strongest first, each starting from the last; val's macro-F1 picks one. Val's labels
   choose the penalty and nothing else; test's are only scored.
"""

import math
import re
import warnings
from collections import Counter

import torch
import torch.nn.functional as F

from finetuning.metrics import classification_report, headline
MIN_DF = 2  # an n-gram must occur in this many training texts to become a feature
MAX_FEATURES = 200_000
L2_GRID = (3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)  # strongest first; the penalty is l2 / 2 * sum(W^2)
MAX_STEPS = 100  # L-BFGS iterations per penalty
WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")  # a word ("don't" is one) or one punctuation mark


def ngrams(text):
    """The text's words and punctuation marks, lower-cased, then each adjacent pair joined by a space."""
    words = WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class Features:
    """The n-gram vocabulary and idf weights of a training set, and the TF-IDF matrix of any texts."""

    def __init__(self, train_texts, min_df=MIN_DF, max_features=MAX_FEATURES):
        df = Counter()  # n-gram -> the number of training texts that hold it
        for text in train_texts:
            df.update(set(ngrams(text)))
        # most frequent first, ties in alphabetical order: a set's order follows Python's string hashing,
        # which changes from process to process, and with it the columns and the fit's float32 sums
        ranked = sorted(df.items(), key=lambda item: (-item[1], item[0]))[:max_features]
        common = [g for g, n in ranked if n >= min_df]
        self.index = {g: i for i, g in enumerate(common)}
        n = len(train_texts)
        # smoothed idf, as if one more text held every n-gram: never zero, never infinite
        self.idf = torch.tensor([math.log((1 + n) / (1 + df[g])) + 1 for g in common])

    def __len__(self):
        return len(self.index)

    def matrix(self, texts):
        """(N, V) sparse (CSR): row i is text i's TF-IDF vector, scaled to length 1 (zeros if no n-gram is known)."""
        rows, cols, tfs = [], [], []
        for i, text in enumerate(texts):
            counts = Counter(self.index[g] for g in ngrams(text) if g in self.index)
            rows += [i] * len(counts)
            cols += counts.keys()
            tfs += counts.values()
        cols = torch.tensor(cols, dtype=torch.long)
        values = (1 + torch.log(torch.tensor(tfs, dtype=torch.float))) * self.idf[cols]  # (nnz,)
        rows = torch.tensor(rows, dtype=torch.long)
        norms = torch.zeros(len(texts)).index_add_(0, rows, values**2).sqrt()  # (N,)
        X = torch.sparse_coo_tensor(torch.stack([rows, cols]), values / norms[rows], (len(texts), len(self)),
                                    check_invariants=True)
        return to_csr(X)


def to_csr(X):
    """A sparse matrix in CSR form, where X @ W runs several times faster than in COO form. (torch
    warns that its CSR support is in beta; what we use of it, a product with a dense matrix, is old.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return X.coalesce().to_sparse_csr()


def fit_softmax(X, y, n_classes, l2, init=None):
    """Weights W (V, K) and bias b (K,) minimising mean cross-entropy + l2 / 2 * |W|^2 on X (N, V).
    The gradient is written out, with X's transpose made once: autograd's backward through a sparse
    product ran several times slower here, on a CPU."""
    W = torch.zeros(X.shape[1], n_classes) if init is None else init[0].clone()
    b = torch.zeros(n_classes) if init is None else init[1].clone()
    Xt = to_csr(X.to_sparse_coo().t())  # (V, N)
    targets = F.one_hot(y, n_classes).float()  # (N, K)
    optimizer = torch.optim.LBFGS([W, b], lr=1, max_iter=MAX_STEPS, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        logits = X @ W + b  # (N, K)
        loss = F.cross_entropy(logits, y) + l2 / 2 * (W**2).sum()
        # d loss / d logits of the mean cross-entropy: (softmax - one-hot) / N
        residual = (logits.softmax(dim=1) - targets) / len(y)  # (N, K)
        W.grad = Xt @ residual + l2 * W  # (V, K)
        b.grad = residual.sum(dim=0)  # (K,)
        return loss

    optimizer.step(closure)
    return W.detach(), b.detach()  # without the .grad the closure left on them


class BagOfWords:
    """Features + the softmax weights for one penalty; predict gives each text's label, probs its
    label probabilities."""

    def __init__(self, features, W, b, labels, l2):
        self.features, self.W, self.b, self.labels, self.l2 = features, W, b, list(labels), l2

    def predict(self, texts):
        return self.predict_features(self.features.matrix(texts))

    def probs(self, texts):
        return (self.features.matrix(texts) @ self.W + self.b).softmax(dim=1)  # (N, K)

    def predict_features(self, X):
        logits = X @ self.W + self.b  # (N, K)
        return [self.labels[k] for k in logits.argmax(dim=1).tolist()]


def fit(train_rows, val_rows, labels, l2_grid=L2_GRID):
    """The model of l2_grid's penalty that scores best on val. -> (BagOfWords, {l2: val report})"""
    features = Features([r["text"] for r in train_rows])
    X = features.matrix([r["text"] for r in train_rows])
    y = torch.tensor([labels.index(r["label"]) for r in train_rows])
    X_val, val_gold = features.matrix([r["text"] for r in val_rows]), [r["label"] for r in val_rows]
    best, val_reports, init = None, {}, None
    for l2 in l2_grid:
        init = fit_softmax(X, y, len(labels), l2, init)
        model = BagOfWords(features, *init, labels, l2)
        val_reports[l2] = classification_report(val_gold, model.predict_features(X_val), labels)
        if best is None or headline(val_reports[l2]) > headline(val_reports[best.l2]):
            best = model
    return best, val_reports


def score_splits(model, splits):
    """{split name: classification report} of the model's predictions."""
    return {name: classification_report([r["label"] for r in rows], model.predict([r["text"] for r in rows]),
                                        model.labels)
            for name, rows in splits.items()}


def bow_baseline(train_rows, splits, labels):
    """Fit on train_rows, choose the penalty on splits["val"]: (the model, its report on every split)."""
    model, _ = fit(train_rows, splits["val"], list(labels))
    return model, score_splits(model, splits)
