"""The plane through three points of weight space (Garipov et al. 2018), and points projected on it.

With w0, w1, w2 flat weight vectors (typically two modes and the bend of the curve between them,
w1 the bend): ``u = (w2 − w0) / dx`` with ``dx = ||w2 − w0||``, and ``v`` the part of ``w1 − w0``
orthogonal to u, divided by its norm ``dy``. A point of the plane is
``w0 + a·dx·u + b·dy·v``: in these grid units w0 sits at (0, 0), w2 at (1, 0) and w1 at
(⟨w1 − w0, u⟩ / dx, 1). Garipov's grid is 21 × 21 over [−0.2, 1.2]² (a margin of 0.2).

Three points that do not span a plane raise :class:`PlaneError`: ``arg`` "w2" when w2 equals
w0, "w1" when w1 lies on the line through them (or equals one of them).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .errors import MeasurementError

__all__ = ["PlaneError", "Plane", "flatten", "unflatten", "grid_axis"]


class PlaneError(MeasurementError):
    """Three points that span no plane (``arg`` "w2" or "w1"), a grid of under 2 points ("grid")."""


def flatten(tensors: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The named tensors as one vector, in ``names`` order."""
    return torch.cat([tensors[n].detach().reshape(-1) for n in names])


def unflatten(flat: torch.Tensor, names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A vector as name -> tensor of the given shapes (views)."""
    sizes = [math.prod(s) for s in shapes]
    return {n: v.view(s) for n, v, s in zip(names, torch.split(flat, sizes), shapes)}


def grid_axis(points: int, margin: float) -> list[float]:
    """``points`` evenly spaced values from ``-margin`` to ``1 + margin``."""
    if points < 2:
        raise PlaneError(f"expected at least 2 grid points a side, got {points}", arg="grid")
    lo, hi = -float(margin), 1.0 + float(margin)
    return [lo + (hi - lo) * i / (points - 1) for i in range(points)]


class Plane:
    """The plane through ``w0, w1, w2`` (flat vectors) in Garipov's basis (see the module doc)."""

    def __init__(self, w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, rel_tol: float = 1e-6):
        w0, w1, w2 = (w.detach().double() for w in (w0, w1, w2))
        d2, d1 = w2 - w0, w1 - w0
        self.dx = float(torch.linalg.vector_norm(d2))
        scale = max(self.dx, float(torch.linalg.vector_norm(d1)), 1e-300)
        if self.dx <= rel_tol * scale or self.dx == 0:
            raise PlaneError("the first and last points are the same: they span no plane", arg="w2")
        self.u = d2 / self.dx
        v = d1 - torch.dot(d1, self.u) * self.u
        self.dy = float(torch.linalg.vector_norm(v))
        if self.dy <= rel_tol * scale:
            raise PlaneError("the three points lie on one line (or two are equal): they span no plane", arg="w1")
        self.v = v / self.dy
        self.origin = w0

    def point(self, a: float, b: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``w0 + a·dx·u + b·dy·v`` (grid units)."""
        return (self.origin + (a * self.dx) * self.u + (b * self.dy) * self.v).to(dtype)

    def coordinates(self, w: torch.Tensor) -> tuple[float, float, float]:
        """(a, b, distance): the projection of ``w`` onto the plane in grid units, and the norm of
        what the projection leaves out."""
        d = w.detach().double().to(self.origin.device) - self.origin
        x, y = float(torch.dot(d, self.u)), float(torch.dot(d, self.v))
        rest = d - x * self.u - y * self.v
        return x / self.dx, y / self.dy, float(torch.linalg.vector_norm(rest))
