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

__all__ = ["prepare", "launch", "select", "prepare_again", "relaunch"]


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


def prepare_again(
    exp_dir: str | Path, overrides: Optional[list[str]] = None, only: Optional[list[str]] = None
) -> Experiment:
    """An earlier experiment's resolved preset (its ``experiment.toml``: the preset with the
    overrides it was launched with), with more ``overrides``, expanded and checked as
    :func:`prepare` does. ``only``: those runs and every run they start from."""

    from .config import expand, load_toml
    from .errors import ConfigError
    from .pipeline import dependencies
    from .select import with_dependencies

    path = Path(exp_dir) / "experiment.toml"
    raw = load_toml(
        path, "experiment record", missing=("not an experiment directory (no experiment.toml)", str(exp_dir))
    )
    raw.pop("heur", None)  # heur's own bookkeeping (source, created, runs), not preset keys
    try:
        exp = expand(raw, overrides or [], file=str(path))
    except ConfigError as e:
        raise e.with_file(str(path)) from None
    check_experiment(exp)
    if only:
        names = match_runs(exp.runs, only)
        names = with_dependencies(names, lambda n: dependencies(exp.runs[n]), list(exp.runs))
        exp = replace(exp, runs={n: exp.runs[n] for n in names})
    return exp


def relaunch(
    exp_dir: str | Path,
    overrides: Optional[list[str]] = None,
    runs_dir: Path | str | None = None,
    jobs: Optional[int] = None,
    only: Optional[list[str]] = None,
) -> Path:
    """Launch an earlier experiment's settings again as a new experiment (:func:`prepare_again`);
    the TUI's relaunch. The old experiment is left as it is."""
    exp = prepare_again(exp_dir, overrides, only)
    new_dir = create_experiment(exp, runs_dir or Path(exp_dir).parent)
    start_supervisor(new_dir, jobs)
    return new_dir
