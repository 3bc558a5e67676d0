"""CCA heatmap as Rich text: one row per layer, one column per measurement (epoch).

Coloured background cells on a viridis-like ramp (dark blue = 0, yellow = 1), which reads on
dark and light terminals alike; the latest value of each layer is printed at the row's end.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text

_RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def ramp(v: float) -> str:
    """Background colour for a value in [0, 1] (NaN: grey)."""
    if v is None or not np.isfinite(v):
        return "rgb(110,110,110)"
    v = min(1.0, max(0.0, float(v)))
    pos = v * (len(_RAMP) - 1)
    i = min(int(pos), len(_RAMP) - 2)
    f = pos - i
    a, b = _RAMP[i], _RAMP[i + 1]
    r, g, bl = (round(a[k] + (b[k] - a[k]) * f) for k in range(3))
    return f"rgb({r},{g},{bl})"


def render(layers: list[str], epochs: list[float], mat: np.ndarray, width: int, title: str = "") -> Text:
    """Fit the latest columns into ``width`` cells; each column is 2 characters wide."""
    name_w = min(max((len(n) for n in layers), default=4), 18)
    value_w = 6
    cols_fit = max(1, (width - name_w - value_w - 3) // 2)
    ncols = mat.shape[1]
    first = max(0, ncols - cols_fit)
    out = Text()
    if title:
        out.append(title + "\n", style="bold")
    for i, name in enumerate(layers):
        label = name if len(name) <= name_w else "…" + name[-(name_w - 1) :]
        out.append(f"{label:>{name_w}} ")
        for j in range(first, ncols):
            out.append("  ", style=f"on {ramp(mat[i, j])}")
        last = mat[i, -1] if ncols else np.nan
        out.append(f" {last:5.3f}\n" if np.isfinite(last) else "   —\n")
    # epoch axis: first and last shown
    if ncols:
        lo, hi = epochs[first], epochs[-1]
        axis = f"epoch {lo:g}" + (f" … {hi:g}" if ncols - first > 1 else "")
        out.append(" " * (name_w + 1) + axis + "\n", style="dim")
    out.append(" " * (name_w + 1) + "0 ")
    for k in range(5):
        out.append("  ", style=f"on {ramp(k / 4)}")
    out.append(" 1", style="")
    return out


def render_grid(h, width: int) -> Text:
    """A :class:`heur.figures.figure.Heatmap` (a plane's grid) as Rich text: two grid rows per
    line (upper half block: the top row's colour in front, the lower row's behind), two
    characters a column (one when ``width`` is short), colour by ``h.log``'s scale between the
    finite minimum and maximum, ``h.marks`` printed in their cells, the row labels every line
    and the column range beneath."""
    vals = np.asarray(h.values, dtype=float)
    rows, cols = vals.shape
    finite = vals[np.isfinite(vals)]
    out = Text(no_wrap=True, overflow="crop")
    out.append(h.title + (f" — {h.note}" if h.note else "") + "\n", style="bold")
    if not finite.size:
        return out.append(h.empty, style="dim")
    log = h.log and bool((finite > 0).all())
    f = np.log10 if log else (lambda v: v)
    lo, hi = float(f(finite.min())), float(f(finite.max()))

    def norm(v: float) -> float:
        return np.nan if not np.isfinite(v) else (float(f(v)) - lo) / (hi - lo) if hi > lo else 0.5

    label_w = max((len(r) for r in h.rows), default=0)
    cw = 2 if label_w + 1 + 2 * cols <= width else 1
    marks = {(i, j): m for i, j, m in h.marks}
    for i in range(0, rows, 2):
        out.append(f"{h.rows[i]:>{label_w}} ", style="dim")
        for j in range(cols):
            top = ramp(norm(vals[i, j]))
            below = ramp(norm(vals[i + 1, j])) if i + 1 < rows else "default"
            m = marks.get((i, j)) or marks.get((i + 1, j))
            if m:
                bg = top if (i, j) in marks else below
                out.append((m[0] + " " * (cw - 1))[:cw], style=f"bold white on {bg}")
            else:
                out.append("▀" * cw, style=f"{top} on {below}")
        out.append("\n")
    out.append(" " * (label_w + 1) + f"{h.xlabel}: {h.cols[0]} … {h.cols[-1]}\n", style="dim")
    scale = (lambda v: f"{10**v:.3g}") if log else (lambda v: f"{v:.3g}")
    out.append(" " * (label_w + 1) + f"{h.cbar} {scale(lo)} ")
    for k in range(5):
        out.append("  ", style=f"on {ramp(k / 4)}")
    out.append(f" {scale(hi)}" + (" (log)" if log else ""))
    return out
