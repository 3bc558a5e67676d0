"""The system panel: a :class:`heur.core.system.Sample` as bars of text (CPU, memory, each GPU)."""

from __future__ import annotations

from typing import Any, Optional

from rich.text import Text


def _bar(frac: Optional[float], width: int) -> Text:
    t = Text()
    if frac is None:
        t.append("·" * width, style="dim")
        return t
    frac = min(1.0, max(0.0, frac))
    n = round(frac * width)
    style = "rgb(60,160,75)" if frac < 0.7 else "rgb(245,130,48)" if frac < 0.9 else "bold rgb(230,25,75)"
    t.append("█" * n, style=style)
    t.append("░" * (width - n), style="dim")
    return t


def gib(b: Optional[int]) -> str:
    return "?" if b is None else f"{b / 2**30:.1f}"


def render(s: Any, width: int) -> Text:
    """CPU, memory and one line per GPU, each a bar and its numbers, in ``width`` columns."""
    bar_w = max(10, min(40, width - 40))
    out = Text()

    def line(label: str, frac: Optional[float], text: str) -> None:
        out.append(f"{label:<6}", style="bold")
        out.append_text(_bar(frac, bar_w))
        out.append(f" {text}\n")

    cpu = None if s.cpu is None else s.cpu / 100.0
    load = f", load {s.load[0]:.2f}" if s.load else ""
    line("CPU", cpu, ("…" if s.cpu is None else f"{s.cpu:3.0f}%") + f" of {s.cores} cores{load}")
    mem = s.mem_used / s.mem_total if s.mem_used is not None and s.mem_total else None
    line("mem", mem, f"{gib(s.mem_used)} / {gib(s.mem_total)} GiB")
    for g in s.gpus:
        out.append(f"GPU {g.index} ", style="bold")
        out.append(g.name + (f"  {g.temperature}°C" if g.temperature is not None else "") + "\n")
        line("  util", None if g.util is None else g.util / 100.0, "n/a" if g.util is None else f"{g.util:3.0f}%")
        line("  mem", g.mem_used / g.mem_total if g.mem_total else None, f"{gib(g.mem_used)} / {gib(g.mem_total)} GiB")
    if s.gpu_note:
        out.append(s.gpu_note + "\n", style="dim")
    return out
