"""
Generation: the KV cache gives the same logits and tokens as recomputing the whole context,
before and after the context outgrows block_size; and sample_next_token's temperature, top_k, top_p.
"""

import math

import pytest
import torch

from conftest import assert_close, tiny_gpt
from model import KVCache, sample_next_token

PATHS = ["manual", "sdpa"]


def greedy_reference(model, idx, max_new_tokens, window_step=1):
    """Recompute everything each step over a context that grows by one token per step up to block_size;
    when it would outgrow block_size it falls back to block_size - window_step + 1 tokens (with 1: the
    last block_size tokens, always). Forward, argmax."""
    block_size = model.config.block_size
    n = min(idx.size(1), block_size)  # tokens of context for the next step
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -n:])
        idx = torch.cat((idx, logits[:, -1].argmax(dim=-1, keepdim=True)), dim=1)
        n = n + 1 if n < block_size else block_size - window_step + 1
    return idx


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("prompt_len,max_new_tokens", [(1, 6), (3, 13), (8, 5), (11, 4)])  # block_size is 8
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_generate_matches_recomputation(attention, prompt_len, max_new_tokens, seed):
    """Tokens from generate (with and without the cache) equal the reference loop's, including the steps
    past block_size, where generate falls back to recomputation over a sliding window."""
    model = tiny_gpt(seed, attention=attention, block_size=8)
    prompt = torch.randint(0, 37, (3, prompt_len), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = greedy_reference(model, prompt, max_new_tokens)
    cached = model.generate(prompt, max_new_tokens, temperature=0, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens, temperature=0, use_cache=False)
    assert cached.shape == (3, prompt_len + max_new_tokens)
    assert torch.equal(cached[:, :prompt_len], prompt), "generate changed the prompt"
    assert torch.equal(cached, expected), f"cached tokens differ:\n{cached}\nvs\n{expected}"
    assert torch.equal(uncached, expected), f"uncached tokens differ:\n{uncached}\nvs\n{expected}"
    assert len(set(expected[:, prompt_len:].flatten().tolist())) > 1, "degenerate test: one token repeated"


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("prompt_chunks", [(1,), (5,), (2, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_cached_logits_match_full_forward(attention, prompt_chunks, seed):
    """Drive the KVCache by hand, one token at a time up to block_size: each step's logits equal the
    last position's logits of a full forward over the whole sequence so far. Then the cache is full."""
    block_size = 10
    model = tiny_gpt(seed, attention=attention, block_size=block_size)
    seq = torch.randint(0, 37, (2, block_size), generator=torch.Generator().manual_seed(seed))
    cache = KVCache(model.config.n_layer, model.config.block_size)
    with torch.no_grad():
        start = 0
        for size in prompt_chunks:  # the prompt, possibly in several pieces
            logits, _ = model(seq[:, start : start + size], cache=cache)
            full, _ = model(seq[:, : start + size])
            assert_close(logits, full[:, start:], 1e-5, f"{attention}: cached prompt logits", relative=True)
            start += size
        for t in range(start, block_size):
            logits, _ = model(seq[:, t : t + 1], cache=cache)  # (B, 1, V)
            full, _ = model(seq[:, : t + 1])
            assert_close(logits[:, -1], full[:, -1], 1e-5, f"{attention}: cached step logits", relative=True)
        assert len(cache) == block_size
        with pytest.raises(ValueError, match="block_size"):
            model(seq[:, :1], cache=cache)


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("window_step", [2, 3, 8])  # block_size is 8
@pytest.mark.parametrize("prompt_len", [1, 11])
def test_window_step_keeps_the_cache_between_slides(attention, window_step, prompt_len):
    """With window_step s the window slides s tokens at once past block_size: the cached tokens equal
    recomputation over the context that rule gives (block_size - s + 1 up to block_size tokens)."""
    model = tiny_gpt(4, attention=attention, block_size=8)
    prompt = torch.randint(0, 37, (3, prompt_len), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = greedy_reference(model, prompt, 21, window_step)
        exact = greedy_reference(model, prompt, 21)
    cached = model.generate(prompt, 21, temperature=0, window_step=window_step)
    assert torch.equal(cached, expected), f"window_step={window_step}:\n{cached}\nvs\n{expected}"
    assert not torch.equal(expected, exact), "degenerate test: the shorter contexts changed no token"


@pytest.mark.parametrize("window_step", [0, 9])
def test_window_step_out_of_range(window_step):
    model = tiny_gpt(0, block_size=8)
    with pytest.raises(ValueError, match="window_step must be between 1 and block_size"):
        model.generate(torch.zeros((1, 1), dtype=torch.long), 3, window_step=window_step)


def test_generate_after_crop_block_size():
    model = tiny_gpt(3, block_size=16)
    model.crop_block_size(6)
    prompt = torch.randint(0, 37, (2, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = greedy_reference(model, prompt, 7)
    assert torch.equal(model.generate(prompt, 7, temperature=0), expected)


# ---- sample_next_token ----

def batch_of(logits, n):
    return logits.expand(n, -1).contiguous()  # (n, V): n independent draws in one call


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next_token(logits, temperature=0), logits.argmax(-1, keepdim=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_1_and_tiny_top_p_are_greedy(seed):
    torch.manual_seed(seed)
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(seed))
    greedy = logits.argmax(-1, keepdim=True)  # (6, 1)
    for _ in range(20):
        assert torch.equal(sample_next_token(logits, temperature=1.0, top_k=1), greedy)
        assert torch.equal(sample_next_token(logits, temperature=2.0, top_p=1e-6), greedy)


@pytest.mark.parametrize("k", [2, 5])
def test_top_k_samples_only_the_k_likeliest(k):
    torch.manual_seed(k)
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9, 1.2, -0.5, 0.0]])  # order: 1, 3, 5, 4, 0, 7, 6, 2
    likeliest = {1, 3, 5, 4, 0}
    expected = set(sorted(likeliest, key=lambda i: -logits[0, i].item())[:k])
    draws = sample_next_token(batch_of(logits, 4000), temperature=1.0, top_k=k)
    assert set(draws.flatten().tolist()) == expected


@pytest.mark.parametrize("top_p,kept", [
    (0.4, {2}),           # 0.5 covers 0.4 alone
    (0.7, {2, 0}),        # 0.5 < 0.7 <= 0.5 + 0.3
    (0.85, {2, 0, 3}),    # 0.8 < 0.85 <= 0.95
    (0.99, {2, 0, 3, 1}),
])
def test_top_p_keeps_the_smallest_covering_set(top_p, kept):
    """Hand-made probabilities 0.3, 0.05, 0.5, 0.15 (tokens 0..3): top_p keeps the likeliest tokens
    until they add up to top_p, and samples among them in proportion to their probabilities."""
    torch.manual_seed(0)
    probs = torch.tensor([[0.3, 0.05, 0.5, 0.15]])
    n = 20000
    draws = sample_next_token(batch_of(probs.log(), n), temperature=1.0, top_p=top_p).flatten()
    assert set(draws.tolist()) == kept
    mass = sum(probs[0, i].item() for i in kept)
    for i in kept:
        p = probs[0, i].item() / mass  # renormalised over the kept set
        freq = (draws == i).float().mean().item()
        assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n), f"token {i}: frequency {freq:.3f}, expected {p:.3f}"


def test_temperature_sharpens_and_flattens():
    """Token frequencies follow softmax(logits / temperature)."""
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    n = 20000
    for temperature in (0.5, 2.0):
        draws = sample_next_token(batch_of(logits, n), temperature=temperature).flatten()
        expected = torch.softmax(logits[0] / temperature, dim=-1)
        freq = torch.bincount(draws, minlength=3).float() / n
        err = (freq - expected).abs().max().item()
        assert err < 5 * math.sqrt(0.25 / n), f"temperature {temperature}: frequencies {freq}, expected {expected}"
