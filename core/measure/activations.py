"""Capture the outputs of named layers of a model on a fixed probe set (for CCA and friends).

Layer names are those of ``model.named_modules()``. ``resolve_layers(model, "auto")`` gives
``model.heur_blocks`` where the model has it, else every Conv/Linear module in forward order.
Bad layer names or sample counts raise :class:`CaptureError` (a MeasurementError: a ValueError
with ``arg`` "layers" or "samples"); the callers name their own config key.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .errors import MeasurementError

__all__ = ["CaptureError", "capture", "resolve_layers", "probe_indices"]

_LEAF_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class CaptureError(MeasurementError):
    """Layers that cannot be captured (``arg`` "layers") or an empty probe set ("samples")."""


def _forward_order(model: nn.Module, names: list[str], example: Optional[torch.Tensor]) -> list[str]:
    if example is None:
        return names
    order: list[str] = []
    mods = dict(model.named_modules())
    handles = [
        mods[n].register_forward_hook(lambda m, i, o, n=n: order.append(n) if n not in order else None) for n in names
    ]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return order + [n for n in names if n not in order]


def resolve_layers(
    model: nn.Module, layers: Union[str, Sequence[str]] = "auto", example: Optional[torch.Tensor] = None
) -> list[str]:
    """The layer names to capture.

    ``"auto"``: ``model.heur_blocks`` if present, else every Conv/Linear module — in forward
    order when ``example`` (a small input batch) is given, else in registration order.
    A list of names is validated against ``model.named_modules()``; an unknown name raises
    CaptureError(arg="layers") listing the valid names.
    """
    valid = [n for n, _ in model.named_modules() if n]
    if isinstance(layers, str):
        if layers != "auto":
            layers = [layers]
        else:
            blocks = getattr(model, "heur_blocks", None)
            if blocks:
                return resolve_layers(model, list(blocks))
            mods = dict(model.named_modules())
            names = [n for n in valid if isinstance(mods[n], _LEAF_TYPES)]
            if not names:
                raise CaptureError("model has no Conv/Linear layers and no heur_blocks; name the layers", arg="layers")
            return _forward_order(model, names, example)
    names = list(layers)
    if not names:
        raise CaptureError("expected 'auto' or a non-empty list of layer names", arg="layers")
    bad = [n for n in names if n not in valid]
    if bad:
        raise CaptureError(
            f"unknown layer{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; valid names: {', '.join(valid)}",
            arg="layers",
        )
    return names


def probe_indices(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """A fixed probe set: ``min(samples, n)`` distinct sample indices in [0, n), sorted, chosen by
    ``seed`` alone (the same seed gives the same set in every run and process)."""
    if n <= 0 or samples <= 0:
        raise CaptureError(f"expected a positive number of samples, got {samples} of {n}", arg="samples")
    g = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCCA]))
    return np.sort(g.choice(n, size=min(samples, n), replace=False))


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Union[str, Iterable[str]] = "auto",
    batch_size: int = 256,
    device: Union[str, torch.device, None] = None,
    as_numpy: bool = False,
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict[str, Any]:
    """Outputs of the named layers for the inputs ``x``, as float32, one entry per layer
    (samples first, the layer's own shape after), in the order of ``layers``.

    Runs in eval mode (the model's mode is restored afterwards), under ``torch.no_grad()``, in
    batches of ``batch_size``. Results are gathered on ``device`` (default: the model's device;
    "cpu" to move them off the accelerator); ``as_numpy=True`` returns numpy arrays (on CPU).
    A layer returning a tuple contributes its first element. ``transform`` (per sample, e.g.
    ``lambda t: flatten_conv(t, "mean")``) is applied to each batch's output before it is kept,
    so that large convolutional maps need not be held whole.
    """
    names = resolve_layers(model, layers if isinstance(layers, str) else list(layers))
    mods = dict(model.named_modules())
    mdev = _model_device(model)
    out_dev = torch.device("cpu") if as_numpy else torch.device(device) if device is not None else mdev
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook(name):
        def fn(_m, _i, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.detach()
            if transform is not None:
                out = transform(out)
            chunks[name].append(out.to(device=out_dev, dtype=torch.float32))

        return fn

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    was = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                model(x[i : i + batch_size].to(mdev, non_blocking=True))
    finally:
        for m, t in was.items():
            m.training = t
        for h in handles:
            h.remove()
    res = {}
    for n in names:
        t = torch.cat(chunks[n], dim=0) if chunks[n] else torch.empty(0)
        res[n] = t.numpy() if as_numpy else t
    return res
