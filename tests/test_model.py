"""
The model's pieces and its bookkeeping: LayerNorm and gelu against PyTorch's, config checks,
causality of the logits, dropout, the masked loss, init, weight tying, optimizer groups,
block-size cropping, and torch.compile.
"""

import copy
import math
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, tiny_gpt
from common.optim import adamw
from model import GPT, GPTConfig, KVCache, LayerNorm, gelu, masked_cross_entropy

PATHS = ["manual", "sdpa"]


# ---- LayerNorm and gelu ----

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("scale", [1e-2, 1.0, 100.0])  # small inputs test where eps goes, large ones the variance
@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 32), (1, 1, 7)])
def test_layer_norm_matches_pytorch(shape, scale, bias):
    g = torch.Generator().manual_seed(shape[-1])
    ln = LayerNorm(shape[-1], bias=bias)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.5 * torch.randn(shape[-1], generator=g))
        if bias:
            ln.bias.copy_(torch.randn(shape[-1], generator=g))
    x = scale * (torch.randn(shape, generator=g) + 3.0)  # a nonzero mean to remove
    expected = F.layer_norm(x, (shape[-1],), ln.weight, ln.bias, eps=1e-5)
    assert_close(ln(x), expected, 1e-5, f"LayerNorm(bias={bias}) at scale {scale}", relative=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gelu_is_the_tanh_approximation(dtype):
    x = torch.linspace(-12, 12, 20001, dtype=dtype)
    expected = F.gelu(x, approximate="tanh")
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert_close(gelu(x), expected, tol, f"gelu vs F.gelu(tanh) in {dtype}")
    # the exact (erf) GELU differs by up to ~5e-4: the comparison above can tell them apart
    assert (gelu(x) - F.gelu(x)).abs().max() > 1e-4


# ---- config and input checks ----

@pytest.mark.parametrize("overrides,field", [
    (dict(block_size=0), "block_size"),
    (dict(vocab_size=-3), "vocab_size"),
    (dict(n_layer=2.0), "n_layer"),
    (dict(n_head=True), "n_head"),
    (dict(n_embd="32"), "n_embd"),
    (dict(n_embd=30, n_head=4), "n_embd"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(attention="flash"), "attention"),
])
def test_invalid_config_raises_naming_the_field(overrides, field):
    args = dict(block_size=8, vocab_size=11, n_layer=1, n_head=4, n_embd=32)
    args.update(overrides)
    with pytest.raises(ValueError, match=field):
        GPTConfig(**args)


def test_sequence_longer_than_block_size_raises():
    model = tiny_gpt(block_size=8)
    with pytest.raises(ValueError, match="block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    cache = KVCache(model.config.n_layer, model.config.block_size)
    model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="length 9 .* block_size 8"):
        model(torch.zeros(1, 4, dtype=torch.long), cache=cache)  # 5 cached + 4 new


# ---- the whole model: paths, causality, dropout ----

@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("seed", [0, 1])
def test_model_paths_agree(seed, mode):
    manual = tiny_gpt(seed, attention="manual").train(mode == "train")
    sdpa = tiny_gpt(seed + 1, attention="sdpa").train(mode == "train")
    sdpa.load_state_dict(manual.state_dict())
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 37, (3, 16), generator=g)
    targets = torch.randint(0, 37, (3, 16), generator=g)
    logits_m, loss_m = manual(idx, targets)
    logits_s, loss_s = sdpa(idx, targets)
    assert_close(logits_s, logits_m, 1e-5, f"model sdpa vs manual logits ({mode})", relative=True)
    assert_close(loss_s, loss_m, 1e-5, f"model sdpa vs manual loss ({mode})", relative=True)


@pytest.mark.parametrize("attention", PATHS)
@pytest.mark.parametrize("t", [1, 7, 15])
def test_logits_are_causal(attention, t):
    """Changing token t never changes the logits at positions 0..t-1, and does change those at t."""
    model = tiny_gpt(t, attention=attention)
    idx = torch.randint(0, 37, (2, 16), generator=torch.Generator().manual_seed(t))
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1 + torch.arange(2)) % 37
    with torch.no_grad():
        logits, _ = model(idx)
        logits2, _ = model(changed)
    assert_close(logits2[:, :t], logits[:, :t], 1e-6, f"{attention}: logits before changed token {t}")
    assert (logits2[:, t] - logits[:, t]).abs().max() > 1e-3, "changing a token did not change its logits"


