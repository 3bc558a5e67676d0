"""Every panel the faces can draw, in one list: adding a panel is one :class:`Panel` entry.

A panel's ``build`` takes a :class:`Scene` (the runs of one experiment, the view toggles, the
width in plot columns and the experiment's summary) and returns the figures it has for them:
:class:`~.figure.Figure`, :class:`~.figure.Heatmap` or :class:`~.figure.Bars`, an empty list
when it has nothing. The reports (heur.report) draw every figure of every panel that has data;
the TUI draws its tabs from the same builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from . import distill, panels
from .figure import Bars, Figure, Heatmap
from .panels import Shown, View

Drawable = Union[Figure, Heatmap, Bars]


@dataclass
class Scene:
    """What the panels are built from.

    ``runs``: the experiment's runs in their colour order; ``width``: plot columns (the TUI's
    characters, the reports' pixels) that series are decimated to, two points each;
    ``exp_dir``: the experiment directory (None for loose runs); ``summary``: core.summary's
    ``collect`` dict (grid, check, one row per run), when there is one."""

    runs: list[Shown]
    view: View = field(default_factory=View)
    width: int = 800
    exp_dir: Path | None = None
    summary: dict | None = None


@dataclass(frozen=True)
class Panel:
    name: str  # a file-name-safe key: "loss", "cca"
    title: str  # the section heading
    build: Callable[[Scene], list[Drawable]]


def _catapult(s: Scene) -> list[Drawable]:
    if not any(r.data.items["catapult"] for r in s.runs):
        return []
    fig = panels.loss_figure(s.runs, s.view, s.width, test=False)
    fig.title = "loss with catapult peaks ▲"
    fig.ylabel = "train loss"
    return [fig]


def _grid(s: Scene) -> list[Drawable]:
    h = panels.grid_heatmap(s.summary) if s.summary else None
    return [h] if h is not None else []


PANELS: list[Panel] = [
    Panel("loss", "Loss", lambda s: [panels.loss_figure(s.runs, s.view, s.width)]),
    Panel("accuracy", "Accuracy", lambda s: [panels.accuracy_figure(s.runs, s.view, s.width)]),
    Panel("lr", "Learning rate", lambda s: [panels.lr_figure(s.runs, s.view, s.width)]),
    Panel("sharpness", "Sharpness", lambda s: [panels.sharpness_figure(s.runs, s.view, s.width)]),
    Panel("catapult", "Catapults", _catapult),
    Panel("cca", "Layer similarity (CCA)", lambda s: [h for r in s.runs for h in panels.cca_heatmaps(r)]),
    Panel("grid", "Grid", _grid),
    Panel(
        "distill",
        "Distillation",
        lambda s: [b for r in s.runs for b in distill.distill_bars(r.name, r.data.items["compare"], s.exp_dir)],
    ),
]


def build(scene: Scene) -> list[tuple[Panel, list[Drawable]]]:
    """Every panel with the figures that have data for ``scene`` (panels with none left out)."""
    out = []
    for p in PANELS:
        figs = [f for f in p.build(scene) if f is not None and f.has_data()]
        if figs:
            out.append((p, figs))
    return out
