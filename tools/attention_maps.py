"""
Draw what a trained model's attention heads look at: for a prompt, a PNG grid with a row per layer
and a column per head, each a heatmap of how much every token (down the side) reads from every
token before it (along the bottom). The weights are the softmax of the model's own manual
attention path (model.CausalSelfAttention keeps them when asked). Needs matplotlib.

    python tools/attention_maps.py --out=attention.png                       # the default run, out-shakespeare-char
    python tools/attention_maps.py --out_dir=out-shakespeare-char --start="ROMEO:\\nWhat say you?" --out=maps.png
    python tools/attention_maps.py --init_from=path/to/gpt2 --start="The cat sat on the mat" --out=gpt2.png
"""

import sys
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python looks for imports in this folder only; our modules are at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common import plots
from common.checkpoint import load_gpt
from common.cli import UserError, parse_config, run_main
from common.files import read_prompt


@dataclass
class MapsConfig:
    out_dir: str = "out-shakespeare-char"  # a train.py run
    init_from: str = ""  # "": the run in out_dir; or a GPT-2 Hugging Face directory
    checkpoint: str = "best"  # "best" (lowest val loss) or "last"
    start: str = "ROMEO:\nBut soft, what light"  # the prompt, or FILE:path to read it from a file
    out: str = "attention.png"  # where to write the PNG
    max_tokens: int = 64  # longer prompts make unreadable maps

    def __post_init__(self):
        if self.checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be best or last, got {self.checkpoint!r}")
        if not self.out.endswith(".png"):
            raise ValueError(f"--out must name a .png file, got {self.out!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")


@torch.no_grad()
def attention_maps(model, idx):
    """The attention weights of every layer and head for one sequence idx (1, T): (L, nh, T, T).
    Computed by the manual path, which the model is switched to: sdpa never forms the weights."""
    model.eval()
    attns = [block.attn for block in model.transformer.h]
    for attn in attns:
        attn.attention, attn.keep_att = "manual", True
    model(idx)
    maps = torch.stack([attn.last_att[0] for attn in attns])  # L x (nh, T, T) -> (L, nh, T, T)
    for attn in attns:
        attn.keep_att, attn.last_att = False, None
    return maps


def token_labels(tokenizer, ids):
    """Each token's text, with the invisible made visible: a space as ␣, a newline as \\n."""
    return [tokenizer.decode([i]).replace(" ", "␣").replace("\n", "\\n") for i in ids]


def main(argv):
    cfg = parse_config(MapsConfig, argv)
    plots.pyplot("tools/attention_maps.py")  # fail before the work when matplotlib is missing
    model, tokenizer = load_gpt(cfg.init_from or cfg.out_dir, cfg.checkpoint)
    ids = tokenizer.encode(read_prompt(cfg.start))
    if not ids:
        raise UserError("the prompt is empty; give --start some text")
    limit = min(cfg.max_tokens, model.config.block_size)
    if len(ids) > limit:
        raise UserError(f"the prompt is {len(ids)} tokens long; draw at most {limit} "
                        f"(--max_tokens, at most the model's block_size {model.config.block_size})")
    maps = attention_maps(model.float(), torch.tensor([ids]))  # float32 on the CPU: one short forward
    plots.plot_attention(maps.numpy(), token_labels(tokenizer, ids), cfg.out)
    L, nh = maps.shape[:2]
    print(f"wrote {cfg.out}: {L} layers x {nh} heads, {len(ids)} tokens")


if __name__ == "__main__":
    run_main(main)
