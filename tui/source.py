"""The TUI's only door to the engine: listing, status, launching and stopping runs.

:class:`RunSource` forwards to :mod:`heur.core.runs` and :mod:`heur.core.config`; tests can
hand the app another object with the same methods. Nothing here trains anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RunSource:
    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)

    # -- reading (called from the worker thread)
    def experiments(self) -> list[Any]:
        from heur.core import runs

        if not self.runs_dir.is_dir():
            return []
        return runs.list_experiments(self.runs_dir)

    def status(self, run_dir: Path) -> Any:
        from heur.core import runs

        return runs.read_status(run_dir)

    # -- acting (called from the UI thread; quick)
    def validate(self, preset: Path, overrides: list[str]) -> Any:
        """The checks ``launch`` makes (schema, then preflight); raises ConfigError.

        May import torch on first use: call it off the UI thread."""
        from heur.core import launch

        return launch.prepare(preset, overrides)

    def launch(self, preset: Path, overrides: list[str]) -> Path:
        from heur.core import launch

        return launch.launch(preset, overrides, self.runs_dir)

    def stop_run(self, run_dir: Path) -> bool:
        """Whether something was signalled or marked stopped."""
        from heur.core import runs

        return runs.stop_run(run_dir)

    def stop_experiment(self, exp_dir: Path) -> int:
        """How many runs were signalled or marked stopped."""
        from heur.core import runs

        return runs.stop_experiment(exp_dir)

    def resume(self, target: Path, rerun_failed: bool = False) -> tuple[list[str], list[str]]:
        """Queue the unfinished runs of a run or experiment again and start its supervisor, as
        ``heur run --resume`` does: (runs queued, "run (state)" left as they ended). Raises
        ConfigError while a run of it is live. May wait for an ending supervisor: off the UI thread."""
        from heur.core import runs

        plan = runs.resume_plan(target, rerun_failed)
        if plan.queued:
            runs.start_supervisor(plan.exp_dir, None, resume=True)
        return [p.name for p in plan.queued], [f"{p.name} ({st})" for p, st in plan.left]

    def validate_again(self, exp_dir: Path, overrides: list[str], only: list[str] | None = None) -> Any:
        from heur.core import launch

        return launch.prepare_again(exp_dir, overrides, only)

    def relaunch(self, exp_dir: Path, overrides: list[str], only: list[str] | None = None) -> Path:
        from heur.core import launch

        return launch.relaunch(exp_dir, overrides, self.runs_dir, None, only)
