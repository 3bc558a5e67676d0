"""`heur connect A.pt B.pt`: an experiment of one curve run (task = "curve") between two existing
checkpoints, with progress, the summary and the verdict, and a chart of the curve against the
straight line (thin: the preset is ``heur.core.curve.connect_preset``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from .common import RunsDirOption
from .errors import exits_on_config_error, fail


def register(app: typer.Typer) -> None:
    @app.command("connect")
    @exits_on_config_error
    def connect(
        ckpt_a: Path = typer.Argument(..., metavar="CKPT_A", help="One end (runs/<exp>/<run>/checkpoints/final.pt)."),
        ckpt_b: Path = typer.Argument(..., metavar="CKPT_B", help="The other end, of the same architecture."),
        curve: str = typer.Option("bezier", "--curve", help="bezier | polychain."),
        bends: int = typer.Option(1, "--bends", min=1, help="Trainable points between the ends."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="Curve training epochs (default: A's)."),
        set_: list[str] = typer.Option([], "--set", "-s", help="Override a key of the curve run: --set optim.lr=0.01."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps."),
        runs_dir: Optional[Path] = RunsDirOption,
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document and nothing else."),
    ) -> None:
        """Train a mode-connectivity curve between two checkpoints; evaluate it beside the straight line."""
        from heur.core import runs as R
        from heur.core.config import expand
        from heur.core.curve import connect_preset, data_note
        from heur.core.errors import ConfigError
        from heur.core.preflight import check_experiment

        if curve not in ("bezier", "polychain"):
            fail(f"--curve: expected bezier or polychain, got {curve!r}")
        if epochs is not None and epochs <= 0:
            fail(f"--epochs: expected a number > 0, got {epochs:g}")
        raw = connect_preset(ckpt_a, ckpt_b, curve, bends, epochs, device)
        try:
            exp = expand(raw, set_)
            check_experiment(exp)
        except ConfigError as e:  # no preset file: the keys are the curve run's
            raise ConfigError(e.message, key=e.key) from None
        note = data_note(ckpt_a, ckpt_b)
        if note:
            print(f"heur: warning: {note}", file=sys.stderr)
        exp_dir = R.create_experiment(exp, runs_dir)
        R.start_supervisor(exp_dir, 1)
        if as_json:
            code = _wait(exp_dir)
            print(json.dumps(_doc(exp_dir), allow_nan=False, indent=1))
            raise typer.Exit(code)
        from .cmd_run import watch

        code = watch(exp_dir)
        doc = _doc(exp_dir)
        if doc["curve"]:
            _plot(doc)
        raise typer.Exit(code)


def _wait(exp_dir: Path, poll: float = 0.25) -> int:
    from heur.core import runs as R

    try:
        while not all(R.read_status(rd).state in R.FINAL_STATES for rd in R.run_dirs(exp_dir)):
            time.sleep(poll)
    except KeyboardInterrupt:
        R.stop_experiment(exp_dir)
        return 130
    states = [R.read_status(rd).state for rd in R.run_dirs(exp_dir)]
    return 0 if all(s == "completed" for s in states) else 1


def _doc(exp_dir: Path) -> dict[str, Any]:
    """{"curve": columns, "line": columns, "result": the run's result} (empty where it did not finish;
    the exit code says how the run ended, the result's ``run_dir`` where it lies)."""
    from heur.core import runs as R
    from heur.core.events import sanitize

    (rd,) = R.run_dirs(exp_dir)
    path = rd / "curve.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    st = R.read_status(rd)
    st.result.setdefault("run_dir", str(rd))
    return sanitize({"curve": doc.get("curve", {}), "line": doc.get("line", {}), "result": st.result})


def _plot(doc: dict[str, Any]) -> None:
    try:
        import plotext as plt
    except ImportError:
        return
    from rich.console import Console
    from rich.text import Text

    con = Console()
    for metric, title in (("train_loss", "train loss"), ("test_accuracy", "test accuracy")):
        if any(v is None for v in doc["curve"].get(metric, [None])):
            continue
        plt.clear_figure()
        plt.plot(doc["line"]["t"], doc["line"][metric], label="line", marker="dot")
        plt.plot(doc["curve"]["t"], doc["curve"][metric], label="curve", marker="dot")
        plt.xlabel("t")
        plt.title(f"{title} along the curve and the straight line")
        plt.plotsize(min(80, max(40, con.width - 2)), 16)
        if not con.is_terminal:
            plt.theme("clear")
        con.print(Text.from_ansi(plt.build()), no_wrap=True, overflow="ignore", crop=False)
