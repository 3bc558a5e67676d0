"""One place that turns bad input into a one-line message and exit code 2."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

from heur.core.errors import ConfigError


def fail(message: str, code: int = 2) -> None:
    print(f"heur: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def exits_on_config_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: ConfigError -> one line on stderr, exit 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            fail(str(e))

    return wrapper
