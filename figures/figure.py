"""Figures as plain data: what a panel shows, decided once, drawn by two renderers.

The TUI draws these with plotext (``heur.tui.plotting``), the reports with matplotlib
(``heur.report.render``). Nothing here imports a plotting or UI library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# mid-luminance colours, distinguishable on dark and light backgrounds (RGB; Textual maps them
# to the nearest of 256 colours on xterm-256color)
PALETTE: list[tuple[int, int, int]] = [
    (0, 130, 200),  # blue
    (230, 25, 75),  # red
    (60, 160, 75),  # green
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (0, 128, 128),  # teal
    (220, 50, 200),  # magenta
    (150, 100, 40),  # brown
]
GREY = (128, 128, 128)


def color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


KEY_STYLES = ("line", "dotted", "dashed", "dots", "triangles")


@dataclass
class Series:
    """One curve (or set of marks) on a figure.

    ``x``, ``y``: (n,) arrays. ``raw``: a series drawn faint behind the others (the unsmoothed
    line under a smoothed one); it never gets a legend entry.
    """

    x: np.ndarray
    y: np.ndarray
    label: str | None = None
    color: tuple[int, int, int] | None = None
    kind: str = "line"  # "line" | "scatter"
    marker: str | None = None  # e.g. "braille", "dot", "x", "•", "▲"
    raw: bool = False


@dataclass
class HLine:
    y: float
    label: str | None = None
    color: tuple[int, int, int] = GREY


@dataclass
class Figure:
    """A plot as plain data; ``empty`` is the message shown when there is nothing to draw."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    series: list[Series] = field(default_factory=list)
    hlines: list[HLine] = field(default_factory=list)
    ylog: bool = False
    empty: str = "no data yet"
    state: list[str] = field(default_factory=list)  # "log", "smooth 0.6", "cut > 1e3: run": shown in the title
    # what the marks mean when the series' own labels do not say it (several runs: the labels
    # name the runs): (style, text), style one of KEY_STYLES; the TUI says it in the title
    key: list[tuple[str, str]] = field(default_factory=list)

    def title_for(self, width: int) -> str:
        """The title with its state in ``width`` columns: whole if it fits; else the panel's name
        (before the colon) with the state; the state is shortened last, never dropped."""
        state = f" ({'; '.join(self.state)})" if self.state else ""
        full = self.title + state
        if len(full) <= width or not self.title:
            return full
        short = self.title.split(":", 1)[0] + state
        return short if len(short) <= width else short[: max(1, width - 1)] + "…"

    def has_data(self) -> bool:
        return any(len(s.x) for s in self.series)

    def points(self) -> int:
        return sum(len(s.x) for s in self.series)

    def legend(self) -> list[str]:
        """The legend entries, in order: each labelled series once (raw series never), the
        labelled thresholds, then the key."""
        labels = [s.label for s in self.series if s.label and not s.raw and len(s.x)]
        labels += [h.label for h in self.hlines if h.label and h.y is not None and math.isfinite(h.y)]
        return list(dict.fromkeys(labels)) + [text for _, text in self.key]


@dataclass
class Heatmap:
    """A matrix of values as coloured cells: CCA (layer × epoch), a grid's final loss, a plane.

    ``values``: (len(rows), len(cols)) floats, NaN for a missing cell; ``rows`` label the matrix
    top to bottom, ``cols`` left to right. ``marks``: (row, col, text) drawn in a cell (a
    diverged grid point, a checkpoint on a plane).
    """

    title: str
    rows: list[str]
    cols: list[str]
    values: np.ndarray
    xlabel: str = ""
    ylabel: str = ""
    vmin: float | None = None
    vmax: float | None = None
    cbar: str = ""
    log: bool = False  # colour by log10 of the value (losses spanning decades)
    annotate: bool = False  # print each cell's value in it (small grids)
    marks: list[tuple[int, int, str]] = field(default_factory=list)
    note: str = ""
    empty: str = "no data yet"

    def has_data(self) -> bool:
        v = np.asarray(self.values, dtype=float)
        return v.size > 0 and bool(np.isfinite(v).any())


@dataclass
class Bars:
    """Groups of bars over shared categories (per-layer similarity of several models).

    ``groups``: (label, (len(categories),) values, colour) each. ``signed``: bars grow both ways
    from zero (a difference).
    """

    title: str
    categories: list[str]
    groups: list[tuple[str, np.ndarray, tuple[int, int, int]]] = field(default_factory=list)
    ylabel: str = ""
    signed: bool = False
    note: str = ""
    empty: str = "no data yet"

    def has_data(self) -> bool:
        return any(np.isfinite(np.asarray(v, dtype=float)).any() for _, v, _ in self.groups)

    def legend(self) -> list[str]:
        return [g[0] for g in self.groups if g[0]]


def decade_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """Powers of ten covering [lo, hi] (lo > 0), at most ``most`` of them, evenly strided."""
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        return []
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    step = max(1, math.ceil((e1 - e0 + 1) / most))
    return [10.0**e for e in range(e0, e1 + 1, step)]
