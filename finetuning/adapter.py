"""
Adapters: finetune a frozen GPT through small bottleneck MLPs inserted into every block.

    python finetune.py config/finetune_sms_spam.py --train=adapter --adapter_size=16

After each block's attention and after its MLP (each one's residual projection c_proj), an adapter
computes  h + up(gelu(down(h))),  with down (C -> m) and up (m -> C) for a small bottleneck m, before
the result joins the residual stream. up starts at zero, so at the start the model is exactly the
pretrained one; only about 4 * m * C numbers per block are trained.
Paper: Houlsby et al. 2019, https://arxiv.org/abs/1902.00751

    apply_adapters(gpt, size)    wrap each block's attn.c_proj and mlp.c_proj
    adapter_state(gpt)           the adapters' weights, by the name of the layer they follow
    remove_adapters(gpt)         the plain GPT again (checkpoints store it, and the adapters beside it)
"""

import torch.nn as nn

from model import gelu

# the layers of each GPT block that an adapter follows: the two residual projections
ADAPTER_TARGETS = ("attn.c_proj", "mlp.c_proj")


class Adapter(nn.Module):
    """h -> h + up(gelu(down(h))): a bottleneck MLP beside an identity path."""

    def __init__(self, n_embd, size):
        super().__init__()
        self.down = nn.Linear(n_embd, size)
        self.up = nn.Linear(size, n_embd)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # up = 0: the adapter starts as the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(gelu(self.down(h)))  # (B, T, C) -> (B, T, m) -> (B, T, C)


class AdaptedLinear(nn.Module):
    """A frozen nn.Linear followed by a trainable Adapter."""

    def __init__(self, base, size):
        super().__init__()
        self.base = base
        self.adapter = Adapter(base.out_features, size).to(base.weight.device)

    def forward(self, x):
        return self.adapter(self.base(x))


def adapted_layers(gpt):
    """The names of gpt's AdaptedLinear modules, e.g. "transformer.h.0.attn.c_proj"."""
    return [name for name, module in gpt.named_modules() if isinstance(module, AdaptedLinear)]


def apply_adapters(gpt, size):
    """Put a new Adapter after every target layer of every block, in place (finetune.py freezes the
    body first: --train=adapter)."""
    if size < 1:
        raise ValueError(f"--adapter_size must be at least 1, got {size}")
    for i, block in enumerate(gpt.transformer.h):
        for target in ADAPTER_TARGETS:
            parent_name, _, child = target.rpartition(".")
            parent = block.get_submodule(parent_name)
            setattr(parent, child, AdaptedLinear(getattr(parent, child), size))
    return gpt


def adapter_state(gpt):
    """{layer name: its adapter's state_dict}: what a checkpoint keeps beside the plain GPT."""
    return {name: gpt.get_submodule(name).adapter.state_dict() for name in adapted_layers(gpt)}


def remove_adapters(gpt):
    """Swap every AdaptedLinear for its base nn.Linear, in place; returns gpt."""
    for name in adapted_layers(gpt):
        parent_name, _, child = name.rpartition(".")
        parent = gpt.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).base)
    return gpt


def load_adapters(gpt, state):
    """Put back the adapters that adapter_state saved, in place; returns gpt."""
    size = next(iter(state.values()))["down.weight"].size(0)
    apply_adapters(gpt, size)
    for name, adapter in state.items():
        gpt.get_submodule(name).adapter.load_state_dict(adapter)
    return gpt
