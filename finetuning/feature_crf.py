"""
The classic tagging baseline a finetuned GPT has to beat: a linear-chain CRF (finetuning/crf.py) over
hand-made features of each word and its neighbours, fitted on a task's train split, its L2 penalty
chosen on val, scored on every split like finetune.py's models (finetuning.metrics).

    python tools/baseline.py --task=conll2003    # fitted and scored alone: data/conll2003/{train,val}.jsonl

From finetune.py: feature_crf_baseline(train_rows, {"val": rows, "test": rows}, labels) -> (model,
{split: report}), rows being {"tokens": [...], "tags": [...]}; model.predict(rows, extra) also decodes
with another tagger's word scores added to the features' (what finetune.py's GPT adds to them).

What each step does, and why:
1. Features: strings that describe a word (word_features): itself, its lower case, prefix and
   suffixes, its shape ("Xxxxx", "dd-dd"), whether it is all capitals, title case or digits, whether
   it starts or ends the sentence, and the lower case, shape and title case of the two words on each
   side. A name is often known by its neighbours: "Mr. X", "X said", "in X".
2. The vocabulary: the features seen at least MIN_COUNT times in the training rows. Only train's
   rows are read: a feature seen only in val or test has no weight to learn.
3. Emission scores: each feature has a weight per tag, and a word's score for a tag is the sum of
   its features' weights: a sparse linear layer (nn.EmbeddingBag in sum mode), (n_words, L). The
   CRF adds the learned transitions, and Viterbi decodes the best valid IOB2 sequence.
4. Fitting: the CRF's negative log-likelihood per word, plus an L2 penalty on the feature weights,
   minimised by L-BFGS on every training sentence at once (the loss is convex and smooth). One fit
   per penalty of L2_GRID, each from zero weights; val's entity F1 picks one. (A fit started from the
   last penalty's weights, as bow.py does, stalls here: its first steps change a float32 loss by
   less than float32 can show, and L-BFGS stops.) Val's labels choose the penalty and nothing else;
   test's are only scored.
This is the model of CRFsuite's NER tutorials (Okazaki 2007, http://www.chokkan.org/software/crfsuite/),
written as a torch module: the same CRF can read a GPT's states beside these features.
"""

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn as nn

from common.cli import UserError
from finetuning.crf import CRF
from finetuning.metrics import headline, score

MIN_COUNT = 1  # a feature must occur this many times in the training words (CoNLL-2003's val: 1 over 2)
L2_GRID = (1e-5, 1e-6, 1e-7)  # the penalty is l2 / 2 * sum(W^2), beside the NLL per word
MAX_STEPS = 150  # L-BFGS iterations per penalty, at most
BATCH = 500  # sentences scored together; sorted by length, so a batch pads little
RUN = 4  # a shape keeps at most this many characters of one class in a row


# ----------------------------------------------------------------------------- features

def shape(word):
    """The word's characters as classes, X upper case, x lower case, d digit, any other kept as it is,
    each run cut to RUN characters (as spaCy does): "Peter" -> "Xxxxx", "12-34" -> "dd-dd",
    "1996-08-22" -> "dddd-dd-dd", "Blackburn" -> "Xxxxx", "U.S." -> "X.X."."""
    out = []
    for c in word:
        c = "X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c
        if out[-RUN:] != [c] * RUN:
            out.append(c)
    return "".join(out)


def word_features(words, i):
    """The features of words[i] in its sentence, as strings. A flag (upper, title, digit, BOS, EOS) is
    there when true and absent when false."""
    word = words[i]
    features = [f"word={word}", f"lower={word.lower()}", f"prefix3={word[:3]}", f"suffix3={word[-3:]}",
                f"suffix2={word[-2:]}", f"shape={shape(word)}"]
    features += [flag for flag, holds in (("upper", word.isupper()), ("title", word.istitle()),
                                          ("digit", word.isdigit()), ("BOS", i == 0),  # the first word
                                          ("EOS", i == len(words) - 1)) if holds]
    for offset in (-2, -1, 1, 2):
        j = i + offset
        if 0 <= j < len(words):  # beyond the sentence's ends, BOS and EOS say what there is
            features += [f"{offset:+d}:lower={words[j].lower()}", f"{offset:+d}:shape={shape(words[j])}"]
            features += [f"{offset:+d}:title"] if words[j].istitle() else []
    return features


class Features:
    """The feature vocabulary of the training rows, and the feature ids of any sentence's words."""

    def __init__(self, train_rows, min_count=MIN_COUNT):
        counts = Counter(f for row in train_rows for i in range(len(row["tokens"]))
                         for f in word_features(row["tokens"], i))
        self.index = {f: k for k, f in enumerate(sorted(f for f, n in counts.items() if n >= min_count))}

    def __len__(self):
        return len(self.index)

    def ids(self, words):
        """The ids of each word's known features: a list of lists, one per word (empty if none is known)."""
        return [[self.index[f] for f in word_features(words, i) if f in self.index] for i in range(len(words))]


# ----------------------------------------------------------------------------- the model

@dataclass
class Batch:
    """Sentences scored together, in EmbeddingBag's flat form: their words' feature ids one after
    another, and where each word's ids begin."""
    rows: list  # the indices of the sentences, in the order of the batch
    ids: torch.Tensor  # (n_ids,) every word's feature ids, word after word
    offsets: torch.Tensor  # (n_words,) where each word's ids begin in ids
    mask: torch.Tensor  # (B, T) True at real words
    tags: torch.Tensor | None  # (B, T) tag indices, 0 at padding; None for sentences without tags
    extra: torch.Tensor | None = None  # (n_words, L) scores another tagger gives each word, added to ours


