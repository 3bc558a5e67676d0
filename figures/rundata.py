"""What the TUI knows about one run's events, as growable numpy columns.

Two halves, split across threads:

- :func:`decode` (worker thread) turns a list of parsed events into :class:`Segment` s: numpy
  columns per point kind, the few rare events as dicts, and the ``resume`` cuts between them.
  This is where the per-event Python work happens, off the UI thread.
- :meth:`RunData.apply` (UI thread) appends those columns and applies the cuts: cheap.

Unknown kinds are ignored; ``null`` fields become ``NaN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heur.core.schema import columns, kinds

# point kinds -> their numeric columns (all float64; step/epoch first), named as the engine
# declares them in core/schema.py (``columns`` refuses a field no writer writes)
COLUMNS: dict[str, tuple[str, ...]] = {
    "train": columns("train", "samples", "loss", "lr", "grad_norm"),
    "eval_train": columns("eval", "loss", "accuracy"),
    "eval_test": columns("eval", "loss", "accuracy"),
    "lr": columns("lr", "lr"),
    "sharpness": columns("sharpness", "lambda_max", "lr", "threshold", "preconditioned_sharpness"),
    "ntk": columns("ntk", "lambda0", "lambda_ntk", "lr_lazy_edge", "lr_uv_max", "lr_relu_max"),
}
# rare kinds kept as their event dicts
ITEMS = kinds("start", "catapult", "cca", "checkpoint", "restart", "end", "compare")


def _num(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


@dataclass
class Segment:
    """Events between two ``resume`` cuts. ``cut`` (if not None) applies before the data."""

    cut: float | None = None
    columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    count: int = 0


def decode(events: list[dict[str, Any]]) -> list[Segment]:
    """Group parsed events into segments of numpy columns (runs in the reader thread)."""
    segments: list[Segment] = []
    rows: dict[str, list[tuple]] = {}
    items: dict[str, list[dict]] = {}
    cut: float | None = None
    count = 0

    def flush() -> None:
        nonlocal rows, items, count
        if rows or items or cut is not None:
            seg = Segment(cut=cut, items=items, count=count)
            for kind, rs in rows.items():
                arr = np.array(rs, dtype=float).reshape(len(rs), len(COLUMNS[kind]))
                seg.columns[kind] = {c: arr[:, i].copy() for i, c in enumerate(COLUMNS[kind])}
            segments.append(seg)
        rows, items, count = {}, {}, 0

    for ev in events:
        kind = ev.get("kind")
        if kind == "resume":
            flush()
            cut = _num(ev.get("from_step", ev.get("step")))
            continue
        if kind == "eval":
            kind = "eval_test" if ev.get("split") == "test" else "eval_train"
        cols = COLUMNS.get(kind)
        if cols is not None:
            get = ev.get
            try:
                rows.setdefault(kind, []).append(
                    tuple(
                        [
                            float(v) if v is not None and v is not True and v is not False else np.nan
                            for v in map(get, cols)
                        ]
                    )
                )
            except (TypeError, ValueError):
                rows.setdefault(kind, []).append(tuple(_num(get(c)) for c in cols))
            count += 1
        elif kind in ITEMS:
            items.setdefault(kind, []).append(ev)
            count += 1
    flush()
    return segments


class Table:
    """Growable float64 columns with amortised O(1) append."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self._buf = {n: np.empty(0) for n in names}
        self.size = 0

    def extend(self, cols: dict[str, np.ndarray]) -> None:
        k = len(next(iter(cols.values())))
        if k == 0:
            return
        need = self.size + k
        cap = len(self._buf[self.names[0]])
        if need > cap:
            cap = max(need, 2 * cap, 256)
            for n in self.names:
                nb = np.empty(cap)
                nb[: self.size] = self._buf[n][: self.size]
                self._buf[n] = nb
        for n in self.names:
            self._buf[n][self.size : need] = cols[n]
        self.size = need

    def cut(self, step: float) -> None:
        """Drop rows with ``step >= step`` (rows are in step order)."""
        steps = self["step"]
        keep = np.flatnonzero(~(steps >= step))
        self.size = int(keep[-1]) + 1 if keep.size else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self._buf[name][: self.size]

    def __len__(self) -> int:
        return self.size


class RunData:
    """All the points of one run that the panels draw. Mutated on the UI thread only."""

    def __init__(self, name: str):
        self.name = name
        self.tables = {k: Table(c) for k, c in COLUMNS.items()}
        self.items: dict[str, list[dict[str, Any]]] = {k: [] for k in ITEMS}
        self.events = 0
        self.version = 0  # bumped on every change; panels redraw when it moves

    def apply(self, segments: list[Segment]) -> None:
        for seg in segments:
            if seg.cut is not None:
                for t in self.tables.values():
                    t.cut(seg.cut)
                for k in ("catapult", "cca", "checkpoint", "restart", "compare"):
                    self.items[k] = [e for e in self.items[k] if _num(e.get("step")) < seg.cut]
                self.items["end"] = []
            for kind, cols in seg.columns.items():
                self.tables[kind].extend(cols)
            for kind, evs in seg.items.items():
                self.items[kind].extend(evs)
            self.events += seg.count
            self.version += 1

    def __getitem__(self, kind: str) -> Table:
        return self.tables[kind]

    @property
    def last_step(self) -> int:
        t = self.tables["train"]
        return int(t["step"][-1]) if len(t) else 0


def load_run(run_dir, name: str | None = None) -> RunData:
    """A run directory's events as one :class:`RunData` (what is there so far; a torn last line
    of a running run is left for later), ``resume`` cuts applied."""
    from pathlib import Path

    from heur.core.events import read_events

    run_dir = Path(run_dir)
    data = RunData(name or run_dir.name)
    path = run_dir / "events.jsonl"
    if path.is_file():
        data.apply(decode(read_events(path)))
    return data
