"""
CausalSelfAttention against an independent float64 reference written here with plain tensor ops,
both paths ("manual" and "sdpa") against each other, dropout, the KV cache, and the gradients.
"""

import math

import pytest
import torch

from conftest import assert_close, spread_weights
from model import CausalSelfAttention, GPTConfig, LayerKVCache

# (B, T, C, nh): one head and one token; odd T; head size 1..8; a T below and at block_size
SHAPES = [(1, 1, 8, 1), (2, 5, 12, 3), (3, 16, 32, 4), (2, 9, 64, 8), (1, 33, 48, 2), (2, 7, 16, 16)]
PATHS = ["manual", "sdpa"]


def make_attention(C, nh, block_size, seed, attention="manual", bias=True, dropout=0.0, dtype=torch.float32):
    config = GPTConfig(block_size=block_size, n_embd=C, n_head=nh, bias=bias, dropout=dropout, attention=attention)
    torch.manual_seed(seed)
    return spread_weights(CausalSelfAttention(config), seed).to(dtype).eval()


def reference_attention(x, attn, n_head):
    """Causal multi-head self-attention in float64, one head at a time, softmax as exp / sum,
    using only the module's c_attn / c_proj weights (nn.Linear computes x @ W^T + b)."""
    def linear(x, layer):
        y = x @ layer.weight.double().T  # no detach: the gradient test differentiates through this too
        return y if layer.bias is None else y + layer.bias.double()

    x = x.double()
    B, T, C = x.shape
    hs = C // n_head
    qkv = linear(x, attn.c_attn)  # (B, T, 3C): all queries, then all keys, then all values
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)  # future[i, j]: key j comes after query i
    heads = []
    for h in range(n_head):
        cols = slice(h * hs, (h + 1) * hs)  # head h owns channels h*hs .. (h+1)*hs - 1
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(hs)  # (B, T, T)
        scores = scores.masked_fill(future, float("-inf"))
        weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        weights = weights / weights.sum(dim=-1, keepdim=True)  # each row sums to 1 over keys 0..i
        heads.append(weights @ v[..., cols])  # (B, T, hs)
    return linear(torch.cat(heads, dim=-1), attn.c_proj)  # (B, T, C)


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("B,T,C,nh", SHAPES)
def test_attention_matches_float64_reference(B, T, C, nh, bias, attention):
    seed = B * 1000 + T * 10 + nh
    attn = make_attention(C, nh, block_size=T + 3, seed=seed, attention=attention, bias=bias)
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = attn(x)
    assert_close(y, reference_attention(x, attn, nh), 1e-5, f"{attention} vs float64 reference", relative=True)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("B,T,C,nh", SHAPES[1:4])
