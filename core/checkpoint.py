"""The checkpoint format: what a ``checkpoints/<name>.pt`` file holds, written and read here only.

A checkpoint is a dict saved by ``torch.save`` and read back with ``weights_only=True`` (plain
containers, numbers, strings and tensors only: no pickled code). Its entries:
``format`` (= :data:`FORMAT`), ``version`` (= :data:`VERSION` when written), ``model`` (the
state dict), ``config`` (the run's config as a plain dict), ``input_shape``, ``num_outputs``,
``step``, ``epoch``, and whatever else the writer (``core.train``) needs to resume exactly.

Reading a file that is missing, unloadable, not a heur checkpoint or from a newer format
raises ConfigError naming the file: the path comes from the user or a preset, so that is the
one-line error they see.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .atomic import replace_atomic
from .errors import ConfigError

__all__ = [
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "rebuild_from_checkpoint",
]

FORMAT = "heur-checkpoint"
VERSION = 1


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` (a dict with ``format`` = FORMAT) to ``path`` atomically, creating the
    folder. ValueError if ``state`` is not marked as a heur checkpoint: a file
    :func:`load_checkpoint` would refuse is never written."""
    import torch

    if state.get("format") != FORMAT:
        raise ValueError(f"a checkpoint needs format = {FORMAT!r}, got {state.get('format')!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint at ``path``, on the CPU (``weights_only=True``). ConfigError naming the file
    if it is missing, cannot be loaded, is not a heur checkpoint or has a newer version."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such checkpoint file", file=str(path))
    try:
        with warnings.catch_warnings():  # torch's own UserWarnings (pickle protocol, ...): heur's message says it
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"not a loadable checkpoint ({type(e).__name__})", file=str(path)) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ConfigError(f"not a heur checkpoint (no format = {FORMAT})", file=str(path))
    version = ck.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise ConfigError(
            f"checkpoint format version {version!r}: this heur reads version {VERSION} and older", file=str(path)
        )
    return ck


def model_from_checkpoint(path: Path | str, device: Any = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """(the model with the checkpoint's weights, on ``device``, in eval mode; its RunConfig; the
    checkpoint itself). ConfigError naming the file when it is not a heur checkpoint or its
    weights do not fit the model of its config."""
    from .config import validate_run
    from .models import build_model

    ck = load_checkpoint(path)
    for k in ("model", "config", "input_shape", "num_outputs"):
        if k not in ck:
            raise ConfigError(f"checkpoint has no {k!r} entry", file=str(path))
    cfg = validate_run(ck["config"], str(path))
    model = build_model(cfg, tuple(int(s) for s in ck["input_shape"]), int(ck["num_outputs"])).to(device)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(
            f"weights do not fit the model of its config: {first[-1].strip() if first else e}", file=str(path)
        ) from None
    model.eval()
    return model, cfg, ck


def rebuild_from_checkpoint(path: Path | str, device: Any = "cpu", load_data_too: bool = True):
    """(model with the checkpoint's weights, its RunConfig, its DataBundle or None)."""
    from .data import load_data

    model, cfg, _ = model_from_checkpoint(path, device)
    return model, cfg, load_data(cfg, device) if load_data_too else None
