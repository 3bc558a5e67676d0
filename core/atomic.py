"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every writer here writes a temp file in the destination's own folder (``.<name>.<pid>.tmp``:
hidden, so globs such as ``checkpoints/*.pt`` never match it) and renames it over the
destination with ``os.replace``, which is atomic within one file system. If writing fails,
the temp file is removed and the destination is left as it was. The destination's folder
must exist. A leaf module: it imports nothing from heur.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["replace_atomic", "write_bytes_atomic", "write_json_atomic"]


def replace_atomic(path: Path | str, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` to write the whole file at a temp path beside ``path``, then move it
    over ``path``. Any exception from ``write`` propagates, with the temp file removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """``path`` holds exactly ``data`` afterwards (see the module doc)."""
    replace_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path | str, data: dict[str, Any]) -> None:
    """``data`` as indented JSON (no NaN or inf: ``ValueError``; other objects by ``str``)."""
    text = json.dumps(data, allow_nan=False, default=str, indent=1)  # fails before any file is made
    replace_atomic(path, lambda tmp: tmp.write_text(text))
