"""The catapult: spike detection on the training loss, the solvable uv model, and its probe.

Lewkowycz et al. 2020: with lambda0 the top NTK eigenvalue at init (MSE loss), c = eta·lambda0
< 2 is the lazy phase, 2 < c < c_max the catapult phase (the loss grows for a few steps while
the curvature falls below 2/eta, then falls), c > c_max diverges; c_max = 4 for the uv model
and about 12 for ReLU nets.

``CatapultDetector`` is pure Python: fed ``(step, loss)`` it reports a catapult whenever the
loss rises to ``factor`` times its level before the rise (the lowest loss since the last event)
and later falls back below that level. A non-finite loss is divergence, never a catapult.

uv model (one sample x = 1, y = 0, f = vᵀu/√n, L = f²/2, lambda = (|u|² + |v|²)/n): exact GD is
``f' = f(1 - eta·lambda + eta² f²/n)``, ``lambda' = lambda + eta f² (eta·lambda - 4)/n``
(:func:`uv_recurrence`).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .probes import Probe, TrainContext

__all__ = [
    "CatapultDetector", "CatapultProbe", "uv_recurrence", "simulate_uv", "predicted_phase",
    "phase_limits",
]


class CatapultDetector:
    """Finds catapult spikes in a sequence of logged training losses.

    ``update(step, loss)`` returns a dict ``{start_step, peak_step, end_step, base_loss,
    peak_loss, peak_ratio}`` at the step where a spike ends, else None. ``start_step`` is the
    step of the level before the rise (``base_loss``), ``peak_ratio = peak_loss / base_loss``,
    ``end_step`` the first step back below ``base_loss``. After a non-finite loss the detector
    is ``diverged`` and reports nothing more; a rise that never falls back is only ``pending``.
    """

    def __init__(self, factor: float = 2.0):
        if not factor > 1:
            raise ValueError("factor must be > 1")
        self.factor = float(factor)
        self.base: Optional[float] = None
        self.base_step: Optional[int] = None
        self.in_spike = False
        self.peak: Optional[float] = None
        self.peak_step: Optional[int] = None
        self.diverged = False
        self.events: list[dict[str, Any]] = []

    def update(self, step: int, loss: Optional[float]) -> Optional[dict[str, Any]]:
        if self.diverged:
            return None
        if loss is None or not math.isfinite(loss):
            self.diverged = True
            self.in_spike = False
            return None
        loss = float(loss)
        if not self.in_spike:
            if self.base is None or loss < self.base:
                self.base, self.base_step = loss, step
            elif self.base > 0 and loss >= self.factor * self.base:
                self.in_spike = True
                self.peak, self.peak_step = loss, step
            return None
        if loss > self.peak:
            self.peak, self.peak_step = loss, step
        if loss < self.base:
            ev = {
                "start_step": self.base_step, "peak_step": self.peak_step, "end_step": step,
                "base_loss": self.base, "peak_loss": self.peak, "peak_ratio": self.peak / self.base,
            }
            self.events.append(ev)
            self.in_spike = False
            self.base, self.base_step = loss, step
            self.peak = self.peak_step = None
            return ev
        return None

    @property
    def pending(self) -> Optional[dict[str, Any]]:
        """The spike in progress (risen, not yet back below its base), or None."""
        if not self.in_spike:
            return None
        return {"start_step": self.base_step, "peak_step": self.peak_step, "base_loss": self.base,
                "peak_loss": self.peak, "peak_ratio": self.peak / self.base}

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in
                ("factor", "base", "base_step", "in_spike", "peak", "peak_step", "diverged", "events")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if k == "events" else v)


# --------------------------------------------------------------------------- theory


def phase_limits(model_kind: str) -> tuple[float, float]:
    """(lazy edge, divergence edge) in units of 1/lambda0: (2, 4) for uv, (2, 12) otherwise."""
    return (2.0, 4.0) if model_kind == "uv" else (2.0, 12.0)


def predicted_phase(lr_ntk: float, model_kind: str) -> str:
    """"lazy" (eta·lambda0 < 2), "catapult" (2 .. 4 for uv, 2 .. 12 for ReLU nets) or
    "diverged" above."""
    lo, hi = phase_limits(model_kind)
    if lr_ntk < lo:
        return "lazy"
    return "catapult" if lr_ntk <= hi else "diverged"


def uv_recurrence(f0: float, lam0: float, eta: float, n: int, steps: int) -> tuple[list[float], list[float]]:
    """Exact full-batch GD of the uv model on one sample x = 1, y = 0 (half-sum MSE): the lists
    of f and lambda at steps 0..steps (stops early, with inf appended, once |f| > 1e150)."""
    fs, lams = [float(f0)], [float(lam0)]
    f, lam = float(f0), float(lam0)
    for _ in range(steps):
        f, lam = f * (1 - eta * lam + eta * eta * f * f / n), lam + eta * f * f * (eta * lam - 4) / n
        if not (math.isfinite(f) and abs(f) < 1e150):
            fs.append(math.inf)
            lams.append(math.inf)
            break
        fs.append(f)
        lams.append(lam)
    return fs, lams


def simulate_uv(c: float, n: int = 1000, steps: int = 200, seed: int = 0) -> dict[str, Any]:
    """Draw u, v ~ N(0, 1)^n (seeded), set eta = c/lambda0 and run :func:`uv_recurrence`.

    Returns f, lambda and loss (= f²/2) per step, eta, and a summary: ``peak_loss_over_n``,
    ``peak_step``, ``final_eta_lambda``, ``diverged``.
    """
    import random

    rng = random.Random(seed)
    u = [rng.gauss(0.0, 1.0) for _ in range(n)]
    v = [rng.gauss(0.0, 1.0) for _ in range(n)]
    f0 = sum(a * b for a, b in zip(u, v)) / math.sqrt(n)
    lam0 = (sum(a * a for a in u) + sum(b * b for b in v)) / n
    eta = c / lam0
    fs, lams = uv_recurrence(f0, lam0, eta, n, steps)
    losses = [0.5 * f * f for f in fs]
    diverged = not math.isfinite(fs[-1])
    peak_step = max(range(len(losses)), key=losses.__getitem__)
    return {
        "f": fs, "lambda": lams, "loss": losses, "eta": eta, "f0": f0, "lambda0": lam0,
        "diverged": diverged, "peak_step": peak_step, "peak_loss_over_n": losses[peak_step] / n,
        "final_eta_lambda": eta * lams[-1],
    }


# --------------------------------------------------------------------------- probe


def _sharpness_at(history: list, lo: Optional[int], hi: Optional[int]) -> Optional[float]:
    """The last sharpness value measured at a step in [lo, hi] (None bounds are open)."""
    best = None
    for step, lam in history:
        if (lo is None or step >= lo) and (hi is None or step <= hi):
            best = lam
    return best


class CatapultProbe(Probe):
    """``[probes.catapult]`` (enabled, factor): feeds each logged train loss to a
    :class:`CatapultDetector` and emits a ``catapult`` event per spike, with
    ``sharpness_before`` / ``sharpness_after`` when the sharpness probe keeps
    ``ctx.extra["sharpness_history"]`` (list of (step, lambda_max)). ``on_end`` returns
    ``phase`` ("lazy" | "catapult" | "diverged"), ``catapults`` and, when ``optim.lr_ntk`` is
    set, ``predicted_phase``. The loss must be logged often enough to see the spike
    (``train.log_every`` of a few steps; a uv catapult lasts about ten).
    """

    name = "catapult"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.detector = CatapultDetector(getattr(cfg, "factor", 2.0))

    def on_log(self, ctx: TrainContext, loss: float) -> None:
        ev = self.detector.update(ctx.step, loss)
        if ev is None:
            return
        fields = dict(ev)
        hist = ctx.extra.get("sharpness_history") or []
        if hist:
            fields["sharpness_before"] = _sharpness_at(hist, None, ev["start_step"])
            fields["sharpness_after"] = _sharpness_at(hist, ev["peak_step"], ev["end_step"])
        fields["lr"] = ctx.lr
        ctx.emit("catapult", **fields)

    def on_end(self, ctx: TrainContext) -> dict[str, Any]:
        if ctx.extra.get("state") == "diverged" or self.detector.diverged:
            phase = "diverged"
        elif self.detector.events:
            phase = "catapult"
        else:
            phase = "lazy"
        out: dict[str, Any] = {"phase": phase, "catapults": len(self.detector.events)}
        if self.detector.pending is not None:
            out["catapult_pending"] = True
        lr_ntk = getattr(getattr(ctx.cfg, "optim", None), "lr_ntk", None)
        if lr_ntk is not None:
            out["predicted_phase"] = predicted_phase(lr_ntk, ctx.cfg.model.name)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "detector" in state:
            self.detector.load_state_dict(state["detector"])
