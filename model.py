"""
A GPT language model in one file, readable top to bottom.

    GPTConfig                   the model's sizes
    LayerNorm, gelu             the two nonlinear pieces, written out
    CausalSelfAttention         multi-head masked self-attention: the math by hand, or one fused call
    MLP, Block                  the feed-forward net, and the pre-LayerNorm residual block
    GPT                         embeddings, the blocks, ln_f, lm_head; forward, generate, loading GPT-2
    masked_cross_entropy, sample_next_token          the loss and the sampling rule
    KVCache, LayerKVCache       keys and values kept between generation steps (skip on a first read)

The parameter names are GPT-2's own (wte, wpe, h.{i}.attn.c_attn, ln_f, ...), so OpenAI's
weights load with a short loop. References:
  GPT-2 paper: https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf
  Attention is all you need: https://arxiv.org/abs/1706.03762
  OpenAI's TensorFlow code: https://github.com/openai/gpt-2/blob/master/src/model.py

Shape letters used in comments: B batch, T time (sequence length), C channels (n_embd),
nh number of heads, hs head size (C // nh), V vocabulary size.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import huggingface

ATTENTION_KINDS = ("manual", "sdpa")


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the model can read (number of position embeddings)
    vocab_size: int = 50257  # GPT-2's BPE vocabulary; 65 for Shakespeare characters
    n_layer: int = 12  # number of Transformer blocks
    n_head: int = 12  # attention heads per block
    n_embd: int = 768  # width of the residual stream
    dropout: float = 0.0  # 0 for pretraining big models, 0.1-0.2 for small data
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2; False is a bit faster
    attention: str = "sdpa"  # "manual": the math written out; "sdpa": PyTorch's fused kernel

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"GPTConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")


class LayerNorm(nn.Module):
    """Normalise each position's features to mean 0 and variance 1, then scale and shift."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None  # PyTorch's own LayerNorm can't drop it

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased variance, as in the LayerNorm paper
        x = (x - mean) * torch.rsqrt(var + 1e-5)
        x = x * self.weight
        return x if self.bias is None else x + self.bias


