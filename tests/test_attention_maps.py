"""
tools/attention_maps.py: the weights it draws are the softmax the forward pass uses, recomputed here
by hand from q and k, and the weights the forward pass averages the values with.
"""

import math

import pytest
import torch

from conftest import assert_close, tiny_gpt
from tools.attention_maps import attention_maps, token_labels


def by_hand(model, idx):
    """softmax(q k^T / sqrt(hs)) with the future masked, from each block's own input: (L, nh, T, T)."""
    inputs = []
    hooks = [block.attn.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
             for block in model.transformer.h]
    with torch.no_grad():
        model(idx)
    for hook in hooks:
        hook.remove()
    maps = []
    for block, x in zip(model.transformer.h, inputs):
        B, T, C = x.shape
        nh = block.attn.n_head
        q, k, _ = block.attn.c_attn(x).split(C, dim=2)
        q = q.view(B, T, nh, C // nh).transpose(1, 2).double()  # (B, nh, T, hs)
        k = k.view(B, T, nh, C // nh).transpose(1, 2).double()
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // nh)  # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)  # key j after query i
        maps.append(scores.masked_fill(future, float("-inf")).softmax(dim=-1)[0])
    return torch.stack(maps)


@pytest.mark.parametrize("attention", ["manual", "sdpa"])  # an sdpa model is switched to the manual path
@pytest.mark.parametrize("seed", [0, 1])
def test_maps_are_the_softmax_of_q_and_k(attention, seed):
    model = tiny_gpt(seed, attention=attention)
    idx = torch.randint(37, (1, 16), generator=torch.Generator().manual_seed(seed))
    expected = by_hand(model, idx)
    maps = attention_maps(model, idx)
    assert maps.shape == (2, 4, 16, 16)  # (L, nh, T, T)
    assert expected.max() > 0.9  # spread weights: sharp maps, where a wrong scale or mask shows
    assert_close(maps, expected, 1e-5, f"maps vs softmax(qk^T) by hand ({attention}, seed {seed})")


def test_maps_are_the_weights_the_forward_pass_averages_the_values_with():
    """att @ v from the drawn maps gives exactly what each block's c_proj reads."""
    model = tiny_gpt(3)
    idx = torch.randint(37, (1, 12), generator=torch.Generator().manual_seed(3))
    read = []
    hooks = [block.attn.c_proj.register_forward_hook(lambda m, args, out: read.append(args[0]))
             for block in model.transformer.h]
    values = []
    hooks += [block.attn.c_attn.register_forward_hook(lambda m, args, out: values.append(out.split(32, dim=2)[2]))
              for block in model.transformer.h]
    maps = attention_maps(model, idx)
    for hook in hooks:
        hook.remove()
    for layer, (att, v, y) in enumerate(zip(maps, values, read)):
        v = v.view(1, 12, 4, 8).transpose(1, 2)[0]  # (nh, T, hs)
        merged = (att @ v).transpose(0, 1).reshape(12, 32)  # (T, C), the heads side by side
        assert_close(merged, y[0], 1e-5, f"layer {layer}: maps @ v vs c_proj's input")


def test_the_model_forgets_the_maps_afterwards():
    """Keeping the weights costs memory: the flag is off again, and the maps are not kept."""
    model = tiny_gpt(0)
    attention_maps(model, torch.zeros(1, 4, dtype=torch.long))
    assert all(not b.attn.keep_att and b.attn.last_att is None for b in model.transformer.h)


def test_labels_show_spaces_and_newlines():
    from common.tokenizer import CharTokenizer

    tok = CharTokenizer("\n ab")
    assert token_labels(tok, tok.encode("a b\n")) == ["a", "␣", "b", "\\n"]
