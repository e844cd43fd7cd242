"""
Our checkpoints: written atomically (common/files.py), read safely (no pickled code runs), and
turned back into a GPT only after the sizes they claim match the weights they hold. load_gpt is the
one loader of a pretrained model that train.py, sample.py and finetune.py share: a train.py run or
a Hugging Face GPT-2 folder.
"""

from dataclasses import fields
from pathlib import Path

import torch

from common import huggingface
from common.cli import UserError
from common.files import atomic_write, torch_load
from common.tokenizer import gpt2_tokenizer, load_tokenizer
from model import GPT, GPTConfig


def save_checkpoint(obj, path, *also):
    """Write obj to path atomically: a crash mid-write never leaves a half-written checkpoint, and the
    previous one survives until the new one is complete. Paths in also get the same file, written once.
    The folder must exist (the run made it)."""
    atomic_write(path, lambda f: torch.save(obj, f), also=also)


def load_checkpoint(path, peek=False):
    """Read a checkpoint onto the CPU (a GPU run then moves what it needs, without a second copy on
    the GPU). peek=True maps the tensors from disk instead of reading them: enough to look at a
    checkpoint's config or kind without paying for its weights."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train one first or check --out_dir")
    ckpt = torch_load(path, mmap=peek)
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint; it is damaged or not ours")
    return ckpt


def load_hf_gpt(directory, dropout=0.0, attention="sdpa"):
    """GPT.from_pretrained, with what can be wrong in a downloaded folder said in one line."""
    try:
        return GPT.from_pretrained(directory, dropout=dropout, attention=attention)
    except ValueError as e:  # from_pretrained's and GPTConfig's checks
        raise UserError(f"can't load {directory} as GPT-2: {e}") from None


def model_from_checkpoint(ckpt, dropout=None, attention=None, source="the checkpoint"):
    """The GPT whose size and weights a checkpoint dict holds, built only once its sizes ("model_args")
    are checked against its weights. dropout, when given, replaces the run's own (it has no weights):
    finetuning sets its own. attention, when given, replaces the kind the run trained with: both kinds
    compute the same function, so a model trained on a CPU (manual) should run sdpa's flash kernels on
    a GPU; callers pass runtime.pick_attention's choice for their device."""
    model_args = ckpt.get("model_args")
    known = {f.name for f in fields(GPTConfig)}
    if not isinstance(model_args, dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{source} lacks the model's sizes or weights (model_args, model); it is damaged")
    if not all(isinstance(name, str) and isinstance(w, torch.Tensor) for name, w in ckpt["model"].items()):
        raise UserError(f"{source}: its weights (model) are not all named tensors; it is damaged")
    if model_args.keys() - known:
        raise UserError(f"{source}: model_args holds {', '.join(sorted(model_args.keys() - known))}, which "
                        f"this version's GPTConfig does not have; it is damaged or from another program")
    model_args = dict(model_args)
    if dropout is not None:
        model_args["dropout"] = dropout
    if attention is not None:
        model_args["attention"] = attention
    try:
        return GPT.from_state_dict(GPTConfig(**model_args), ckpt["model"], source)
    except (ValueError, TypeError) as e:  # GPTConfig's checks, or sizes the weights don't have
        raise UserError(f"{source}: {e}" if not str(e).startswith(str(source)) else str(e)) from None


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
    return model_from_checkpoint(ckpt, dropout, attention, source=path), ckpt


def load_gpt(init_from, which="best", dropout=None, attention=None):
    """A pretrained GPT and the tokenizer it reads text with. init_from is a train.py run's directory
    (its best.pt, or last.pt with which="last"), a Hugging Face GPT-2 directory (config.json, with
    GPT-2's BPE; "gpt2:DIR" names one explicitly), or the name of OpenAI's GPT-2 of a size (gpt2,
    gpt2-medium, gpt2-large, gpt2-xl), fetched from the Hugging Face hub. dropout and attention, when
    given, replace the pretrained run's own."""
    if init_from in huggingface.HUB_REPOS and not Path(init_from).exists():  # gpt2, gpt2-medium, ...: OpenAI's
        init_from = str(huggingface.fetch(init_from))  # downloaded once into a cache folder, then read from there
    path = Path(init_from.removeprefix("gpt2:"))
    if (path / "config.json").is_file():
        return load_hf_gpt(path, dropout=dropout or 0.0, attention=attention or "sdpa"), gpt2_tokenizer()
    if not (path / f"{which}.pt").is_file():
        raise UserError(f"--init_from={init_from}: neither a train.py run ({which}.pt) nor a GPT-2 Hugging "
                        f"Face directory (config.json)")
    model, ckpt = load_model(path, which, dropout, attention)
    tokenizer = load_tokenizer(ckpt.get("tokenizer"), f"{path / which}.pt")
    # a model whose vocabulary and tokenizer disagree would read every text as the wrong tokens
    if tokenizer.vocab_size != model.config.vocab_size:
        raise UserError(f"{path / which}.pt: the model has {model.config.vocab_size} token embeddings but its "
                        f"tokenizer {tokenizer.vocab_size} tokens; this checkpoint is damaged")
    return model, tokenizer


def written_by(ckpt):
    """The script that wrote a checkpoint dict: finetune.py's hold a head, an ensemble's members, or
    (last.pt of an interrupted run) the member being trained; train.py's hold none of these."""
    return "finetune.py" if {"head", "members", "member"} & ckpt.keys() else "train.py"
