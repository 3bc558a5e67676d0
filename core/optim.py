"""Optimizers from an ``[optim]`` config, the linear lr-scaling rule, and GI-Adam.

- :func:`effective_lr`: ``lr_scaling = "linear"`` is the rule of Goyal et al. 2017,
  ``lr * batch_size / base_batch_size``; ``"none"`` leaves the lr alone.
- :func:`run_base_lr`: the base lr a run's schedule multiplies (``optim.lr``, or
  ``lr_ntk / lambda0`` once the NTK has been measured), after scaling.
- :func:`build_optimizer`: sgd | adam | adamw | gi_adam. With ``weight_decay_norm_bias = false``
  the biases and normalisation parameters (every 1-D parameter, and every parameter of a
  normalisation layer) go into a second param group with ``weight_decay = 0``.
- :class:`GIAdam`: Adam whose second moment starts at the first squared gradient
  (Kalra & Barkeshli 2024).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def effective_lr(cfg: Any, lr: float, batch_size: int) -> float:
    """The lr after ``cfg.lr_scaling`` for a batch of ``batch_size`` samples."""
    if cfg.lr_scaling == "linear":
        return lr * batch_size / cfg.base_batch_size
    return lr


def run_base_lr(cfg: Any, lambda0: Optional[float] = None, batch: Optional[int] = None) -> float:
    """The base lr of a resolved ``RunConfig``: ``optim.lr`` (or ``optim.lr_ntk / lambda0``),
    scaled by :func:`effective_lr` with the run's batch size (``batch``, the plan's; derived
    from the config when not given).

    When ``lr_ntk`` is set and ``lambda0`` is not given the result is in units of
    ``lr_ntk / lambda0`` (i.e. the unscaled base lr is taken as 1.0).
    """
    if batch is None:
        from .data import batch_size

        batch = batch_size(cfg)
    o = cfg.optim
    if o.lr_ntk is not None:
        lr = 1.0 if lambda0 is None else o.lr_ntk / lambda0
    else:
        lr = o.lr
    return effective_lr(o, lr, batch)


def split_decay_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """(names with weight decay, names without): biases, 1-D params and norm-layer params
    are exempt. Each shared parameter is listed once, under its first name."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for mod_name, mod in model.named_modules():
        is_norm = isinstance(mod, _NORM_TYPES)
        for p_name, p in mod.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            (no_decay if is_norm or p.ndim <= 1 else decay).append(full)
    return decay, no_decay


def param_groups(model: nn.Module, cfg: Any) -> list[dict[str, Any]]:
    """Torch param groups for ``cfg`` (one group, or decay / no-decay groups)."""
    if cfg.weight_decay_norm_bias or cfg.weight_decay == 0:
        params = [p for p in model.parameters() if p.requires_grad]  # shared ones listed once
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    named = dict(model.named_parameters())
    decay, no_decay = split_decay_groups(model)
    groups = []
    if decay:
        groups.append({"params": [named[n] for n in decay], "weight_decay": cfg.weight_decay})
    if no_decay:
        groups.append({"params": [named[n] for n in no_decay], "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: Any, lr: float) -> torch.optim.Optimizer:
    """The optimizer of an ``OptimConfig`` over ``model``'s parameters, at lr ``lr``."""
    groups = param_groups(model, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    kw = dict(lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, **kw)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, **kw)
    if cfg.name == "gi_adam":
        return GIAdam(groups, **kw)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


class GIAdam(torch.optim.Optimizer):
    r"""GI-Adam: Adam with the second moment initialised by the first squared gradient.

    Kalra & Barkeshli 2024 ("Why Warmup the Learning Rate?"). For each parameter, with
    gradient :math:`g_t` at step :math:`t = 1, 2, \dots` (weight decay as an L2 term added to
    the gradient, like ``torch.optim.Adam``: :math:`g_t \leftarrow g_t + \lambda\theta_{t-1}`)::

        m_0 = 0,             v_0 = g_1 ** 2          (the only change from Adam, where v_0 = 0)
        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = b2 v_{t-1} + (1 - b2) g_t ** 2
        theta_t = theta_{t-1} - lr * (m_t / (1 - b1**t)) / (sqrt(v_t / (1 - b2**t)) + eps)

    Both bias corrections are kept, so the first step is
    ``lr * g / (|g| / sqrt(1 - b2) + eps)`` ~ ``lr * sqrt(1 - b2) * sign(g)``: ``lr / sqrt(1000)``
    for ``b2 = 0.999``. With a constant gradient ``v_t = g**2`` for every t and the step is
    ``lr * sqrt(1 - b2**t) * sign(g)`` (up to eps): a built-in warmup over ~``1 / (1 - b2)``
    steps. The step counter is a Python int, so ``step`` never synchronises with a GPU.
    ``second_moment_init = "grad_sq"`` tells the curvature code (which predicts the first step's
    preconditioner at init) that v_0 = g^2 here.
    """

    second_moment_init = "grad_sq"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("GIAdam does not support sparse gradients")
                if wd != 0:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = g.mul(g)  # v_0 = g_1^2
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1 = 1 - b1**t
                bc2 = 1 - b2**t
                denom = (v / bc2).sqrt_().add_(eps)
                p.addcdiv_(m, denom, value=-lr / bc1)
        return loss