@pytest.mark.parametrize("attention", PATHS)
def test_model_dropout_inactive_in_eval(attention):
    plain = tiny_gpt(5, attention=attention, dropout=0.0)
    dropping = tiny_gpt(6, attention=attention, dropout=0.3)
    dropping.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 37, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, _ = plain(idx)
        first, _ = dropping(idx)
        second, _ = dropping(idx)
        assert_close(first, expected, 1e-6, f"{attention}: eval logits with dropout 0.3 vs dropout 0")
        assert torch.equal(first, second)
        trained, _ = dropping.train()(idx)
    assert (trained - expected).abs().max() > 1e-2, "train mode with dropout 0.3 changed nothing"


# ---- masked loss ----

@pytest.mark.parametrize("masked_fraction", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("B,T,V", [(1, 1, 2), (2, 7, 11), (4, 16, 50)])
@pytest.mark.parametrize("seed", [0, 1])
def test_masked_loss_is_the_loss_on_unmasked_rows(B, T, V, masked_fraction, seed):
    """Positions with target -1 contribute nothing: the loss and its gradient equal
    F.cross_entropy over the unmasked rows alone, and masked rows get exactly zero gradient."""
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, T, V, generator=g)).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g)
    masked = torch.rand(B, T, generator=g) < masked_fraction
    masked.view(-1)[0] = False  # keep at least one real target
    targets[masked] = -1
    keep = ~masked.view(-1)
    expected = F.cross_entropy(logits.view(-1, V)[keep], targets.view(-1)[keep])  # independent: selected rows only
    (expected_grad,) = torch.autograd.grad(expected, logits)
    loss = masked_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    assert_close(loss, expected, 1e-6, f"masked loss ({masked_fraction:.0%} masked)", relative=True)
    assert_close(grad, expected_grad, 1e-6, "masked loss gradient", relative=True)
    assert torch.all(grad[masked] == 0), "a masked position got a gradient"


def test_masked_loss_hand_computed():
    # row 0: uniform over 3 tokens -> -log(1/3); row 1: probabilities (1/4, 2/4, 1/4), target 1 -> -log(1/2);
    # row 2 is masked, and its extreme logits must not leak in
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0], [100.0, -100.0, 0.0]]])
    targets = torch.tensor([[2, 1, -1]])
    expected = (math.log(3.0) + math.log(2.0)) / 2
    loss = masked_cross_entropy(logits, targets)
    assert abs(loss.item() - expected) < 1e-6, f"hand-computed loss: got {loss.item()}, expected {expected}"


def test_model_loss_with_masked_targets():
    model = tiny_gpt(2)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 37, (2, 16), generator=g)
    targets = torch.randint(0, 37, (2, 16), generator=g)
    targets[0, :9] = -1  # e.g. a prompt whose tokens are not trained on
    targets[1, 12:] = -1  # e.g. padding
    logits, loss = model(idx, targets)
    keep = targets.view(-1) != -1
    expected = F.cross_entropy(logits.view(-1, 37)[keep], targets.view(-1)[keep])
    assert_close(loss, expected, 1e-6, "model loss with masked targets", relative=True)


def test_all_targets_masked_gives_zero_loss_and_zero_grads():
    model = tiny_gpt(3).train()
    idx = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(3))
    _, loss = model(idx, torch.full((2, 8), -1))
    assert torch.isfinite(loss) and loss.item() == 0.0, f"all-masked loss is {loss.item()}, not 0"
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.all(p.grad == 0), f"{name} got a nonzero or missing gradient"


# ---- init, weight tying, optimizer groups ----

def test_init_std():
    """Linear weights and embeddings ~ N(0, 0.02^2); the residual projections ~ N(0, (0.02 / sqrt(2 * n_layer))^2);
    biases 0, LayerNorm gains 1. Checked on a model big enough for a 3% tolerance (>5 standard errors)."""
    n_layer = 8
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=512, n_layer=n_layer, n_head=4, n_embd=128))
    residual_std = 0.02 / math.sqrt(2 * n_layer)
    expected = {"transformer.wte.weight": 0.02, "transformer.wpe.weight": 0.02}
    for i in range(n_layer):
        expected.update({f"transformer.h.{i}.attn.c_attn.weight": 0.02, f"transformer.h.{i}.mlp.c_fc.weight": 0.02,
                         f"transformer.h.{i}.attn.c_proj.weight": residual_std,
                         f"transformer.h.{i}.mlp.c_proj.weight": residual_std})
    params = dict(model.named_parameters())
    assert set(expected) == {name for name, p in params.items() if p.dim() == 2}
    for name, std in expected.items():
        w = params[name]
        assert abs(w.std().item() / std - 1) < 0.03, f"{name}: std {w.std().item():.5f}, expected {std:.5f}"
        assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel()), f"{name}: mean {w.mean().item():.2e}"
    for name, p in params.items():
        if p.dim() == 1:
            fill = 1.0 if "ln" in name and name.endswith("weight") else 0.0
            assert torch.all(p == fill), f"{name} is not initialised to {fill}"


