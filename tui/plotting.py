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
        _draw(plt, fig, self.size.width)
        return super().render()


def _draw(plt, fig: Figure, width: int = 10_000) -> None:
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
    if fig.ylog:
        plt.yscale("log")
        ys = np.concatenate([y for _, _, y in clean])
        ticks = decade_ticks(float(ys.min()), float(ys.max()))
        if ticks:  # short labels: plotext's own log labels carry a dozen decimals
            plt.yticks(ticks, [f"{t:g}" for t in ticks])
