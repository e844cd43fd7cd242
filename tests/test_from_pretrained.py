"""
GPT.from_pretrained against Hugging Face's GPT2LMHeadModel, through the logits it recorded for a tiny
random GPT-2 (tests/fixtures/make_tiny_gpt2.py made them; these tests need neither transformers nor
the network), and the other file layouts load_hf_state_dict accepts.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from common.huggingface import load_safetensors
from common.cli import UserError
from conftest import assert_close
from model import GPT

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_gpt2"


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE / "reference.pt", weights_only=True)  # input_ids (2, 16), logits (2, 16, 100) float64


def logits_of(model, input_ids):
    with torch.no_grad():
        return model.eval()(input_ids)[0]


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_matches_hugging_face_logits(reference, attention):
    model = GPT.from_pretrained(FIXTURE)
    for block in model.transformer.h:
        block.attn.attention = attention
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (2, 4, 32)
    assert (model.config.vocab_size, model.config.block_size) == (100, 64)
    logits = logits_of(model, reference["input_ids"])
    assert_close(logits, reference["logits"], 1e-5, f"from_pretrained ({attention}) vs Hugging Face logits")


def test_matches_hugging_face_logits_in_float64(reference):
    """With the same float32 weights computed in float64 on both sides, only rounding separates them."""
    model = GPT.from_pretrained(FIXTURE).double()
    logits = logits_of(model, reference["input_ids"])
    assert_close(logits, reference["logits"], 1e-10, "from_pretrained in float64 vs Hugging Face float64 logits")


def copy_config(directory):
    directory.mkdir(exist_ok=True)
    shutil.copy(FIXTURE / "config.json", directory / "config.json")
    return directory


def test_pytorch_model_bin_loads_the_same(tmp_path, reference):
    torch.save(load_safetensors(FIXTURE / "model.safetensors"), copy_config(tmp_path) / "pytorch_model.bin")
    expected = logits_of(GPT.from_pretrained(FIXTURE), reference["input_ids"])
    logits = logits_of(GPT.from_pretrained(tmp_path), reference["input_ids"])
    assert torch.equal(logits, expected), "pytorch_model.bin gives other logits than model.safetensors"


def test_openai_style_names_load_the_same(tmp_path, reference):
    """OpenAI's files name tensors without the "transformer." prefix; older Hugging Face files also hold
    the causal-mask buffers (attn.bias, attn.masked_bias) and a copy of lm_head.weight. All are accepted."""
    raw = load_safetensors(FIXTURE / "model.safetensors")
    openai = {name.removeprefix("transformer."): t for name, t in raw.items()}
    older = dict(raw, **{"lm_head.weight": raw["transformer.wte.weight"].clone()})
    for i in range(2):
        older[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        older[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    expected = logits_of(GPT.from_pretrained(FIXTURE), reference["input_ids"])
    for name, state in (("openai", openai), ("older", older)):
        torch.save(state, copy_config(tmp_path / name) / "pytorch_model.bin")
        logits = logits_of(GPT.from_pretrained(tmp_path / name), reference["input_ids"])
        assert torch.equal(logits, expected), f"{name}-style file gives other logits"


def test_directory_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="neither model.safetensors nor pytorch_model.bin"):
        GPT.from_pretrained(copy_config(tmp_path))


def test_wrong_shape_is_a_clear_error(tmp_path):
    """A config.json that does not fit the weights names the tensor and both shapes."""
    directory = copy_config(tmp_path)
    shutil.copy(FIXTURE / "model.safetensors", directory / "model.safetensors")
    config = json.loads((directory / "config.json").read_text())
    config["vocab_size"] = 101
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"transformer.wte.weight has shape \(100, 32\), but the sizes given .*vocab_size 101.* make it \(101, 32\)"):
        GPT.from_pretrained(directory)


def test_safetensors_reader_reads_every_tensor():
    """The fixture holds every GPT-2 tensor (the tied lm_head optional), in float32, in Conv1D's (in, out) layout."""
    tensors = load_safetensors(FIXTURE / "model.safetensors")
    ours = {name for name in GPT.from_pretrained(FIXTURE).state_dict() if name != "lm_head.weight"}
    assert set(tensors) - {"lm_head.weight"} == ours
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    assert tensors["transformer.h.1.mlp.c_proj.weight"].shape == (128, 32)
