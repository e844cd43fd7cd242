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

import numpy as np
import torch
import torch.distributed as dist

from common.cli import UserError
from common.costs import training_bytes

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
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={name} but this machine has no CUDA GPU; use --device=cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise UserError(f"--device={name} but this machine has {torch.cuda.device_count()} CUDA GPUs (cuda:0 ...)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device={name} but mps is not available here; use --device=cpu or auto")
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


def memory_bytes(device):
    """All the memory of device: a CUDA GPU's own, else the machine's physical memory (which Apple's
    mps shares), as the system reports it (os.sysconf: Linux, macOS); None where it can't be known."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no os.sysconf (Windows), or no such name there
        return None


def check_training_memory(config, batch_size, device, seq_len=None, shards=1):
    """Before a model is built: refuse a GPTConfig and batch whose training step can't fit in device's
    memory, naming both figures, rather than let the allocation fail (or the system kill the process)
    later. The need is a floor (costs.training_bytes), so a step this allows may still not fit.
    seq_len: tokens per sequence, if fewer than block_size; shards: the processes a sharded model
    (--parallel=fsdp or tp) is spread over, each of which holds at least its share."""
    needed, available = training_bytes(config, batch_size, seq_len) / shards, memory_bytes(device)
    if available is not None and needed > available:
        raise UserError(f"a GPT of block_size {config.block_size:,}, n_layer {config.n_layer}, n_embd {config.n_embd} "
                        f"and vocab_size {config.vocab_size:,} trained {batch_size} sequences at a time needs at least "
                        f"{needed / 2**30:,.1f} GiB (weights, gradients, AdamW's moments and activations), more than "
                        f"the {available / 2**30:,.1f} GiB of {device}; lower --block_size or --batch_size, or train a "
                        f"smaller model")


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


def setup_distributed(device):
    """(Distributed, device): torchrun sets RANK, LOCAL_RANK and WORLD_SIZE, a plain `python train.py`
    none of them. The backend follows the device: NCCL between CUDA GPUs, gloo between CPU processes;
    each CUDA process takes the GPU of its local rank."""
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not any(name in os.environ for name in names):
        return Distributed(), device
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise UserError(f"{', '.join(missing)} unset while {', '.join(n for n in names if n in os.environ)} "
                        f"is set: start several processes with torchrun, or unset them to run one")
    if device.startswith("cuda") and not dist.is_nccl_available():
        raise UserError("this torch build has no NCCL for CUDA processes; use --device=cpu (gloo)")
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    ddp = Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if device.startswith("cuda"):
        device = f"cuda:{ddp.local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
    return ddp, device


def end_distributed():
    """The last thing a torchrun rank does: wait for every rank, tear down, and exit at once.

    Exiting skips Python's own shutdown on purpose. In PyTorch 2.13 a gloo worker thread may still be
    freeing the last backward's collectives when the main thread finishes; they hold a Python object,
    and freeing it while the interpreter shuts down aborts the process now and then ("terminate called
    without an active exception", pytorch/pytorch#190489; docs/gpus.md has the counts). The run's files
    are written and closed by then, so leaving without the shutdown loses nothing."""
    dist.barrier()  # wait for the master's last evaluation: a rank that tears down early can abort
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def step_seed(seed, *step):
    """A seed for one step's random draws (a batch's windows, a rank's dropout), made from the run's
    seed and numbers that name the step, e.g. (split, step) or (rank, iteration). It depends on nothing
    else, so a resumed run draws exactly what the uninterrupted run would have, with no random state to
    save, and different ranks or steps draw differently. SeedSequence mixes the numbers well (seed + step
    would give rank 1's step 0 the seed of rank 0's step 1)."""
    return int(np.random.SeedSequence([seed, *step]).generate_state(1)[0])


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
