"""`heur schedule PRESET`: draw every run's learning rate against the optimizer step.

No data is loaded and nothing trains: step counts and base lr come from each run's plan
(core.plan, from the dataset sizes). ``--json``
prints ``{"runs": {name: {"steps_per_epoch", "total_steps", "lr": [...], "unit"}}}`` and nothing
else (``unit`` is null, or "1/λ0" for runs that set optim.lr_ntk).
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from heur.cli.common import wrapped
from heur.cli.errors import exits_on_config_error
from heur.core.errors import ConfigError


@dataclass
class Drawn:
    """One run's schedule as drawn: ``lr`` per step in ``unit`` ("" for an absolute lr; "1/λ0"
    when optim.lr_ntk is set: the lr is lr_ntk·f(t)/λ0 and λ0 is measured only at start-up)."""

    sch: Any
    lr: list[float]
    unit: str = ""

    @property
    def base(self) -> str:
        return f"{max(self.lr, default=0.0):g}" + (f"/{self.unit.split('/')[1]}" if self.unit else "")


def run_schedules(preset: Path, overrides: list[str]) -> tuple[dict[str, Drawn], list[str]]:
    """Load a preset and build each run's schedule: ({run name: Drawn}, notes for stderr)."""
    from heur.core.config import load_experiment
    from heur.core.errors import ConfigError
    from heur.core.plan import plan_run
    from heur.core.schedules import validate_schedule

    exp = load_experiment(preset, overrides)
    out: dict[str, Drawn] = {}
    ntk: list[str] = []
    for name, cfg in exp.runs.items():
        label = f"run '{name}': " if len(exp.runs) > 1 else ""
        try:
            sch = validate_schedule(cfg, plan_run(cfg))  # step counts and base lr from the run's plan
        except ConfigError as e:
            raise ConfigError(label + e.message, file=str(preset), key=e.key) from None
        if cfg.optim.lr_ntk is not None:  # the schedule's base is 1 (x batch scaling): times lr_ntk
            out[name] = Drawn(sch, [cfg.optim.lr_ntk * v for v in sch.lrs()], "1/λ0")
            ntk.append(name)
        else:
            out[name] = Drawn(sch, sch.lrs())
    notes = []
    if ntk:
        who = f"run '{ntk[0]}'" if len(ntk) == 1 else f"{len(ntk)} of {len(out)} runs"
        its, they = ("its", "it is") if len(ntk) == 1 else ("their", "they are")
        notes.append(
            f"{who} set optim.lr_ntk: {its} lr is lr_ntk/λ0 and λ0 is measured when the run starts, "
            f"so {they} drawn in units of 1/λ0"
        )
    return out, notes


# plotext colour names that typer can style too: the legend below the plot matches the lines
COLORS = ("blue", "red", "green", "magenta", "cyan", "yellow", "bright_blue", "bright_red", "bright_green")


def render(drawn: dict[str, Drawn], width: int, height: int, xaxis: str = "step") -> str:
    """The lr of every run against the step (or the epoch), without an in-plot legend (it covered
    the curves): :func:`legend` prints it below."""
    import numpy as np
    import plotext as plt

    from heur.figures.downsample import minmax

    plt.clear_figure()
    plt.plotsize(width, height)
    units = {d.unit for d in drawn.values()}
    plt.title("learning rate per optimizer " + ("step" if xaxis == "step" else "step, against the epoch"))
    plt.xlabel(xaxis)
    if units == {"1/λ0"}:
        plt.ylabel("lr (1/λ0)")
    cols = max(10, width - 12)
    warm_ends: set[float] = set()
    for i, (_name, d) in enumerate(drawn.items()):
        sch, ys = d.sch, d.lr
        per = 1.0 / sch.steps_per_epoch if xaxis == "epoch" else 1.0
        xs, yd = minmax(np.arange(len(ys)) * per, np.asarray(ys), cols)
        c = COLORS[i % len(COLORS)]
        plt.plot(xs.tolist(), yd.tolist(), marker="braille", color=c)
        if sch.restart_steps:
            plt.scatter([r * per for r in sch.restart_steps], [ys[r] for r in sch.restart_steps], marker="x", color=c)
        if sch.warmup_steps:
            warm_ends.add(sch.warmup_steps * per)
    for w in sorted(warm_ends):
        plt.vline(w, "gray")
    return plt.build()


def summary(name: str, d: Drawn) -> str:
    sch = d.sch
    out = f"{name}: {sch.name}, {sch.total_steps} steps ({sch.steps_per_epoch}/ep), peak lr {d.base}"
    if sch.warmup_steps:
        out += f", warmup {sch.warmup_steps} steps ({sch.warmup_shape})"
    if sch.restart_steps:
        rs = ", ".join(str(r) for r in sch.restart_steps[:12])
        out += f", restarts at steps {rs}{', ...' if len(sch.restart_steps) > 12 else ''}"
    return out


def key(drawn: dict[str, Drawn]) -> str:
    """What the plot's marks mean, said once (not once per run)."""
    marks = []
    if any(d.sch.warmup_steps for d in drawn.values()):
        marks.append("| the end of a warmup")
    if any(d.sch.restart_steps for d in drawn.values()):
        marks.append("x a restart")
    return ("on the plot: " + ", ".join(marks)) if marks else ""


def register(app: typer.Typer) -> None:
    @app.command("schedule")
    @exits_on_config_error
    def schedule(
        preset: Path = typer.Argument(..., help="preset TOML file"),
        set_: Optional[list[str]] = typer.Option(
            None, "--set", help="override a key: --set schedule.t0=5 (repeatable)"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the lr of every step as JSON"),
        xaxis: str = typer.Option("step", "--x", help="x-axis: step | epoch"),
        width: int = typer.Option(0, help="plot width in columns (default: terminal width)"),
        height: int = typer.Option(0, help="plot height in rows (default: 25)"),
    ) -> None:
        """Plot the learning-rate schedule of every run of a preset (no training)."""
        if xaxis not in ("step", "epoch"):
            raise ConfigError(f"expected step or epoch, got {xaxis!r}", key="--x")
        schedules, notes = run_schedules(preset, list(set_ or []))
        for note in notes:
            print(wrapped(f"heur: note: {note}", hang="  "), file=sys.stderr)
        if as_json:
            payload = {
                "runs": {
                    name: {
                        "steps_per_epoch": d.sch.steps_per_epoch,
                        "total_steps": d.sch.total_steps,
                        "lr": d.lr,
                        "unit": d.unit or None,
                    }
                    for name, d in schedules.items()
                }
            }
            sys.stdout.write(json.dumps(payload) + "\n")
            return
        term = shutil.get_terminal_size((100, 30))
        w = width or max(40, term.columns)
        h = height or 25
        typer.echo(render(schedules, w, h, xaxis))
        for i, (name, d) in enumerate(schedules.items()):
            lines = textwrap.wrap(summary(name, d), width=max(20, w - 3), subsequent_indent="  ")
            typer.echo(typer.style("━━ ", fg=COLORS[i % len(COLORS)]) + "\n   ".join(lines))
        if key(schedules):
            typer.echo(key(schedules))
