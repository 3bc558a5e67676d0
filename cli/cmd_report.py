"""`heur report`: figures and a self-contained HTML page; `heur export`: every event as tidy tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import RunsDirOption
from .errors import exits_on_config_error, fail


def _find(target: str, runs_dir: Optional[Path]) -> Path:
    from heur.core import runs as R

    return R.find_experiment(target, runs_dir)


def register(app: typer.Typer) -> None:
    @app.command("report")
    @exits_on_config_error
    def report(
        experiment: str = typer.Argument(
            ..., help="An experiment (or run) directory, or its name under the runs directory."
        ),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write (default EXPERIMENT/report)."),
        fmt: str = typer.Option("png", "--format", "-f", help="Figure files: png, svg or pdf."),
        x: str = typer.Option("step", "--x", help="x axis: step, samples (examples seen) or epoch."),
        log: bool = typer.Option(False, "--log", help="Log-scale y axes."),
        smooth: float = typer.Option(0.0, "--smooth", help="EMA weight in [0, 1) for the loss (raw line kept faint)."),
        runs_dir: Optional[Path] = RunsDirOption,
    ) -> None:
        """Write report.html (one self-contained file) and every panel as a figure file."""
        from heur.report.page import Options, write_report

        w = write_report(_find(experiment, runs_dir), out, Options(fmt=fmt, xaxis=x, ylog=log, smoothing=smooth))
        print(f"{w.html}  ({len(w.figures)} figures in {w.html.parent / 'figures'}, {w.seconds:.1f} s)")

    @app.command("export")
    @exits_on_config_error
    def export(
        experiment: str = typer.Argument(
            ..., help="An experiment (or run) directory, or its name under the runs directory."
        ),
        csv_dir: Optional[Path] = typer.Option(None, "--csv", help="Write one <kind>.csv per event kind here."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        runs_dir: Optional[Path] = RunsDirOption,
    ) -> None:
        """Every event of every run as tidy tables (a row per event; run, variant and grid columns)."""
        from heur.core import export as X

        if (csv_dir is None) == (not as_json):
            fail("export: give exactly one of --csv DIR or --json")
        path = _find(experiment, runs_dir)
        if as_json:
            json.dump(X.document(path), sys.stdout, allow_nan=False, ensure_ascii=False)
            sys.stdout.write("\n")
            return
        files = X.write_csv(path, csv_dir)
        print(f"{len(files)} tables in {csv_dir}: " + ", ".join(f"{k}.csv" for k in files))
