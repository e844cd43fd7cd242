"""The BPE trainer (common/bpe.py) and its tokenizer: merges checked by hand on tiny texts and against
a trainer that recounts every pair after each merge; tiktoken's encoding against the written-out
encoder; lossless round trips on any Unicode; the tokenizer rebuilt from its meta alone."""

import json
import random
from collections import Counter

import pytest

from common import bpe
from common.tokenizer import BPETokenizer, load_tokenizer
from conftest import FIXTURE_DATA

SHAKESPEARE = (FIXTURE_DATA / "tinyshakespeare" / "input.txt").read_text()  # 4 KB of the play
UNICODE = "naïve café 東京 🙂👍🏽 e\u0301 ﬁ \x00\x07 \t\r\n\u2028 <|endoftext|> ÷×ß Ωμέγα   spaced  out\n\n"


def random_unicode(rng, n):
    """n code points from all over Unicode (no surrogates, which UTF-8 cannot hold)."""
    points = [rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0x80, 0x800), rng.randrange(0x800, 0xD800),
                          rng.randrange(0xE000, 0x10FFFF)]) for _ in range(n)]
    return "".join(map(chr, points))


@pytest.fixture(scope="module")
def shakespeare_merges():
    return bpe.train([SHAKESPEARE], 300)


def test_first_merges_by_hand():
    # "aaabdaaabac": aa occurs 4 times -> 256 "aa", leaving [aa a b d aa a b a c]; then (aa, a) and
    # (a, b) both occur twice and the smaller ids win: (97, 98) -> 257 "ab"; then (256, 257) "aaab"
    assert bpe.train(["aaabdaaabac"], 3) == [(97, 97), (97, 98), (256, 257)]


def test_pre_token_frequencies_weight_the_pairs():
    # pre-tokens "ab" once, " ab" twice, " cd" once: ab 3 times, then " " + ab twice, then a tie of
    # 1 between (32, 99) " c" and (99, 100) "cd", which the smaller ids win
    assert bpe.train(["ab ab ab cd"], 3) == [(97, 98), (32, 256), (32, 99)]


def test_training_stops_when_no_pair_is_left():
    assert bpe.train(["ab"], 10) == [(97, 98)]
    assert bpe.train(["a b"], 10) == [(32, 98)]  # pre-tokens "a" and " b": no pair crosses the cut
    assert bpe.train(["a", ""], 10) == []


def naive_train(text, n_merges):
    """The merge loop without bookkeeping: count every pair of every pre-token afresh each time."""
    words = Counter(tuple(piece.encode("utf-8")) for piece in bpe.regex.findall(bpe.GPT2_PATTERN, text))
    merges = []
    for new_id in range(256, 256 + n_merges):
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = Counter()
        for word, n in words.items():
            merged[tuple(bpe.merge(list(word), best, new_id))] += n
        words = merged
    return merges


def test_incremental_counts_match_recounting(shakespeare_merges):
    text = SHAKESPEARE[:5_000]
    assert bpe.train([text], 120) == naive_train(text, 120)
    assert shakespeare_merges[:60] == naive_train(SHAKESPEARE, 60)


def test_merge_left_to_right():
    assert bpe.merge([5, 6, 6, 6], (6, 6), 9) == [5, 9, 6]
    assert bpe.merge([6, 6, 6, 6], (6, 6), 9) == [9, 9]
    assert bpe.merge([1, 2], (2, 1), 9) == [1, 2]


def test_tiktoken_equals_the_written_out_encoder(shakespeare_merges):
    tok = BPETokenizer(shakespeare_merges)
    rng = random.Random(0)
    for text in [SHAKESPEARE[-3_000:], UNICODE, random_unicode(rng, 500), "to be or not to be" * 20]:
        assert tok.encode(text) == bpe.encode(text, shakespeare_merges)
    assert len(tok.encode(SHAKESPEARE)) < 0.5 * len(SHAKESPEARE.encode("utf-8"))  # the merges compress


@pytest.mark.parametrize("seed", range(3))
def test_tiktoken_equals_written_out_encoder_on_small_alphabets(seed):
    """Texts of few letters make long words full of overlapping pairs, where orders of merging differ."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("aab") for _ in range(rng.randint(1, 25))) for _ in range(300)]
    merges = bpe.train([" ".join(words)], 150)
    tok = BPETokenizer(merges)
    for text in [" ".join(words), " ".join(rng.sample(words, 50)), "".join(words[:40])]:
        assert tok.encode(text) == bpe.encode(text, merges)


def test_round_trip_on_any_unicode(shakespeare_merges):
    tok = BPETokenizer(shakespeare_merges)
    rng = random.Random(1)
    for text in ["", UNICODE, random_unicode(rng, 2_000), SHAKESPEARE]:
        assert tok.decode(tok.encode(text)) == text
    assert "<|endoftext|>" in UNICODE and tok.eot_token not in tok.encode(UNICODE)  # text can't fake a boundary


def test_meta_rebuilds_the_same_tokenizer(shakespeare_merges):
    tok = BPETokenizer(shakespeare_merges)
    meta = json.loads(json.dumps(tok.meta))  # what meta.json and a checkpoint keep
    again = load_tokenizer(meta)
    assert again.meta == tok.meta and meta["kind"] == "bpe"
    assert again.vocab_size == tok.vocab_size == 256 + 300 + 1
    assert again.eot_token == 256 + 300 and again.decode([again.eot_token]) == "<|endoftext|>"
    assert again.encode(SHAKESPEARE) == tok.encode(SHAKESPEARE)


def test_two_merges_making_the_same_bytes_are_refused():
    # "ab" + "c" and "a" + "bc" both make "abc": tiktoken would not know which id to give it
    with pytest.raises(ValueError, match="same bytes"):
        bpe.mergeable_ranks([(97, 98), (256, 99), (98, 99), (97, 258)])
