"""Waiting for a device that may be the CPU (a dry run): the one helper real/'s benches, probes and
engines use there (code that runs on CUDA only calls torch.cuda.synchronize itself)."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Block until the kernels queued on `device` have finished (torch.cuda.synchronize on a CUDA
    device); nothing on the CPU, whose ops have finished when they return."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
