"""Every event of every run of an experiment as tidy tables: one table per event kind, one row
per event, the run's name, its variant and its grid point in front. Nothing is decimated or
dropped (a ``resume`` event and the points before it that it supersedes are kept, as written:
``core.events.apply_resumes`` is the reader's choice).

- CSV (:func:`write_csv`): ``<kind>.csv`` per kind; an empty cell is a ``null``; lists and
  dicts are JSON in their cell; booleans are ``true``/``false``; floats keep every digit
  (Python's shortest round-tripping repr). ``pandas.read_csv`` reads each as a frame.
- JSON (:func:`document`): one document ``{"experiment", "path", "tables": {kind: [row, ...]}}``
  whose rows keep lists and dicts as they are (``pandas.DataFrame(doc["tables"]["train"])``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import tomllib

from . import runs as R
from .errors import ConfigError
from .events import read_events
from .schema import COMMON, KINDS

FRONT = ("run", "variant")


def experiment_runs(exp_dir: Path) -> list[Path]:
    """The run directories of an experiment, or the directory itself when it is one run; a
    one-line error naming the directory when it is neither (missing, or no run in it)."""
    if not exp_dir.is_dir():
        raise ConfigError("no such directory (expected an experiment or run directory)", file=str(exp_dir))
    if (exp_dir / "config.toml").is_file():
        return [exp_dir]
    found = R.run_dirs(exp_dir)
    if not found:
        raise ConfigError("no runs in it (expected an experiment directory with <run>/config.toml)", file=str(exp_dir))
    return found


def run_labels(exp_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """For each run name, its variant ("" without ``[[variant]]``s) and its grid point
    ({dotted key: value}), read from ``experiment.toml`` and the run's ``config.toml``."""
    try:
        preset = tomllib.loads((exp_dir / "experiment.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        preset = {}
    variants = [str(v.get("name", "")) for v in preset.get("variant") or [] if isinstance(v, dict)]
    grid = list((preset.get("grid") or {}).keys())
    out = {}
    for n in names:
        # a run is named <variant>_<grid point> (core.config.expand): the longest variant that prefixes it
        hits = [v for v in variants if n == v or n.startswith(v + "_")]
        params = {}
        if grid:
            try:
                cfg = tomllib.loads((exp_dir / n / "config.toml").read_text())
            except (OSError, tomllib.TOMLDecodeError):
                cfg = {}
            from .config import get_dotted

            params = {k: get_dotted(cfg, k) for k in grid}
        out[n] = {"variant": max(hits, key=len) if hits else "", "params": params}
    return out


def _field_order(kind: str, seen: set[str]) -> list[str]:
    """The columns of a kind: the common fields, its declared fields in declaration order, then
    any other field its events carry (sorted)."""
    spec = KINDS.get(kind)
    declared: list[str] = list(COMMON)
    if spec is not None:
        declared += list(spec.required)
        if spec.variants is not None:
            declared.append(spec.variants[0])
            for fields in spec.variants[1].values():
                declared += list(fields)
        declared += list(spec.optional)
    declared = list(dict.fromkeys(declared))
    return [c for c in declared if c in seen or c in COMMON] + sorted(seen - set(declared))


def tables(exp_dir: Path | str) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """kind -> (columns, rows): every event of every run, rows in run order then file order."""
    exp_dir = Path(exp_dir)
    run_paths = experiment_runs(exp_dir)
    single = run_paths == [exp_dir]
    labels = (
        {exp_dir.name: {"variant": "", "params": {}}} if single else run_labels(exp_dir, [p.name for p in run_paths])
    )
    grid = list(next(iter(labels.values()))["params"].keys()) if labels else []
    rows: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, set[str]] = {}
    for p in run_paths:
        lab = labels[p.name]
        front = {"run": p.name, "variant": lab["variant"], **lab["params"]}
        for ev in read_events(p / "events.jsonl"):
            kind = str(ev.get("kind"))
            rows.setdefault(kind, []).append({**front, **ev})
            seen.setdefault(kind, set()).update(ev.keys())
    return {k: ([*FRONT, *grid, *_field_order(k, seen[k])], rows[k]) for k in sorted(rows)}


def cell(v: Any) -> Any:
    """A value as its CSV cell: None -> "", bool -> true/false, list/dict -> JSON, else as is."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return v


def _safe(kind: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in kind) or "_"


def write_csv(exp_dir: Path | str, out: Path | str) -> dict[str, Path]:
    """One ``<kind>.csv`` per event kind under ``out``; returns kind -> file."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the directory: {e.strerror}", file=str(out)) from None
    written = {}
    for kind, (cols, rows) in tables(exp_dir).items():
        path = out / f"{_safe(kind)}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in rows:
                w.writerow([cell(r.get(c)) for c in cols])
        written[kind] = path
    return written


def document(exp_dir: Path | str) -> dict[str, Any]:
    """The JSON document: every table's rows as objects (missing fields as null)."""
    exp_dir = Path(exp_dir)
    t = tables(exp_dir)
    return {
        "experiment": exp_dir.name,
        "path": str(exp_dir),
        "tables": {k: [{c: r.get(c) for c in cols} for r in rows] for k, (cols, rows) in t.items()},
    }