def make_batches(rows, features, labels, extra=None):
    """The rows in batches of BATCH sentences of similar lengths (the longest first). extra: each row's
    (n_words, L) scores from another tagger, or None."""
    order = sorted(range(len(rows)), key=lambda k: -len(rows[k]["tokens"]))
    batches = []
    for start in range(0, len(order), BATCH):
        chunk = order[start : start + BATCH]
        T = len(rows[chunk[0]]["tokens"])
        word_ids = [ids for k in chunk for ids in features.ids(rows[k]["tokens"])]
        lengths = torch.tensor([len(rows[k]["tokens"]) for k in chunk])  # (B,)
        mask = torch.arange(T) < lengths.unsqueeze(1)  # (B, T)
        tags = None
        if "tags" in rows[chunk[0]]:
            tags = torch.zeros(len(chunk), T, dtype=torch.long)
            tags[mask] = torch.tensor([labels.index(t) for k in chunk for t in rows[k]["tags"]])
        offsets = torch.tensor([0] + [len(ids) for ids in word_ids[:-1]]).cumsum(0)  # (n_words,)
        flat = torch.tensor([f for ids in word_ids for f in ids], dtype=torch.long)  # (n_ids,)
        batch_extra = torch.cat([extra[k] for k in chunk]) if extra is not None else None  # (n_words, L)
        batches.append(Batch(chunk, flat, offsets, mask, tags, batch_extra))
    return batches


class FeatureTagger(nn.Module):
    """Feature weights (a sparse linear layer) and a per-tag bias give each word's emission scores; a
    CRF over them scores whole tag sequences. Everything starts at zero."""

    def __init__(self, n_features, n_labels):
        super().__init__()
        self.weights = nn.EmbeddingBag(n_features, n_labels, mode="sum")  # row f: feature f's score for each tag
        nn.init.zeros_(self.weights.weight)
        self.bias = nn.Parameter(torch.zeros(n_labels))
        self.crf = CRF(n_labels)

    def emissions(self, batch):
        """The batch's emission scores (B, T, L), zeros at padding."""
        scores = self.weights(batch.ids, batch.offsets) + self.bias  # (n_words, L): each word's features summed
        if batch.extra is not None:  # another tagger's view of each word, beside the features'
            scores = scores + batch.extra
        emissions = scores.new_zeros(*batch.mask.shape, scores.size(1))  # (B, T, L)
        emissions[batch.mask] = scores  # the words, in order, fill each row from the left
        return emissions


def fit_tagger(tagger, batches, l2):
    """Minimise the NLL per training word + l2 / 2 * |W|^2 (W the feature weights) by L-BFGS, changing
    tagger's weights in place. Full batch: every closure reads every training sentence. The CRF's
    scores and the bias are few, and seen in every sentence: they go unpenalised."""
    n_words = sum(batch.mask.sum() for batch in batches)
    optimizer = torch.optim.LBFGS(tagger.parameters(), lr=1, max_iter=MAX_STEPS, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        nll = sum(tagger.crf.nll(tagger.emissions(b), b.tags, b.mask).sum() for b in batches) / n_words
        loss = nll + l2 / 2 * (tagger.weights.weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)


class FeatureCRF:
    """Features + a fitted tagger for one penalty; predict gives each sentence's tags."""

    def __init__(self, features, tagger, labels, l2):
        self.features, self.tagger, self.labels, self.l2 = features, tagger, list(labels), l2

    def predict(self, rows, extra=None):
        """The best valid IOB2 tag list of each row's tokens; with extra (each row's (n_words, L) scores
        from another tagger), the best under the sum of both taggers' scores and our transitions."""
        return self.predict_batches(make_batches(rows, self.features, self.labels, extra), len(rows))

    @torch.no_grad()
    def predict_batches(self, batches, n_rows):
        """The tags of the n_rows sentences that batches hold, in the rows' own order."""
        out = [None] * n_rows
        for batch in batches:
            paths = self.tagger.crf.viterbi(self.tagger.emissions(batch), batch.mask, self.labels)
            for k, path in zip(batch.rows, paths):
                out[k] = [self.labels[i] for i in path]
        return out


def fit(train_rows, val_rows, labels, l2_grid=L2_GRID, min_count=MIN_COUNT):
    """The model of l2_grid's penalty that scores best on val. -> (FeatureCRF, {l2: val report})"""
    labels = list(labels)
    features = Features(train_rows, min_count)
    train_batches = make_batches(train_rows, features, labels)
    val_batches, val_gold = make_batches(val_rows, features, labels), [r["tags"] for r in val_rows]
    best, val_reports = None, {}
    for l2 in l2_grid:
        tagger = FeatureTagger(len(features), len(labels))
        fit_tagger(tagger, train_batches, l2)
        model = FeatureCRF(features, tagger, labels, l2)
        val_reports[l2] = score(val_gold, model.predict_batches(val_batches, len(val_rows)), labels)
        if best is None or headline(val_reports[l2]) > headline(val_reports[best.l2]):
            best = model
    return best, val_reports


def score_splits(model, splits):
    """{split name: tagging report (entity F1 per type)} of the model's predictions."""
    return {name: score([r["tags"] for r in rows], model.predict(rows), model.labels) for name, rows in splits.items()}


def feature_crf_baseline(train_rows, splits, labels):
    """Fit on train_rows, choose the penalty on splits["val"]: (the model, its report on every split)."""
    if not train_rows:
        raise UserError("the feature-CRF baseline needs training sentences; none were given")
    model, _ = fit(train_rows, splits["val"], labels)
    return model, score_splits(model, splits)
