"""Reading the pickled data files of a dataset without running code from them.

``pickle.load`` calls whatever callable a file names, so a crafted file runs arbitrary code.
:func:`load_plain` unpickles with a restricted unpickler that resolves only the globals a
dataset batch needs to rebuild numpy arrays (``numpy``'s ``_reconstruct``/``_frombuffer``,
``ndarray`` and ``dtype``, and ``_codecs.encode`` for latin-1 bytes); any other global is refused,
and the result is checked to hold only plain values (dicts, lists, tuples, str, bytes, numbers,
None) and numpy arrays of numbers. :func:`md5_of` is the checksum torchvision publishes for the
files it downloads.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any, Callable

__all__ = ["UnsafePickle", "load_plain", "md5_of"]


class UnsafePickle(Exception):
    """The file names a global outside the allowed set, or holds something other than plain data."""


def md5_of(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

    def dtype(*args: Any, **kwargs: Any) -> Any:
        dt = np.dtype(*args, **kwargs)
        if dt.kind not in "biuf":  # object, void (structured), str arrays: not in a dataset batch
            raise UnsafePickle(f"numpy dtype {dt} is not a plain number type")
        return dt

    def reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
        if cls is not np.ndarray:
            raise UnsafePickle(f"array subclass {cls!r}")
        return _reconstruct(cls, shape, typecode)

    def frombuffer(buf: Any, dt: Any, shape: Any, order: Any) -> Any:
        if not isinstance(dt, np.dtype) or dt.kind not in "biuf":
            raise UnsafePickle(f"numpy dtype {dt!r} is not a plain number type")
        return _frombuffer(buf, dt, shape, order)

    found = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(mod, "_reconstruct")] = reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        found[(mod, "_frombuffer")] = frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = dtype
    return found


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it (latin-1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("_codecs.encode with other than a str and latin1")
    return text.encode("latin1")


class _Restricted(pickle.Unpickler):
    def __init__(self, f: Any, allowed: dict[tuple[str, str], Any]):
        super().__init__(f, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        fn = self._allowed.get((module, name))
        if fn is None:
            raise UnsafePickle(f"it names {module}.{name}, which a data file does not need")
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("it uses persistent ids")


def _check_plain(v: Any, depth: int = 0) -> None:
    import numpy as np

    if depth > 8:
        raise UnsafePickle("nested too deep for a data file")
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise UnsafePickle(f"an array of dtype {v.dtype}")
        return
    if isinstance(v, dict):
        for k, x in v.items():
            _check_plain(k, depth + 1)
            _check_plain(x, depth + 1)
        return
    if isinstance(v, (list, tuple)):
        if v and all(type(x) in (int, bytes, str) for x in v):  # a label or filename list: fast path
            return
        for x in v:
            _check_plain(x, depth + 1)
        return
    raise UnsafePickle(f"it holds a {type(v).__name__}")


def load_plain(path: Path | str) -> Any:
    """The plain data pickled in ``path``. UnsafePickle if the file names any callable outside
    the numpy-array set or holds anything but plain values; pickle's own errors otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    allowed = {**_numpy_globals(), ("_codecs", "encode"): _latin1_encode}
    obj = _Restricted(io.BytesIO(data), allowed).load()
    _check_plain(obj)
    return obj
