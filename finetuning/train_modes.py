"""
Train modes: which of a Classifier's weights learn while finetuning (finetune.py --train=NAME).

    python finetune.py config/finetune_sms_spam.py --train=lora --lora_rank=8

Every mode is handed a new Classifier (a pretrained GPT body and a new head, all of whose weights
would learn) and its FinetuneConfig, and freezes here, in one place, what must not learn. The weights
a mode adds (LoRA's updates, adapters, a prefix) learn, as new parameters do. A new mode is one
function here and one entry in TRAIN_MODES.
"""

import torch

from common.cli import UserError
from finetuning.adapter import apply_adapters
from finetuning.lora import apply_lora
from finetuning.prefix import Prefix


def train_everything(classifier, cfg):
    """Full finetuning: every weight of the body and the head learns."""
    classifier.requires_grad_(True)


def train_head_only(classifier, cfg):
    """A linear probe (for --head=mlp, a small MLP): how much the frozen features already know."""
    classifier.gpt.requires_grad_(False)


def train_last_blocks(classifier, cfg):
    """The last last_n blocks, the final LayerNorm and the head; the embeddings and early blocks stay."""
    gpt = classifier.gpt
    if cfg.last_n > gpt.config.n_layer:
        raise UserError(f"--last_n={cfg.last_n} but the model has only {gpt.config.n_layer} blocks")
    gpt.requires_grad_(False)
    for block in gpt.transformer.h[-cfg.last_n:]:
        block.requires_grad_(True)
    gpt.transformer.ln_f.requires_grad_(True)


def train_lora(classifier, cfg):
    """Frozen body, trainable low-rank updates on the chosen Linear layers, and the head."""
    classifier.gpt.requires_grad_(False)
    apply_lora(classifier.gpt, cfg.lora_targets.split(","), cfg.lora_rank, cfg.lora_alpha)


def train_adapters(classifier, cfg):
    """Frozen body, a trainable bottleneck MLP after each block's attention and MLP, and the head."""
    classifier.gpt.requires_grad_(False)
    apply_adapters(classifier.gpt, cfg.adapter_size)


def train_prefix(classifier, cfg):
    """Frozen body, trainable keys and values that every layer sees before the text, and the head."""
    classifier.gpt.requires_grad_(False)
    classifier.prefix = Prefix(classifier.gpt, cfg.prefix_len, torch.Generator().manual_seed(cfg.seed))


# --train=NAME: each mode freezes or adds weights of a new Classifier in place
TRAIN_MODES = {"full": train_everything, "head": train_head_only, "last_n": train_last_blocks, "lora": train_lora,
               "adapter": train_adapters, "prefix": train_prefix}
