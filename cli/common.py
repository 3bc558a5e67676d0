"""Small helpers shared by the commands (option types, number formatting)."""

from __future__ import annotations

from typing import Any

import typer

RunsDirOption = typer.Option(
    None,
    "--runs-dir",
    envvar="HEUR_RUNS_DIR",
    help="Where experiments live (default ./runs).",
    show_default=False,
)


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


STATE_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "completed": "green",
    "diverged": "magenta",
    "failed": "red",
    "stopped": "yellow",
    "skipped": "dim yellow",
    "lost": "red",
}


def wrapped(text: str, indent: str = "", hang: str = "    ", width: int | None = None) -> str:
    """``text`` folded at word boundaries to the terminal's width (80 when it is not a terminal),
    continuation lines indented by ``hang``: every line heur prints fits the terminal."""
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((80, 24)).columns
    return textwrap.fill(
        text, width=max(40, width), initial_indent=indent, subsequent_indent=indent + hang, break_on_hyphens=False
    )
