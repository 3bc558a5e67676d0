"""Loss and accuracy of a model over a whole split, in eval mode, batch by batch.

Arguments: ``x`` (N, ...) inputs and ``y`` (N,) integer labels or (N, ...) float targets, on any
device (each batch moves to the model's); ``loss_fn(out, y)`` a batch mean. The objective's
default evaluation and the connectivity paths both measure through :func:`evaluate`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

__all__ = ["eval_batches", "evaluate"]


def eval_batches(x: Any, y: Any, batch: int, limit: Optional[int] = None):
    n = x.shape[0] if limit is None else min(limit, x.shape[0])
    for i in range(0, n, batch):
        yield x[i : min(i + batch, n)], y[i : min(i + batch, n)]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    batch: int = 512,
    limit: Optional[int] = None,
    task: Optional[str] = None,
) -> tuple[float, Optional[float]]:
    """Mean loss and accuracy over (up to ``limit`` samples of) a split, in eval mode (the model's
    mode is restored); batches move to the model's device; one host sync. ``loss_fn`` is a batch
    mean; accuracy is None unless ``task`` is classification (inferred from ``y``'s dtype when
    None: integer labels are classification)."""
    if task is None:
        task = "regression" if y.is_floating_point() else "classification"
    was_training = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), x.device)
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros((), device=dev, dtype=torch.float64)
    n = 0
    for xb, yb in eval_batches(x, y, batch, limit):
        xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        out = model(xb)
        loss_sum += loss_fn(out, yb).double() * xb.shape[0]
        if task == "classification":
            correct += (out.argmax(1) == yb).sum()
        n += xb.shape[0]
    model.train(was_training)
    vals = torch.stack([loss_sum, correct]).tolist()  # the one host sync
    return vals[0] / max(n, 1), (vals[1] / max(n, 1) if task == "classification" else None)
