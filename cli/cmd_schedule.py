"""`heur schedule PRESET`: draw every run's learning rate against the optimizer step.

No data is loaded and nothing trains: step counts and base lr come from each run's plan
(core.plan, from the dataset sizes). ``--json``
prints ``{"runs": {name: {"steps_per_epoch", "total_steps", "lr": [...]}}}`` and nothing else.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from heur.cli.errors import exits_on_config_error


def run_schedules(preset: Path, overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Load a preset and build each run's schedule: ({run name: Schedule}, notes for stderr)."""
    from heur.core.config import load_experiment
    from heur.core.errors import ConfigError
    from heur.core.plan import plan_run
    from heur.core.schedules import validate_schedule

    exp = load_experiment(preset, overrides)
    out: dict[str, Any] = {}
    notes: list[str] = []
    for name, cfg in exp.runs.items():
        label = f"run '{name}': " if len(exp.runs) > 1 else ""
        try:
            out[name] = validate_schedule(cfg, plan_run(cfg))  # step counts and base lr from the run's plan
        except ConfigError as e:
            raise ConfigError(label + e.message, file=str(preset), key=e.key) from None
        if cfg.optim.lr_ntk is not None:
            notes.append(
                f"{label}optim.lr_ntk is set: the lr is known only after measuring the NTK, "
                "so it is shown in units of lr_ntk/lambda0 (base lr 1.0)"
            )
    return out, notes


def render(schedules: dict[str, Any], width: int, height: int) -> str:
    import numpy as np
    import plotext as plt

    from heur.tui.downsample import minmax

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.title("learning rate per optimizer step")
    plt.xlabel("step")
    cols = max(10, width - 12)
    warm_ends: set[int] = set()
    for name, sch in schedules.items():
        ys = sch.lrs()
        xs, yd = minmax(np.arange(len(ys)), np.asarray(ys), cols)
        plt.plot(xs.tolist(), yd.tolist(), label=name, marker="braille")
        if sch.restart_steps:
            plt.scatter(sch.restart_steps, [ys[r] for r in sch.restart_steps], marker="x", label=f"{name} restarts")
        if sch.warmup_steps:
            warm_ends.add(sch.warmup_steps)
    for w in sorted(warm_ends):
        plt.vline(w, "gray")
    return plt.build()


def summary(name: str, sch: Any) -> str:
    parts = [f"{name}: {sch.name}, {sch.total_steps} steps ({sch.steps_per_epoch}/epoch),", f"base lr {sch.base_lr:g}"]
    if sch.warmup_steps:
        parts.append(f", warmup {sch.warmup_steps} steps ({sch.warmup_shape}, | on the plot)")
    if sch.restart_steps:
        rs = ", ".join(str(r) for r in sch.restart_steps[:12])
        more = ", ..." if len(sch.restart_steps) > 12 else ""
        parts.append(f", restarts at steps {rs}{more} (x on the plot)")
    return " ".join(parts[:2]) + "".join(parts[2:])


def register(app: typer.Typer) -> None:
    @app.command("schedule")
    @exits_on_config_error
    def schedule(
        preset: Path = typer.Argument(..., help="preset TOML file"),
        set_: Optional[list[str]] = typer.Option(
            None, "--set", help="override a key: --set schedule.t0=5 (repeatable)"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the lr of every step as JSON"),
        width: int = typer.Option(0, help="plot width in columns (default: terminal width)"),
        height: int = typer.Option(0, help="plot height in rows (default: 25)"),
    ) -> None:
        """Plot the learning-rate schedule of every run of a preset (no training)."""
        schedules, notes = run_schedules(preset, list(set_ or []))
        for note in notes:
            print(f"heur: note: {note}", file=sys.stderr)
        if as_json:
            payload = {
                "runs": {
                    name: {
                        "steps_per_epoch": sch.steps_per_epoch,
                        "total_steps": sch.total_steps,
                        "lr": sch.lrs(),
                    }
                    for name, sch in schedules.items()
                }
            }
            sys.stdout.write(json.dumps(payload) + "\n")
            return
        term = shutil.get_terminal_size((100, 30))
        w = width or max(40, term.columns)
        h = height or 25
        typer.echo(render(schedules, w, h))
        for name, sch in schedules.items():
            typer.echo(summary(name, sch))
