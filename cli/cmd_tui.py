"""`heur tui`: browse presets and runs, launch, watch live (Textual; imported only when run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def _default_runs_dir() -> Path:
    return Path(os.environ.get("HEUR_RUNS_DIR") or "runs")


def register(app) -> None:
    @app.command("tui")
    def tui(
        runs_dir: Optional[Path] = typer.Option(
            None, "--runs-dir", help="where experiments live (default: $HEUR_RUNS_DIR, else ./runs)"),
        presets_dir: Path = typer.Option(Path("presets"), "--presets-dir", help="presets to offer"),
    ) -> None:
        """Terminal UI: presets, experiments and live plots; launch and stop runs (press ? inside)."""
        from heur.tui.app import HeurApp

        HeurApp(runs_dir=runs_dir or _default_runs_dir(), presets_dir=presets_dir).run()
