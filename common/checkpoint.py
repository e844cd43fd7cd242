"""
Saving and loading weights: our own checkpoints (written atomically, read safely) and
Hugging Face GPT-2 files (safetensors or pytorch_model.bin).
"""

import json
import os
import pickle
import re
import struct
from pathlib import Path

import torch

from common.cli import UserError
from common.tokenizer import gpt2_tokenizer, load_tokenizer
from model import GPT, GPTConfig


def save_checkpoint(obj, path):
    """Write to a temporary file, then rename it over the target: a crash mid-write never leaves a
    half-written checkpoint behind, and the previous one survives until the new one is complete.
    The folder is made here, by the first file a run writes: a run that fails to start leaves none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, peek=False):
    """Read a checkpoint onto the CPU (a GPU run then moves what it needs, without a second copy on
    the GPU). weights_only=True refuses pickled code, so a downloaded checkpoint can't run any.
    Hugging Face's pytorch_model.bin, a pickle too, is read here as well. peek=True maps the tensors
    from disk instead of reading them: enough to look at a checkpoint's config or kind without paying
    for its weights."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train one first or check --out_dir")
    return torch_load(path, mmap=peek)


def torch_load(path, mmap=False):
    """torch.load with weights_only=True: tensors and plain values only, so no file can run code when
    read. What went wrong is told apart: a file that asks to run code (its pickle names a function to
    call, which weights_only refuses), and one that is damaged or no checkpoint at all."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch names the function it refused to load
        if code:
            raise UserError(f"{path} refused: it would run code when unpickled ({code.group(1)}); a checkpoint "
                            f"needs none, so this file is not one to trust") from None
        raise UserError(f"checkpoint {path} is corrupted or truncated, or no checkpoint at all; "
                        f"delete it or retrain") from None
    except Exception as e:  # torch's zip reader raises RuntimeError, an empty file EOFError
        raise UserError(f"checkpoint {path} is corrupted or truncated ({type(e).__name__}); "
                        f"delete it or retrain") from None


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "U8": torch.uint8, "BOOL": torch.bool}


def load_safetensors(path):
    """A .safetensors file is an 8-byte header length, a JSON header giving each tensor's dtype, shape
    and byte range, then the raw bytes. Reading it needs no extra package."""
    data = Path(path).read_bytes()
    try:
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
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        # a header cut short or not JSON, a byte range past the end of the file, an unknown dtype
        raise UserError(f"{path} is damaged or not a safetensors file ({type(e).__name__}); "
                        f"download it again") from None
    return tensors


def load_hf_state_dict(directory):
    """GPT-2 weights from a Hugging Face directory, keyed like our model ("transformer.h.0.ln_1.weight").
    OpenAI's files name them without the "transformer." prefix; files saved by GPT2LMHeadModel with it."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        raw = load_safetensors(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        raw = torch_load(directory / "pytorch_model.bin")
    else:
        raise UserError(f"{directory} holds neither model.safetensors nor pytorch_model.bin")
    if not isinstance(raw, dict):
        raise UserError(f"{directory}: the weights file holds a {type(raw).__name__}, not named tensors")
    state = {}
    for name, tensor in raw.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # HF's causal-mask buffers, and the lm_head tied to wte
        state["transformer." + name] = tensor
    return state


HF_SIZES = ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd")  # what GPT.from_pretrained reads


def load_hf_gpt(directory, dropout=0.0, attention="sdpa"):
    """GPT.from_pretrained, with what can be wrong in a downloaded folder said in one line: config.json
    damaged or not GPT-2's, math other than GPT-2's, weights missing or of the wrong shape."""
    path = Path(directory) / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # not JSON, or not UTF-8
        raise UserError(f"{path} is not valid JSON ({e}); download it again") from None
    if not isinstance(hf, dict) or any(key not in hf for key in HF_SIZES):
        raise UserError(f"{path} lacks GPT-2's sizes ({', '.join(HF_SIZES)}); is this a GPT-2 folder?")
    try:
        return GPT.from_pretrained(directory, dropout=dropout, attention=attention)
    except ValueError as e:  # from_pretrained's and GPTConfig's checks
        raise UserError(f"can't load {directory} as GPT-2: {e}") from None


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
    if "model_args" not in ckpt:  # an interrupted finetuning run's state: a classifier, an optimizer
        raise UserError(f"{path} holds no GPT of its own ({written_by(ckpt)} wrote it); use a run's best.pt")
    return model_from_checkpoint(ckpt, dropout, attention), ckpt


