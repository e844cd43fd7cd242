"""
Where and how the math runs, shared by train.py, sample.py, finetune.py and bench.py:
device and dtype choice, autocast, DDP process setup, and the peak FLOP/s behind MFU.
"""

import os
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

# dense bf16/fp16 tensor-core peaks from the vendors' data sheets, in FLOP/s
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
                  "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


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
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
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


def can_compile(device):
    """torch.compile builds its CPU kernels with a C++ compiler: $CXX, else g++ (clang++ on macOS)."""
    if device != "cpu":
        return True
    compiler = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    return shutil.which(compiler) is not None


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


def wrap_ddp(model, device, ddp):
    """DistributedDataParallel averages the gradients of all ranks during backward."""
    if not ddp.enabled:
        return model
    return DDP(model, device_ids=[ddp.local_rank] if device.startswith("cuda") else None)


def rng_state():
    """The random state that dropout draws from, for a checkpoint: a resumed run drops the same units."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_flops(device, dtype):
    """The FLOP/s that MFU is measured against: the data-sheet peak of a known GPU, else the
    measured matmul throughput of this machine in dtype (a CPU has no single honest number)."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops if dtype != "float32" else flops / 2  # TF32 runs at about half the bf16 rate
        return None
    return measured_matmul_flops(DTYPES[dtype])


def measured_matmul_flops(dtype, n=1024, repeats=5):
    generator = torch.Generator().manual_seed(0)  # leaves the global RNG, and so resumed runs, alone
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    a @ b  # warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)
