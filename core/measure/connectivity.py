"""Mode connectivity, first slice: the straight line between two solutions and its loss barrier.

Along the path w(t) = (1 − t)·w_a + t·w_b every evaluated point gets its batch-norm statistics
recomputed from the training data (one pass, exact cumulative average), as Garipov et al. do:
without that, interpolated weights meet stale statistics and even t = 0 would not reproduce the
endpoint's error when its stored statistics are exponential averages.

State dicts of different architectures and paths without both ends raise
:class:`ConnectivityError` (a MeasurementError, so a ValueError).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .errors import MeasurementError
from .evaluation import evaluate

__all__ = ["ConnectivityError", "interpolate_state", "recompute_bn_stats", "eval_row", "linear_path", "barrier"]


class ConnectivityError(MeasurementError):
    """Two state dicts that do not pair up (``arg`` "sd_b"), a path without both ends ("ts")."""


def interpolate_state(sd_a: dict, sd_b: dict, t: float) -> dict:
    """(1 − t)·a + t·b for every floating tensor; other entries (e.g. BN ``num_batches_tracked``)
    are copied from ``a``. t = 0 and t = 1 return exact copies of a and b."""
    if sd_a.keys() != sd_b.keys():
        missing = sorted(set(sd_a) ^ set(sd_b))
        raise ConnectivityError(f"the two state dicts differ in keys: {', '.join(missing[:8])}", arg="sd_b")
    out = {}
    for k, a in sd_a.items():
        b = sd_b[k]
        if isinstance(a, torch.Tensor) and a.shape != b.shape:
            raise ConnectivityError(f"{k}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}", arg="sd_b")
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            if t == 0:
                out[k] = a.clone()
            elif t == 1:
                out[k] = b.clone().to(a.device)
            else:
                out[k] = torch.lerp(a, b.to(a.device, a.dtype), float(t))
        else:
            out[k] = a.clone() if isinstance(a, torch.Tensor) else a
    return out


def bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers that keep running statistics (the ones a recompute changes)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recompute_bn_stats(model: nn.Module, x_train: torch.Tensor, batch_size: int = 256) -> bool:
    """Reset the running statistics of every batch-norm layer and recompute them with one pass
    over ``x_train`` as an exact cumulative average over samples (each batch weighted by its size;
    the variance is the size-weighted mean of the batches' unbiased variances, as BN records them).

    Only the BN layers are put in train mode (dropout etc. stay in eval, so the statistics are
    those the evaluated network sees); modes and momenta are restored. Returns whether the model
    has any BN layer (if not, nothing is done)."""
    bns = bn_modules(model)
    if not bns:
        return False
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    dev = next((p.device for p in model.parameters()), x_train.device)
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.train()
        seen = 0
        with torch.no_grad():
            for i in range(0, x_train.shape[0], batch_size):
                xb = x_train[i : i + batch_size].to(dev)
                b = xb.shape[0]
                for m in bns:
                    m.momentum = b / (seen + b)
                model(xb)
                seen += b
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, tr in modes.items():
            m.training = tr
    return True


def eval_row(model: nn.Module, data: Any, loss_fn: Callable, batch_size: int = 512) -> dict[str, Any]:
    """{train_loss, train_accuracy, test_loss, test_accuracy} of a model on ``data`` (with
    ``x_train, y_train, x_test, y_test`` and optionally ``task``)."""
    task = getattr(data, "task", None)
    tr_loss, tr_acc = evaluate(model, data.x_train, data.y_train, loss_fn, batch_size, task=task)
    te_loss, te_acc = evaluate(model, data.x_test, data.y_test, loss_fn, batch_size, task=task)
    return {"train_loss": tr_loss, "train_accuracy": tr_acc, "test_loss": te_loss, "test_accuracy": te_acc}


def linear_path(
    model_a_sd: dict,
    model_b_sd: dict,
    build_fn: Callable[[], nn.Module],
    data: Any,
    ts: Iterable[float],
    loss_fn: Callable,
    batch_size: int = 512,
    recompute_bn: bool = True,
) -> list[dict]:
    """Train/test loss and accuracy at each t of the straight line between two state dicts.

    ``build_fn()`` returns a fresh model (on the device to evaluate on); ``data`` has
    ``x_train, y_train, x_test, y_test`` (and optionally ``task``), e.g. a core.data.DataBundle.
    BN statistics are recomputed from ``x_train`` at every t unless ``recompute_bn=False``.
    Returns one dict per t: {t, and the :func:`eval_row` fields}."""
    model = build_fn()
    rows = []
    for t in ts:
        model.load_state_dict(interpolate_state(model_a_sd, model_b_sd, float(t)))
        if recompute_bn:
            recompute_bn_stats(model, data.x_train, batch_size)
        rows.append({"t": float(t), **eval_row(model, data, loss_fn, batch_size)})
    return rows


def barrier(ts: Sequence[float], losses: Sequence[float]) -> float:
    """max over t of loss(t) − ((1 − t)·loss(0) + t·loss(1)): the height of the path above the
    chord between its endpoints. Always ≥ 0 (the endpoints, at height 0, are among the t), and
    0 for a convex path (one that never rises above the chord). ``ts`` must contain 0 and 1."""
    pairs = sorted(zip(map(float, ts), map(float, losses)))
    if len(pairs) < 2 or pairs[0][0] != 0.0 or pairs[-1][0] != 1.0:
        raise ConnectivityError("barrier needs the path evaluated at t = 0 and t = 1", arg="ts")
    l0, l1 = pairs[0][1], pairs[-1][1]
    return max(loss - ((1 - t) * l0 + t * l1) for t, loss in pairs)
