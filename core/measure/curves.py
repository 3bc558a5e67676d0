"""Mode-connectivity curves between two sets of weights (Garipov et al. 2018), for any ``nn.Module``.

A curve is ``K = bends + 2`` points in weight space: the two ends w_0 = start, w_{K-1} = end and
``bends`` trainable points between them. Its point at ``t`` in [0, 1] is

    w(t) = sum_k c_k(t) · w_k

with the Bezier weights ``c_k(t) = C(K-1, k) t^k (1-t)^(K-1-k)`` or the polychain (piecewise
linear through the points) weights ``c_k(t) = max(0, 1 - |t (K-1) - k|)``. ``bends = 0`` is the
straight line. The bends start on the straight line, ``w_k = start + (k / (K-1)) (end - start)``,
so an untrained curve of either kind *is* the linear interpolation (for Bezier by degree
elevation, for polychain by construction).

The model is never copied into curve layers: :meth:`Curve.forward` evaluates ``model`` at w(t)
through :func:`torch.func.functional_call`, so a curve exists for every architecture. The curve
covers the model's parameters; buffers (batch-norm statistics) stay the model's own, and are
recomputed at every evaluated t (:func:`path_rows`, through
:func:`.connectivity.recompute_bn_stats`).

Storage: every point is one flat vector of all parameters (``ends`` is (2, P), ``bends`` is
(bends, P)), so w(t) costs K scaled adds of one vector, whatever the number of layers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from .connectivity import eval_row, recompute_bn_stats
from .errors import MeasurementError

__all__ = [
    "CurveError",
    "KINDS",
    "bezier_coefficients",
    "polychain_coefficients",
    "coefficients",
    "Curve",
    "path_rows",
    "curve_length",
]

KINDS = ("bezier", "polychain")


class CurveError(MeasurementError):
    """Bad curve inputs: ``arg`` "kind", "bends", "t", "end" (weights that do not pair with the
    start's or the model's), "state" (a saved curve of another shape)."""


def bezier_coefficients(t: float, n_points: int) -> list[float]:
    """``C(n-1, k) t^k (1-t)^(n-1-k)`` for k = 0 .. n-1 (the Bernstein basis of degree n-1)."""
    _check_t(t, n_points)
    d = n_points - 1
    return [math.comb(d, k) * t**k * (1.0 - t) ** (d - k) for k in range(n_points)]


def polychain_coefficients(t: float, n_points: int) -> list[float]:
    """``max(0, 1 - |t (n-1) - k|)``: the hat functions of the piecewise-linear chain."""
    _check_t(t, n_points)
    d = n_points - 1
    return [max(0.0, 1.0 - abs(t * d - k)) for k in range(n_points)]


def coefficients(kind: str, t: float, n_points: int) -> list[float]:
    """The weights of the curve's points at ``t`` (``kind`` bezier or polychain)."""
    if kind == "bezier":
        return bezier_coefficients(t, n_points)
    if kind == "polychain":
        return polychain_coefficients(t, n_points)
    raise CurveError(f"expected a curve kind in {', '.join(KINDS)}, got {kind!r}", arg="kind")


def _check_t(t: float, n_points: int) -> None:
    if n_points < 2:
        raise CurveError(f"a curve needs at least its two ends, got {n_points} point(s)", arg="bends")
    if not (0.0 <= float(t) <= 1.0):
        raise CurveError(f"expected t in [0, 1], got {t}", arg="t")