def gelu(x):
    """GELU with GPT-2's tanh approximation (loading GPT-2's weights needs this exact curve)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head  # under tensor parallelism, this rank's share of them (common/parallel.py)
        self.head_size = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.attention = config.attention
        # one Linear makes the queries, keys and values of all heads at once: its output is [q | k | v]
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True  # gets a smaller init, see GPT._init_weights
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # True: the manual path keeps its attention weights in last_att (tools/attention_maps.py draws them)
        self.keep_att = False
        self.last_att = None

    def forward(self, x, cache=None, key_mask=None):
        B, T, _ = x.size()
        nh, hs = self.n_head, self.head_size
        q, k, v = self.c_attn(x).split(nh * hs, dim=2)  # (B, T, C) -> 3 x (B, T, C), C = nh * hs
        # split the channels into heads: (B, T, C) -> (B, T, nh, hs) -> (B, nh, T, hs)
        q = q.view(B, T, nh, hs).transpose(1, 2)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        if cache is not None:  # generation only: the earlier tokens' keys and values come first (KVCache)
            k, v = cache.update(k, v)  # (B, nh, S, hs), S = the earlier tokens + T
        y = self.attend(q, k, v, key_mask)  # (B, nh, T, hs)
        # merge the heads back: (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, C)
        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)
        return self.resid_dropout(self.c_proj(y))

    def attend(self, q, k, v, key_mask=None):
        """Each of the T queries (B, nh, T, hs) takes a weighted mean of the values (B, nh, S, hs) of the
        keys it may see. Without a cache S == T; the queries are always the last T of the S tokens.
        key_mask (B, S), for a tagger that reads both ways (finetune.py --reading=both_ways): each query
        then sees every real key (True), the later ones too; only the padding stays hidden."""
        T, S = q.size(2), k.size(2)
        if self.attention == "manual":
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, S)
            # True where a query may look at a key: (T, S), or reading both ways (B, 1, 1, S) for every head and query
            visible = causal_mask(T, S, q.device) if key_mask is None else key_mask[:, None, None, :]
            att = att.masked_fill(~visible, float("-inf"))  # no peeking at the future
            att = F.softmax(att, dim=-1)
            if self.keep_att:
                self.last_att = att.detach()  # (B, nh, T, S), each row summing to 1
            att = self.attn_dropout(att)
            return att @ v  # (B, nh, T, S) x (B, nh, S, hs) -> (B, nh, T, hs)
        # the same function in one fused kernel (flash attention on GPU), told the mask in the cheapest
        # way that says it: is_causal when there is no cache (the kernel makes the mask itself, which the
        # flash kernel needs); a lone new token after a cache may see every key, so no mask at all;
        # several new tokens after a cache, or reading both ways, need the mask itself (no flash kernel)
        if key_mask is not None:
            visible, is_causal = key_mask[:, None, None, :], False
        else:
            visible, is_causal = (causal_mask(T, S, q.device) if 1 < T < S else None), T == S
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, is_causal=is_causal,
                                              dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)


def causal_mask(T, S, device):
    """(T, S) bool, True where a query may look at a key: query i is token S - T + i of the S, and sees
    keys 0 .. S - T + i. Made when needed, not kept: a block_size x block_size buffer in every layer
    would cost memory for nothing (and DDP would broadcast it every step)."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, key_mask=None):
        x = x + self.attn(self.ln_1(x), cache, key_mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: reading a token and predicting it use one matrix (fewer parameters, as GPT-2)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            # each block adds two residual projections to the stream; scaling their init by
            # 1/sqrt(2 * n_layer) keeps the stream's variance from growing with depth (GPT-2 paper, 2.3)
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count; position embeddings are left out by default, as is usual.
        Token embeddings stay in: they are the lm_head's weight too."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) token ids -> logits (B, T, V) and, with targets (B, T), the mean next-token
        cross-entropy over the positions whose target is not -1 (padding or prompt tokens)."""
        logits = self.lm_head(self.hidden_states(idx, cache))  # (B, T, C) -> (B, T, V)
        if targets is None:
            return logits, None
        return logits, masked_cross_entropy(logits, targets)

    def hidden_states(self, idx, cache=None, key_mask=None):
        """idx (B, T) token ids -> the final LayerNorm's output (B, T, C): what lm_head reads to
        predict the next token, and what finetune.py's heads read to classify. key_mask (B, T), True at
        real tokens: read both ways instead of left to right (a tagger's choice; see attend)."""
        B, T = idx.size()
        past = 0 if cache is None else len(cache)
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence of length {past + T} is longer than block_size {self.config.block_size}; "
                f"crop it to the last {self.config.block_size} tokens"
            )
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache.layers[i], key_mask)
        return self.transformer.ln_f(x)

    def crop_block_size(self, block_size):
        """Shrink the context, e.g. to finetune GPT-2 (1024) with a smaller block_size."""
        if not 0 < block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size}, got {block_size}")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 window_step=1):
        """Continue each row of idx (B, T) by max_new_tokens sampled tokens; temperature 0 is greedy.
        Call model.eval() first, so that dropout is off. window_step: see KVCache."""
        cache = KVCache(self.config.n_layer, self.config.block_size, window_step) if use_cache else None
        for _ in range(max_new_tokens):
            if cache is None:
                logits, _ = self(idx[:, -self.config.block_size:])  # recompute the whole window each step
            else:
                logits, _ = self(cache.unseen(idx), cache=cache)  # feed only what the cache lacks
            idx_next = sample_next_token(logits[:, -1, :], temperature, top_k, top_p)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops):
        """Model FLOPs utilisation: achieved FLOP/s as a fraction of peak_flops (PaLM paper, appendix B)."""
        cfg = self.config
        N = self.get_num_params()
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T  # 6N for the matmuls' forward+backward, plus attention
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

    @classmethod
    def from_pretrained(cls, path, dropout=0.0, attention="sdpa"):
        """Load OpenAI GPT-2 weights (any size) from a local Hugging Face-format directory holding
        config.json and model.safetensors or pytorch_model.bin. Dropout may be set for finetuning, and
        the attention kind chosen; neither has weights."""
        hf = huggingface.read_config(path)
        # the math of this file is GPT-2's: refuse a config that asks for other math rather than load it wrongly
        if hf.get("activation_function", "gelu_new") != "gelu_new" or hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
            raise ValueError(f"{path}/config.json: only GPT-2's tanh GELU and LayerNorm eps 1e-5 are supported")
        config = GPTConfig(
            block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
            n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=dropout, bias=True, attention=attention,
        )
        # GPT-2 stores these as Conv1D, whose weight is the transpose of nn.Linear's
        transposed = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
        state = {name: w.t() if name.endswith(transposed) else w for name, w in huggingface.load_state_dict(path).items()}
        if "transformer.wte.weight" in state:
            state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one matrix under two names
        return cls.from_state_dict(config, state, path)

    @classmethod
    def from_state_dict(cls, config, state, source):
        """A GPT of this config holding the weights of state. The weights are checked against the sizes
        the config claims before the model is built: on the meta device a model has shapes but no
        memory, so a file that claims a huge block_size is refused without allocating it (its blocks are
        Python objects even there: the number of layers is counted first)."""
        layers = {name.split(".")[2] for name in state if name.startswith("transformer.h.")}  # transformer.h.{i}.*
        if len(layers) != config.n_layer:
            raise ValueError(f"{source}: n_layer is {config.n_layer}, but the weights hold {len(layers)} blocks")
        with torch.device("meta"):
            expected = {name: p.shape for name, p in cls(config).state_dict().items()}
        missing, extra = expected.keys() - state.keys(), state.keys() - expected.keys()
        if missing or extra:
            raise ValueError(f"{source}: the weights {'lack ' + min(missing) if missing else 'hold an unknown ' + min(extra)}"
                             f"{'' if len(missing | extra) == 1 else f' (and {len(missing | extra) - 1} more differences)'}; "
                             f"they are not those of a GPT of the sizes given")
        for name, shape in expected.items():
            if state[name].shape != shape:
                raise ValueError(f"{source}: {name} has shape {tuple(state[name].shape)}, but the sizes given "
                                 f"(block_size {config.block_size}, vocab_size {config.vocab_size}, n_embd "
                                 f"{config.n_embd}) make it {tuple(shape)}")
        model = cls(config)
        model.load_state_dict(state)
        return model


