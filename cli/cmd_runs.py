"""`heur runs` lists experiments and their runs; `heur stop` stops a run or an experiment."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from .common import STATE_STYLE, RunsDirOption, fmt
from .errors import exits_on_config_error


def register(app: typer.Typer) -> None:
    @app.command("runs")
    @exits_on_config_error
    def runs(
        runs_dir: Optional[Path] = RunsDirOption,
        last: int = typer.Option(10, "--last", "-n", min=1, help="How many recent experiments to show."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List experiments and runs with state, progress and last metrics."""
        from heur.core import runs as R

        exps = R.list_experiments(runs_dir)[:last]
        if as_json:
            out = []
            for e in exps:
                rows = []
                for rd in e.runs:
                    st = R.read_status(rd)
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
            console.print(f"no experiments under {runs_dir or R.default_runs_dir()}")
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
                st = R.read_status(rd)
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
