"""The mode-connectivity panels as data (Garipov et al. 2018; Gotmare et al. 2018).

- :func:`curve_figures`: a curve run's evaluation along t (its ``curve_point`` events, core.curve),
  train loss and test error against t, the trained curve beside the straight line between the
  same ends, the two ends marked. Built from the events as they arrive, so the panel fills in
  while the run evaluates.
- :func:`plane_heatmaps`: a plane run's grid (its ``plane_point`` events, core.plane), train loss
  (log colour) and test error, rows b from top to bottom, columns a, with the plane's three
  points marked S, B, E and the projected checkpoints o (its ``plane_projection`` events, which
  come before the grid, so the marks are there while the cells fill in).

Pure functions of the runs' :class:`~.rundata.RunData`; no UI or plotting library.
"""

from __future__ import annotations

import math

import numpy as np

from .figure import Figure, Heatmap, Series
from .panels import Shown

MARKS = {"start": "S", "bend": "B", "end": "E"}  # the plane's three points; projected checkpoints: o


def has_curve(run: Shown) -> bool:
    return len(run.data["curve_point_curve"]) + len(run.data["curve_point_line"]) > 0


def has_plane(run: Shown) -> bool:
    return len(run.data["plane_point"]) > 0


def _ordered(run: Shown, path: str, col: str) -> tuple[np.ndarray, np.ndarray]:
    """(t, values) of one path's points in t order, each t once (the latest event for it)."""
    tab = run.data[f"curve_point_{path}"]
    if not len(tab):
        return np.empty(0), np.empty(0)
    t = tab["t"]
    v = 1.0 - tab["test_accuracy"] if col == "test_error" else tab[col]
    _, last = np.unique(t[::-1], return_index=True)  # the latest event for each t
    idx = (len(t) - 1 - last)[np.argsort(t[len(t) - 1 - last])]
    return t[idx], v[idx]


def curve_figures(runs: list[Shown]) -> list[Figure]:
    """Train loss and test error against t of every curve run in ``runs`` (empty without one):
    the curve as a line in the run's colour, the straight line between its ends dotted, the two
    ends as dots. Test error = 1 − test accuracy (left out for regression)."""
    curves = [r for r in runs if has_curve(r)]
    if not curves:
        return []
    single = len(curves) == 1
    out = []
    for col, title, ylabel in (
        ("train_loss", "train loss: curve ─  line ┈  ends •", "train loss"),
        ("test_error", "test error: curve ─  line ┈  ends •", "test error"),
    ):
        fig = Figure(title=title, xlabel="t", ylabel=ylabel, empty="no curve points yet (they come after training)")
        for r in curves:
            t, y = _ordered(r, "curve", col)
            lt, ly = _ordered(r, "line", col)
            if col == "test_error" and not (np.isfinite(y).any() or np.isfinite(ly).any()):
                continue
            fig.series.append(Series(t, y, label="curve" if single else r.name, color=r.color))
            fig.series.append(Series(lt, ly, label="line" if single else None, color=r.color, marker="dot"))
            ends = [(tt, yy) for tt, yy in zip(t, y) if tt in (0.0, 1.0)]
            if ends:
                ex, ey = zip(*ends)
                fig.series.append(
                    Series(
                        np.array(ex),
                        np.array(ey),
                        label="ends" if single else None,
                        color=r.color,
                        kind="scatter",
                        marker="•",
                    )
                )
        if not single:
            fig.key = [("line", "curve"), ("dotted", "line"), ("dots", "ends")]
        if fig.series:
            out.append(fig)
    return out


def plane_grid(run: Shown, metric: str = "train_loss") -> tuple[list[float], np.ndarray] | None:
    """(axis, values[b index, a index]) of a plane run's grid so far (NaN where not measured yet;
    ``metric`` train_loss, test_loss or test_error), or None before its first point. The axis is
    read off the first point, which lies at (−margin, −margin)."""
    tab = run.data["plane_point"]
    if not len(tab):
        return None
    n = int(tab["points"][0])
    g = int(round(math.sqrt(n)))
    if g < 2 or g * g != n:
        return None
    first = int(np.argmin(tab["index"]))
    lo = float(tab["a"][first]) if int(tab["index"][first]) == 0 else None
    if lo is None:
        return None
    axis = [lo + (1.0 - 2.0 * lo) * k / (g - 1) for k in range(g)]
    vals = np.full((g, g), np.nan)
    col = 1.0 - tab["test_accuracy"] if metric == "test_error" else tab[metric]
    for idx, v in zip(tab["index"].astype(int), col):
        if 0 <= idx < n:
            vals[idx // g, idx % g] = v
    return axis, vals


def plane_heatmaps(run: Shown) -> list[Heatmap]:
    """A plane run's train loss (log colour) and test error on its grid, b up, the three points
    and the projected checkpoints marked at their nearest cells (those inside the grid)."""
    out = []
    for metric, label in (("train_loss", "train loss"), ("test_error", "test error")):
        got = plane_grid(run, metric)
        if got is None:
            continue
        axis, vals = got
        if not np.isfinite(vals).any():
            continue
        g = len(axis)
        cells: dict[tuple[int, int], str] = {}  # (row, col) -> mark: a point's letter beats an o
        projected = 0
        for e in run.data.items["plane_projection"]:
            a, b = e.get("a"), e.get("b")
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            mark = MARKS.get(e.get("point"), "o")
            projected += mark == "o"
            if axis[0] <= a <= axis[-1] and axis[0] <= b <= axis[-1]:
                i = min(range(g), key=lambda k: abs(axis[k] - a))
                j = min(range(g), key=lambda k: abs(axis[k] - b))
                if mark != "o" or (g - 1 - j, i) not in cells:
                    cells[g - 1 - j, i] = mark
        finite = vals[np.isfinite(vals)]
        done = int(np.isfinite(vals).sum())
        out.append(
            Heatmap(
                title=f"{run.name}: {label} on the plane (S start, B bend, E end"
                + (f", o {projected} projected" if projected else "")
                + ")",
                rows=[f"{axis[g - 1 - j]:.2g}" for j in range(g)],
                cols=[f"{a:.2g}" for a in axis],
                values=vals[::-1].copy(),
                xlabel="a (start → end)",
                ylabel="b (→ bend)",
                cbar=label,
                log=metric == "train_loss" and bool(finite.size) and bool((finite > 0).all()),
                marks=[(r, c, m) for (r, c), m in cells.items()],
                note="" if done == g * g else f"{done} of {g * g} points",
            )
        )
    return out
