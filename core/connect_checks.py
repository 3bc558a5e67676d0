"""Preflight of the mode-connectivity tasks (``task = "curve"``, ``task = "plane"``): the checks
that run before anything starts, kept apart from core.curve and core.plane (which import the loop
and the run directories) so that core.preflight depends on nothing that depends back on it.

Each raises ConfigError naming the dotted key: ``curve.start`` / ``curve.end``, ``plane.*``.
"""

from __future__ import annotations

from typing import Any

from .checkpoint import load_checkpoint
from .config import RunConfig, get_dotted
from .errors import ConfigError

ENDS = ("curve.start", "curve.end")
KEYS = ("plane.start", "plane.bend", "plane.end")


def split_key(cfg: RunConfig) -> dict[str, Any]:
    """What decides a run's train/test data (augmentation aside): two ends and their curve must
    agree on it, or one end's test set holds the other's training examples."""
    d = cfg.data.model_dump()
    for k in ("augment", "crop_padding", "flip", "download", "root"):
        d.pop(k, None)
    d["seed"] = cfg.seed if cfg.data.seed is None else cfg.data.seed
    return d


def check_curve(cfg: RunConfig, exp: Any) -> None:
    """Before anything starts: a [curve] section whose two ends differ and fit this run
    (:func:`check_ends`). ConfigError on ``curve.start`` / ``curve.end``."""
    if cfg.curve is None:
        raise ConfigError('task "curve" needs a [curve] section', key="curve")
    check_ends(cfg, exp, ENDS)


def check_ends(cfg: RunConfig, exp: Any, keys: tuple[str, ...]) -> None:
    """The checkpoints the dotted ``keys`` name are all different, and each one's model (a
    referenced run's, or the checkpoint file's weights) has this run's parameter names and
    shapes; referenced runs train on this run's data split. ConfigError naming the key."""
    from .models import meta_model
    from .pipeline import _shapes, parse_ref, shape_mismatch

    mine = meta_model(cfg)
    data = cfg.to_dict()
    seen: dict[str, str] = {}
    for key in keys:
        value = get_dotted(data, key)
        if value in seen:
            raise ConfigError(
                f"{value!r} is also {seen[value]}: expected different checkpoints (no curve or plane between a "
                "point and itself)",
                key=key,
            )
        seen[value] = key
        ref = parse_ref(value, key)
        if ref is not None:
            other = exp.runs[ref.run]
            if split_key(other) != split_key(cfg):
                diff = _first_diff(split_key(other), split_key(cfg))
                raise ConfigError(
                    f"run {ref.run!r} trains on other data than this run ({diff}"
                    "): give the ends and the curve the same [data] (data.seed pins the split when their seeds differ)",
                    key=key,
                )
            theirs = meta_model(other)
            shapes, what = (None if theirs is None else _shapes(theirs.state_dict())), f"the model of run {ref.run!r}"
        else:
            shapes, what = _shapes(load_checkpoint(value)["model"]), f"the weights in {value}"
        if mine is not None and shapes is not None:
            problem = shape_mismatch(_shapes(mine.state_dict()), shapes)
            if problem:
                raise ConfigError(f"the model of this run does not match {what}: {problem}", key=key)


def _first_diff(a: dict, b: dict) -> str:
    k = next(k for k in a if a.get(k) != b.get(k))
    return f"data.{k} {a.get(k)!r} there, {b.get(k)!r} here"


def check_plane(cfg: RunConfig, exp: Any) -> None:
    """Before anything starts: three different checkpoints that fit this run's model and data;
    every ``project`` entry names a checkpoint that exists or will (a glob matches one at least)."""
    import fnmatch

    from .pipeline import checkpoint_names

    if cfg.plane is None:
        raise ConfigError('task "plane" needs a [plane] section', key="plane")
    check_ends(cfg, exp, KEYS)
    for i, value in enumerate(cfg.plane.project):
        key = f"plane.project[{i}]"
        if not value.startswith("@"):
            load_checkpoint(value)  # ConfigError naming the file
            continue
        run, _, pattern = value[1:].partition(":")
        if run not in exp.runs:  # check_references has said so for well-formed entries
            raise ConfigError(f"no run named {run!r} in this experiment", key=key)
        if pattern and any(c in pattern for c in "*?["):
            names = checkpoint_names(exp.runs[run])
            if not fnmatch.filter(sorted(names), pattern.removesuffix(".pt")):
                raise ConfigError(f"{value!r} matches none of the checkpoints run {run!r} writes", key=key)
