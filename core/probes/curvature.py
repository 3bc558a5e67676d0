"""Curvature probes: Hessian sharpness against the stability threshold, and the NTK's lambda0.

``SharpnessProbe`` (``[probes.sharpness]``: every, batch, k, method, max_iter, tol) measures the
top-k Hessian eigenvalues of the training loss (train mode: the loss the optimizer sees) on a
fixed batch — the first ``batch`` samples of a permutation of the training set seeded by the
run's seed — at step 0, every ``every`` steps, at the steps ``at_steps`` and at the end of
warmup (step W: ``on_end`` reports ``sharpness_warmup_end`` with the edge at the base lr,
``sharpness_warmup_end_threshold``), and emits ``sharpness`` events. Each
measurement warm-starts Lanczos from the previous top eigenvector (same stopping rule). Its
threshold is the optimizer's stability edge at the current lr: 2(1+mu)/lr for SGD with heavy-
ball momentum mu (2/lr without), 2(1+mu)/(lr(1+2mu)) with Nesterov, and for Adam, AdamW and
GI-Adam Adam's (2+2 beta1)/((1-beta1) lr), compared with the *preconditioned* sharpness.
It keeps ``ctx.extra["sharpness_history"]``: a list of (step, lambda_max).

``NtkProbe`` (``[probes.ntk]``: at_init, every, batch) emits an ``ntk`` event with lambda0, the
top Gauss–Newton (NTK) eigenvalue of the training loss at init, and the learning rates 2/lambda0
(lazy edge), 4/lambda0 (uv divergence) and 12/lambda0 (ReLU nets' divergence); with ``every``
> 0 also the current value every ``every`` steps.

``measure_lambda0(model, cfg, data) -> float`` is what ``core.train`` calls before
building the optimizer when ``optim.lr_ntk`` is set (lr = lr_ntk / lambda0), on the same batch
as the NTK probe. Each probe's ``check`` (preflight, through the probe registry) validates its
batch size before a run is launched.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from ..errors import ConfigError
from ..measure.catapult import phase_limits
from ..measure.curvature import (
    EigResult,
    adam_sharpness,
    adam_threshold,
    gauss_newton_eigenvalues,
    hessian_eigenvalues_with_info,
    loss_normalisation,
)
from . import Probe, TrainContext

__all__ = [
    "SharpnessProbe",
    "NtkProbe",
    "measure_lambda0",
    "measure_lambda0_info",
    "probe_batch",
    "stability_threshold",
    "DEFAULT_NTK_BATCH",
]

ADAM_FAMILY = ("adam", "adamw", "gi_adam")
DEFAULT_NTK_BATCH = 512  # lambda0 batch when optim.lr_ntk is set without a [probes.ntk] section
NTK_TOL, NTK_MAX_ITER = 1e-4, 100


def _check_batch(name: str, section: Any, plan: Any) -> None:
    """ConfigError (key probes.<name>.batch) if the probe's batch exceeds the training set."""
    n = plan.train_size
    if section.batch > n:
        raise ConfigError(
            f"expected at most the training set size ({n} samples), got {section.batch}", key=f"probes.{name}.batch"
        )


def probe_batch(data: Any, size: int, seed: int, key: str = "probes.sharpness.batch") -> tuple[Any, Any]:
    """The first ``size`` samples of a permutation of the training set seeded by ``seed``."""
    n = data.n_train
    if size > n:
        raise ConfigError(f"expected at most the training set size ({n} samples), got {size}", key=key)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 1_234_567))[:size]
    idx = perm.to(data.x_train.device)
    return data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)


def _loss_kind(cfg: Any) -> tuple[str, str]:
    return cfg.train.loss, cfg.train.mse_reduction


def _normalisation(cfg: Any) -> str:
    return loss_normalisation(*_loss_kind(cfg))


