"""
The CUDA path on a real GPU: the two attention paths agree in float32, bfloat16 and float16, and sdpa
really runs the flash (or memory-efficient) kernel, in training and in cached decoding; compiled equals
eager; float16 with the gradient scaler trains like float32; a checkpoint written on the GPU gives
the same logits on a CPU. On a machine without a CUDA GPU every test here is skipped.

    python -m pytest tests/test_cuda.py -q       # on a GPU machine; python tools/gpu_check.py runs it too

Tolerances are relative to the largest value compared (conftest.assert_close). float32 means float32:
TF32 matmuls are off in this file, or they would blur the float32 comparisons.
"""

import copy
import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import train
from common import runtime
from common.checkpoint import load_checkpoint, load_model
from conftest import assert_close, spread_weights
from common.optim import adamw
from model import GPT, GPTConfig, KVCache
from test_attention import make_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = ["float32", "bfloat16", "float16"]
# manual vs sdpa, relative to the largest output: float32 differs only in summation order; the
# half-precision paths round the attention weights to 8 (bfloat16) or 11 (float16) bits at different
# points. This file run on a CPU (cuda -> cpu) measured, for one layer at T = 256 and 1024, 2.9e-2 and
# 5.1e-2 in bfloat16, 3.6e-3 and 6.7e-3 in float16; for the logits of the two-layer model, whose
# layers compound the rounding, 7.6e-2 and 1.1e-2. The tolerances leave about three times that; a
# causal mask shifted by one position gives 0.59 to 0.92.
TOLERANCE = {"float32": 1e-4, "bfloat16": 1.5e-1, "float16": 3e-2}
MODEL_TOLERANCE = {"float32": 1e-4, "bfloat16": 2.5e-1, "float16": 5e-2}
# the fused kernel that must run: flash attention takes only 16-bit inputs, the memory-efficient one float32 too
FAST_KERNEL = {"float32": SDPBackend.EFFICIENT_ATTENTION, "bfloat16": SDPBackend.FLASH_ATTENTION,
               "float16": SDPBackend.FLASH_ATTENTION}
# (B, T, C, nh): the Shakespeare model's and GPT-2 small's training shapes (head size 64)
TRAINING_SHAPES = [(4, 256, 384, 6), (2, 1024, 768, 12)]


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def attention_pair(C, nh, T, seed):
    """The manual and the sdpa attention with the same (spread) weights, on the GPU, in train mode."""
    manual = make_attention(C, nh, T, seed, "manual").cuda().train()
    sdpa = make_attention(C, nh, T, seed, "sdpa").cuda().train()
    sdpa.load_state_dict(manual.state_dict())
    return manual, sdpa


# ----------------------------------------------------------------------------- attention

def test_auto_choices_on_this_gpu():
    major, _ = torch.cuda.get_device_capability()
    assert runtime.pick_dtype("auto", "cuda") == ("bfloat16" if major >= 8 else "float16")  # Ampere and newer
    assert runtime.pick_attention("auto", "cuda") == "sdpa"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,C,nh", TRAINING_SHAPES)