def load_gpt(init_from, which="best", dropout=None, attention=None):
    """A pretrained GPT and the tokenizer it reads text with: the one loader that train.py, sample.py
    and finetune.py share. init_from is a train.py run's directory (its best.pt, or last.pt with
    which="last") or a Hugging Face GPT-2 directory (config.json, with GPT-2's BPE); "gpt2:DIR" names
    the latter explicitly. dropout and attention, when given, replace the pretrained run's own."""
    path = Path(init_from.removeprefix("gpt2:"))
    if (path / "config.json").is_file():
        return load_hf_gpt(path, dropout=dropout or 0.0, attention=attention or "sdpa"), gpt2_tokenizer()
    if not (path / f"{which}.pt").is_file():
        raise UserError(f"--init_from={init_from}: neither a train.py run ({which}.pt) nor a GPT-2 Hugging "
                        f"Face directory (config.json)")
    model, ckpt = load_model(path, which, dropout, attention)
    tokenizer = load_tokenizer(ckpt["tokenizer"], f"{path / which}.pt")
    # a model whose vocabulary and tokenizer disagree would read every text as the wrong tokens
    if tokenizer.vocab_size != model.config.vocab_size:
        raise UserError(f"{path / which}.pt: the model has {model.config.vocab_size} token embeddings but its "
                        f"tokenizer {tokenizer.vocab_size} tokens; this checkpoint is damaged")
    return model, tokenizer


# ----------------------------------------------------------------------------- runs in an out_dir

RUN_FILES = ("last.pt", "best.pt", "metrics.json")  # what a train.py or finetune.py run leaves behind
RESUME_FLAGS = {"train.py": "--init_from=resume", "finetune.py": "--resume=True"}


def written_by(ckpt):
    """The script that wrote a checkpoint dict: finetune.py's hold a head, an ensemble's members, or
    (last.pt of an interrupted run) the member being trained; train.py's hold none of these."""
    return "finetune.py" if {"head", "members", "member"} & ckpt.keys() else "train.py"


def check_resumable(ckpt, path, script):
    """Each script continues only its own runs: the other's last.pt holds other things."""
    owner = written_by(ckpt)
    if owner != script:
        raise UserError(f"{path} is the checkpoint of a {owner} run, not of a {script} run; continue it with "
                        f"python {owner} --out_dir={Path(path).parent} {RESUME_FLAGS[owner]}")
    if "config" not in ckpt:  # the settings a resumed run takes back
        raise UserError(f"{path} holds no run settings ('config'), so it can't be resumed; it is damaged")


def check_new_run(out_dir, script, overwrite):
    """Before a new run of script: refuse an out_dir that already holds a run (finished or not), so a
    repeated command never replaces work, unless overwrite says to. Nothing is written here."""
    if not out_dir:
        raise UserError("--out_dir is empty; name the folder the run is written to (--out_dir=. for this one)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out_dir={out_dir} is a file, not a folder")
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        return
    if overwrite:
        print(f"--overwrite=True: this {script} run replaces the run in {out_dir} ({', '.join(found)})")
        return
    choices = "choose another --out_dir, or pass --overwrite=True to replace it"
    if "last.pt" in found:  # it can go on: say with which script
        owner = written_by(load_checkpoint(out_dir / "last.pt", peek=True))
        choices = f"continue it with python {owner} --out_dir={out_dir} {RESUME_FLAGS[owner]}, {choices}"
    raise UserError(f"{out_dir} already holds a run ({', '.join(found)}); {choices}")
