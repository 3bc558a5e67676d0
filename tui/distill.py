"""The distillation panel in text: a compare run's per-layer closeness to the teacher as bars
(the data: heur.figures.distill).

A ``compare`` run (core.compare_task) writes one ``compare`` event per checkpoint it compares
with its reference (the teacher): ``values`` holds, per layer of that model, its similarity to
the teacher. The panel draws one bar per layer for each such model and, when the run compares
one distilled student (a run with ``[distill]``) and one independent student, the difference
distilled − independent per layer as signed bars around a zero axis (Gotmare et al.'s pane (c)),
with the deeper-half minus shallower-half gain the ``distill`` verdict judges. Pure text: it
fits 80 columns and grows with the terminal.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from rich.text import Text

from heur.figures.distill import deeper_gain, difference, is_distilled, latest_pairs
from heur.figures.distill import num as _num

__all__ = ["is_distilled", "latest_pairs", "render"]

POS, NEG = "green", "red"


def _bar(v: float, cells: int) -> str:
    """A bar of ``v`` in [0, 1] over ``cells`` characters (eighths for the last one)."""
    if not math.isfinite(v):
        return ""
    eighths = round(max(0.0, min(1.0, v)) * cells * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("" if part == 0 else " ▏▎▍▌▋▊▉"[part])


def render(events: list[dict[str, Any]], distilled: list[Optional[bool]], width: int, title: str = "") -> Text:
    """The panel for the latest pairs of ``events`` (``distilled[i]``: is pair i's model a
    distilled student) in ``width`` columns."""
    pairs = latest_pairs(events)
    out = Text()
    if title:
        out.append(title + "\n", style="bold")
    if not pairs:
        out.append("no compare events yet", style="dim")
        return out
    layers = [str(n) for n in (pairs[0].get("layers_b") or [])]
    name_w = min(max((len(n) for n in layers), default=4), 14)
    value_w = 8
    cells = max(10, width - name_w - value_w - 3)
    method = pairs[0].get("method", "similarity")
    for i, p in enumerate(pairs):
        kind = {True: "distilled", False: "independent"}.get(distilled[i] if i < len(distilled) else None, "")
        agree = _num(p.get("agreement"))
        head = f"{p.get('a')} vs {p.get('b')}" + (f" ({kind})" if kind else "") + f": {method} per layer"
        head += f", top-1 agreement {agree:.3f}" if math.isfinite(agree) else ""
        out.append(head + "\n")
        for name, v in zip(p.get("layers_b") or [], p.get("values") or []):
            v = _num(v)
            out.append(f"{str(name)[-name_w:]:>{name_w}} ")
            out.append(f"{_bar(v, cells):<{cells}}", style="cyan")
            out.append(f" {v:6.3f}\n" if math.isfinite(v) else "      —\n")
    flags = distilled[: len(pairs)]
    if flags.count(True) == 1 and flags.count(False) == 1:
        d, i = pairs[flags.index(True)], pairs[flags.index(False)]
        if list(d.get("layers_b") or []) == list(i.get("layers_b") or []):
            out.append_text(_difference(layers, d.get("values") or [], i.get("values") or [], name_w, cells))
    return out


def _difference(layers: list[str], dist: list, indep: list, name_w: int, cells: int) -> Text:
    diff = difference(dist, indep)
    finite = [abs(x) for x in diff if math.isfinite(x)]
    scale = max(finite, default=0.0) or 1.0
    half = max(4, (cells - 1) // 2)
    out = Text("distilled − independent (bars scaled to the largest |difference|)\n", style="bold")
    for name, x in zip(layers, diff):
        out.append(f"{name[-name_w:]:>{name_w}} ")
        n = round(abs(x) / scale * half) if math.isfinite(x) else 0
        left = "█" * n if x < 0 else ""
        right = "█" * n if x > 0 else ""
        out.append(f"{left:>{half}}", style=NEG)
        out.append("│")
        out.append(f"{right:<{half}}", style=POS)
        out.append(f" {x:+6.3f}\n" if math.isfinite(x) else "      —\n")
    h = len(layers) // 2
    gain = deeper_gain(diff)
    if gain is not None:
        out.append(f"deeper-half gain {gain:+.3f} (deeper {h} layers minus shallower {h}; the paper: > 0)\n")
    return out
