"""
tools/costs.py and tools/inspect_model.py: a GPT's parameters, FLOPs and activations module by module,
against hand counts, against the model itself, and against GPT.estimate_mfu's total.
"""

import pytest
import torch

from model import GPT, GPTConfig
from tools import inspect_model
from common.costs import cost_rows, total

# a config small enough to count by hand: L=2 blocks, C=8 dims, nh=2 heads, T=4 positions, V=10 tokens
HAND = GPTConfig(block_size=4, vocab_size=10, n_layer=2, n_head=2, n_embd=8, bias=True, attention="manual")


def test_a_tiny_model_counted_by_hand():
    """(params, forward FLOPs per token, activations per sequence), each worked out from the shapes."""
    by_hand = [
        (4 * 8, 0, 4 * 8),  # wpe (T, C); the lookups do no arithmetic; x is (T, C)
        (2 * (8 + 8), 2 * 2 * 16, 2 * 4 * 8),  # ln_1: gain and bias of C; 2 FLOPs per parameter; (T, C) each
        (2 * (8 * 24 + 24), 2 * 2 * 216, 2 * 4 * 24),  # c_attn: C -> 3C with bias; q, k, v (T, 3C)
        (0, 2 * (2 * 4 * 8 + 2 * 4 * 8), 2 * (2 * 4 * 4 + 4 * 8)),  # q k^T and att v: 2TC each; weights (nh, T, T), out (T, C)
        (2 * (8 * 8 + 8), 2 * 2 * 72, 2 * 4 * 8),  # attn.c_proj: C -> C with bias
        (2 * (8 + 8), 2 * 2 * 16, 2 * 4 * 8),  # ln_2
        (2 * (8 * 32 + 32), 2 * 2 * 288, 2 * 4 * 32),  # mlp.c_fc: C -> 4C
        (0, 0, 2 * 4 * 32),  # gelu: elementwise, not counted as FLOPs; (T, 4C)
        (2 * (32 * 8 + 8), 2 * 2 * 264, 2 * 4 * 8),  # mlp.c_proj: 4C -> C
        (8 + 8, 2 * 16, 4 * 8),  # ln_f
        (10 * 8, 2 * 80, 4 * 10),  # lm_head, tied to wte: C -> V, no bias; the logits (T, V)
    ]
    rows = cost_rows(HAND)
    assert [(r.params, r.forward_flops, r.activations) for r in rows] == by_hand
    assert total(rows).params == 1872  # 80 + 32 + 2 x 872 + 16, the model's parameters listed by hand


@pytest.mark.parametrize("config", [
    HAND,
    GPTConfig(block_size=128, vocab_size=65, n_layer=4, n_head=4, n_embd=128, bias=False),  # train.py's default
    GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),  # GPT-2 124M
], ids=["hand", "default", "gpt2"])
def test_rows_add_up_to_the_model_and_to_estimate_mfu(config):
    with torch.device("meta"):  # shapes only
        model = GPT(config)
    rows = cost_rows(config)
    assert total(rows).params == sum(p.numel() for p in model.parameters())
    blocks = model.transformer.h
    for row, path in zip(rows[1:], ["ln_1", "attn.c_attn", None, "attn.c_proj", "ln_2", "mlp.c_fc", None, "mlp.c_proj"]):
        if path is not None:
            assert row.params == sum(p.numel() for b in blocks for p in b.get_submodule(path).parameters()), row.name
    # estimate_mfu's FLOPs per sequence (dt = peak = 1 iteration of 1 sequence), over its block_size tokens
    T = config.block_size
    per_token = model.estimate_mfu(fwdbwd_per_iter=1, dt=1.0, peak_flops=1.0) / T
    L, H, Q, N = config.n_layer, config.n_head, config.n_embd // config.n_head, model.get_num_params()
    assert per_token == 6 * N + 12 * L * H * Q * T  # the formula, as documented
    assert total(rows).train_flops == per_token


def test_activations_are_the_sizes_of_what_each_module_outputs():
    """Measured on a real forward pass: forward hooks record each module's output, the attention keeps
    its weights, and gelu's output is what mlp.c_proj reads."""
    torch.manual_seed(0)
    model = GPT(HAND).eval()
    sizes = {}

    def record(name, inputs=False):
        def hook(module, args, output):
            tensor = args[0] if inputs else output
            sizes[name] = sizes.get(name, 0) + tensor.numel()
        return hook

    model.transformer.drop.register_forward_hook(record("embeddings"))  # wte[idx] + wpe
    for block in model.transformer.h:
        for path in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            block.get_submodule(path).register_forward_hook(record(path))
        block.attn.c_proj.register_forward_hook(record("att @ v", inputs=True))
        block.mlp.c_proj.register_forward_hook(record("gelu", inputs=True))
        block.attn.keep_att = True
    model.transformer.ln_f.register_forward_hook(record("ln_f"))
    model.lm_head.register_forward_hook(record("lm_head"))
    with torch.no_grad():
        model(torch.randint(10, (1, HAND.block_size)))  # one sequence of block_size tokens
    weights = sum(block.attn.last_att.numel() for block in model.transformer.h)
    measured = [sizes["embeddings"], sizes["ln_1"], sizes["attn.c_attn"], weights + sizes["att @ v"],
                sizes["attn.c_proj"], sizes["ln_2"], sizes["mlp.c_fc"], sizes["gelu"], sizes["mlp.c_proj"],
                sizes["ln_f"], sizes["lm_head"]]
    assert [r.activations for r in cost_rows(HAND)] == measured


def test_the_inspector_prints_the_table_and_its_check(capsys):
    inspect_model.main(["--n_layer=2", "--n_head=2", "--n_embd=8", "--block_size=4", "--vocab_size=10",
                        "--bias=True", "--dtype=float32", "--device=cpu", "--batch_size=3"])
    out = capsys.readouterr().out
    assert "| 2 blocks: mlp.c_fc | 576 | 30.8% | 1,152 | 3,456 |" in out  # 576 / 1872 parameters
    assert f"| total | 1,872 | 100.0% |" in out
    assert "parameters: the model has 1,872, the table 1,872" in out
    assert "6 x 1,840 + 12 x 2 x 2 x 4 x 4 = 11,808, the table 11,808" in out  # 1,840: all but wpe
    assert "a micro-step of batch_size=3 x 4 tokens" in out


def test_the_inspector_reads_a_saved_run(tmp_path, capsys):
    torch.manual_seed(0)
    model = GPT(HAND)
    ckpt = {"model": model.state_dict(), "model_args": vars(HAND).copy(),
            "tokenizer": {"kind": "char", "chars": "abcdefghij"}}
    torch.save(ckpt, tmp_path / "best.pt")
    inspect_model.main([f"--init_from={tmp_path}", "--dtype=float32", "--device=cpu"])
    out = capsys.readouterr().out
    assert out.startswith("2 layers, 2 heads, 8 dims, block 4, vocabulary 10") and "| total | 1,872 |" in out