def _current_lr(ctx: TrainContext) -> float:
    if ctx.lr and ctx.lr > 0:
        return float(ctx.lr)
    sched = getattr(ctx, "schedule", None)
    if callable(sched):
        try:
            return float(sched(ctx.step))
        except Exception:
            pass
    return float(ctx.optimizer.param_groups[0]["lr"])


def _warmup_steps(ctx: TrainContext) -> int:
    """The run's warmup length in steps (0 without one)."""
    return int(getattr(getattr(ctx, "schedule", None), "warmup_steps", 0) or 0)


def _base_lr(ctx: TrainContext) -> Optional[float]:
    """The run's base lr (the schedule's peak, the target of a warmup), when known."""
    sched = getattr(ctx, "schedule", None)
    base = getattr(sched, "base_lr", None)
    if base:
        return float(base)
    lr = ctx.optimizer.param_groups[0].get("initial_lr")
    return float(lr) if lr else None


def stability_threshold(optim_cfg: Any, lr: float) -> tuple[float, str]:
    """(threshold, description) of the optimizer's stability edge at learning rate ``lr``."""
    if optim_cfg.name in ADAM_FAMILY:
        b1 = optim_cfg.betas[0]
        return adam_threshold(lr, b1), "adam: (2+2*beta1)/((1-beta1)*lr) vs preconditioned sharpness"
    mu = optim_cfg.momentum
    if optim_cfg.nesterov and mu > 0:
        return (2 + 2 * mu) / (lr * (1 + 2 * mu)), "sgd nesterov: (2+2*mu)/(lr*(1+2*mu))"
    if mu > 0:
        return (2 + 2 * mu) / lr, "sgd heavy-ball: (2+2*mu)/lr"
    return 2.0 / lr, "sgd: 2/lr"


# --------------------------------------------------------------------------- lambda0


def _ntk_batch_size(cfg: Any, n_train: int) -> int:
    section = getattr(cfg.probes, "ntk", None)
    return section.batch if section is not None else min(DEFAULT_NTK_BATCH, n_train)


def measure_lambda0_info(model: torch.nn.Module, cfg: Any, data: Any) -> EigResult:
    """lambda0 with its statistics (``info["normalisation"]``, ``info["samples"]``, hvps)."""
    x, _ = probe_batch(data, _ntk_batch_size(cfg, data.n_train), cfg.seed, key="probes.ntk.batch")
    loss, red = _loss_kind(cfg)
    return gauss_newton_eigenvalues(
        model, x, loss=loss, reduction=red, k=1, tol=NTK_TOL, max_iter=NTK_MAX_ITER, seed=cfg.seed
    )


def measure_lambda0(model: torch.nn.Module, cfg: Any, data: Any) -> float:
    """lambda0: top NTK (Gauss–Newton) eigenvalue of the training loss at the model's current
    weights, on the NTK probe's batch (``probes.ntk.batch``, else min(512, n_train)), scaled for
    ``train.loss``/``train.mse_reduction`` so that 2/lambda0 is the linearised stability edge
    (the Gauss–Newton matrix needs the loss kind only, not the loss function).
    Model state (params, buffers, train/eval flags) is left as it was."""
    return measure_lambda0_info(model, cfg, data).top


# --------------------------------------------------------------------------- probes


def _warm_vector(ctx: TrainContext) -> Optional[torch.Tensor]:
    """lambda0's eigenvector (the NTK's top, over the same parameters), if the run measured it."""
    v = getattr(ctx, "lambda0_vector", None)
    n = sum(q.numel() for q in ctx.model.parameters() if q.requires_grad)
    return v if v is not None and v.numel() == n else None


