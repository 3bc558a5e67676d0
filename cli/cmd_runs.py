"""`heur runs` lists experiments and their runs; `heur stop` stops a run or an experiment."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from .common import STATE_STYLE, RunsDirOption, fmt
from .errors import exits_on_config_error, fail

STATES = ("queued", "running", "completed", "diverged", "failed", "stopped", "skipped", "lost")


def interactive() -> bool:
    """Whether a person can answer a question: stdin is a terminal (not CI, not a pipe)."""
    import sys

    return sys.stdin.isatty()


def _states(given: list[str]) -> set[str]:
    """The states ``--state`` names ('ended': every final state); exit 2 on an unknown one."""
    out: set[str] = set()
    for s in given:
        for part in s.split(","):
            part = part.strip()
            if part == "ended":
                out.update(STATES[2:])
            elif part in STATES:
                out.add(part)
            else:
                fail(f"--state: expected one of {', '.join(STATES)} or ended, got {part!r}")
    return out


def register(app: typer.Typer) -> None:
    @app.command("runs")
    @exits_on_config_error
    def runs(
        runs_dir: Optional[Path] = RunsDirOption,
        last: int = typer.Option(10, "--last", "-n", min=1, help="How many recent experiments to show."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        state: list[str] = typer.Option(
            [],
            "--state",
            help="Only runs in this state (queued, running, completed, diverged, failed, stopped, skipped, lost, "
            "or 'ended' for any final state); repeatable.",
        ),
    ) -> None:
        """List experiments and runs with state, progress and last metrics."""
        from heur.core import runs as R

        wanted = _states(state)
        exps = R.list_experiments(runs_dir)[:last]
        statuses = {rd: R.read_status(rd) for e in exps for rd in e.runs}
        if wanted:  # an experiment none of whose runs is in those states is left out
            for e in exps:
                e.runs = [rd for rd in e.runs if statuses[rd].state in wanted]
            exps = [e for e in exps if e.runs]
        if as_json:
            out = []
            for e in exps:
                rows = []
                for rd in e.runs:
                    st = statuses[rd]
                    rows.append(
                        {
                            "run": rd.name,
                            "path": str(rd),
                            "state": st.state,
                            "step": st.step,
                            "total_steps": st.total_steps,
                            "loss": st.raw.get("loss"),
                            "test_accuracy": st.result.get("test_accuracy", st.raw.get("test_accuracy")),
                            "result": st.result,
                            "needs": st.needs,
                            "reason": st.reason,
                        }
                    )
                out.append({"experiment": e.path.name, "path": str(e.path), "created": e.created, "runs": rows})
            print(json.dumps(out, indent=1))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if not exps:
            where = runs_dir or R.default_runs_dir()
            console.print(f"no runs {' or '.join(state)} under {where}" if wanted else f"no experiments under {where}")
            return
        # one table per experiment, titled with its full name (what `heur stop` and `--resume`
        # take): as a table cell it was cut to a few characters at 80 columns
        for e in exps:
            when = dt.datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M")
            t = Table(title=f"[bold]{e.path.name}[/]  created {when}", title_justify="left")
            t.add_column("run", overflow="fold")
            # loss: the last logged training loss (JSON "loss"); test acc: the last evaluation's
            for c in ("state", "progress", "loss", "test acc"):
                t.add_column(c, no_wrap=True, justify="left" if c == "state" else "right")
            for rd in e.runs:
                st = statuses[rd]
                style = STATE_STYLE.get(st.state, "")
                prog = f"{st.step}/{st.total_steps} {st.progress:.0%}" if st.total_steps else "-"
                acc = st.result.get("test_accuracy", st.raw.get("test_accuracy"))
                t.add_row(rd.name, f"[{style}]{st.state}[/]", prog, fmt(st.raw.get("loss")), fmt(acc))
                if st.state == "queued" and st.needs:
                    t.add_row(f"[dim]  waits for {', '.join(st.needs)}[/]", "", "", "", "")
                elif st.state in ("skipped", "lost") and st.reason:  # lost: why (a killed supervisor, ...)
                    t.add_row(f"[dim]  {st.reason}[/]", "", "", "", "")
            console.print(t)

    @app.command("stop")
    @exits_on_config_error
    def stop(
        target: str = typer.Argument(..., help="A run or experiment directory (or its name under the runs directory)."),
        runs_dir: Optional[Path] = RunsDirOption,
    ) -> None:
        """Stop a run or a whole experiment (SIGTERM: each run checkpoints and ends `stopped`)."""
        from heur.core import runs as R

        path = R.find_experiment(target, runs_dir)
        n = R.stop(path)
        print(f"stopped {n} run(s) in {path}" if n else f"nothing running in {path}")

    @app.command("rm")
    @exits_on_config_error
    def rm(
        target: str = typer.Argument(..., help="A run or experiment directory (or its name under the runs directory)."),
        runs_dir: Optional[Path] = RunsDirOption,
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (for scripts)."),
    ) -> None:
        """Delete a run or an experiment directory (asks first; refuses while a run of it is live)."""
        from heur.core import runs as R

        path = R.find_experiment(target, runs_dir)
        what = R.removal(path)  # refuses a live run, or a directory heur did not make
        print(f"{what.describe()}: {path}")
        if not yes:
            if not interactive():
                fail(f"{path}: not removed: no terminal to ask on (add --yes to remove without asking)")
            if not typer.confirm("remove it?", default=False):
                print("left as it is")
                raise typer.Exit(1)
        R.remove(what)
        if what.kind == "run" and (path.parent / "summary.json").is_file():  # no stale row left behind
            from heur.core.summary import write_summary

            write_summary(path.parent)
        print(f"removed {path}")
