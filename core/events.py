"""The event stream of a run: ``events.jsonl``, one JSON object a line.

Every event has ``kind``, ``step``, ``epoch`` and ``time``; each kind's other fields are declared
in :mod:`core.schema`, and the writer refuses a field not declared for its kind. Writers append
whole lines (one ``write`` + ``flush``) and are the only writer of their file. JSON has no NaN or Infinity: a
non-finite float is written as ``null``. Readers keep a byte offset, skip a torn last line (no
trailing newline yet) and pick it up on the next read, and skip lines that are not JSON objects.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

from .schema import KINDS, SchemaError


def sanitize(value: Any) -> Any:
    """Replace non-finite floats by None, recursively; turn tensors/numpy scalars into floats."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return sanitize(item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return sanitize(tolist())
    return str(value)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


class EventWriter:
    """Appends events to ``events.jsonl``; each event is one ``write`` and one ``flush``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        if self._f.tell() > 0 and not _ends_with_newline(self.path):
            # a process killed mid-write left a torn line: start on a fresh one, or the next
            # event (a resume's own) would be glued to it and lost with it
            self._f.write("\n")
            self._f.flush()

    def emit(self, kind: str, step: int, epoch: float, **fields: Any) -> dict[str, Any]:
        spec = KINDS.get(kind)
        if spec is not None:  # one set difference: no cost next to a training step
            bad = spec.unknown(fields)
            if bad:
                raise SchemaError(f"event {kind!r}: field {', '.join(bad)} is not declared in core/schema.py")
        event = {"kind": kind, "step": int(step), "epoch": float(epoch), "time": time.time()}
        event.update(fields)
        event = sanitize(event)
        self._f.write(json.dumps(event, allow_nan=False, separators=(",", ":")) + "\n")
        self._f.flush()
        return event

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            try:
                os.fsync(self._f.fileno())
            except OSError:
                pass
            self._f.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EventReader:
    """Tolerant incremental reader of an ``events.jsonl`` that may still be growing.

    ``read()`` returns the complete new events since the last call. A last line without its
    newline is left for later; malformed lines and non-object values are skipped (counted in
    ``skipped``). If the file shrinks (replaced), reading starts over.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self.skipped = 0
        self._size_seen = -1
        self._mtime_seen = -1.0

    def changed(self) -> bool:
        """Cheap check (one stat) whether there may be new data."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        return st.st_size != self._size_seen or st.st_mtime != self._mtime_seen

    def read(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if st.st_size < self.offset:
            self.offset = 0
        self._size_seen, self._mtime_seen = st.st_size, st.st_mtime
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        chunk = data[: end + 1]
        self.offset += end + 1
        return list(self._parse(chunk))

    def _parse(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        loads = json.loads
        body = chunk.strip()
        if body:  # fast path: the whole chunk as one JSON array; per line only if that fails
            try:
                evs = loads(b"[" + body.replace(b"\n", b",") + b"]")
            except ValueError:
                evs = None
            if evs is not None and all(isinstance(ev, dict) and "kind" in ev for ev in evs):
                yield from evs
                return
        for line in chunk.split(b"\n"):
            if not line.strip():
                continue
            try:
                ev = loads(line)
            except ValueError:
                self.skipped += 1
                continue
            if isinstance(ev, dict) and "kind" in ev:
                yield ev
            else:
                self.skipped += 1


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events of a file (torn last line ignored)."""
    return EventReader(path).read()


def apply_resumes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the points an interrupted process wrote at or after a later ``resume``'s ``from_step``.

    Keeps every event before each ``resume`` whose step is below that ``from_step`` (plus the
    non-point kinds ``start``/``resume``/``end``), then the events after it.
    """
    out: list[dict[str, Any]] = []
    for ev in events:
        if ev.get("kind") == "resume":
            cut = ev.get("from_step", ev.get("step", 0))
            out = [e for e in out if e.get("kind") in ("start", "resume") or e.get("step", 0) < cut]
        out.append(ev)
    return out
