"""
LoRA: finetune a big frozen Linear layer through a small low-rank update.

    python finetune.py config/finetune_sms_spam.py --train=lora --lora_rank=8 --lora_alpha=16

A frozen weight W (out, in) gets a trainable update B @ A, with A (r, in) and B (out, r) for a small
rank r, so the layer computes  y = x W^T + b + (alpha / r) x A^T B^T.  B starts at zero, so at the
start the model is exactly the pretrained one; only r * (in + out) numbers per layer are trained.
Paper: Hu et al. 2021, https://arxiv.org/abs/2106.09685

    apply_lora(model, targets, rank, alpha)   swap the chosen nn.Linear layers for LoRALinear wrappers
    merge_lora(model)                          fold each update into its weight: plain nn.Linear again
"""

import copy
import math

import torch
import torch.nn as nn

# the Linear layers of each GPT block that LoRA can wrap, named inside the block
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class LoRALinear(nn.Module):
    """An nn.Linear plus a rank-r update scaled by alpha / r (finetune.py freezes the Linear: --train=lora)."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        self.rank, self.alpha = rank, alpha
        # dividing by r keeps the update's size steady when r changes, so alpha needs no retuning
        self.scale = alpha / rank
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **kw))  # (out, r): zero, so B @ A = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as the paper's code

    def forward(self, x):
        update = (x @ self.lora_A.t()) @ self.lora_B.t()  # (..., in) -> (..., r) -> (..., out)
        return self.base(x) + self.scale * update

    def merge(self):
        """A plain nn.Linear computing the same function: W + (alpha / r) B @ A, for inference at
        the base layer's cost. Attributes such as is_residual_projection are kept."""
        merged = copy.deepcopy(self.base)
        with torch.no_grad():
            merged.weight += self.scale * (self.lora_B @ self.lora_A)  # (out, r) @ (r, in) -> (out, in)
        return merged


def check_lora(rank, targets):
    """A ValueError unless rank is positive and every target names a Linear layer of a GPT block."""
    if rank < 1:
        raise ValueError(f"--lora_rank must be at least 1, got {rank}")
    for target in targets:
        if target not in LORA_TARGETS:
            raise ValueError(f"--lora_targets: no layer {target!r} in a GPT block; "
                             f"choose from {','.join(LORA_TARGETS)}")


def apply_lora(model, targets, rank, alpha):
    """Replace every nn.Linear whose name ends with one of targets (e.g. "attn.c_attn" matches
    transformer.h.{i}.attn.c_attn) by a LoRALinear around it. Returns the replaced names."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    replaced = []
    for target in targets:
        names = [name for name, module in model.named_modules()
                 if isinstance(module, nn.Linear) and (name == target or name.endswith("." + target))]
        if not names:
            raise ValueError(f"LoRA target {target!r} matches no nn.Linear layer of the model; "
                             f"GPT's are {', '.join(LORA_TARGETS)}")
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
        replaced += names
    return replaced


def merge_lora(model):
    """Swap every LoRALinear in model for its merged nn.Linear, in place; returns model."""
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merge())
    return model
