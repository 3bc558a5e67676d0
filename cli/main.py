"""The ``heur`` command line. Each command lives in its own ``cmd_*`` module and is thin:
parse, call the engine, print. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="heur",
    help="A lab bench for deep-learning training heuristics: warmup, SGDR, catapults.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in ("run", "runs", "schedule", "compare", "connect", "report", "tui"):
    importlib.import_module(f"heur.cli.cmd_{_name}").register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
