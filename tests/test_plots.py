"""
The pictures: train.py's loss.png and tools/attention_maps.py's grid are PNG files of the size their
code asks for; without matplotlib, drawing stops with one line saying how to install it.
"""

import json
import string
import struct
import sys

import pytest
import torch

from common import plots
from common.cli import UserError
from conftest import tiny_gpt
from tools import attention_maps

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) in pixels, from the IHDR chunk that every PNG begins with."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def save_tiny_run(folder, seed=0):
    """A train.py-style run of the 37-character tiny model, enough for tools/attention_maps.py."""
    model = tiny_gpt(seed)
    chars = "\n " + string.ascii_lowercase + "ABCDEFGHI"  # 37 characters, one per token
    torch.save({"model": model.state_dict(), "model_args": vars(model.config).copy(),
                "tokenizer": {"kind": "char", "chars": chars}}, folder / "best.pt")


def test_loss_curve_png(tmp_path):
    pytest.importorskip("matplotlib")
    log = tmp_path / "log.jsonl"
    records = [{"iter": i, "loss": 4.0 - i / 50} for i in range(1, 101)]
    records += [{"iter": i, "train_loss": 4.0 - i / 50, "val_loss": 4.1 - i / 50} for i in (0, 50, 100)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    plots.plot_losses(log, tmp_path / "loss.png")
    width, height = plots.LOSS_INCHES
    assert png_size(tmp_path / "loss.png") == (width * plots.DPI, height * plots.DPI)  # 700 x 400
    assert 5_000 < (tmp_path / "loss.png").stat().st_size < 512_000


def test_attention_grid_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    save_tiny_run(tmp_path)
    out = tmp_path / "maps.png"
    attention_maps.main([f"--out_dir={tmp_path}", "--start=abc def\nghi", f"--out={out}"])
    assert f"wrote {out}: 2 layers x 4 heads, 11 tokens" in capsys.readouterr().out
    side = plots.map_inches(11) * plots.DPI  # a map per head across, a map per layer down
    assert png_size(out) == (round(4 * side), round(2 * side))
    assert 10_000 < out.stat().st_size < 512_000


def test_attention_maps_refuse_a_prompt_too_long_to_read(tmp_path):
    pytest.importorskip("matplotlib")
    save_tiny_run(tmp_path)
    with pytest.raises(UserError, match="the prompt is 15 tokens long; draw at most 12"):
        attention_maps.main([f"--out_dir={tmp_path}", "--start=abcdefghijklmno", "--max_tokens=12",
                             f"--out={tmp_path / 'x.png'}"])


def test_without_matplotlib_one_line_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert not plots.have_matplotlib()
    save_tiny_run(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        monkeypatch.setattr(sys, "argv", ["attention_maps.py", f"--out_dir={tmp_path}", f"--out={tmp_path / 'x.png'}"])
        attention_maps.run_main(attention_maps.main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: tools/attention_maps.py needs matplotlib: pip install matplotlib\n"
    assert not (tmp_path / "x.png").exists()
