"""
Where and how the math runs, shared by train.py, sample.py, finetune.py and bench.py:
device and dtype choice, autocast, DDP process setup, and the peak FLOP/s behind MFU.
"""

import importlib.util
import os
import re
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from common.cli import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Dense bf16 tensor-core peaks from NVIDIA's data sheets (fp16 for V100 and T4, which lack bf16), in
# FLOP/s; the sheets' larger "with sparsity" figures are twice these. The keys are exact model names:
# the name torch.cuda.get_device_name() reports, without the brand and the memory's size and kind
# (see gpu_model). So "L4" is not "L40", "A10" not "A10G", "H100 PCIE" not "H100" (the SXM module). A
# GPU not listed, such as the A10G, whose peak NVIDIA does not publish, gets no MFU rather than a wrong one.
GPU_PEAK_FLOPS = {
    "H100": 989e12,  # the SXM module: "NVIDIA H100 80GB HBM3"
    "H100 PCIE": 756e12,
    "H100 NVL": 835e12,
    "H200": 989e12,
    "H200 NVL": 835e12,
    "GH200": 989e12,
    "A100": 312e12,  # "NVIDIA A100-SXM4-80GB"; the PCIe card has the same peak
    "A100 PCIE": 312e12,
    "A10": 125e12,
    "A40": 150e12,
    "L4": 121e12,
    "L40": 181e12,
    "L40S": 362e12,
    "V100": 125e12,  # SXM2
    "V100 PCIE": 112e12,
    "T4": 65e12,
    "RTX 4090": 165e12,  # GeForce cards: the rate with float32 accumulation, which autocast uses
    "RTX 3090": 71e12,
}


def pick_device(name):
    """"auto" picks cuda, then Apple's mps, then cpu; anything else is checked and returned."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={name} but this machine has no CUDA GPU; use --device=cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device={name} but mps is not available here; use --device=cpu or auto")
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return name


def pick_dtype(name, device):
    """"auto" is bfloat16 on a GPU that has it, float16 on an older GPU, bfloat16 on a CPU that
    multiplies it natively (AVX512-BF16, AMX, Arm BF16), float32 elsewhere."""
    if name == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if gpu_has_bf16() else "float16"
        if device == "cpu" and cpu_has_bf16():
            return "bfloat16"
        return "float32"
    if name not in DTYPES:
        raise UserError(f"--dtype must be auto, float32, bfloat16 or float16, got {name!r}")
    return name


def pick_attention(name, device):
    """"auto" is sdpa (flash kernels) on a CUDA GPU and the hand-written manual path elsewhere, which
    runs faster than sdpa on a CPU in bfloat16 (python tools/bench.py --dtype=bfloat16)."""
    if name == "auto":
        return "sdpa" if device.startswith("cuda") else "manual"
    return name


def gpu_has_bf16():
    """A V100 or T4 answers torch.cuda.is_bf16_supported() with True, since torch can emulate bfloat16
    there, slowly: ask for native support only. (A torch old enough to lack the argument is asked
    without it.)"""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


def cpu_has_bf16():
    """A CPU without bfloat16 instructions emulates it, slower than float32. (torch.cpu.get_capabilities
    is recent; with an older torch, stay in float32.)"""
    if not hasattr(torch.cpu, "get_capabilities"):
        return False
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag) for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def autocast(device, dtype):
    """Mixed precision: matmuls in dtype, reductions such as softmax and the loss kept in float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=DTYPES[dtype])


def compile_blocker(device):
    """Why torch.compile can't build kernels for device on this machine, or None when it can. Its
    inductor backend writes Triton kernels for a CUDA GPU and C++ for a CPU; on Apple's mps it is
    still a prototype, so we don't use it there."""
    kind = device.split(":")[0]
    if kind == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile needs the triton package on a CUDA GPU and it is not installed"
    if kind == "mps":
        return "torch.compile's mps backend is a prototype"
    if kind == "cpu":
        compiler = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(compiler) is None:
            return "torch.compile needs a C++ compiler (g++, clang++ or $CXX) on a CPU and none was found"
    return None


