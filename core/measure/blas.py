"""BLAS thread control for the numpy/scipy linear algebra (threadpoolctl, when importable).

One controller for the process: ``single_thread_blas()`` (a context in which every BLAS library
runs on one thread) and ``blas_threads()`` (the thread counts the BLAS libraries use now).
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["single_thread_blas", "blas_threads"]

_CONTROLLER: Any = None


def _controller() -> Any:
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def single_thread_blas() -> Any:
    """A context in which BLAS runs on one thread (restored on exit); a no-op context when
    threadpoolctl is missing or cannot read the libraries."""
    try:
        return _controller().limit(limits=1, user_api="blas")
    except Exception:
        return contextlib.nullcontext()


def blas_threads() -> list[int]:
    """The thread count of every BLAS library loaded (numpy's and scipy's OpenBLAS each bundle
    one); empty when threadpoolctl is missing."""
    try:
        return [int(i["num_threads"]) for i in _controller().select(user_api="blas").info()]
    except Exception:
        return []
