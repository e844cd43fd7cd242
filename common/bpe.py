"""
Byte-level BPE (byte-pair encoding), trained on our own text: GPT-2's kind of tokenizer, with a
vocabulary sized for a small model.

    from common import bpe
    merges = bpe.train(texts, n_merges=7935)      # [(left id, right id), ...], in the order learned
    ranks = bpe.mergeable_ranks(merges)           # {token's bytes: id}, what tiktoken.Encoding takes
    ids = bpe.encode("a text", merges)            # the slow encoder written out; tiktoken does the same fast

How BPE learns (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909; on bytes as in GPT-2):
1. Cut the text into pre-tokens with GPT-2's regex: a word with the space before it, a number, a run
   of punctuation or of white space. No token will cross these cuts, so " the" and " the." share
   " the" rather than each getting its own token. Only the distinct pre-tokens and how often each
   occurs matter: " the" is counted once, with its frequency.
2. Every pre-token starts as its UTF-8 bytes, ids 0-255: any text can be encoded, whatever its script.
3. Merge: the most frequent pair of adjacent tokens (summed over all pre-tokens, weighted by their
   frequency) becomes a new token, id 256, 257, ... , and replaces the pair wherever it occurs.
   Repeat n_merges times. Ties go to the pair with the smaller ids, so training is deterministic.

Counting every pair again after each merge would take hours on a large corpus. But a merge changes
only the pre-tokens that hold the merged pair, so the loop updates the counts of those alone
(index: pair -> the pre-tokens that hold it), and finds the most frequent pair with a heap.

Encoding applies the merges in the order they were learned (encode, below). tiktoken does it with
ranks {bytes: id}, merging first the adjacent pair whose joined bytes have the lowest id; the tests
prove the two agree. The ids of the 256 bytes are the bytes' values.
"""

import heapq
from collections import Counter, defaultdict

import regex
import tiktoken_ext.openai_public

# GPT-2's pre-tokenizer, as tiktoken writes it: 's 't 're 've 'm 'll 'd, a word or a number with the
# space before it, a run of punctuation, white space (a run before a word leaves that word its space)
GPT2_PATTERN = tiktoken_ext.openai_public.r50k_pat_str


def count_pretokens(texts, pattern=GPT2_PATTERN):
    """Counter {pre-token: how often it occurs} over an iterable of texts, each cut on its own."""
    split = regex.compile(pattern).findall
    counts = Counter()
    for text in texts:
        counts.update(split(text))
    return counts


def merge(ids, pair, new_id):
    """ids with each occurrence of pair, read left to right, replaced by new_id:
    merge([5, 6, 6, 6], (6, 6), 9) == [5, 9, 6]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def add_pairs(pair_counts, ids, n):
    """Add n to the count of each adjacent pair in ids (n < 0 removes them); forget pairs counted 0."""
    for pair in zip(ids, ids[1:]):
        pair_counts[pair] += n
        if pair_counts[pair] == 0:
            del pair_counts[pair]


def train(texts, n_merges, pattern=GPT2_PATTERN, verbose=False):
    """Learn up to n_merges merges from texts (fewer if the text runs out of pairs). Returns the list
    of merged pairs: merges[k] = (left id, right id) made token 256 + k."""
    pretokens = count_pretokens(texts, pattern)
    words = [list(piece.encode("utf-8")) for piece in pretokens]  # each distinct pre-token, as token ids
    freqs = list(pretokens.values())  # freqs[i]: how often words[i] occurs in the texts

    pair_counts = Counter()  # (left id, right id) -> occurrences over all words, weighted by freqs
    where = defaultdict(set)  # pair -> indices of the words that hold it (or held it: entries go stale)
    for i, word in enumerate(words):
        add_pairs(pair_counts, word, freqs[i])
        for pair in zip(word, word[1:]):
            where[pair].add(i)
    # a heap of (-count, pair): its top is the most frequent pair, ties to the smaller ids. An entry's
    # count may be stale, but a merge only lowers the counts of the pairs that already existed (new
    # pairs all hold the new token, and get their own entries), so a stale count is too high: a popped
    # entry whose count is still current is the true maximum.
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)

    vocab = [bytes([b]) for b in range(256)]  # id -> the bytes it stands for
    merges = []
    while len(merges) < n_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:  # stale: put it back with its true count, if it still occurs
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        new_id = len(vocab)
        merges.append(pair)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])

        # rewrite the words that hold the pair, moving their pairs' counts from the old to the new form
        new_pairs = set()
        for i in where.pop(pair):
            merged = merge(words[i], pair, new_id)
            if len(merged) == len(words[i]):
                continue  # a stale index: an earlier merge took this pair out of the word
            add_pairs(pair_counts, words[i], -freqs[i])
            add_pairs(pair_counts, merged, freqs[i])
            for p in zip(merged, merged[1:]):
                if new_id in p:
                    where[p].add(i)
                    new_pairs.add(p)
            words[i] = merged
        for p in new_pairs:
            heapq.heappush(heap, (-pair_counts[p], p))
        if verbose and len(merges) % 1000 == 0:
            print(f"merge {len(merges):,}: {vocab[-1]!r} ({count:,} times)")
    return merges


def vocabulary(merges):
    """[the bytes of each token], ids 0-255 the single bytes, then one token per merge."""
    vocab = [bytes([b]) for b in range(256)]
    for left, right in merges:
        vocab.append(vocab[left] + vocab[right])
    return vocab


def mergeable_ranks(merges):
    """{token's bytes: id}: tiktoken's form of the merges. A token's id is its rank, so tiktoken,
    merging the adjacent pair whose joined bytes rank lowest, applies the merges in learned order."""
    ranks = {token: i for i, token in enumerate(vocabulary(merges))}
    if len(ranks) != 256 + len(merges):
        raise ValueError("two merges make the same bytes; tiktoken needs each token once")
    return ranks


def encode(text, merges, pattern=GPT2_PATTERN):
    """The token ids of text, BPE written out: cut into pre-tokens as in training, then in each one
    merge the adjacent pair that was learned first, again and again, until no learned pair is left."""
    rank = {pair: 256 + k for k, pair in enumerate(merges)}  # pair -> the id it merges into
    ids = []
    for piece in regex.findall(pattern, text):
        word = list(piece.encode("utf-8"))
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            word = merge(word, pair, rank[pair])
        ids.extend(word)
    return ids
