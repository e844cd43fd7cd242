"""
Prefix tuning: finetune a frozen GPT through learned keys and values that every attention layer
sees before the text, as if each input began with a few extra tokens that no tokenizer could write.

    python finetune.py config/finetune_sms_spam.py --train=prefix --prefix_len=8

Each layer gets its own P keys and values, (nh, P, hs) each, held where generation keeps the keys
and values of earlier tokens: a KVCache filled with them before the text is fed. The text's
positions then start at P, as they would after P real tokens. They start as the keys and values
that P real tokens produce, so at the start the model computes exactly what it does on those
tokens followed by the text.
Paper: Li and Liang 2021, https://arxiv.org/abs/2101.00190
"""

import torch
import torch.nn as nn

from common.cli import UserError
from model import KVCache


def check_prefix_len(length, block_size):
    """The prefix takes positions of the model's block, and the text needs at least one. finetune.py
    checks this as soon as the pretrained model's block_size is known, before any data is read."""
    if not 1 <= length < block_size:
        raise UserError(f"--prefix_len must be between 1 and block_size - 1 ({block_size - 1}), got {length}")


class Prefix(nn.Module):
    """Learned keys and values for every layer of a GPT: (n_layer, nh, P, hs) each."""

    def __init__(self, gpt, length, generator=None):
        super().__init__()
        cfg = gpt.config
        check_prefix_len(length, cfg.block_size)
        # start from what real tokens (random ones, drawn with generator) make in every layer
        ids = torch.randint(cfg.vocab_size, (1, length), generator=generator, device=gpt.lm_head.weight.device)
        cache = KVCache(cfg.n_layer, cfg.block_size)
        with torch.no_grad():
            gpt.hidden_states(ids, cache)  # fills the cache: (1, nh, P, hs) per layer
        self.k = nn.Parameter(torch.cat([layer.k for layer in cache.layers]))  # (n_layer, nh, P, hs)
        self.v = nn.Parameter(torch.cat([layer.v for layer in cache.layers]))
        self.start_ids = ids  # the tokens they came from, to test the claim above
        self.block_size = cfg.block_size

    def __len__(self):
        return self.k.size(2)

    def cache(self, batch_size):
        """A KVCache holding the prefix for each of batch_size rows; gradients flow back into it."""
        cache = KVCache(self.k.size(0), self.block_size)
        for layer, k, v in zip(cache.layers, self.k, self.v):
            layer.update(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1))  # (B, nh, P, hs)
        return cache
