"""
A finetuned run's checkpoint: out_dir/best.pt holds one dict per member (a single run's dict as it
is, several as {"members": [...]}). Each dict is a plain GPT checkpoint, which common.checkpoint
loads as it loads a pretrained model (LoRA updates merged into the weights), plus the head's
weights, the task's labels and the run's settings. out_dir/last.pt is what an interrupted run
resumes from: the member in training, its optimizer and its iteration.
"""

import copy
import time
from dataclasses import asdict
from pathlib import Path

from common.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from common.run_folder import check_resumable
from common.cli import UserError, resumed_config
from common.tokenizer import load_tokenizer
from finetuning.adapter import adapted_layers, adapter_state, load_adapters, remove_adapters
from finetuning.heads import build_head
from finetuning.lora import LoRALinear, merge_lora
from finetuning.prefix import Prefix
from finetuning.tasks import TASKS


def count_parameters(module):
    """(trainable, total) numbers of parameters; a tied weight is counted once."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def finetuned_checkpoint(classifier, tokenizer, cfg, iter_num, max_iters, val_report):
    """A dict that checkpoint.load_model reads as a plain GPT (LoRA updates merged into the weights),
    plus the head, the adapters or prefix of those train modes, and the task: load_members adds them
    back."""
    trainable, total = count_parameters(classifier)  # before LoRA is merged away
    gpt, extras = classifier.gpt, {}
    if any(isinstance(m, LoRALinear) for m in gpt.modules()):
        gpt = merge_lora(copy.deepcopy(gpt))
    if adapted_layers(gpt):
        extras["adapters"] = adapter_state(gpt)
        gpt = remove_adapters(copy.deepcopy(gpt))
    if classifier.prefix is not None:
        extras["prefix"] = classifier.prefix.state_dict()
    return {
        **extras,
        "model": gpt.state_dict(),
        "model_args": asdict(gpt.config),
        "tokenizer": tokenizer.meta,
        "head": classifier.head.state_dict(),
        "head_name": cfg.head,
        "task": cfg.task,
        "labels": list(TASKS[cfg.task].labels),
        "config": asdict(cfg),
        "iter_num": iter_num,
        "max_iters": max_iters,
        "trainable_params": trainable,
        "total_params": total,
        "val": val_report,
    }


def save_finetuned(members, out_dir):
    """out_dir/best.pt: a single run's checkpoint dict as it is, several members' as {"members": [...]}."""
    save_checkpoint(members[0] if len(members) == 1 else {"members": members}, Path(out_dir) / "best.pt")



def load_members(out_dir, attention=None):
    """The (gpt, head, prefix or None) of each member of the finetuned run in out_dir, its tokenizer,
    and its checkpoint dicts. attention: see common.checkpoint.model_from_checkpoint."""
    path = Path(out_dir) / "best.pt"
    ckpt = load_checkpoint(path)
    members = ckpt.get("members", [ckpt])
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise UserError(f"{path}: its \"members\" are not a list of checkpoints; it is damaged")
    if "head" not in members[0]:
        raise UserError(f"{path} is a pretrained model, not a finetuned one; finetune it first "
                        f"(python finetune.py --init_from={out_dir} ...)")
    parts = []
    for member in members:
        gpt = model_from_checkpoint(member, attention=attention, source=path)
        if "adapters" in member:
            load_adapters(gpt, member["adapters"])
        prefix = None
        if "prefix" in member:
            prefix = Prefix(gpt, member["prefix"]["k"].size(2))
            prefix.load_state_dict(member["prefix"])
        parts.append((gpt, load_head(member, gpt.config.n_embd, path), prefix))
    return parts, load_tokenizer(members[0].get("tokenizer"), path), members


def load_head(member, n_embd, path):
    """The head a member's checkpoint dict names (head_name), with its weights; a name no head has
    (a file from another version, or damaged) or weights that don't fit that head are one line."""
    try:
        head = build_head(member["head_name"], n_embd, len(member["labels"]))
        head.load_state_dict(member["head"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # RuntimeError: load_state_dict's mismatches
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: can't rebuild the finetuned head ({reason}); the checkpoint is damaged or "
                        f"from another version") from None
    return head


def load_resume_point(cfg, given, config_cls, may_change):
    """The interrupted run in out_dir: its own options (of which the options given on the command line
    may change only may_change), its last.pt, and the members it had finished (best.pt begins with
    them). A resumed run that trained differently would be neither that run nor a new one."""
    path = Path(cfg.out_dir) / "last.pt"
    if not path.is_file():
        raise UserError(f"--resume: no interrupted run in {cfg.out_dir} (no last.pt; a finished run "
                        f"deletes it); start a new run without --resume")
    last = load_checkpoint(path)
    check_resumable(last, path, "finetune.py")
    saved = {**last["config"], "seed": last["config"]["seed"] - last["member"]}  # its member's seed, the run's
    cfg = resumed_config(config_cls, saved, given, may_change, f"--resume: the interrupted run in {cfg.out_dir}")
    finished = load_checkpoint(Path(cfg.out_dir) / "best.pt")
    return cfg, last, finished.get("members", [finished])[: last["member"]]


def save_resume_point(classifier, optimizer, scaler, cfg, member, iter_num, best, started):
    """out_dir/last.pt: everything it takes to continue member exactly after iteration iter_num. No
    random state: the batches and the dropout of an iteration are drawn from seeds made of its number."""
    save_checkpoint({"member": member, "iter_num": iter_num, "best": best, "classifier": classifier.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "config": asdict(cfg),
                     "train_seconds": time.time() - started},
                    Path(cfg.out_dir) / "last.pt")