def test_manual_equals_sdpa_in_training_and_sdpa_runs_the_fused_kernel(B, T, C, nh, dtype):
    """Forward and backward under autocast, as train.py runs them; sdpa restricted to the fused kernel,
    which raises if it can't run (a mask it does not take, a dtype or head size it does not support)."""
    manual, sdpa = attention_pair(C, nh, T, seed=T)
    x = torch.randn(B, T, C, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    x_m, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
    with runtime.autocast("cuda", dtype):
        y_m = manual(x_m)
        with sdpa_kernel([FAST_KERNEL[dtype]]):
            y_s = sdpa(x_s)
            y_s.float().sum().backward()  # the fused backward kernel too
    assert_close(y_s.float(), y_m.float(), TOLERANCE[dtype], f"sdpa vs manual, {dtype}, T={T}", relative=True)
    if dtype == "float32":
        y_m.sum().backward()
        assert_close(x_s.grad, x_m.grad, TOLERANCE[dtype], "sdpa vs manual input gradient", relative=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_decoding_runs_the_fused_kernel_and_matches_manual(dtype):
    """Each new token after the prompt goes through sdpa with no mask (model.py), so the flash kernel,
    which takes no mask, can run; its logits equal the manual path's."""
    config = dict(block_size=256, vocab_size=65, n_layer=2, n_head=6, n_embd=384, dropout=0.0)
    torch.manual_seed(0)
    manual = spread_weights(GPT(GPTConfig(**config, attention="manual")), 0).cuda().eval()
    sdpa = GPT(GPTConfig(**config, attention="sdpa")).cuda().eval()
    sdpa.load_state_dict(manual.state_dict())
    seq = torch.randint(65, (3, 120), device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))  # (B, T)
    caches = {m: KVCache(m.config.n_layer, m.config.block_size) for m in (manual, sdpa)}
    with torch.no_grad(), runtime.autocast("cuda", dtype):
        for m in (manual, sdpa):
            m(seq[:, :100], cache=caches[m])  # the prompt: is_causal, no mask
        for t in range(100, 120):
            expected, _ = manual(seq[:, t : t + 1], cache=caches[manual])
            with sdpa_kernel([FAST_KERNEL[dtype]]):
                logits, _ = sdpa(seq[:, t : t + 1], cache=caches[sdpa])  # (B, 1, V)
            assert_close(logits.float(), expected.float(), MODEL_TOLERANCE[dtype], f"cached step {t}, {dtype}",
                         relative=True)


# ----------------------------------------------------------------------------- compile, float16

def test_compiled_equals_eager_on_the_gpu():
    blocker = runtime.compile_blocker("cuda")
    if blocker:
        pytest.skip(blocker)
    torch.manual_seed(0)
    eager = spread_weights(GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=2, n_head=4, n_embd=64,
                                         attention="sdpa")), 0).cuda().train()
    compiled = copy.deepcopy(eager)
    compiled.compile()
    x = torch.randint(65, (4, 64), device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
    y = torch.roll(x, -1, dims=1)
    logits_e, loss_e = eager(x, y)
    logits_c, loss_c = compiled(x, y)
    assert_close(logits_c, logits_e, 1e-4, "compiled vs eager logits", relative=True)
    loss_e.backward()
    loss_c.backward()
    for (name, p_e), p_c in zip(eager.named_parameters(), compiled.parameters()):
        assert_close(p_c.grad, p_e.grad, 1e-3, f"compiled vs eager gradient of {name}", relative=True)


def counting_batches(steps, batch_size=8, T=64, vocab_size=65, seed=0):
    """Windows of a sequence that counts up by one (mod vocab_size): each next token is learnable,
    so the loss falls far within a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(vocab_size, (steps, batch_size, 1), generator=g)
    rows = (starts + torch.arange(T + 1)) % vocab_size  # (steps, B, T+1)
    return [[(r[:, :-1].cuda(), r[:, 1:].cuda())] for r in rows]


def train_losses(dtype, steps):
    """Losses of `steps` iterations of train.train_step (AdamW, clipping, the gradient scaler for
    float16, as train.py sets them up), and how many steps the scaler skipped."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=2, n_head=4, n_embd=128, attention="sdpa")).cuda()
    optimizer = adamw(model, 0.1, 1e-3, (0.9, 0.99), "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == "float16")
    ctx = runtime.autocast("cuda", dtype)
    losses, skipped = [], []
    for i, micro_batches in enumerate(counting_batches(steps)):
        scale = scaler.get_scale()
        losses.append(train.train_step(model, optimizer, scaler, micro_batches, 1.0, ctx, "cuda").item())
        if scaler.get_scale() < scale:  # the scaler found an inf or NaN gradient and skipped this step
            skipped.append(i)
    return losses, skipped, scaler.get_scale()


def test_float16_with_the_scaler_trains_like_float32():
    steps = 40
    reference, _, _ = train_losses("float32", steps)
    losses, skipped, scale = train_losses("float16", steps)
    assert reference[-1] < reference[0] - 1.0  # the runs really learn: a test of training, not of noise
    worst = max(abs(a - b) for a, b in zip(losses, reference))
    print(f"[max error] float16 + scaler vs float32 loss over {steps} steps: {worst:.3e}; skipped steps {skipped}")
    assert worst < 0.02  # half a percent of the starting loss, ln(65) = 4.17 (a CPU run of this measured 1.4e-4)
    assert len(skipped) <= 2 and not [i for i in skipped if i >= steps // 2]  # no step skipped for good
    assert 1.0 <= scale < float("inf")


# ----------------------------------------------------------------------------- data, checkpoints

@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """A char dataset from made-up text, so this file needs no downloaded corpus on the GPU machine."""
    from data.shakespeare_char.prepare import prepare

    folder = tmp_path_factory.mktemp("synthetic")
    rng = random.Random(0)
    words = ["the", "king", "shall", "speak", "and", "we", "hear", "him", "now", "gentle", "lord", "ROMEO:"]
    (folder / "input.txt").write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(3000)))
    prepare(input_path=folder / "input.txt", out_dir=folder)
    return folder


def test_batches_arrive_on_the_gpu_with_the_values_of_the_cpus(synthetic_data):
    ddp = runtime.Distributed()
    on_cpu = train.Batches(synthetic_data, 64, 8, seed=0).iteration(2, ddp)
    on_gpu = train.Batches(synthetic_data, 64, 8, seed=0, device="cuda").iteration(2, ddp)
    for (x, y), (x_g, y_g) in zip(on_cpu, on_gpu):
        assert x_g.is_cuda and torch.equal(x_g.cpu(), x) and torch.equal(y_g.cpu(), y)


def test_a_checkpoint_written_on_the_gpu_gives_the_same_logits_on_a_cpu(synthetic_data, tmp_path):
    cfg = train.TrainConfig(out_dir=str(tmp_path), data_dir=str(synthetic_data), n_layer=2, n_head=4, n_embd=64,
                            block_size=64, batch_size=8, device="cuda", dtype="bfloat16", compile=False,
                            sample_tokens=0, eval_iters=2, eval_interval=4, max_iters=8, lr_decay_iters=8,
                            warmup_iters=2, dropout=0.1)
    train.train(cfg)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # train() turned TF32 on
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["model_args"]["attention"] == "sdpa"  # trained with flash attention; the CPU runs manual
    on_gpu, _ = load_model(tmp_path, attention="sdpa")
    on_cpu, _ = load_model(tmp_path, attention=runtime.pick_attention("auto", "cpu"))
    x = torch.randint(ckpt["model_args"]["vocab_size"], (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_gpu, _ = on_gpu.cuda().eval()(x.cuda())
        logits_cpu, _ = on_cpu.eval()(x)
    assert_close(logits_cpu, logits_gpu.cpu(), 1e-4, "CPU vs GPU logits of one checkpoint", relative=True)
