"""The catapult: spike detection on the training loss and the solvable uv model.

Lewkowycz et al. 2020: with lambda0 the top NTK eigenvalue at init (MSE loss), c = eta·lambda0
< 2 is the lazy phase, 2 < c < c_max the catapult phase (the loss grows for a few steps while
the curvature falls below 2/eta, then falls), c > c_max diverges; c_max = 4 for the uv model
(and linear networks) and about 12 for ReLU nets: predicted from the network's nonlinearity
(:func:`divergence_edge`), with no prediction where there is no theory.

``CatapultDetector`` is pure Python: fed ``(step, loss)`` it reports a catapult whenever the
loss rises to ``factor`` times its level before the rise (the lowest loss since the last event)
and later falls back below that level. A non-finite loss is divergence, never a catapult.

uv model (one sample x = 1, y = 0, f = vᵀu/√n, L = f²/2, lambda = (|u|² + |v|²)/n): exact GD is
``f' = f(1 - eta·lambda + eta² f²/n)``, ``lambda' = lambda + eta f² (eta·lambda - 4)/n``
(:func:`uv_recurrence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

__all__ = [
    "CatapultDetector",
    "EdgeTheory",
    "divergence_edge",
    "uv_recurrence",
    "simulate_uv",
    "predicted_phase",
    "phase_limits",
]


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


LAZY_EDGE = 2.0  # eta·lambda0 = 2: the linearised model's stability edge, whatever the network
EDGE_BAND = 1.5  # an edge known only approximately: either side within this factor agrees
UV_BAND = 1.05  # the uv model's exact 4 at finite width (n = 1000 diverges from 4.05)


@dataclass(frozen=True)
class EdgeTheory:
    """The predicted divergence edge in units of 1/lambda0, the band around it where either
    phase agrees with the prediction, and where the number comes from."""

    edge: float
    lo: float
    hi: float
    basis: str


_EDGES = {
    "uv": EdgeTheory(4.0, 4.0 / UV_BAND, 4.0 * UV_BAND, "theory: 4 for the uv model"),
    "linear": EdgeTheory(
        4.0, 4.0 / EDGE_BAND, 4.0 * EDGE_BAND, "theory: 4 for linear networks (exact for the two-layer uv model)"
    ),
    "relu": EdgeTheory(12.0, 12.0 / EDGE_BAND, 12.0 * EDGE_BAND, "paper: about 12 for ReLU nets (empirical)"),
}


def divergence_edge(kind: Optional[str]) -> Optional[EdgeTheory]:
    """The divergence edge predicted for a network ``kind``, from its nonlinearity, not its name:
    ``"uv"`` (the solvable two-layer linear model: 4, within 5%), ``"linear"`` (any network with
    no nonlinearity: 4, the uv model's theory, within a factor 1.5 for deeper or finite nets),
    ``"relu"`` (about 12: Lewkowycz et al.'s empirical value for ReLU nets, within a factor 1.5).
    Anything else (tanh, gelu, an unknown network): None, there is no theory for it."""
    return _EDGES.get(kind) if kind else None


def phase_limits(kind: Optional[str]) -> tuple[float, Optional[float]]:
    """(lazy edge, divergence edge) in units of 1/lambda0: (2, 4) for "uv" and "linear", (2, 12)
    for "relu", (2, None) for a network with no theory of the divergence edge."""
    th = divergence_edge(kind)
    return LAZY_EDGE, None if th is None else th.edge


def predicted_phase(lr_ntk: float, kind: Optional[str]) -> Optional[str]:
    """The phase predicted at eta·lambda0 = ``lr_ntk``: "lazy" below 2; "catapult" from 2 to the
    divergence edge's band, "catapult or diverged" within the band, "diverged" above it; None
    above 2 for a network with no theory of the edge (see :func:`divergence_edge`)."""
    if lr_ntk < LAZY_EDGE:
        return "lazy"
    th = divergence_edge(kind)
    if th is None:
        return None
    if lr_ntk < th.lo:
        return "catapult"
    return "diverged" if lr_ntk > th.hi else "catapult or diverged"


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
