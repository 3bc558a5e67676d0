"""The one place that talks to the plotting library (plotext 5 through textual-plotext).

Everything else describes a plot as plain data — a :class:`~heur.figures.figure.Figure` of
:class:`~heur.figures.figure.Series` (``heur.figures``, shared with the reports) — and the TUI
hands it to a :class:`PlotView`. Swapping plotext for something else
means rewriting :meth:`PlotView.render` and nothing outside this module.
"""

from __future__ import annotations

import math
import time

import numpy as np
from rich.text import Text
from textual_plotext import PlotextPlot

from heur.figures.figure import Figure, color, decade_ticks


def rich_color(i: int) -> str:
    """The same colour as a Rich style string, for legends outside the plot."""
    r, g, b = color(i)
    return f"rgb({r},{g},{b})"


class PlotView(PlotextPlot):
    """Draws a :class:`Figure`. Assign :attr:`figure` and the widget redraws."""

    DEFAULT_CSS = """
    PlotView { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._figure: Figure | None = None
        self.renders = 0  # counted for tests and the benchmark
        self.cost = 0.0  # seconds the last render took
        self.drawn_at = 0.0  # monotonic time of the last figure change

    @property
    def figure(self) -> Figure | None:
        return self._figure

    @figure.setter
    def figure(self, fig: Figure | None) -> None:
        self._figure = fig
        self.drawn_at = time.monotonic()
        self.refresh()

    def render(self):
        t0 = time.perf_counter()
        try:
            return self._render_figure()
        finally:
            self.cost = time.perf_counter() - t0

    def _render_figure(self):
        fig = self._figure
        self.renders += 1
        if fig is None or not fig.has_data():
            msg = fig.empty if fig is not None else "nothing selected"
            title = f"{fig.title_for(self.size.width)}\n\n" if fig is not None and fig.title else ""
            return Text(title + msg, justify="center", style="dim")
        plt = self.plt
        plt.clear_figure()
        # the theme first: plotext resolves some colours (text backgrounds) when drawn
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        _draw(plt, fig, self.size.width, self.size.height)
        return super().render()


def nice_ticks(lo: float, hi: float, most: int) -> list[float]:
    """At most ``most`` round ticks (1, 2, 2.5 or 5 × 10^k apart) inside [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo or most < 2:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / (most - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) <= most:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t = first + len(ticks) * step
    return ticks


def tick_labels(ticks: list[float]) -> list[str]:
    """Short labels for evenly spaced ticks: as many decimals as the spacing needs, thousands as
    ``k``/``M`` (``37.5k``), tiny values in powers of ten (``1.5e-4``)."""
    if not ticks:
        return []
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(ticks[0]) or 1.0
    top = max(abs(t) for t in ticks)
    if top >= 1e4:
        div, unit = (1e6, "M") if top >= 1e6 else (1e3, "k")
        dec = max(0, -math.floor(math.log10(step / div) + 1e-9))
        return [_trim(f"{t / div:.{dec}f}") + unit if t else "0" for t in ticks]
    if top < 1e-2 and top > 0:
        return [f"{t:.2g}" for t in ticks]
    dec = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{t:.{dec}f}" for t in ticks]


def _trim(text: str) -> str:
    """``2.50`` -> ``2.5``, ``3.0`` -> ``3``; ``50`` stays."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fit_ticks(lo: float, hi: float, room: int, gap: int, most: int = 8) -> tuple[list[float], list[str]]:
    """The most ticks (up to ``most``) whose labels, each with ``gap`` spaces, fit ``room``
    columns (x) or rows (y, labels of height 1: ``gap`` rows apart)."""
    for k in range(most, 1, -1):
        ticks = nice_ticks(lo, hi, k)
        labels = tick_labels(ticks)
        need = sum(len(lb) + gap for lb in labels) if gap > 1 else len(ticks) * 2
        if need <= room:
            return ticks, labels
    ticks = nice_ticks(lo, hi, 2)
    return ticks, tick_labels(ticks)


def _draw(plt, fig: Figure, width: int = 10_000, height: int = 40) -> None:
    """Translate a Figure into plotext calls (``width``: the widget's columns, for the title)."""
    if fig.title:
        plt.title(fig.title_for(width))
    if fig.xlabel:
        plt.xlabel(fig.xlabel)
    if fig.ylabel:
        plt.ylabel(fig.ylabel)
    xmin, xmax = math.inf, -math.inf
    clean = []
    for s in fig.series:
        x, y = np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if fig.ylog:
            ok &= y > 0
        x, y = x[ok], y[ok]
        if x.size:
            xmin, xmax = min(xmin, float(x.min())), max(xmax, float(x.max()))
            clean.append((s, x, y))
    if not clean:
        return
    if xmax == xmin:
        xmax = xmin + 1
    # thresholds first, so the data is drawn over them
    for h in fig.hlines:
        if h.y is None or not math.isfinite(h.y) or (fig.ylog and h.y <= 0):
            continue
        plt.plot([xmin, xmax], [h.y, h.y], marker="-", color=h.color)
        if h.label:
            plt.text(h.label, x=xmax, y=h.y, alignment="right", color=h.color)
    for s, x, y in clean:
        kw = {}  # no in-plot legend: it hides the top-left corner of the data
        if s.color is not None:
            kw["color"] = s.color
        if s.kind == "scatter":
            plt.scatter(x.tolist(), y.tolist(), marker=s.marker or "•", **kw)
        else:
            plt.plot(x.tolist(), y.tolist(), marker=s.marker or "braille", **kw)
    # our own tick labels: plotext's collide at 80 columns ("0.00015.0") and carry long decimals
    xt, xl = _fit_ticks(xmin, xmax, max(10, width - 12), gap=3)
    if xt:
        plt.xticks(xt, xl)
    ys = np.concatenate([y for _, _, y in clean])
    extra = [h.y for h in fig.hlines if h.y is not None and math.isfinite(h.y) and (h.y > 0 or not fig.ylog)]
    ylo, yhi = (
        float(min(ys.min(), *extra)) if extra else float(ys.min()),
        float(max(ys.max(), *extra)) if extra else float(ys.max()),
    )
    if fig.ylog:
        plt.yscale("log")
        ticks = decade_ticks(ylo, yhi)
        if ticks:  # short labels: plotext's own log labels carry a dozen decimals
            plt.yticks(ticks, [f"{t:g}" for t in ticks])
    elif yhi > ylo:
        yt, yl = _fit_ticks(ylo, yhi, max(2, height - 6), gap=1, most=6)
        if yt:
            plt.yticks(yt, yl)
