"""
Tagging words with a causal GPT (CoNLL-2003 named entities): BPE pieces <-> words, IOB2's rule of
which tag may follow which (finetuning/crf.py's Viterbi keeps it), and the simplest baseline to beat.

A word may become several BPE pieces; the first piece carries the word's tag. Predictions come back
per token and are mapped to words, then decoded so that no I-X tag starts an entity.
"""

from collections import Counter

import torch

from finetuning.metrics import score


def align_word_labels(tokenizer, words, labels):
    """Tokenize a sentence word by word. A word may become several pieces (" Blackburn" -> " Black",
    "burn"): its first piece carries the word's label and the others get -1, which the loss ignores.
    Returns the token ids, one label per token, and the position of each word's first piece.
    Words after the first are encoded with a leading space, as they appear inside GPT-2's text.
    A causal model tags a word having read only its first piece and the words before it: the tag
    of "Peter" in "Peter Blackburn" is chosen before "Blackburn" is seen."""
    ids, token_labels, first_pieces = [], [], []
    for i, (word, label) in enumerate(zip(words, labels)):
        pieces = tokenizer.encode(word if i == 0 else " " + word)
        first_pieces.append(len(ids))
        ids += pieces
        token_labels += [label] + [-1] * (len(pieces) - 1)
    return ids, token_labels, first_pieces


def word_predictions(token_predictions, first_pieces, default):
    """Map per-token predictions back to words: each word takes its first piece's prediction.
    A word cut off by truncation (its first piece beyond the tokens scored) gets default."""
    n = len(token_predictions)
    return [token_predictions[p] if p < n else default for p in first_pieces]


def iob2_transitions(labels):
    """(L, L) bool: may tag j follow tag i? In IOB2 an I-X only continues a B-X or an I-X;
    every other pair, and any pair of tags without B-/I- prefixes, is allowed."""
    allowed = torch.ones(len(labels), len(labels), dtype=torch.bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            for i, prev in enumerate(labels):
                allowed[i, j] = prev in ("B-" + tag[2:], tag)
    return allowed


def iob2_starts(labels):
    """(L,) bool: may a sentence's first tag be tag j? Not an I-X, which would continue no entity."""
    return torch.tensor([not tag.startswith("I-") for tag in labels])


def most_frequent_tag_baseline(train_examples, examples, labels):
    """The classic NER baseline: every word gets the tag it had most often in training; unseen words O."""
    seen = {}
    for e in train_examples:
        for word, tag in zip(e.row["tokens"], e.row["tags"]):
            seen.setdefault(word, Counter())[tag] += 1
    predicted = [[seen[w].most_common(1)[0][0] if w in seen else "O" for w in e.row["tokens"]] for e in examples]
    gold = [e.row["tags"] for e in examples]
    return score(gold, predicted, labels)

