"""The device under test: its environment record (env.json and the ENV_COLS of every row, with the NCCL
version and the GPU's PCI address that runs record beside it), its peak FLOP/s for the MFU column, the
precisions each layer bench runs, and freeing its memory."""

from __future__ import annotations

import gc
import math
import platform
import sys

import torch

from real import fp8
from real.fp8 import Precision
from real.telemetry import Telemetry

# Dense tensor-core peaks (FLOP/s), NVIDIA H100/H200 SXM datasheets (sparsity figures halved);
# used only for the MFU column.
PEAK_FLOPS_PER_S = {"H100": {"bf16": 989.4e12, "fp8": 1978.9e12},
                    "H200": {"bf16": 989.4e12, "fp8": 1978.9e12}}


def environment(device: torch.device, tel: Telemetry) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    env = {"gpu_name": gpu, "torch_version": torch.__version__,
           "cuda_version": torch.version.cuda or "", "python_version": sys.version.split()[0],
           "hostname": platform.node(), "nvml": tel.available, **tel.static_info()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(sm_count=p.multi_processor_count, total_memory_bytes=p.total_memory,
                   cudnn_version=torch.backends.cudnn.version())
    env["fp8_blockwise_kernel"] = fp8.blockwise_kernel_available(device)
    return env


def nccl_version() -> str:
    """torch's NCCL version as "major.minor.patch", "" where torch has none (a CPU build)."""
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # CPU builds have no NCCL
        return ""
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)  # a tuple in recent torch, an int before


def cuda_pci_bus_id(device: torch.device) -> str | None:
    """The CUDA device's PCI address as NVML spells it ('00000000:08:00.0'), so NVML readings are this GPU's
    (an NVML index need not match a CUDA index under CUDA_VISIBLE_DEVICES); None where torch does not say."""
    p = torch.cuda.get_device_properties(device)
    if not hasattr(p, "pci_bus_id"):
        return None
    return f"{getattr(p, 'pci_domain_id', 0):08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"


def peak_flops(env: dict, precision: str) -> float:
    for key, peaks in PEAK_FLOPS_PER_S.items():
        if key in env["gpu_name"]:
            return peaks["fp8" if precision.startswith("fp8") else "bf16"]
    return math.nan


def free_memory():
    """Between cases: collect garbage and return cached GPU memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def precisions_to_bench(env: dict) -> list[Precision]:
    """BF16, and FP8 with the best scaling this device runs (block-wise where its kernel exists)."""
    return [fp8.BF16, Precision("fp8", "blockwise" if env["fp8_blockwise_kernel"] else "rowwise")]