def compile_in_place(model, device):
    """torch.compile the model in place, so that its state_dict keeps its own names (torch.compile(model)
    would wrap it and prefix every name with "_orig_mod."); where that can't work, say why and stay eager."""
    blocker = compile_blocker(device)
    if blocker is not None:
        print(f"{blocker}: running eager, about half as fast; pass --compile=False to silence this")
        return
    model.compile()


def enable_tf32():
    """Let float32 matmuls on Ampere and newer GPUs use TF32 tensor cores (10-bit mantissa, much faster)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_master(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def setup_distributed(backend):
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain `python train.py` sets none of them."""
    if "RANK" not in os.environ:
        return Distributed()
    dist.init_process_group(backend=backend)
    return Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def grad_scaler(device, dtype, state=None):
    """The loss scaler of a training loop: float16 gradients underflow to 0 unless the loss is scaled
    up first; bfloat16 and float32 need none (the scaler is then a no-op). state: a checkpoint's
    scaler state to go on from; {} (saved by a run in another dtype) or None starts afresh."""
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)
    return scaler


def end_distributed():
    """The last thing a torchrun rank does: wait for every rank, tear down, and exit at once.

    Exiting skips Python's own shutdown on purpose. In PyTorch 2.13 a gloo worker thread may still be
    freeing the last backward's collectives when the main thread finishes; they hold a Python object,
    and freeing it while the interpreter shuts down aborts the process ("terminate called without an
    active exception", pytorch/pytorch#190489; 3 launches in 20 of a 2-rank run here). The run's files
    are written and closed by then, so leaving without the shutdown loses nothing."""
    dist.barrier()  # wait for the master's last evaluation: a rank that tears down early can abort
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def wrap_ddp(model, device, ddp):
    """DistributedDataParallel averages the gradients of all ranks during backward."""
    if not ddp.enabled:
        return model
    return DDP(model, device_ids=[ddp.local_rank] if device.startswith("cuda") else None)


def rng_state(device):
    """The random state that dropout draws from, for a checkpoint: a resumed run drops the same units.
    On a GPU only this process's GPU's state: asking for every GPU's would wake them all."""
    state = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.startswith("cuda"):  # a GPU run resumed on a CPU has no use for it
        torch.cuda.set_rng_state(state["cuda"], device)


def peak_flops(device, dtype):
    """The FLOP/s that MFU is measured against: the data-sheet peak of a known GPU, else the
    measured matmul throughput of this machine in dtype (a CPU has no single honest number)."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        flops = gpu_peak_flops(name)
        if flops is None:
            print(f"no data-sheet peak known for {name} ({gpu_model(name)!r} in runtime.GPU_PEAK_FLOPS): "
                  f"MFU is not reported")
            return None
        return flops if dtype != "float32" else flops / 2  # TF32 runs at about half the bf16 rate
    return measured_matmul_flops(DTYPES[dtype])


def gpu_peak_flops(name):
    """The dense bf16 peak of the GPU that torch.cuda.get_device_name() calls name, or None if unknown."""
    return GPU_PEAK_FLOPS.get(gpu_model(name))


def gpu_model(name):
    """"NVIDIA A100-SXM4-80GB" -> "A100", "Tesla V100-PCIE-32GB" -> "V100 PCIE": the words of a GPU's
    name without the brand, the memory's size and kind, and the SXM form factor, none of which changes
    the peak (a PCIe card's or an NVL's differs, so those words stay)."""
    words = name.upper().replace("-", " ").split()
    dropped = re.compile(r"NVIDIA|TESLA|GEFORCE|\d+GB|HBM\d*E?|SXM\d*")
    return " ".join(w for w in words if not dropped.fullmatch(w))


def measured_matmul_flops(dtype, n=1024, repeats=5):
    generator = torch.Generator().manual_seed(0)  # leaves the global RNG, and so resumed runs, alone
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    a @ b  # warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)