def test_weight_tying():
    """lm_head and wte are one tensor: listed once, kept tied by load_state_dict and optimizer steps,
    and its gradient is the sum of the gradients of its two uses."""
    model = tiny_gpt(4).train()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(p is model.lm_head.weight for p in model.parameters()) == 1
    assert model.get_num_params(non_embedding=False) == sum(p.numel() for p in set(model.parameters()))

    untied = copy.deepcopy(model)
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    g = torch.Generator().manual_seed(4)
    idx, targets = torch.randint(0, 37, (2, 16), generator=g), torch.randint(0, 37, (2, 16), generator=g)
    model(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    summed = untied.transformer.wte.weight.grad + untied.lm_head.weight.grad
    assert_close(model.lm_head.weight.grad, summed, 1e-6, "tied grad vs sum of untied grads", relative=True)

    optimizer = adamw(model, 0.1, 1e-2, (0.9, 0.95), "cpu")
    optimizer.step()
    assert model.lm_head.weight is model.transformer.wte.weight
    fresh = GPT(model.config)
    fresh.load_state_dict(model.state_dict())
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize("bias", [True, False])
def test_adamw_groups(bias):
    model = tiny_gpt(bias=bias)
    optimizer = adamw(model, weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95), device_type="cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups (or twice in one)"
    assert set(grouped) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    n_ln = 2 * model.config.n_layer + 1
    assert len(no_decay["params"]) == (n_ln * 2 + 4 * model.config.n_layer if bias else n_ln)
    assert optimizer.defaults["lr"] == 3e-4 and optimizer.defaults["betas"] == (0.9, 0.95)
    idx = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(0))
    before = model.transformer.wpe.weight.detach().clone()
    model(idx, idx)[1].backward()
    optimizer.step()
    assert not torch.equal(before, model.transformer.wpe.weight), "an optimizer step changed nothing"


# ---- the mask, and cropping the block size ----

def test_the_model_keeps_no_mask_or_other_buffer():
    """The causal mask is made when attention needs it: a block_size x block_size buffer in every layer
    would cost memory that grows with the square of the context (1 GB for block 32,768 in 1 layer) and
    ride along in DDP's buffer broadcast every step."""
    model = tiny_gpt(7, block_size=64)
    assert [name for name, _ in model.named_buffers()] == []


@pytest.mark.parametrize("attention", PATHS)
def test_crop_block_size(attention):
    model = tiny_gpt(6, attention=attention, block_size=16)
    idx = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        before, _ = model(idx)
        model.crop_block_size(8)
        after, _ = model(idx)
    assert_close(after, before, 1e-6, f"{attention}: logits before vs after crop_block_size(8)")
    assert model.config.block_size == 8 and model.transformer.wpe.weight.shape == (8, 32)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    for bad in (0, 9):
        with pytest.raises(ValueError, match="block_size"):
            model.crop_block_size(bad)
    # a cropped model saves and reloads at its new size, and still trains
    reloaded = GPT(GPTConfig(**vars(model.config)))
    reloaded.load_state_dict(model.state_dict())
    loss = reloaded.train()(idx, idx)[1]
    loss.backward()
    assert reloaded.transformer.wpe.weight.grad.shape == (8, 32)


# ---- torch.compile ----

@pytest.mark.parametrize("attention", PATHS)
def test_torch_compile_matches_eager(attention):
    """Inductor on CPU (needs a C compiler) gives eager's logits and loss. Takes ~30 s cold, a few s cached."""
    model = tiny_gpt(7, attention=attention)
    g = torch.Generator().manual_seed(7)
    idx, targets = torch.randint(0, 37, (2, 16), generator=g), torch.randint(0, 37, (2, 16), generator=g)
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.no_grad():
        logits_c, loss_c = compiled(idx, targets)
        logits_e, loss_e = model(idx, targets)
    print(f"torch.compile ({attention}) first call: {time.perf_counter() - start:.1f} s")
    assert_close(logits_c, logits_e, 1e-5, f"compiled vs eager logits ({attention})")
    assert_close(loss_c, loss_e, 1e-5, f"compiled vs eager loss ({attention})")
