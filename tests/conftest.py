"""
Helpers shared by the tests: comparisons that report their max error, tiny models whose weights are
spread wide enough that a wrong transpose, mask or scale shows up in the output, and the data the
tests read. Every test runs on a bare clone, offline (the offline fixture refuses downloads): they
read the small files in tests/fixtures/ (see its README.md); the few that check the real data sets
or GPT-2's own BPE files skip without them.
"""

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # import model, checkpoint from the repo root

import common.tokenizer  # noqa: E402
from common import sources  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"  # laid out as ../shared/data, a few KB a file

# the tests' models are tiny: one thread runs them faster, and a busy second core can't stall them
# (two threads that wait on each other at every op ran a tiny train.py 10 times slower beside another job).
# The scripts that tests start in their own processes inherit the setting.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

# torch.compile reads $CXX once, when its inductor config is first imported. Import it now, or a test
# that hides the C++ compiler (monkeypatch.setenv("CXX", ...)) would leave every later compile without one.
import torch._inductor.config  # noqa: E402,F401


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test downloads: file:// URLs open, anything else fails the way it does without a network."""
    urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        if not getattr(url, "full_url", url).startswith("file:"):  # a URL, or a Request holding one
            raise urllib.error.URLError("network unreachable (tests never download)")
        return urlopen(url, *args, **kwargs)
    monkeypatch.setattr(urllib.request, "urlopen", local_only)


@pytest.fixture(autouse=True)
def no_exit(monkeypatch):
    """A torchrun rank ends with os._exit (runtime.end_distributed). Called inside pytest, it would end
    the whole test run on the spot, silently and with exit status 0: make it fail the test instead."""
    def refuse(status):
        raise RuntimeError(f"os._exit({status}) called inside a test: it would end the test run")
    monkeypatch.setattr(os, "_exit", refuse)


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """Neither $GPT_DATA_DIR nor ../shared/data holds anything."""
    monkeypatch.setenv("GPT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(sources, "SHARED_DATA", tmp_path / "no_shared_data")


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


# ----------------------------------------------------------------------------- data


def real_data(*relpaths):
    """The real data files at relpaths (found as the prepare scripts find them: under $GPT_DATA_DIR or
    ../shared/data), or a skip of the test that names the missing ones."""
    found = [sources.local_copy(relpath) for relpath in relpaths]
    missing = [relpath for relpath, path in zip(relpaths, found) if path is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} under $GPT_DATA_DIR or ../shared/data")
    return found


# Merges of a small byte-level BPE, in rank order; each joins two tokens listed before it.
TINY_BPE_MERGES = ["\n\n", "th", "he", " t", " th", " the", "in", "ing", "ou", "an", "er", "ll", " a", "on"]


def tiny_bpe_encoding():
    """A BPE made as GPT-2's is (its pre-tokenizer regex, the 256 bytes, merges, then <|endoftext|>),
    with 14 merges instead of 50,000: what a test needs when its subject is not GPT-2's own vocabulary."""
    ranks = {bytes([b]): b for b in range(256)}
    for merge in TINY_BPE_MERGES:
        piece = merge.encode()
        assert any(piece[:i] in ranks and piece[i:] in ranks for i in range(1, len(piece))), merge
        ranks[piece] = len(ranks)
    return tiktoken.Encoding(name="tiny_bpe", pat_str=tiktoken_ext.openai_public.r50k_pat_str,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)})


@pytest.fixture
def tiny_bpe(monkeypatch):
    """For this test, gpt2_tokenizer() (and so load_tokenizer({"kind": "gpt2"}) and the BPE prepare
    scripts) is the tiny BPE: it finds no local GPT-2 files and takes tiktoken's "gpt2" encoding,
    which here is tiny_bpe_encoding. No GPT-2 file or network is needed."""
    monkeypatch.setattr(common.tokenizer, "local_copy", lambda relpath: None)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: tiny_bpe_encoding())
    common.tokenizer.gpt2_tokenizer.cache_clear()
    yield common.tokenizer.gpt2_tokenizer()
    common.tokenizer.gpt2_tokenizer.cache_clear()  # the next caller builds the real one again
