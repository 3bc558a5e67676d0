"""The one launch path: a preset read, expanded, checked and started. ``heur run``, its
``--dry-run`` and the TUI's launch dialog all come here, so they accept and refuse the same presets.

It sits above core.runs (run directories, the supervisor's process) and core.preflight (the
checks, which reach the tasks' modules): neither imports it, so imports run one way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from .config import Experiment, load_experiment
from .preflight import check_experiment
from .runs import create_experiment, start_supervisor
from .select import check_closed, match_runs

__all__ = ["prepare", "launch", "select"]


def prepare(
    preset_path: str | Path, overrides: Optional[list[str]] = None, only: Optional[list[str]] = None
) -> Experiment:
    """A preset read, expanded and checked (schema, references, preflight): what ``launch``
    starts, ``heur run --dry-run`` lists and the TUI validates as you type. ConfigError on bad
    input, before anything is created. ``only``: names or patterns of the runs to keep
    (:mod:`core.select`: every run a kept run starts from must be kept too)."""
    exp = load_experiment(preset_path, overrides or [])
    check_experiment(exp)
    if only:
        return select(exp, only)
    return exp


def select(exp: Experiment, only: list[str]) -> Experiment:
    """``exp`` with the runs ``only`` names or matches; ConfigError (``--only``) when a pattern
    matches nothing or a kept run starts from a run left out."""
    from .pipeline import dependencies

    names = match_runs(exp.runs, only)
    check_closed(names, lambda n: dependencies(exp.runs[n]))
    return replace(exp, runs={n: exp.runs[n] for n in names})


def launch(
    preset_path: str | Path,
    overrides: Optional[list[str]] = None,
    runs_dir: Path | str | None = None,
    jobs: Optional[int] = None,
    only: Optional[list[str]] = None,
) -> Path:
    """Validate a preset (:func:`prepare`), create its experiment directory and start it
    detached. The one launch path: ``heur run`` and the TUI both come here."""
    exp = prepare(preset_path, overrides, only)
    exp_dir = create_experiment(exp, runs_dir)
    start_supervisor(exp_dir, jobs)
    return exp_dir
