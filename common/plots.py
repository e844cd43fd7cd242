"""
Pictures of a run: its loss curves, and the attention weights of a trained model. Drawing needs
matplotlib, which nothing else does, so it stays optional: without it, train.py skips loss.png
and the drawing tools stop with one line saying how to install it.
"""

import json
from pathlib import Path

from common.cli import UserError
from common.files import atomic_write

DPI = 100
LOSS_INCHES = (7, 4)  # loss.png is 700 x 400 pixels
CELL_INCHES = 0.09  # of one token in an attention map: 6.5 points, room for a label
LABEL_POINTS = 6  # the font size of the tokens' labels
MIN_MAP_INCHES = 1.8  # the least width and height of one map


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot(what):
    """matplotlib.pyplot, drawing into files only (no window, so it works on a server)."""
    if not have_matplotlib():
        raise UserError(f"{what} needs matplotlib: pip install matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(log_path, png_path):
    """The training loss of each logged iteration and the evaluations' train and val losses, from a
    train.py log.jsonl."""
    plt = pyplot("loss.png")
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=LOSS_INCHES, dpi=DPI)
    ax.plot([r["iter"] for r in steps], [r["loss"] for r in steps], alpha=0.4, label="train (batch)")
    ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train")
    ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    atomic_write(png_path, lambda f: fig.savefig(f, format="png"))  # never through a planted link
    plt.close(fig)


def map_inches(n_tokens):
    return max(MIN_MAP_INCHES, CELL_INCHES * n_tokens + 0.6)  # 0.6: room for the labels


def plot_attention(maps, tokens, png_path):
    """maps (L, nh, T, T) as a grid of heatmaps, a row per layer and a column per head. In each, row i
    is the query token i and column j the key token j: how much token i reads from token j. The
    token texts label the axes of the left column and the bottom row."""
    plt = pyplot("drawing attention maps")
    L, nh, T, _ = maps.shape
    side = map_inches(T)
    fig, axes = plt.subplots(L, nh, figsize=(side * nh, side * L), dpi=DPI, squeeze=False)
    for layer in range(L):
        for head in range(nh):
            ax = axes[layer][head]
            ax.imshow(maps[layer, head], cmap="Blues", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(T), tokens if layer == L - 1 else [], rotation=90, fontsize=LABEL_POINTS)
            ax.set_yticks(range(T), tokens if head == 0 else [], fontsize=LABEL_POINTS)
    fig.tight_layout()
    atomic_write(png_path, lambda f: fig.savefig(f, format="png"))  # never through a planted link
    plt.close(fig)
