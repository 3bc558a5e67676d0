"""The torch device a run (or a command's ``--device``) asks for."""

from __future__ import annotations

import re

import torch

from .errors import ConfigError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` -> cuda, else mps, else cpu; any other name as given. ConfigError (``key``) for a
    name torch does not run on here: not one of auto/cpu/cuda/cuda:N/mps, CUDA asked for and not
    available (or no GPU N), MPS asked for and not available. The preflight calls it, so a run
    asking for a missing device never starts."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        raise ConfigError(f"expected {DEVICE_NAMES}, got {name!r}", key=key)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here", key=key)
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)", key=key)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' asked for, but MPS is not available here", key=key)
    return torch.device(name)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's global generator state (the CPU one, and the device's for CUDA): what dropout draws
    from, for a checkpoint. Reading it does not synchronise with the device's work queue."""
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore :func:`rng_state` (entries for another device type are ignored)."""
    if "cpu" in state:
        torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
