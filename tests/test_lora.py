"""
LoRA (lora.py): a wrapped layer computes W x + b + (alpha / r) B A x, starts as the base layer,
trains only A and B, and merges into a plain Linear that computes the same function.

    python -m pytest tests/test_lora.py -q
"""

import pytest
import torch
import torch.nn as nn

from conftest import assert_close, tiny_gpt
from finetuning.lora import LORA_TARGETS, LoRALinear, apply_lora, merge_lora


def randomize_updates(model, seed):
    """B starts at zero, which would hide a wrong merge; give every update a visible size."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.copy_(0.3 * torch.randn(module.lora_B.shape, generator=g))


def test_wrapper_matches_the_formula():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, rank=3, alpha=12.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 4, 6)
    expected = x @ base.weight.t() + base.bias + (12.0 / 3) * (x @ layer.lora_A.t() @ layer.lora_B.t())
    assert_close(layer(x), expected, 1e-5, "LoRALinear vs W x + b + (alpha/r) B A x")


@pytest.mark.parametrize("targets", [LORA_TARGETS, ("attn.c_attn",), ("mlp.c_fc", "mlp.c_proj")])
def test_at_init_the_model_is_unchanged(targets):
    model = tiny_gpt(seed=1)
    idx = torch.randint(0, model.config.vocab_size, (3, 11))
    expected, _ = model(idx)
    apply_lora(model, targets, rank=4, alpha=8.0)
    actual, _ = model(idx)
    assert_close(actual, expected, 1e-6, f"LoRA at init vs base model ({', '.join(targets)})")


@pytest.mark.parametrize("rank,alpha,seed", [(1, 1.0, 0), (4, 8.0, 1), (8, 32.0, 2)])
def test_merged_equals_unmerged(rank, alpha, seed):
    model = tiny_gpt(seed=seed)
    apply_lora(model, LORA_TARGETS, rank, alpha)
    randomize_updates(model, seed)
    idx = torch.randint(0, model.config.vocab_size, (2, 13))
    unmerged, _ = model(idx)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    merged, _ = model(idx)
    assert_close(merged, unmerged, 1e-5, f"merged vs unmerged LoRA (rank {rank}, alpha {alpha})")
    # and the update was not a no-op, or the comparison above proves nothing
    assert (merged - tiny_gpt(seed=seed)(idx)[0]).abs().max() > 1e-2


def test_only_the_updates_train():
    model = tiny_gpt(seed=3)
    model.requires_grad_(False)
    replaced = apply_lora(model, LORA_TARGETS, rank=2, alpha=4.0)
    assert len(replaced) == len(LORA_TARGETS) * model.config.n_layer
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_A", "lora_B")) for name in trainable)
    C, L = model.config.n_embd, model.config.n_layer
    # r * (in + out) per layer: c_attn C -> 3C, attn.c_proj C -> C, c_fc C -> 4C, mlp.c_proj 4C -> C
    expected = L * 2 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    idx = torch.randint(0, model.config.vocab_size, (2, 7))
    model(idx)[0].square().mean().backward()
    layer = model.transformer.h[0].attn.c_attn
    assert layer.base.weight.grad is None
    assert layer.lora_B.grad.abs().max() > 0  # A's gradient is B^T(...) = 0 at init; B's is not


def test_merge_keeps_the_residual_tag():
    model = tiny_gpt(seed=4)
    apply_lora(model, ("attn.c_proj",), rank=2, alpha=2.0)
    merge_lora(model)
    assert isinstance(model.transformer.h[0].attn.c_proj, nn.Linear)
    assert model.transformer.h[0].attn.c_proj.is_residual_projection


def test_rank_zero_is_an_error():
    with pytest.raises(ValueError, match="rank must be at least 1"):
        LoRALinear(nn.Linear(4, 4), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="rank must be at least 1"):
        apply_lora(tiny_gpt(), LORA_TARGETS, rank=0, alpha=1.0)


def test_missing_target_is_an_error():
    with pytest.raises(ValueError, match="'attn.q_proj' matches no nn.Linear"):
        apply_lora(tiny_gpt(), ("attn.c_attn", "attn.q_proj"), rank=2, alpha=2.0)
