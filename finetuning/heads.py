"""
Heads: small modules that turn a GPT's final hidden states into label scores.

    python finetune.py config/finetune_sms_spam.py --head=mean
    python finetune.py config/finetune_conll2003.py --head=token

Every head is called as head(hidden, mask) with hidden (B, T, C), the output of GPT.hidden_states,
and mask (B, T), True at real tokens and False at padding. A sequence head returns (B, L), one
score per label for each row; a token head returns (B, T, L), one per position. Batches are padded
on the right, and with causal attention a real token never attends to a later position, so padding
leaves the hidden states of real tokens untouched; the heads must then never read a padding position.

A new head is one class here, registered by name with @register("name").
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS = {}  # name -> head class; finetune.py's --head picks one


def register(name):
    """Class decorator: make the head available as --head=name."""
    def add(cls):
        cls.name = name
        HEADS[name] = cls
        return cls
    return add


def build_head(name, n_embd, n_labels):
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
    return HEADS[name](n_embd, n_labels)


def last_real_index(mask):
    """mask (B, T) -> (B,) the position of each row's last real token, wherever the padding is:
    the largest position index among the True entries."""
    positions = torch.arange(mask.size(1), device=mask.device)  # (T,)
    return (positions * mask).argmax(dim=1)


class SequenceHead(nn.Module):
    """One label per row: pool the real tokens' hidden states into one vector, then classify it."""
    per_token = False

    def __init__(self, n_embd, n_labels):
        super().__init__()
        self.classifier = nn.Linear(n_embd, n_labels)

    def forward(self, hidden, mask):
        return self.classifier(self.pool(hidden, mask))  # (B, C) -> (B, L)

    def pool(self, hidden, mask):
        raise NotImplementedError


@register("last")
class LastTokenHead(SequenceHead):
    """The last real token's state: in a causal model it is the only one that has read the whole text."""

    def pool(self, hidden, mask):
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return hidden[rows, last_real_index(mask)]  # (B, C)


@register("mean")
class MeanHead(SequenceHead):
    """The mean of the real tokens' states (padding gets weight 0)."""

    def pool(self, hidden, mask):
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # (B, C)


@register("attn_pool")
class AttentionPoolHead(SequenceHead):
    """A learned query attends over the real tokens; the weighted mean of their states is classified.
    The query starts at zero, which gives every real token the same weight: mean pooling."""

    def __init__(self, n_embd, n_labels):
        super().__init__(n_embd, n_labels)
        self.query = nn.Parameter(torch.zeros(n_embd))

    def pool(self, hidden, mask):
        scores = hidden @ self.query / math.sqrt(hidden.size(-1))  # (B, T, C) @ (C,) -> (B, T)
        scores = scores.masked_fill(~mask, float("-inf"))  # padding gets weight exactly 0
        weights = F.softmax(scores, dim=1)  # (B, T)
        return (weights.unsqueeze(1) @ hidden).squeeze(1)  # (B, 1, T) @ (B, T, C) -> (B, C)


@register("mlp")
class MLPHead(LastTokenHead):
    """The last real token's state through a hidden layer: a head that can learn non-linear features
    of a frozen body."""

    def __init__(self, n_embd, n_labels):
        super().__init__(n_embd, n_labels)
        self.classifier = nn.Sequential(nn.Linear(n_embd, n_embd), nn.GELU(), nn.Linear(n_embd, n_labels))


@register("token")
class TokenHead(nn.Module):
    """One label per token, for tagging (NER). Padding positions get scores too, as every position is
    scored on its own; their labels are -1, so the loss and the predictions skip them."""
    per_token = True

    def __init__(self, n_embd, n_labels):
        super().__init__()
        self.classifier = nn.Linear(n_embd, n_labels)

    def forward(self, hidden, mask):
        return self.classifier(hidden)  # (B, T, C) -> (B, T, L)


# ----------------------------------------------------------------------------- words and BPE pieces

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


def decode_iob2(log_probs, labels):
    """The likeliest tag sequence (indices into labels) in which no I-X starts an entity: Viterbi
    over the words' log-probabilities (n_words, L), a sentence being the product of its words'
    probabilities. Per-word argmax can say "O I-PER", a span that conlleval counts as a new entity."""
    if len(log_probs) == 0:
        return []
    allowed = iob2_transitions(labels)
    may_start = torch.tensor([not tag.startswith("I-") for tag in labels])
    score = log_probs[0].masked_fill(~may_start, float("-inf"))  # (L,) best path ending in each tag
    backpointers = []
    for word in log_probs[1:]:
        candidates = score[:, None].masked_fill(~allowed, float("-inf"))  # (L previous, L next)
        score, best_previous = candidates.max(dim=0)  # (L,), (L,)
        score = score + word
        backpointers.append(best_previous)
    tags = [score.argmax().item()]
    for best_previous in reversed(backpointers):
        tags.append(best_previous[tags[-1]].item())
    return tags[::-1]
