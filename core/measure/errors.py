"""The one exception base of the measurement code (similarity, curvature, connectivity, activations).

Measurement functions know nothing of presets, config keys or run directories: when their
inputs cannot give a measurement (too few samples for the neurons, an unknown layer name, a
state dict of another architecture) they raise a :class:`MeasurementError`, a ``ValueError``
whose message says what is wrong in the function's own terms and whose ``arg`` names the
argument at fault (``"layers"``, ``"method"``, ``"samples"`` for the number of rows of the
activations, ...; None when no single argument is). The edges that know where an input came
from — preflight, the probes, ``heur compare`` — turn it into the one-line ConfigError with
their own key (:func:`to_config_error`).
"""

from __future__ import annotations

__all__ = ["MeasurementError"]


class MeasurementError(ValueError):
    """Inputs a measurement cannot be computed from. ``str(err)`` is the message alone."""

    def __init__(self, message: str, *, arg: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