def test_manual_and_sdpa_agree(B, T, C, nh, seed, mode):
    """Same weights, same input: the two paths give the same output and the same gradients
    (train mode with dropout 0 included, since sdpa reads self.training for its dropout)."""
    manual = make_attention(C, nh, T, seed, "manual")
    sdpa = make_attention(C, nh, T, seed + 1, "sdpa")
    sdpa.load_state_dict(manual.state_dict())
    manual.train(mode == "train")
    sdpa.train(mode == "train")
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed))
    x_m, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_m, y_s = manual(x_m), sdpa(x_s)
    assert_close(y_s, y_m, 1e-5, f"sdpa vs manual ({mode})", relative=True)
    grad_out = torch.randn_like(y_m)
    y_m.backward(grad_out)
    y_s.backward(grad_out)
    assert_close(x_s.grad, x_m.grad, 1e-5, f"sdpa vs manual input grad ({mode})", relative=True)
    for (name, p_m), p_s in zip(manual.named_parameters(), sdpa.parameters()):
        assert_close(p_s.grad, p_m.grad, 1e-5, f"sdpa vs manual grad of {name} ({mode})", relative=True)


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_dropout_only_in_train_mode(attention, seed):
    """dropout > 0 in eval mode: deterministic and equal to the dropout-0 module with the same
    weights. In train mode the same module does drop (so the eval check is not vacuous)."""
    B, T, C, nh = 2, 12, 32, 4
    plain = make_attention(C, nh, T, seed, attention, dropout=0.0)
    dropping = make_attention(C, nh, T, seed, attention, dropout=0.5)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = plain(x)
        first, second = dropping(x), dropping(x)
        assert_close(first, expected, 1e-6, f"{attention} eval with dropout 0.5 vs dropout 0")
        assert torch.equal(first, second), "eval mode output is not deterministic"
        dropping.train()
        torch.manual_seed(seed)
        trained = dropping(x)
    diff = (trained - expected).abs().max().item()
    assert diff > 1e-2, f"{attention}: train mode with dropout 0.5 changed nothing (max diff {diff:.1e})"


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("t", [0, 3, 10])
def test_attention_is_causal(attention, t):
    """Changing the input at position t leaves every output before t bit-for-bit the same
    (up to rounding of the batched matmuls) and changes the output at t."""
    B, T, C, nh = 2, 11, 24, 3
    attn = make_attention(C, nh, T, seed=t, attention=attention)
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(t))
    x2 = x.clone()
    x2[:, t] += torch.randn(B, C, generator=torch.Generator().manual_seed(100 + t))
    with torch.no_grad():
        y, y2 = attn(x), attn(x2)
    if t > 0:
        assert_close(y2[:, :t], y[:, :t], 1e-6, f"{attention}: outputs before position {t} after changing it")
    changed = (y2[:, t] - y[:, t]).abs().max().item()
    assert changed > 1e-3, f"{attention}: changing position {t} did not change its own output"


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("chunks", [(1,) * 9, (4, 1, 1, 3), (2, 7), (9,)])
def test_cache_in_chunks_equals_full_sequence(attention, chunks):
    """Feeding the sequence in chunks through a LayerKVCache gives the full forward's outputs;
    chunks longer than one token after the first exercise the offset causal mask."""
    B, T, C, nh = 2, sum(chunks), 32, 4
    attn = make_attention(C, nh, block_size=12, seed=len(chunks), attention=attention)
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(7))
    cache = LayerKVCache()
    with torch.no_grad():
        full = attn(x)
        parts = [attn(piece, cache) for piece in x.split(list(chunks), dim=1)]
    assert cache.length == T
    assert_close(torch.cat(parts, dim=1), full, 1e-5, f"{attention} cached chunks {chunks} vs full", relative=True)


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_equal_the_references(attention, bias):
    """Backward through each path gives the reference's gradients (float64) for the input and every
    weight: a detach, a no_grad or an in-place write in our forward would cut or bend them while the
    forward values stayed right (prefix tuning, which trains keys and values fed in from outside, would
    then learn nothing)."""
    B, T, C, nh = 2, 5, 8, 2
    attn = make_attention(C, nh, T, seed=3, attention=attention, bias=bias, dtype=torch.float64)
    x = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    upstream = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours = torch.autograd.grad((attn(x) * upstream).sum(), [x, *attn.parameters()])
    reference = torch.autograd.grad((reference_attention(x, attn, nh) * upstream).sum(), [x, *attn.parameters()])
    names = ["x"] + [name for name, _ in attn.named_parameters()]
    for name, g, r in zip(names, ours, reference):
        assert_close(g, r, 1e-10, f"{attention}, bias={bias}: d/d {name}", relative=True)


@pytest.mark.parametrize("attention", PATHS)
def test_reading_both_ways_sees_later_tokens_and_never_padding(attention):
    """key_mask (a tagger reading both ways): an early token's output depends on later real tokens,
    and on no padding key, however the padding is filled; both paths agree."""
    B, T, C, nh = 2, 6, 16, 4
    attn = make_attention(C, nh, T, seed=11, attention=attention)
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(11))
    key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])  # row 1: 4 real tokens, 2 of padding
    with torch.no_grad():
        y = attn(x, key_mask=key_mask)
        later = x.clone()
        later[:, 3] += 1.0  # a later real token changes
        assert (attn(later, key_mask=key_mask)[:, 0] - y[:, 0]).abs().max() > 1e-3  # token 0 saw it
        padded = x.clone()
        padded[1, 4:] = torch.randn(2, C, generator=torch.Generator().manual_seed(12))
        assert_close(attn(padded, key_mask=key_mask)[1, :4], y[1, :4], 1e-6, f"{attention}: real tokens vs padding")
        other = make_attention(C, nh, T, seed=11, attention="sdpa" if attention == "manual" else "manual")
        assert_close(other(x, key_mask=key_mask), y, 1e-5, "manual vs sdpa, both ways", relative=True)