class SharpnessProbe(Probe):
    name = "sharpness"

    @classmethod
    def check(cls, section: Any, cfg: Any, plan: Any) -> None:
        _check_batch(cls.name, section, plan)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self._batch: Optional[tuple[Any, Any]] = None
        self.history: list[list[float]] = []  # [step, lambda_max]
        self.precond_history: list[list[Any]] = []  # Adam family: [step, preconditioned sharpness, threshold]
        self.warmup_end: Optional[dict[str, Any]] = None  # the measurement at the end of warmup
        self.last: Optional[dict[str, Any]] = None
        self._v: Optional[torch.Tensor] = None  # last top eigenvectors: warm starts
        self._pv: Optional[torch.Tensor] = None

    def _xy(self, ctx: TrainContext) -> tuple[Any, Any]:
        if self._batch is None:
            self._batch = probe_batch(ctx.data, self.cfg.batch, ctx.cfg.seed)
        return self._batch

    def measure(self, ctx: TrainContext) -> dict[str, Any]:
        """Measure now, emit a ``sharpness`` event and return its fields."""
        t0 = time.perf_counter()
        x, y = self._xy(ctx)
        c = self.cfg
        kw = dict(k=c.k, method=c.method, tol=c.tol, max_iter=c.max_iter, seed=ctx.cfg.seed)
        adam = ctx.cfg.optim.name in ADAM_FAMILY
        # the first measurement starts from lambda0's eigenvector when the run measured it: at init
        # the Gauss-Newton part dominates the Hessian (catapult_mlp: 4 products instead of 9)
        v0 = self._v if self._v is not None else _warm_vector(ctx)
        r: Optional[EigResult]
        if adam:  # both operators from one forward pass and gradient graph
            r, p = adam_sharpness(ctx.model, ctx.loss_fn, x, y, ctx.optimizer, v0=v0, pv0=self._pv, plain=c.plain, **kw)
        else:
            r = hessian_eigenvalues_with_info(ctx.model, ctx.loss_fn, x, y, v0=v0, **kw)
        if r is not None:
            self._v = r.vector
        lr = _current_lr(ctx)
        # lr 0 (a warmup from 0 at step 0): no edge, nothing is unstable
        thr, thr_kind = stability_threshold(ctx.cfg.optim, lr) if lr > 0 else (None, "lr = 0: no edge")
        first = r if r is not None else p
        fields: dict[str, Any] = {
            "lambda_max": r.top if r is not None else None,  # None: probes.sharpness.plain = false
            "top_k": r.values if r is not None else None,
            "lr": lr,
            "threshold": thr,
            "threshold_kind": thr_kind,
            "method": first.method,
            "normalisation": _normalisation(ctx.cfg),
            "mode": "train",
            "batch": int(x.shape[0]),
            "hvps": r.hvps if r is not None else 0,
            "converged": r.converged if r is not None else True,
            "batch_loss": first.info.get("loss"),
        }
        measured = r.top if r is not None else None
        if adam:
            # at step 0 the first step's preconditioner, from this batch's gradient (measurable at init)
            self._pv = p.vector
            fields["preconditioned_sharpness"] = p.top
            fields["adam_step"] = p.info["adam_step"]
            fields["hvps"] += p.hvps
            fields["converged"] = fields["converged"] and p.converged
            measured = p.top
            if thr is None:  # lr 0 at this step: the edge at the run's base (target) lr instead
                base = _base_lr(ctx)
                if base:
                    fields["target_threshold"] = stability_threshold(ctx.cfg.optim, base)[0]
        fields["ratio"] = measured / thr if measured is not None and thr else None
        fields["seconds"] = time.perf_counter() - t0
        if r is not None:
            self.history.append([int(ctx.step), float(r.top)])
        if "preconditioned_sharpness" in fields:
            self.precond_history.append([int(ctx.step), fields["preconditioned_sharpness"], thr])
        ctx.extra["sharpness_history"] = self.history
        self.last = {"step": int(ctx.step), **fields}
        w = _warmup_steps(ctx)
        if w and ctx.step == w:
            # the edge the run is about to train at: the base (target) lr's, not the last warmup lr's
            base = _base_lr(ctx)
            edge = stability_threshold(ctx.cfg.optim, base)[0] if base else thr
            self.warmup_end = {"step": int(ctx.step), "value": measured, "threshold": edge}
        ctx.emit("sharpness", **fields)
        return fields

    def on_start(self, ctx: TrainContext) -> None:
        self.measure(ctx)

    def after_step(self, ctx: TrainContext) -> None:
        if ctx.step % self.cfg.every == 0 or ctx.step in self.cfg.at_steps or ctx.step == _warmup_steps(ctx):
            self.measure(ctx)

    def on_end(self, ctx: TrainContext) -> dict[str, Any]:
        if ctx.extra.get("state") == "completed" and (self.last is None or self.last["step"] != ctx.step):
            self.measure(ctx)
        if self.last is None:
            return {}
        out = {
            "sharpness_final": self.last["lambda_max"],
            "sharpness_threshold": self.last["threshold"],
            "sharpness_step": self.last["step"],
        }
        if "preconditioned_sharpness" in self.last:
            out["preconditioned_sharpness_final"] = self.last["preconditioned_sharpness"]
            out["preconditioned_history"] = [list(h) for h in self.precond_history]
        if self.warmup_end is not None:
            out["sharpness_warmup_end"] = self.warmup_end["value"]
            out["sharpness_warmup_end_threshold"] = self.warmup_end["threshold"]
            out["warmup_end_step"] = self.warmup_end["step"]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.history],
            "precond_history": [list(h) for h in self.precond_history],
            "warmup_end": self.warmup_end,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [list(h) for h in state.get("history", [])]
        self.precond_history = [list(h) for h in state.get("precond_history", [])]
        self.warmup_end = state.get("warmup_end")


