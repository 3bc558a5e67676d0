"""A plane run's grid (``plane.json``, core.plane) as a character heatmap for the terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

SHADES = " .:-=+*#%@"  # low loss -> high loss
MARKS = {"start": "S", "bend": "B", "end": "E"}


def render_plane(doc: dict[str, Any], metric: str = "train_loss") -> list[str]:
    """Rows of characters, the top row the largest b: each cell shaded by ``metric`` (log scale
    for losses), the three points marked S, B, E at their nearest cells."""
    grid = doc[metric]
    vals = [v for row in grid for v in row if v is not None]
    if not vals:
        return []
    logs = metric.endswith("loss") and min(vals) > 0
    f = (lambda v: math.log(v)) if logs else (lambda v: v)
    lo, hi = f(min(vals)), f(max(vals))
    cells = [
        [
            "?" if v is None else SHADES[min(len(SHADES) - 1, int((f(v) - lo) / (hi - lo + 1e-12) * len(SHADES)))]
            for v in row
        ]
        for row in grid
    ]
    a, b = doc["a"], doc["b"]
    for p in doc.get("projected") or []:  # projected checkpoints inside the grid: o
        if a[0] <= p["a"] <= a[-1] and b[0] <= p["b"] <= b[-1]:
            i = min(range(len(a)), key=lambda k: abs(a[k] - p["a"]))
            j = min(range(len(b)), key=lambda k: abs(b[k] - p["b"]))
            cells[j][i] = "o"
    for name, mark in MARKS.items():
        pa, pb = doc["points"][name][:2]
        i = min(range(len(a)), key=lambda k: abs(a[k] - pa))
        j = min(range(len(b)), key=lambda k: abs(b[k] - pb))
        cells[j][i] = mark
    return ["".join(c * 2 for c in row) for row in reversed(cells)]


def print_planes(summary: dict, console: Any) -> None:
    """The heatmap of every plane run of an experiment summary that wrote ``plane.json``."""
    base: Optional[str] = summary.get("path")
    if not base:
        return
    for row in summary.get("runs", []):
        path = Path(base) / row["run"] / "plane.json"
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            lines = render_plane(doc)
        except (OSError, ValueError, KeyError, IndexError):
            continue
        console.print(
            f"[bold]{row['run']}[/]: train loss on the plane "
            "(S start, B bend, E end, o projected; darker = higher, log scale)"
        )
        for line in lines:
            console.print(f"  |{line}|", highlight=False, markup=False)
