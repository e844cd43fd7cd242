"""
Heads (heads.py): padding never changes a head's output, pooling reads only real tokens, and a
word's label sits on its first BPE piece; IOB2 decoding finds the best valid tag sequence.

    python -m pytest tests/test_heads.py -q
"""

import itertools

import pytest
import torch

from conftest import assert_close, spread_weights, tiny_gpt
from finetune import Classifier
from finetuning.crf import CRF
from finetuning.heads import HEADS, build_head, last_real_index
from finetuning.tagging import align_word_labels, word_predictions
from finetuning.tasks import read_twice


def padded_batch(rows, pad_ids):
    """Right-pad the rows with the given ids (anything a real pad could be). -> idx (B, T), mask (B, T)"""
    T = max(len(r) for r in rows)
    idx = torch.tensor([r + pad_ids[: T - len(r)] for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (T - len(r)) for r in rows])
    return idx, mask


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("head_name", list(HEADS))
def test_padding_never_changes_the_logits(head_name, attention):
    torch.manual_seed(0)
    gpt = tiny_gpt(seed=5, attention=attention)
    head = build_head(head_name, gpt.config.n_embd, 3)
    if head_name == "attn_pool":
        torch.nn.init.normal_(head.query, std=1.0)  # a zero query is mean pooling: make it attend unevenly
    model = Classifier(gpt, spread_weights(head, 6)).eval()
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 37, (n,), generator=g).tolist() for n in (3, 9, 1, 16)]
    pads = [torch.randint(0, 37, (16,), generator=g).tolist() for _ in range(2)]
    with torch.no_grad():
        batched = [model(*padded_batch(rows, pad)) for pad in pads]  # two different paddings
        for i, row in enumerate(rows):
            alone = model(*padded_batch([row], []))[0]  # (L,) or (T, L)
            for b in batched:
                in_batch = b[i, : len(row)] if head.per_token else b[i]
                assert_close(in_batch, alone, 1e-5, f"{head_name} ({attention}): row {i} alone vs padded")


def test_last_real_index_hand_case():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert last_real_index(mask).tolist() == [1, 3, 0, 3]  # the last row is left-padded: still right


def test_mean_and_zero_query_attention_pool_average_only_real_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])  # (1, 3, 2): the last is padding
    mask = torch.tensor([[True, True, False]])
    expected = torch.tensor([[2.0, 3.0]])
    assert_close(HEADS["mean"](2, 2).pool(hidden, mask), expected, 1e-6, "mean pool")
    assert_close(HEADS["attn_pool"](2, 2).pool(hidden, mask), expected, 1e-6, "attention pool, zero query")
    assert_close(HEADS["last"](2, 2).pool(hidden, mask), torch.tensor([[3.0, 4.0]]), 1e-6, "last real token")


def test_registry():
    assert {"last", "mean", "attn_pool", "mlp", "token", "token_crf"} <= set(HEADS)
    assert [name for name, cls in HEADS.items() if cls.per_token] == ["token", "token_crf"]
    with pytest.raises(ValueError, match="unknown head 'cls'"):
        build_head("cls", 8, 2)


class PiecesOfThree:
    """A toy tokenizer that cuts text into pieces of at most three characters, one id per piece."""

    def __init__(self):
        self.vocab = {}

    def encode(self, text):
        return [self.vocab.setdefault(text[i : i + 3], len(self.vocab)) for i in range(0, len(text), 3)]


def test_first_piece_carries_the_label():
    words, labels = ["Peter", "Blackburn", "of", "EU"], [1, 2, 0, 3]
    tok = PiecesOfThree()
    ids, token_labels, first_pieces = align_word_labels(tok, words, labels)
    # "Pet|er", " Bl|ack|bur|n", " of", " EU"
    assert len(ids) == 2 + 4 + 1 + 1
    assert token_labels == [1, -1, 2, -1, -1, -1, 0, 3]
    assert first_pieces == [0, 2, 6, 7]
    token_predictions = [5, 9, 6, 9, 9, 9, 7, 8]  # only positions 0, 2, 6 and 7 count
    assert word_predictions(token_predictions, first_pieces, default=0) == [5, 6, 7, 8]
    # cut after 5 tokens: the last two words were never scored and get the default
    assert word_predictions(token_predictions[:5], first_pieces, default=0) == [5, 6, 0, 0]


