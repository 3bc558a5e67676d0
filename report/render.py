"""The one place that talks to matplotlib: draws a figure of ``heur.figures`` (a
:class:`~heur.figures.figure.Figure`, :class:`~heur.figures.figure.Heatmap` or
:class:`~heur.figures.figure.Bars`) as a PNG, SVG or PDF.

Object-oriented matplotlib on the Agg canvas (no pyplot, no global state, no display): safe in a
thread and on a machine without a screen.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure as MplFigure

from heur.figures.figure import Bars, Figure, Heatmap, decade_ticks

FORMATS = ("png", "svg", "pdf")
SIZE = (8.0, 4.2)  # inches
DPI = 110
# the TUI's character markers -> matplotlib's
MARKERS = {"•": "o", "▲": "^", "x": "x", "dot": ".", "braille": None, None: None}


def _rgb(c) -> tuple[float, float, float] | None:
    return None if c is None else tuple(v / 255 for v in c)


def _new(size=SIZE) -> tuple[MplFigure, object]:
    fig = MplFigure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def draw(d: Figure | Heatmap | Bars) -> MplFigure:
    """A matplotlib figure for ``d``."""
    if isinstance(d, Heatmap):
        return _heatmap(d)
    if isinstance(d, Bars):
        return _bars(d)
    return _lines(d)


def to_bytes(d: Figure | Heatmap | Bars, fmt: str = "png") -> bytes:
    fig = draw(d)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Software": "heur"} if fmt == "png" else None)
    return buf.getvalue()


def _lines(f: Figure) -> MplFigure:
    fig, ax = _new()
    # the TUI's title spells the marks out in characters ("train ─  test •"); here the legend's
    # key says it, so the title keeps the panel's name and its state
    title = f.title_for(10_000) if not f.key else Figure(f.title.split(":", 1)[0], state=f.state).title_for(10_000)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(f.xlabel)
    ax.set_ylabel(f.ylabel or f.title.split(":", 1)[0])
    seen: set[str] = set()
    xmin, xmax, ys = math.inf, -math.inf, []
    # raw lines first (faint, behind), then lines, then marks on top
    order = sorted(f.series, key=lambda s: (not s.raw, s.kind == "scatter"))
    for s in order:
        x, y = np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if f.ylog:
            ok &= y > 0
        x, y = x[ok], y[ok]
        if not x.size:
            continue
        xmin, xmax = min(xmin, float(x.min())), max(xmax, float(x.max()))
        ys.append(y)
        label = s.label if s.label and not s.raw and s.label not in seen else None
        if label:
            seen.add(label)
        col = _rgb(s.color)
        if s.kind == "scatter":
            m = MARKERS.get(s.marker, "o") or "o"
            size = 40 if m == "^" else 14
            ax.scatter(x, y, s=size, marker=m, color=col, label=label, zorder=3, edgecolors="none")
        elif s.raw:
            ax.plot(x, y, color=col, alpha=0.25, lw=0.8, zorder=1)
        else:
            ls = ":" if s.marker == "dot" else "-"
            ax.plot(x, y, color=col, lw=1.3 if ls == "-" else 1.6, ls=ls, label=label, zorder=2)
    for h in f.hlines:
        if h.y is None or not math.isfinite(h.y) or (f.ylog and h.y <= 0):
            continue
        ax.axhline(h.y, color=_rgb(h.color), ls="--", lw=0.9, label=h.label, zorder=0)
    if f.ylog:
        ax.set_yscale("log")
        if ys:
            ally = np.concatenate(ys)
            ticks = decade_ticks(float(ally.min()), float(ally.max()), most=8)
            if len(ticks) < 2:  # less than a decade: plain numbers, not 10^x labels
                ax.yaxis.set_major_formatter("{x:g}")
    ax.margins(x=0.015)
    ax.grid(True, alpha=0.25, lw=0.5)
    grey = (0.35, 0.35, 0.35)
    for style, text in f.key:  # what the marks mean: grey proxies after the runs
        if style in ("dots", "triangles"):
            ax.scatter(
                [],
                [],
                s=40 if style == "triangles" else 14,
                marker="^" if style == "triangles" else "o",
                color=grey,
                label=text,
            )
        else:
            ax.plot([], [], color=grey, ls={"dotted": ":", "dashed": "--"}.get(style, "-"), label=text)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    if not f.has_data():
        ax.text(0.5, 0.5, f.empty, transform=ax.transAxes, ha="center", va="center", color="grey")
    return fig


def _ticks(labels: list[str], most: int = 24) -> tuple[list[int], list[str]]:
    """At most ``most`` evenly strided tick positions and their labels (the last always shown)."""
    n = len(labels)
    step = max(1, math.ceil(n / most))
    idx = list(range(0, n, step))
    if n and idx[-1] != n - 1:
        idx.append(n - 1)
    return idx, [labels[i] for i in idx]


def _heatmap(h: Heatmap) -> MplFigure:
    rows, cols = len(h.rows), len(h.cols)
    height = min(9.0, max(2.4, 1.2 + 0.38 * rows))
    fig, ax = _new((SIZE[0], height))
    ax.set_title(h.title, fontsize=10, loc="left")
    v = np.ma.masked_invalid(np.asarray(h.values, dtype=float))
    finite = v.compressed()
    if h.log and finite.size and (finite > 0).all():
        norm = LogNorm(vmin=h.vmin or float(finite.min()), vmax=h.vmax or float(finite.max()))
    else:
        lo = h.vmin if h.vmin is not None else (float(finite.min()) if finite.size else 0.0)
        hi = h.vmax if h.vmax is not None else (float(finite.max()) if finite.size else 1.0)
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(0.85, 0.85, 0.85))
    im = ax.imshow(v, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    xi, xl = _ticks(h.cols)
    ax.set_xticks(xi, xl, fontsize=8, rotation=0 if max((len(s) for s in xl), default=0) < 6 else 45)
    yi, yl = _ticks(h.rows, most=30)
    ax.set_yticks(yi if any(yl) else [], yl if any(yl) else [], fontsize=8)
    ax.set_xlabel(h.xlabel)
    ax.set_ylabel(h.ylabel)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label(h.cbar)
    if isinstance(norm, LogNorm):
        cb.ax.yaxis.set_major_formatter("{x:.3g}")
        cb.ax.yaxis.set_minor_formatter("{x:.3g}")
    if h.annotate and rows * cols <= 100:
        for i in range(rows):
            for j in range(cols):
                x = v[i, j]
                if x is not np.ma.masked:
                    bright = norm(x) > 0.6
                    ax.text(
                        j, i, f"{x:.3g}", ha="center", va="center", fontsize=8, color="black" if bright else "white"
                    )
    for i, j, text in h.marks:
        ax.text(j, i, text, ha="center", va="center", fontsize=9, fontweight="bold", color=(0.8, 0.0, 0.5))
    if h.note:
        ax.set_title(h.note, fontsize=8, loc="right", color="grey")
    return fig


def _bars(b: Bars) -> MplFigure:
    fig, ax = _new()
    ax.set_title(b.title, fontsize=10, loc="left")
    n = len(b.categories)
    k = max(1, len(b.groups))
    width = 0.8 / k
    x = np.arange(n)
    for g, (label, vals, col) in enumerate(b.groups):
        vals = np.asarray(vals, dtype=float)[:n]
        if b.signed:
            colours = [(0.2, 0.6, 0.3) if v >= 0 else (0.85, 0.2, 0.3) for v in vals]
            ax.bar(x[: len(vals)] + (g - (k - 1) / 2) * width, vals, width, color=colours, label=label)
        else:
            ax.bar(x[: len(vals)] + (g - (k - 1) / 2) * width, vals, width, color=_rgb(col), label=label)
    if b.signed:
        ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, b.categories, fontsize=8)
    ax.set_ylabel(b.ylabel)
    ax.grid(True, axis="y", alpha=0.25, lw=0.5)
    if b.legend() and not b.signed:
        ax.legend(fontsize=8, loc="best")
    if b.note:
        ax.set_title(b.note, fontsize=9, loc="right")
    return fig
