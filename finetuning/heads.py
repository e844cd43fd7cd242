"""
Heads: small modules that turn a GPT's final hidden states into label scores.

    python finetune.py config/finetune_sms_spam.py --head=mean
    python finetune.py config/finetune_conll2003.py --head=token
    python finetune.py config/finetune_conll2003.py --head=token_crf

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

from finetuning.crf import CRF
from model import masked_cross_entropy

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


def check_head(name, task, per_token):
    """A ValueError unless head name exists and reads what task labels: each text, or each word."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
    if HEADS[name].per_token != per_token:
        fitting = [n for n, head in HEADS.items() if head.per_token == per_token]
        raise ValueError(f"--head={name} does not fit {task}, which labels "
                         f"{'each word' if per_token else 'each text'}; choose from {', '.join(fitting)}")


class Head(nn.Module):
    """What every head shares: how its scores are trained. Cross-entropy of each row's label (or each
    word's tag: the targets of the other positions are -1 and skipped); a head that scores in another
    way (a CRF scores whole tag sequences) overrides loss."""
    per_token = False  # True: one label per position (tagging), False: one per row

    def loss(self, logits, targets):
        return masked_cross_entropy(logits.float(), targets)


def last_real_index(mask):
    """mask (B, T) -> (B,) the position of each row's last real token, wherever the padding is:
    the largest position index among the True entries."""
    positions = torch.arange(mask.size(1), device=mask.device)  # (T,)
    return (positions * mask).argmax(dim=1)


class SequenceHead(Head):
    """One label per row: pool the real tokens' hidden states into one vector, then classify it."""

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
class TokenHead(Head):
    """One label per token, for tagging (NER). Padding positions get scores too, as every position is
    scored on its own; their labels are -1, so the loss and the predictions skip them."""
    per_token = True

    def __init__(self, n_embd, n_labels):
        super().__init__()
        self.classifier = nn.Linear(n_embd, n_labels)

    def forward(self, hidden, mask):
        return self.classifier(hidden)  # (B, T, C) -> (B, T, L)


@register("token_crf")
class TokenCRFHead(TokenHead):
    """The token head's scores, read at each word's first piece, as the emissions of a CRF over the
    sentence's words (finetuning/crf.py): it also learns which tag follows which, and is trained on
    whole tag sequences. finetuning/evaluate.py decodes its tags with the CRF's Viterbi."""

    def __init__(self, n_embd, n_labels):
        super().__init__(n_embd, n_labels)
        self.crf = CRF(n_labels)

    def loss(self, logits, targets):
        """The CRF's negative log-likelihood of each row's words in order (the positions whose target is
        not -1), per word, as the token head's cross-entropy is: while the CRF's scores are zero, the two equal."""
        emissions, tags, mask = words_first(logits.float(), targets)
        return self.crf.nll(emissions, tags, mask).sum() / mask.sum()


def words_first(logits, targets):
    """Each row's words (the positions whose target is not -1) moved to its front, in their order.
    logits (B, T, L), targets (B, T) -> emissions (B, W, L), tags (B, W), mask (B, W) True at words,
    W being the most words of a row."""
    is_word = targets != -1  # (B, T)
    order = torch.argsort(~is_word, dim=1, stable=True)  # (B, T): a row's word positions, then the rest
    order = order[:, : is_word.sum(1).max()]  # (B, W)
    emissions = logits.gather(1, order.unsqueeze(2).expand(-1, -1, logits.size(2)))  # (B, W, L)
    tags = targets.gather(1, order)  # (B, W), -1 after a row's words
    return emissions, tags, tags != -1
