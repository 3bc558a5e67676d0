"""`heur tui`: browse presets and runs, launch, watch live (Textual; imported only when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import RunsDirOption


def register(app) -> None:
    @app.command("tui")
    def tui(
        runs_dir: Optional[Path] = RunsDirOption,
        presets_dir: Path = typer.Option(Path("presets"), "--presets-dir", help="presets to offer"),
    ) -> None:
        """Terminal UI: presets, experiments and live plots; launch and stop runs (press ? inside)."""
        from heur.core.runs import default_runs_dir
        from heur.tui.app import HeurApp

        HeurApp(runs_dir=runs_dir or default_runs_dir(), presets_dir=presets_dir).run()
