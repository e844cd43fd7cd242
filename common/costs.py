"""
Where a GPT's parameters, FLOPs and activations go, module by module: the counting behind
tools/inspect_model.py, written out so that each row can be checked by hand.

The FLOPs follow the conventions of GPT.estimate_mfu (the PaLM paper's appendix B), so that the rows
add up to its total:
- a weight does one multiply and one add per token: 2 FLOPs per parameter in the forward pass.
  Biases and LayerNorm gains are counted the same way (a small overcount: they are few);
- the two attention matmuls, q @ k^T and att @ v, cost 2 * T * C FLOPs per token each, at the full
  length T = block_size, with no discount for the zeros of the causal mask;
- elementwise work (softmax, GELU, the LayerNorm statistics) is not counted;
- an embedding lookup reads a row and does no arithmetic; wte's matrix is also lm_head's (they are
  tied), so its parameters and FLOPs are counted once, in lm_head's row;
- backward costs twice the forward, so a training step is 3 x forward: 6N + 12 * L * C * T per token.
Activations are the elements each module outputs for one sequence of block_size tokens: what
backward reads back (the input of the next operation). An eager run keeps a few more: the
intermediates of the hand-written LayerNorm and GELU, and the attention scores before the softmax.

training_bytes turns these counts into a floor on the memory of one training step, which
runtime.check_training_memory compares with the device's before a model is built.
"""

from dataclasses import dataclass, replace


@dataclass
class Row:
    name: str
    params: int
    forward_flops: int  # per token
    activations: int  # elements, per sequence of block_size tokens

    @property
    def train_flops(self):
        return 3 * self.forward_flops  # forward, plus a backward that costs twice as much


def cost_rows(config):
    """One Row per kind of module of a GPTConfig; a block's rows are summed over all n_layer blocks."""
    L, T, C, V, nh = config.n_layer, config.block_size, config.n_embd, config.vocab_size, config.n_head

    def linear(n_in, n_out):  # a weight matrix, and a bias when the model has them
        return n_in * n_out + (n_out if config.bias else 0)

    norm = C + (C if config.bias else 0)  # a LayerNorm's gain, and its bias
    blocks = f"{L} blocks"  # h.0 .. h.{L-1}: each row sums the same module of every block
    return [
        Row("wte, wpe (lookups; wte is lm_head's)", T * C, 0, T * C),  # x = wte[idx] + wpe: (T, C)
        Row(f"{blocks}: ln_1", L * norm, L * 2 * norm, L * T * C),
        Row(f"{blocks}: attn.c_attn", L * linear(C, 3 * C), L * 2 * linear(C, 3 * C), L * T * 3 * C),  # q, k, v
        # softmax(q @ k^T) @ v: the weights (nh, T, T), then their average of the values (T, C)
        Row(f"{blocks}: attn softmax(qk^T)v", 0, L * 4 * T * C, L * (nh * T * T + T * C)),
        Row(f"{blocks}: attn.c_proj", L * linear(C, C), L * 2 * linear(C, C), L * T * C),
        Row(f"{blocks}: ln_2", L * norm, L * 2 * norm, L * T * C),
        Row(f"{blocks}: mlp.c_fc", L * linear(C, 4 * C), L * 2 * linear(C, 4 * C), L * T * 4 * C),
        Row(f"{blocks}: mlp gelu", 0, 0, L * T * 4 * C),
        Row(f"{blocks}: mlp.c_proj", L * linear(4 * C, C), L * 2 * linear(4 * C, C), L * T * C),
        Row("ln_f", norm, 2 * norm, T * C),
        Row("lm_head (= wte)", V * C, 2 * V * C, T * V),  # the logits: one score per vocabulary entry
    ]


def total(rows):
    """A Row holding the sums of rows."""
    return Row("total", sum(r.params for r in rows), sum(r.forward_flops for r in rows),
               sum(r.activations for r in rows))


def training_bytes(config, batch_size, seq_len=None):
    """At least how many bytes one training step of a GPT of this config holds at once: the weights,
    their gradients and AdamW's two moments (four float32 numbers per parameter), and what backward
    reads back of one micro-batch of batch_size sequences of seq_len tokens (block_size by default),
    at 2 bytes a number (bfloat16 or float16 under autocast; float32 takes twice that). A floor, not a
    forecast: attention's (T, T) weights are left out, since the fused kernel never stores them, and so
    is all an eager run keeps beyond the rows above. A step that needs more than this can't run."""
    params = total(cost_rows(config)).params
    T = seq_len or config.block_size
    scores = config.n_layer * config.n_head * T * T  # the attention weights in cost_rows' softmax row
    activations = total(cost_rows(replace(config, block_size=T))).activations - scores
    return 4 * 4 * params + 2 * batch_size * activations
