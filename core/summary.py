"""The experiment summary: one row per run (state, final losses and accuracies, wall time and
whatever the probes report), written as ``summary.json`` beside the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from . import runs as R
from .config import get_dotted
from .schema import EVAL_RESULT

COLUMNS = (*EVAL_RESULT, "wall_time")


def collect(exp_dir: Path | str) -> dict[str, Any]:
    """Rows of run results; with a ``[grid]``, each row's ``params`` holds its grid coordinates."""
    exp_dir = Path(exp_dir)
    try:
        preset = tomllib.loads((exp_dir / "experiment.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        preset = {}
    grid = preset.get("grid", {}) or {}
    rows = []
    for rd in R.run_dirs(exp_dir):
        st = R.read_status(rd)
        row: dict[str, Any] = {
            "run": rd.name,
            "state": st.state,
            "reason": st.reason,
            "step": st.step,
            "total_steps": st.total_steps,
        }
        if grid:
            try:
                cfg = tomllib.loads((rd / "config.toml").read_text())
            except (OSError, tomllib.TOMLDecodeError):
                cfg = {}
            row["params"] = {k: get_dotted(cfg, k) for k in grid}
        row.update(st.result)
        rows.append(row)
    return {"experiment": exp_dir.name, "path": str(exp_dir), "grid": grid, "check": preset.get("check"), "runs": rows}


def write_summary(exp_dir: Path | str) -> dict[str, Any]:
    exp_dir = Path(exp_dir)
    from .verdicts import verdicts

    data = collect(exp_dir)
    data["verdicts"] = verdicts(data)
    R.write_json_atomic(exp_dir / "summary.json", data)
    return data
