"""
Helpers shared by the tests: comparisons that report their max error, and tiny models whose
weights are spread wide enough that a wrong transpose, mask or scale shows up in the output.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # import model, checkpoint from the repo root

from model import GPT, GPTConfig  # noqa: E402

# the tests' models are tiny: one thread runs them faster, and a busy second core can't stall them
torch.set_num_threads(1)

# torch.compile reads $CXX once, when its inductor config is first imported. Import it now, or a test
# that hides the C++ compiler (monkeypatch.setenv("CXX", ...)) would leave every later compile without one.
import torch._inductor.config  # noqa: E402,F401


def max_error(actual, expected, relative=False):
    """max |actual - expected|, divided by max |expected| when relative, compared in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    err = (actual - expected).abs().max().item()
    return err / expected.abs().max().item() if relative else err


def assert_close(actual, expected, tol, what, relative=False):
    """Fail with the max error in the message; print it too (seen with pytest -s)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = max_error(actual, expected, relative)
    kind = "relative" if relative else "abs"
    print(f"[max error] {what}: {kind} {err:.3e} (tol {tol:.0e})")
    assert err < tol, f"{what}: max {kind} error {err:.3e} exceeds {tol:.0e}"


def spread_weights(module, seed):
    """Redraw every parameter: matrices ~ N(0, 0.2^2), biases ~ N(0, 0.1^2), LayerNorm gains ~ 1 + N(0, 0.1^2).
    GPT-2's init (std 0.02, gains 1, biases 0) makes nearly uniform attention and near-zero logits,
    where many bugs hide below any tolerance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if p.dim() >= 2:
                p.copy_(0.2 * noise)
            elif "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return module


def tiny_gpt(seed=0, **overrides):
    """A small GPT in eval mode with spread weights; overrides set GPTConfig fields."""
    args = dict(block_size=16, vocab_size=37, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=True, attention="manual")
    args.update(overrides)
    torch.manual_seed(seed)
    return spread_weights(GPT(GPTConfig(**args)), seed).eval()
