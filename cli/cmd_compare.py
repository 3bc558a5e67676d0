"""`heur compare CKPT_A CKPT_B`: layer similarity of two trained networks and the straight path
between them (thin: the work is ``heur.core.compare.compare``)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from .common import fmt
from .errors import exits_on_config_error

# a measurement's argument -> the option it came from, for errors compare() leaves to its caller
_OPTION_OF = {"layers": "--layers", "samples": "--samples", "conv": "--conv"}


def register(app: typer.Typer) -> None:
    @app.command("compare")
    @exits_on_config_error
    def compare(
        ckpt_a: Path = typer.Argument(
            ..., metavar="CKPT_A", help="A checkpoint (e.g. runs/<exp>/<run>/checkpoints/final.pt)."
        ),
        ckpt_b: Path = typer.Argument(..., metavar="CKPT_B", help="Another checkpoint."),
        data: Optional[str] = typer.Option(
            None, "--data", help="Dataset for the probe set and the path (default: A's)."
        ),
        layers: Optional[list[str]] = typer.Option(
            None, "--layers", "-l", help="Layer name (repeat; default: the models' blocks)."
        ),
        points: int = typer.Option(11, "--points", "-n", help="Points t in [0, 1] on the straight path (2 to 201)."),
        samples: int = typer.Option(1000, "--samples", help="Test inputs in the probe set (at most)."),
        conv: str = typer.Option("mean", "--conv", help="Conv maps: mean | flatten | dft."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document and nothing else."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N | mps | auto."),
        curve: bool = typer.Option(
            False, "--curve", help="Also train a Bezier curve between them (a run under ./runs) and show it."
        ),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="With --curve: its epochs (default: A's)."),
    ) -> None:
        """Per-layer SVCCA / PWCCA / CKA of two networks and the loss along the straight line between them."""
        from heur.core.compare import compare as run_compare
        from heur.core.device import resolve_device
        from heur.core.errors import to_config_error
        from heur.core.events import sanitize
        from heur.core.measure.errors import MeasurementError

        try:
            with _path_progress() as progress:
                doc = run_compare(
                    ckpt_a,
                    ckpt_b,
                    data=data,
                    layers=layers or None,
                    points=points,
                    samples=samples,
                    conv=conv,
                    device=resolve_device(device, key="--device"),
                    progress=progress,
                )
        except MeasurementError as e:  # inputs the measurements cannot use: one line, exit 2
            raise to_config_error(e, _OPTION_OF) from None
        if curve:  # heur connect's curve run, trained here, at the same t as the line
            from heur.core.curve import quick_curve
            from heur.core.errors import ConfigError

            if epochs is not None and epochs <= 0:
                raise ConfigError(f"expected a number > 0, got {epochs:g}", key="--epochs")
            doc["curve"] = quick_curve(ckpt_a, ckpt_b, epochs, points, device=device)
        if as_json:
            print(json.dumps(sanitize(doc), allow_nan=False, indent=1))
            return
        _print(doc)


@contextlib.contextmanager
def _path_progress() -> Iterator[Optional[Callable[[int, int], None]]]:
    """A progress bar of the straight path on stderr (a terminal only; stdout stays the document)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("straight path"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )  # fmt: skip
    task = None

    def update(done: int, total: int) -> None:  # the bar appears with the path's first point
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("", total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _print(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    # the paths on their own lines: a table column would cut them to a few characters at 80 columns
    for k in ("a", "b"):
        con.print(f"{k.upper()}: {doc[k]['path']}", soft_wrap=True, highlight=False)
    t = Table(title="models")
    for c in ("", "model", "epoch", "params", "train loss", "train acc", "test loss", "test acc"):
        t.add_column(c)
    for k in ("a", "b"):
        m, e = doc[k], doc[k]["eval"]
        t.add_row(
            k.upper(),
            m["model"],
            fmt(m["epoch"]),
            str(m["params"]),
            fmt(e["train_loss"]),
            fmt(e["train_accuracy"]),
            fmt(e["test_loss"]),
            fmt(e["test_accuracy"]),
        )
    con.print(t)
    sub = f"{doc['samples']} {doc['probe_split']} inputs of {doc['data']}, conv maps: {doc['conv']}"
    if doc["layers"]:
        t = Table(title="layer similarity, A vs B", caption=sub)
        for c in ("layer", "SVCCA", "PWCCA", "CKA"):
            t.add_column(c, justify="right" if c != "layer" else "left")
        for r in doc["layers"]:
            t.add_row(r["layer"], fmt(r["svcca"], 3), fmt(r["pwcca"], 3), fmt(r["cka"], 3))
        con.print(t)
    elif doc["matrix"] and doc["matrix"]["layers_a"]:
        mx = doc["matrix"]
        for method in ("svcca", "pwcca", "cka"):
            t = Table(title=f"{method.upper()}: layers of A (rows) vs layers of B (columns)", caption=sub)
            t.add_column("A \\ B")
            for q in mx["layers_b"]:
                t.add_column(q, justify="right")
            for p, row in zip(mx["layers_a"], mx[method]):
                t.add_row(p, *[fmt(v, 3) for v in row])
            con.print(t)
    it = doc["interpolation"]
    if it is not None:
        t = Table(title="linear path (1-t)·A + t·B" + (", BN statistics recomputed" if it["bn_recomputed"] else ""))
        for c in ("t", "train loss", "train acc", "test loss", "test acc"):
            t.add_column(c, justify="right")
        for i, tv in enumerate(it["t"]):
            t.add_row(
                f"{tv:.3g}",
                fmt(it["train_loss"][i]),
                fmt(it["train_accuracy"][i]),
                fmt(it["test_loss"][i]),
                fmt(it["test_accuracy"][i]),
            )
        con.print(t)
        con.print(
            f"barrier: train loss {fmt(it['barrier_train_loss'])}, test loss {fmt(it['barrier_test_loss'])}"
            "  (max height of the path above the chord between its ends)"
        )
        _plot(it, con)
    cv = doc.get("curve")
    if cv and cv.get("curve"):
        t = Table(title=f"Bezier curve (1 bend) beside the line: {cv['run_dir']}")
        for c in ("t", "curve train loss", "line train loss", "curve test acc", "line test acc"):
            t.add_column(c, justify="right")
        c, ln = cv["curve"], cv["line"]
        for i, tv in enumerate(c["t"]):
            t.add_row(
                f"{tv:.3g}",
                fmt(c["train_loss"][i]),
                fmt(ln["train_loss"][i]),
                fmt(c["test_accuracy"][i]),
                fmt(ln["test_accuracy"][i]),
            )
        con.print(t)
        r = cv["result"]
        con.print(
            f"barrier in train loss: line {fmt(r.get('line_barrier_train_loss'))}, "
            f"curve {fmt(r.get('curve_barrier_train_loss'))}"
        )
    from rich.markup import escape

    from .common import wrapped

    for n in doc["notes"]:  # folded with a hanging indent: a note reads as one item at 80 columns
        con.print(escape(wrapped(f"note: {n}", hang="  ", width=con.width)), style="dim", soft_wrap=True)


def _plot(it: dict[str, Any], con: Any) -> None:
    try:
        import plotext as plt
    except ImportError:  # the table says it all
        return
    plt.clear_figure()
    plt.plot(it["t"], it["train_loss"], label="train loss", marker="dot")
    plt.plot(it["t"], it["test_loss"], label="test loss", marker="dot")
    plt.xlabel("t")
    plt.title("loss along the straight path A -> B")
    plt.plotsize(min(80, max(40, con.width - 2)), 18)
    if not con.is_terminal:
        plt.theme("clear")
    from rich.text import Text

    con.print(Text.from_ansi(plt.build()), no_wrap=True, overflow="ignore", crop=False)