class Curve:
    """A Bezier or polychain curve between ``start`` and ``end`` (name -> tensor dicts of the same
    names and shapes: the parameters of one architecture). ``fix_ends``: only the bends are
    trainable (``parameters()``), else the ends too."""

    def __init__(
        self,
        start: dict[str, torch.Tensor],
        end: dict[str, torch.Tensor],
        kind: str = "bezier",
        bends: int = 1,
        fix_ends: bool = True,
    ):
        if kind not in KINDS:
            raise CurveError(f"expected a curve kind in {', '.join(KINDS)}, got {kind!r}", arg="kind")
        if int(bends) != bends or bends < 0:
            raise CurveError(f"expected a number of bends >= 0, got {bends}", arg="bends")
        problem = _pair_problem(start, end)
        if problem:
            raise CurveError(problem, arg="end")
        self.kind = kind
        self.n_bends = int(bends)
        self.fix_ends = bool(fix_ends)
        self.names = list(start)
        self.shapes = [tuple(start[n].shape) for n in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        a = torch.cat([start[n].detach().reshape(-1) for n in self.names])
        b = torch.cat([end[n].detach().reshape(-1).to(a) for n in self.names])
        k = self.n_points - 1
        frac = torch.arange(1, k, dtype=a.dtype, device=a.device)[:, None] / k
        self.ends = torch.stack([a, b]).requires_grad_(not self.fix_ends)
        self.bends = torch.lerp(a[None], b[None], frac).requires_grad_(True)  # on the straight line
        self._tied: dict[int, bool] = {}  # id(model) -> whether it shares a parameter between modules

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        start: dict[str, torch.Tensor],
        end: dict[str, torch.Tensor],
        kind: str = "bezier",
        bends: int = 1,
        fix_ends: bool = True,
    ) -> "Curve":
        """A curve over ``model``'s parameters, its ends read from two state dicts of that model
        (buffers in them are ignored), on the model's device. CurveError (arg "start" or "end")
        when a state dict lacks a parameter or has another shape."""
        params = dict(model.named_parameters())
        picked = []
        for arg, sd in (("start", start), ("end", end)):
            problem = _pair_problem({n: p for n, p in params.items()}, sd, subset=True)
            if problem:
                raise CurveError(f"the {arg} weights do not fit the model: {problem}", arg=arg)
            picked.append({n: sd[n].to(p.device, p.dtype) for n, p in params.items()})
        return cls(picked[0], picked[1], kind, bends, fix_ends)

    # ------------------------------------------------------------------ the curve
    @property
    def n_points(self) -> int:
        return self.n_bends + 2

    def coefficients(self, t: float) -> list[float]:
        return coefficients(self.kind, float(t), self.n_points)

    def flat(self, t: float) -> torch.Tensor:
        """w(t) as one vector (differentiable in the trainable points). ``t`` a Python float: the
        coefficients are host numbers, so no device sync and no transfer."""
        c = self.coefficients(t)
        w = torch.add(self.ends[0] * c[0], self.ends[1], alpha=c[-1])  # one fused kernel per term
        for j in range(self.n_bends):
            w = torch.add(w, self.bends[j], alpha=c[j + 1])
        return w

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector as name -> tensor of the parameters' shapes (views)."""
        return {n: v.view(s) for n, v, s in zip(self.names, torch.split(flat, self.sizes), self.shapes)}

    def weights(self, t: float) -> dict[str, torch.Tensor]:
        """w(t) as name -> tensor, for :func:`torch.func.functional_call`."""
        return self.split(self.flat(t))

    def point(self, k: int) -> dict[str, torch.Tensor]:
        """The k-th point (0 = start, n_points - 1 = end), detached."""
        if k == 0:
            v = self.ends[0]
        elif k == self.n_points - 1:
            v = self.ends[1]
        else:
            v = self.bends[k - 1]
        return {n: x.detach().clone() for n, x in self.split(v).items()}

    def forward(self, model: nn.Module, x: torch.Tensor, t: float, flat: Optional[torch.Tensor] = None) -> Any:
        """``model(x)`` at w(t) (or at the given flat weights), the model's buffers as they are."""
        w = self.split(self.flat(t) if flat is None else flat)
        tied = self._tied.get(id(model))
        if tied is None:  # tie_weights=True costs a lookup per call: only models that share a tensor need it
            names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
            tied = self._tied[id(model)] = len(names) != len(dict(model.named_parameters()))
        return torch.func.functional_call(model, w, (x,), tie_weights=tied)

    @torch.no_grad()
    def load_into(self, model: nn.Module, t: float) -> None:
        """Copy w(t) into the model's parameters (for evaluation with the ordinary forward)."""
        params = dict(model.named_parameters())
        for n, v in self.weights(t).items():
            params[n].copy_(v)

    def parameters(self) -> list[torch.Tensor]:
        """The trainable tensors: the bends, and the ends unless ``fix_ends``."""
        out = [self.bends] if self.n_bends else []
        return out + ([] if self.fix_ends else [self.ends])

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors (``torch.load(weights_only=True)`` reads them back)."""
        return {
            "kind": self.kind,
            "bends": self.n_bends,
            "fix_ends": self.fix_ends,
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "ends": self.ends.detach().clone(),
            "points": self.bends.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the points in place (an optimizer holds these tensors)."""
        same = (
            state.get("kind") == self.kind
            and state.get("bends") == self.n_bends
            and list(state.get("names", [])) == self.names
            and [tuple(s) for s in state.get("shapes", [])] == self.shapes
        )
        if not same:
            raise CurveError("the saved curve has another kind, number of bends or parameters", arg="state")
        with torch.no_grad():
            self.ends.copy_(state["ends"])
            self.bends.copy_(state["points"])


def _pair_problem(a: dict[str, Any], b: dict[str, Any], subset: bool = False) -> str:
    """'' when ``b`` has every tensor of ``a`` with its shape (and, unless ``subset``, no other)."""
    missing = [k for k in a if k not in b]
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}"
    if not subset:
        extra = [k for k in b if k not in a]
        if extra:
            return f"{len(extra)} tensor(s) the other lacks, e.g. {extra[0]!r}"
    for k, v in a.items():
        if tuple(b[k].shape) != tuple(v.shape):
            return f"{k!r} is {list(b[k].shape)} there, {list(v.shape)} here"
    return ""


def path_rows(
    curve: Curve,
    model: nn.Module,
    data: Any,
    ts: Iterable[float],
    loss_fn: Callable,
    batch_size: int = 512,
    recompute_bn: bool = True,
    on_row: Optional[Callable[[int, dict], None]] = None,
) -> list[dict]:
    """Train/test loss and accuracy of ``model`` at w(t) for each t (``data`` has ``x_train,
    y_train, x_test, y_test``). The curve's points are copied into the model's parameters; BN
    statistics are recomputed from ``x_train`` at every t unless ``recompute_bn=False``.
    ``on_row(i, row)`` is called as each row is done (to stream them)."""
    rows = []
    for i, t in enumerate(ts):
        curve.load_into(model, float(t))
        if recompute_bn:
            recompute_bn_stats(model, data.x_train, batch_size)
        row = {"t": float(t), **eval_row(model, data, loss_fn, batch_size)}
        rows.append(row)
        if on_row is not None:
            on_row(i, row)
    return rows


@torch.no_grad()
def curve_length(curve: Curve, ts: Sequence[float]) -> float:
    """``sum_i ||w(t_{i+1}) - w(t_i)||`` over the sorted ``ts``: the length of the polygon through
    the evaluated points (the straight line's length is ``||end - start||`` for any ts with 0, 1)."""
    ts = sorted(float(t) for t in ts)
    total = torch.zeros((), dtype=torch.float64, device=curve.ends.device)
    prev = curve.flat(ts[0])
    for t in ts[1:]:
        cur = curve.flat(t)
        total += torch.linalg.vector_norm((cur - prev).double())
        prev = cur
    return float(total)
