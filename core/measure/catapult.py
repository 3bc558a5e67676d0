"""The catapult: spike detection on the training loss and the solvable uv model.

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

__all__ = ["CatapultDetector", "uv_recurrence", "simulate_uv", "predicted_phase", "phase_limits"]


class CatapultDetector:
    """Finds catapult spikes in a sequence of logged training losses.

    ``update(step, loss)`` returns a dict ``{start_step, peak_step, end_step, base_loss,
    peak_loss, peak_ratio}`` at the step where a spike ends, else None. ``start_step`` is the
    step of the level before the rise (``base_loss``), ``peak_ratio = peak_loss / base_loss``,
    ``end_step`` the first step back below ``base_loss``. After a non-finite loss the detector
    is ``diverged`` and reports nothing more; a rise that never falls back is only ``pending``.
    Rises to a loss below ``floor`` times the first loss are round-off at convergence, not
    spikes (a loss of 1e-16 doubling to 4e-16), and are ignored.
    """

    def __init__(self, factor: float = 2.0, floor: float = 1e-6):
        if not factor > 1:
            raise ValueError("factor must be > 1")
        self.factor = float(factor)
        self.floor = float(floor)
        self.first: Optional[float] = None
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
        if self.first is None:
            self.first = loss
        if not self.in_spike:
            if self.base is None or loss < self.base:
                self.base, self.base_step = loss, step
            elif self.base > 0 and loss >= self.factor * self.base and loss > self.floor * self.first:
                self.in_spike = True
                self.peak, self.peak_step = loss, step
            return None
        if loss > self.peak:
            self.peak, self.peak_step = loss, step
        if loss < self.base:
            ev = {
                "start_step": self.base_step,
                "peak_step": self.peak_step,
                "end_step": step,
                "base_loss": self.base,
                "peak_loss": self.peak,
                "peak_ratio": self.peak / self.base,
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
        return {
            "start_step": self.base_step,
            "peak_step": self.peak_step,
            "base_loss": self.base,
            "peak_loss": self.peak,
            "peak_ratio": self.peak / self.base,
        }

    def state_dict(self) -> dict[str, Any]:
        keys = ("factor", "floor", "first", "base", "base_step", "in_spike", "peak", "peak_step", "diverged", "events")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if k == "events" else v)
        if "first" not in state:  # a checkpoint from before the floor existed
            self.first = self.base


# --------------------------------------------------------------------------- theory


def phase_limits(model_kind: str) -> tuple[float, float]:
    """(lazy edge, divergence edge) in units of 1/lambda0: (2, 4) for uv, (2, 12) otherwise."""
    return (2.0, 4.0) if model_kind == "uv" else (2.0, 12.0)


def predicted_phase(lr_ntk: float, model_kind: str) -> str:
    """ "lazy" (eta·lambda0 < 2), "catapult" (2 .. 4 for uv, 2 .. 12 for ReLU nets) or
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
        "f": fs,
        "lambda": lams,
        "loss": losses,
        "eta": eta,
        "f0": f0,
        "lambda0": lam0,
        "diverged": diverged,
        "peak_step": peak_step,
        "peak_loss_over_n": losses[peak_step] / n,
        "final_eta_lambda": eta * lams[-1],
    }
