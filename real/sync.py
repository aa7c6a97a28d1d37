"""Waiting for a device: the one helper every bench, probe and engine in real/ uses."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Block until the kernels queued on `device` have finished (torch.cuda.synchronize on a CUDA
    device); nothing on the CPU, whose ops have finished when they return."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
