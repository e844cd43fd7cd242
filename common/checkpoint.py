"""
Saving and loading weights: our own checkpoints (written atomically, read safely) and
Hugging Face GPT-2 files (safetensors or pytorch_model.bin).
"""

import json
import os
import struct
from pathlib import Path

import torch

from common.cli import UserError
from common.tokenizer import gpt2_tokenizer, load_tokenizer
from model import GPT, GPTConfig


def save_checkpoint(obj, path):
    """Write to a temporary file, then rename it over the target: a crash mid-write never leaves a
    half-written checkpoint behind, and the previous one survives until the new one is complete."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path):
    """Read a checkpoint onto the CPU (a GPU run then moves what it needs, without a second copy on
    the GPU). weights_only=True refuses pickled code, so a downloaded checkpoint can't run any.
    Hugging Face's pytorch_model.bin, a pickle too, is read here as well."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train one first or check --out_dir")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupted or truncated, or holds objects whose loading could "
                        f"run code ({type(e).__name__}); delete it or retrain") from None


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "U8": torch.uint8, "BOOL": torch.bool}


def load_safetensors(path):
    """A .safetensors file is an 8-byte header length, a JSON header giving each tensor's dtype, shape
    and byte range, then the raw bytes. Reading it needs no extra package."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = bytearray(data[8 + header_len :])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        flat = torch.frombuffer(body, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors


def load_hf_state_dict(directory):
    """GPT-2 weights from a Hugging Face directory, keyed like our model ("transformer.h.0.ln_1.weight").
    OpenAI's files name them without the "transformer." prefix; files saved by GPT2LMHeadModel with it."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        raw = load_safetensors(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        raw = load_checkpoint(directory / "pytorch_model.bin")
    else:
        raise UserError(f"{directory} holds neither model.safetensors nor pytorch_model.bin")
    state = {}
    for name, tensor in raw.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # HF's causal-mask buffers, and the lm_head tied to wte
        state["transformer." + name] = tensor
    return state


def model_from_checkpoint(ckpt, dropout=None, attention=None):
    """The GPT whose size and weights a checkpoint dict holds. dropout, when given, replaces the run's
    own (it has no weights): finetuning sets its own. attention, when given, replaces the kind the run
    trained with: both kinds compute the same function, so a model trained on a CPU (manual) should run
    sdpa's flash kernels on a GPU; callers pass runtime.pick_attention's choice for their device."""
    model_args = dict(ckpt["model_args"])
    if dropout is not None:
        model_args["dropout"] = dropout
    if attention is not None:
        model_args["attention"] = attention
    model = GPT(GPTConfig(**model_args))
    model.load_state_dict(ckpt["model"])
    return model


def load_model(out_dir, which="best", dropout=None, attention=None):
    """The model of a train.py run (out_dir/best.pt or last.pt) and its checkpoint dict, whose
    "tokenizer" entry says how to turn text into the model's tokens (see tokenizer.load_tokenizer).
    dropout and attention: see model_from_checkpoint."""
    path = Path(out_dir) / f"{which}.pt"
    ckpt = load_checkpoint(path)
    if "members" in ckpt:
        raise UserError(f"{path} holds {len(ckpt['members'])} finetuned models (--members), not one GPT; "
                        f"use a train.py run or a one-member finetune.py run")
    return model_from_checkpoint(ckpt, dropout, attention), ckpt


def load_gpt(init_from, which="best", dropout=None, attention=None):
    """A pretrained GPT and the tokenizer it reads text with: the one loader that train.py, sample.py
    and finetune.py share. init_from is a train.py run's directory (its best.pt, or last.pt with
    which="last") or a Hugging Face GPT-2 directory (config.json, with GPT-2's BPE); "gpt2:DIR" names
    the latter explicitly. dropout and attention, when given, replace the pretrained run's own."""
    path = Path(init_from.removeprefix("gpt2:"))
    if (path / "config.json").is_file():
        return GPT.from_pretrained(path, dropout=dropout or 0.0, attention=attention or "sdpa"), gpt2_tokenizer()
    if not (path / f"{which}.pt").is_file():
        raise UserError(f"--init_from={init_from}: neither a train.py run ({which}.pt) nor a GPT-2 Hugging "
                        f"Face directory (config.json)")
    model, ckpt = load_model(path, which, dropout, attention)
    tokenizer = load_tokenizer(ckpt["tokenizer"])
    # a model whose vocabulary and tokenizer disagree would read every text as the wrong tokens
    if tokenizer.vocab_size != model.config.vocab_size:
        raise UserError(f"{path / which}.pt: the model has {model.config.vocab_size} token embeddings but its "
                        f"tokenizer {tokenizer.vocab_size} tokens; this checkpoint is damaged")
    return model, tokenizer