def test_alignment_with_a_byte_level_bpe(tiny_bpe):
    """Through a BPE like GPT-2's (tiny_bpe: "thing" -> "th|ing", " the" -> " the", " EU" -> " |E|U"),
    the words after the first keep their leading space, so the ids decode to the sentence."""
    words, labels = ["thing", "the", "EU"], [5, 0, 3]
    ids, token_labels, first_pieces = align_word_labels(tiny_bpe, words, labels)
    assert tiny_bpe.decode(ids) == "thing the EU"
    pieces = [tiny_bpe.encode(w) for w in ("thing", " the", " EU")]
    assert [len(p) for p in pieces] == [2, 1, 3]  # the test needs words that split, and one that doesn't
    assert ids == pieces[0] + pieces[1] + pieces[2]
    assert first_pieces == [0, 2, 3]
    assert token_labels == [5, -1, 0, 3, -1, -1]


# ---- IOB2 decoding of tagger outputs ----

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def decode_iob2(log_probs, labels):
    """How finetuning/evaluate.py decodes a plain token head's words (n_words, L): Viterbi of a CRF at zero scores."""
    return CRF(len(labels)).viterbi(log_probs.unsqueeze(0), torch.ones(1, len(log_probs), dtype=torch.bool), labels)[0]


def valid_iob2(tags):
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1] in ("B-" + t[2:], t)) for i, t in enumerate(tags))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_words", [1, 2, 4])
def test_decode_iob2_is_the_best_valid_sequence(seed, n_words):
    """Viterbi equals an exhaustive search: of all 5^n tag sequences, the valid one of highest
    summed log-probability. Temperature 3 makes the per-word argmax often invalid."""
    log_probs = torch.log_softmax(3 * torch.randn(n_words, len(TAGS), generator=torch.Generator().manual_seed(seed)), -1)
    candidates = [seq for seq in itertools.product(range(len(TAGS)), repeat=n_words)
                  if valid_iob2([TAGS[i] for i in seq])]
    best = max(candidates, key=lambda seq: sum(log_probs[w, t].item() for w, t in enumerate(seq)))
    assert decode_iob2(log_probs, TAGS) == list(best)


def test_decode_iob2_keeps_a_valid_argmax_and_mends_an_invalid_one():
    probs = torch.tensor([[0.9, 0.05, 0.01, 0.03, 0.01],    # O
                          [0.1, 0.7, 0.1, 0.05, 0.05],      # B-PER
                          [0.1, 0.1, 0.7, 0.05, 0.05]])     # I-PER continues it: kept
    assert decode_iob2(probs.log(), TAGS) == [0, 1, 2]
    probs[1] = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])      # now O, then I-PER: invalid
    decoded = [TAGS[i] for i in decode_iob2(probs.log(), TAGS)]
    assert valid_iob2(decoded)


def test_tags_without_iob_prefixes_decode_to_the_argmax():
    log_probs = torch.log_softmax(torch.randn(7, 3, generator=torch.Generator().manual_seed(0)), -1)
    assert decode_iob2(log_probs, ["NOUN", "VERB", "ADJ"]) == log_probs.argmax(-1).tolist()


def test_reading_twice_tags_the_second_copy():
    """The sentence, a separator, the sentence again: the targets and first pieces are the second copy's;
    where both copies don't fit, the first keeps its end and the second stays whole."""
    ids, targets, first = [5, 6, 7, 8], [1, -1, 2, 0], [0, 2, 3]  # 3 words: the first has 2 pieces
    twice = read_twice(ids, targets, first, separator=[99], max_len=20)
    assert twice == ([5, 6, 7, 8, 99, 5, 6, 7, 8], [-1] * 5 + [1, -1, 2, 0], [5, 7, 8])
    cut = read_twice(ids, targets, first, separator=[99], max_len=7)  # room for 2 of the first copy
    assert cut == ([7, 8, 99, 5, 6, 7, 8], [-1] * 3 + [1, -1, 2, 0], [3, 5, 6])
    assert [cut[0][p] for p in cut[2]] == [ids[p] for p in first]  # each word's first piece, in the second copy