def masked_cross_entropy(logits, targets):
    """Mean cross-entropy over the positions whose target is not -1.
    A batch with every target masked gives 0 (and zero gradients) rather than 0/0 = NaN."""
    V = logits.size(-1)
    total = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1, reduction="sum")
    n_real = (targets != -1).sum()
    return total / n_real.clamp(min=1)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None):
    """logits (B, V) -> next token ids (B, 1). temperature 0 is greedy; top_k keeps the k likeliest
    tokens; top_p keeps the smallest set of likeliest tokens whose probabilities add up to p."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already cover top_p (the first one always stays)
        drop = probs.cumsum(dim=-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1)


# ----------------------------------------------------------------------------- the KV cache (skip on a first read)
# Generating token by token, the keys and values of the earlier tokens do not change: keep them, and
# feed the model only the newest token. GPT.generate makes the cache; CausalSelfAttention.forward
# appends to it in one line; attend() then sees more keys than queries.

class KVCache:
    """The keys and values of the tokens in the context window, one pair per layer, so that each
    generation step feeds only the newest token through the model.

    Positions are learned, so when the text outgrows block_size and the window slides, every token
    moves to a new position and the cached keys and values go stale: the cache is emptied and rebuilt
    from the window. window_step is how far the window slides at once. With 1 each token sees exactly
    the last block_size tokens, as recomputing without a cache would. With s > 1 a rebuilt cache
    serves the next s - 1 tokens: faster, but a token then sees block_size - s + 1 to block_size
    tokens of context, so the text is no longer the one recomputation would sample."""

    def __init__(self, n_layer, block_size, window_step=1):
        if not 1 <= window_step <= block_size:
            raise ValueError(f"window_step must be between 1 and block_size ({block_size}), got {window_step}")
        self.n_layer, self.block_size, self.window_step = n_layer, block_size, window_step
        self.layers = [LayerKVCache() for _ in range(n_layer)]
        self.start = None  # where the context window begins in the token sequence

    def __len__(self):
        return self.layers[0].length

    def unseen(self, idx):
        """The tokens of idx (B, T_all) that the cache has not seen: the whole window at first, then
        the newest token. Slides the window, and empties the cache, when that token would not fit."""
        if self.start is None:
            self.start = max(0, idx.size(1) - self.block_size)
        if idx.size(1) - self.start > self.block_size:
            self.start = idx.size(1) - (self.block_size - self.window_step + 1)
            self.layers = [LayerKVCache() for _ in range(self.n_layer)]
        return idx[:, self.start + len(self):]  # (B, T_new)


class LayerKVCache:
    def __init__(self):
        self.k = self.v = None  # (B, nh, T_past, hs)

    @property
    def length(self):
        return 0 if self.k is None else self.k.size(2)

    def update(self, k, v):
        """Append this step's keys and values; return all of them so far."""
        if self.k is not None:
            k = torch.cat([self.k, k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v
