"""What a run's config implies, derived once: :class:`RunPlan` from :func:`plan_run`.

Input shape, outputs, training-set size, effective batch, steps per epoch, total steps, base lr
and the model's block names follow from the config alone (no data is loaded, the model is built
on the meta device). Preflight, the loop (core.train), ``heur schedule``, ``heur run --dry-run``
and, through the loop's ``start`` event, the TUI all read these numbers from the plan instead of
re-deriving them. The loop checks the loaded data against its plan, so a wrong size table in
core.data fails at the start of a run, not as a silently mis-scheduled one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import ConfigError


@dataclass(frozen=True)
class RunPlan:
    """The numbers a run's config implies. ``base_lr`` is None for ``optim.lr_ntk`` runs (the lr is
    ``lr_ntk / lambda0``, known only once lambda0 is measured at the run's start).
    ``model``: the run's model on the meta device (layer names and shapes; no memory, no weights)."""

    input_shape: tuple[int, ...]
    num_outputs: int
    train_size: int
    batch_size: int
    drop_last: bool
    steps_per_epoch: int
    total_steps: int
    base_lr: Optional[float]
    blocks: tuple[str, ...]
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    def samples_at(self, step: int) -> int:
        """Training examples seen after ``step`` optimizer steps (a ``drop_last`` epoch counts only
        its whole batches)."""
        per_epoch = self.steps_per_epoch * self.batch_size if self.drop_last else self.train_size
        e, i = divmod(step, self.steps_per_epoch)
        return e * per_epoch + min(i * self.batch_size, per_epoch)


def plan_run(cfg: Any) -> RunPlan:
    """The plan of a resolved ``RunConfig``. Raises ConfigError where the model does not fit the
    data (what build_model would say at the run's start). Cost: one model build on the meta
    device (milliseconds, VGG-16 included)."""
    from .data import batch_size, data_shape, steps_per_epoch, total_steps, train_size
    from .models import meta_model
    from .optim import run_base_lr

    shape = data_shape(cfg.data)
    if shape is None:  # every dataset the schema accepts has a known shape
        raise ConfigError(f"no known input shape for dataset {cfg.data.name!r}", key="data.name")
    input_shape, outputs = shape
    batch = batch_size(cfg)
    base_lr = None if cfg.optim.lr_ntk is not None else run_base_lr(cfg, batch=batch)
    model = meta_model(cfg)
    return RunPlan(
        input_shape=tuple(input_shape),
        num_outputs=int(outputs),
        train_size=train_size(cfg.data),
        batch_size=batch,
        drop_last=bool(cfg.train.drop_last),
        steps_per_epoch=steps_per_epoch(cfg),
        total_steps=int(total_steps(cfg)),
        base_lr=base_lr,
        blocks=tuple(getattr(model, "heur_blocks", ())),
        model=model,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run's training holds on its device, from its plan alone (float32 throughout):
    ``weights`` (parameters and buffers), ``grads``, ``optimizer`` (SGD with momentum one buffer a
    parameter, Adam-family two), ``activations`` (every module's output for one batch, what
    autograd keeps for the backward pass, measured by a forward pass on the meta device) and
    ``data`` (the training set, which heur keeps on the device). A lower bound: the allocator's
    slack, the test set, probes (Hessian-vector products, snapshots) and a distillation teacher
    come on top."""

    params: int
    weights: int
    grads: int
    optimizer: int
    activations: int
    data: int

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.data


def memory_estimate(cfg: Any, plan: Optional[RunPlan] = None) -> Optional[MemoryEstimate]:
    """The :class:`MemoryEstimate` of a resolved ``RunConfig`` (None when the model cannot be built
    on the meta device). No memory is allocated: the model and the batch live on ``meta``."""
    import torch

    plan = plan or plan_run(cfg)
    model = plan.model
    if model is None:
        return None
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    slots = 0
    if cfg.task == "train" or cfg.task == "curve":
        name = getattr(cfg.optim, "name", "sgd")
        slots = 2 if name in ("adam", "adamw", "gi_adam") else 1 if (getattr(cfg.optim, "momentum", 0) or 0) > 0 else 0
    acts = 0
    batch = plan.batch_size if cfg.task in ("train", "curve") else min(plan.batch_size, 1000)

    def hook(_m: Any, _i: Any, out: Any) -> None:
        nonlocal acts
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                acts += t.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty((batch, *plan.input_shape), device="meta"))
    except Exception:  # a model whose forward the meta device cannot run: weights only
        acts = 0
    finally:
        for h in handles:
            h.remove()
    f32 = 4
    n_in = int(math.prod(plan.input_shape))
    return MemoryEstimate(
        params=params,
        weights=(params + buffers) * f32,
        grads=trainable * f32 if cfg.task in ("train", "curve") else 0,
        optimizer=slots * trainable * f32,
        activations=acts * f32,
        data=plan.train_size * n_in * f32,
    )
