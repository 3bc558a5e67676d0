"""The torch device a run (or a command's ``--device``) asks for."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda, else mps, else cpu; any other name as given. ConfigError (key device)
    when CUDA is asked for and not available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here", key="device")
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
