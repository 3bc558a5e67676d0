"""What the reader thread does: tail the followed runs' files and poll run statuses.

No Textual in here. The UI thread says which runs to follow (:meth:`Feed.follow`, which bumps
a generation number); the worker calls :meth:`Feed.poll_events` a few times a second and
:meth:`Feed.poll_status` every second or two, and posts what they return as one message.
Files are stat-ed first and skipped when unchanged.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heur.core.events import EventReader
from heur.core.runs import FINAL_STATES
from heur.figures.rundata import Segment, decode

LOG_TAIL_BYTES = 64 * 1024
LOG_TAIL_LINES = 400


@dataclass
class EventBatch:
    generation: int
    segments: dict[Path, list[Segment]] = field(default_factory=dict)
    logs: dict[Path, str] = field(default_factory=dict)
    events: int = 0


@dataclass
class ExperimentRow:
    path: Path
    name: str
    created: float
    runs: list[tuple[Path, Any]]  # (run dir, RunStatus or None when unreadable)


class _LogTail:
    def __init__(self, path: Path):
        self.path = path
        self.sig: tuple[int, float] | None = None

    def poll(self) -> str | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        sig = (st.st_size, st.st_mtime)
        if sig == self.sig:
            return None
        self.sig = sig
        try:
            with open(self.path, "rb") as f:
                if st.st_size > LOG_TAIL_BYTES:
                    f.seek(st.st_size - LOG_TAIL_BYTES)
                data = f.read()
        except OSError:
            return None
        text = data.decode("utf-8", "replace").replace("\r", "\n")
        lines = text.splitlines()
        if st.st_size > LOG_TAIL_BYTES and lines:
            lines = lines[1:]  # first line is probably cut
        return "\n".join(lines[-LOG_TAIL_LINES:])


class Feed:
    def __init__(self, source: Any):
        self.source = source
        self._lock = threading.Lock()
        self.generation = 0
        self._readers: dict[Path, EventReader] = {}
        self._logs: dict[Path, _LogTail] = {}
        self._status_cache: dict[Path, tuple[tuple, Any]] = {}
        self._listing_sig: tuple | None = None
        self._listing: list[Any] = []

    def follow(self, runs: list[Path]) -> int:
        """(UI thread) Follow these runs from their first event; returns the new generation."""
        with self._lock:
            self.generation += 1
            self._readers = {Path(r): EventReader(Path(r) / "events.jsonl") for r in runs}
            self._logs = {Path(r): _LogTail(Path(r) / "stdout.log") for r in runs}
            return self.generation

    def poll_events(self) -> EventBatch | None:
        """(worker) New events of the followed runs, or None if nothing changed."""
        with self._lock:
            gen, readers, logs = self.generation, dict(self._readers), dict(self._logs)
        batch = EventBatch(gen)
        for run, reader in readers.items():
            if not reader.changed():
                continue
            try:
                events = reader.read()
            except OSError:
                continue
            if events:
                batch.segments[run] = decode(events)
                batch.events += len(events)
        for run, tail in logs.items():
            text = tail.poll()
            if text is not None:
                batch.logs[run] = text
        if not batch.segments and not batch.logs:
            return None
        return batch

    def _listing_signature(self) -> tuple | None:
        """mtimes of the runs folder and of each experiment folder: the listing changes only
        when one of them does (a new or removed experiment or run directory)."""
        root = Path(getattr(self.source, "runs_dir", ""))
        try:
            with os.scandir(root) as it:
                entries = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in it if e.is_dir()))
            return (root.stat().st_mtime_ns, entries)
        except OSError:
            return None

    def poll_status(self) -> list[ExperimentRow]:
        """(worker) Every experiment and the status of each of its runs."""
        sig = self._listing_signature()
        if sig is not None and sig == self._listing_sig:
            exps = self._listing
        else:
            try:
                exps = self.source.experiments()
            except OSError:
                return []
            self._listing_sig, self._listing = sig, exps
        rows = []
        seen = set()
        for e in exps:
            runs = []
            for r in e.runs:
                seen.add(r)
                runs.append((r, self._status(r)))
            rows.append(ExperimentRow(Path(e.path), e.name, float(e.created or 0), runs))
        for r in list(self._status_cache):
            if r not in seen:
                del self._status_cache[r]
        return rows

    def _status(self, run: Path) -> Any:
        # a finished run's status only changes if its status.json does: reuse it
        try:
            st = os.stat(Path(run) / "status.json")
            sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        cached = self._status_cache.get(run)
        if (
            cached is not None
            and sig is not None
            and cached[0] == sig
            and getattr(cached[1], "state", None) in FINAL_STATES
        ):
            return cached[1]
        try:
            status = self.source.status(run)
        except Exception:  # a run deleted or half-written while we look: show it as unknown
            status = None
        if sig is not None:
            self._status_cache[run] = (sig, status)
        return status