class NtkProbe(Probe):
    name = "ntk"

    @classmethod
    def check(cls, section: Any, cfg: Any, plan: Any) -> None:
        _check_batch(cls.name, section, plan)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.lambda0: Optional[float] = None
        self.last: Optional[float] = None

    def _measure(self, ctx: TrainContext) -> EigResult:
        return measure_lambda0_info(ctx.model, ctx.cfg, ctx.data)  # on this probe's batch

    def _emit(self, ctx: TrainContext, lam: float, r: Optional[EigResult], source: str) -> None:
        lr = _current_lr(ctx)
        fields: dict[str, Any] = {
            "lambda_ntk": lam,
            "lambda0": self.lambda0,
            "normalisation": _normalisation(ctx.cfg),
            "batch": self.cfg.batch,
            "source": source,
            "lr": lr,
            "lr_times_lambda": lr * lam,
        }
        if self.lambda0:
            (lazy, uv_max), (_, relu_max) = phase_limits("linear"), phase_limits("relu")
            fields.update(
                lr_lazy_edge=lazy / self.lambda0, lr_uv_max=uv_max / self.lambda0, lr_relu_max=relu_max / self.lambda0
            )
        if r is not None:
            fields.update(hvps=r.hvps, converged=r.converged)
        ctx.emit("ntk", **fields)

    def on_start(self, ctx: TrainContext) -> None:
        if not self.cfg.at_init:
            return
        if ctx.lambda0 is not None:  # already measured by core.train for optim.lr_ntk (same batch)
            self.lambda0, r, source = float(ctx.lambda0), None, "lr_ntk"
        else:
            r = self._measure(ctx)
            self.lambda0, source = r.top, "init"
            ctx.lambda0, ctx.lambda0_vector = self.lambda0, r.vector
        self.last = self.lambda0
        self._emit(ctx, self.lambda0, r, source)

    def after_step(self, ctx: TrainContext) -> None:
        if self.cfg.every and ctx.step % self.cfg.every == 0:
            r = self._measure(ctx)
            self.last = r.top
            self._emit(ctx, r.top, r, "step")

    def on_end(self, ctx: TrainContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.lambda0 is not None:
            out["lambda0"] = self.lambda0
        if self.last is not None and self.cfg.every:
            out["lambda_ntk_final"] = self.last
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"lambda0": self.lambda0, "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lambda0 = state.get("lambda0")
        self.last = state.get("last")
