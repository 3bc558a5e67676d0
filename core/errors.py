"""The one error type that bad input raises: the CLI prints it on one line and exits 2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .measure.errors import MeasurementError


class ConfigError(Exception):
    """Bad input: names the file, the dotted key and what was expected.

    ``str(err)`` is the one-line message a user sees, for example
    ``presets/x.toml: optim.lr: expected a number > 0, got -1``.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join(parts + [self.message])

    def with_file(self, file: str | None) -> "ConfigError":
        return ConfigError(self.message, file=self.file or file, key=self.key)


def to_config_error(
    err: "MeasurementError", keys: Mapping[str, str] | str | None = None, file: str | None = None
) -> ConfigError:
    """The ConfigError an edge raises for ``err``: the same message, the key ``keys`` (a str),
    or ``keys[err.arg]`` (a mapping from argument names to the edge's keys; None where the
    argument is not in it)."""
    key = keys if isinstance(keys, str) or keys is None else keys.get(err.arg or "")
    return ConfigError(err.message, key=key, file=file)
