"""The distillation panel as data: a compare run's per-layer closeness to the teacher.

A ``compare`` run (core.compare_task) writes one ``compare`` event per checkpoint it compares
with its reference (the teacher): ``values`` holds, per layer of that model, its similarity to
the teacher. When the run compares one distilled student (a run with ``[distill]``) and one
independent student, the difference distilled − independent per layer is Gotmare et al.'s
(arXiv 1810.13243) pane (c), and the deeper half's mean minus the shallower half's is the gain
the ``distill`` verdict judges.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import tomllib

from heur.core.schema import columns

from .figure import GREY, Bars, color

columns("compare", "a", "b", "method", "layers_b", "values", "agreement")


def latest_pairs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last ``compare`` event per compared checkpoint, in the run's order (a rerun replaces)."""
    out: dict[str, dict] = {}
    for e in events:
        out[str(e.get("b"))] = e
    return sorted(out.values(), key=lambda e: e.get("step") or 0)


def is_distilled(exp_dir: Path, ref: str) -> Optional[bool]:
    """Does ``@RUN`` of the experiment train with ``[distill]`` (None: not a run reference or unreadable)."""
    if not isinstance(ref, str) or not ref.startswith("@"):
        return None
    run = ref[1:].split(":")[0]
    try:
        return "distill" in tomllib.loads((Path(exp_dir) / run / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None


def num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan


def difference(dist: list, indep: list) -> list[float]:
    """Distilled − independent closeness per layer (NaN where either is missing)."""
    return [num(a) - num(b) for a, b in zip(dist, indep)]


def deeper_gain(diff: list[float]) -> float | None:
    """The deeper half's mean difference minus the shallower half's (None: too few or missing)."""
    h = len(diff) // 2
    if not h or not all(math.isfinite(x) for x in diff[:h] + diff[len(diff) - h :]):
        return None
    return sum(diff[len(diff) - h :]) / h - sum(diff[:h]) / h


def pair_roles(exp_dir: Path | None, pairs: list[dict]) -> list[Optional[bool]]:
    """For each pair, is its compared model a distilled student (None: unknown)."""
    return [is_distilled(exp_dir, e.get("b")) if exp_dir is not None else None for e in pairs]


def distill_bars(run_name: str, events: list[dict[str, Any]], exp_dir: Path | None) -> list[Bars]:
    """The closeness of each compared model's layers to the reference as grouped bars, and, for
    one distilled and one independent student, their difference as signed bars (its note: the
    deeper-half gain). Empty without compare events."""
    pairs = latest_pairs(events)
    if not pairs:
        return []
    flags = pair_roles(exp_dir, pairs)
    layers = [str(n) for n in (pairs[0].get("layers_b") or [])]
    method = pairs[0].get("method", "similarity")
    groups = []
    for i, p in enumerate(pairs):
        if [str(n) for n in (p.get("layers_b") or [])] != layers:
            continue
        kind = {True: " (distilled)", False: " (independent)"}.get(flags[i], "")
        vals = np.array([num(v) for v in p.get("values") or []], dtype=float)
        groups.append((f"{p.get('b')}{kind}", vals, color(i)))
    out = [
        Bars(
            title=f"{run_name}: {method} of each layer to {pairs[0].get('a')}",
            categories=layers,
            groups=groups,
            ylabel=str(method),
        )
    ]
    if flags.count(True) == 1 and flags.count(False) == 1:
        d, i = pairs[flags.index(True)], pairs[flags.index(False)]
        if list(d.get("layers_b") or []) == list(i.get("layers_b") or []):
            diff = difference(d.get("values") or [], i.get("values") or [])
            gain = deeper_gain(diff)
            note = "" if gain is None else f"deeper-half gain {gain:+.3f} (the paper: > 0)"
            out.append(
                Bars(
                    title=f"{run_name}: distilled − independent",
                    categories=layers,
                    groups=[("distilled − independent", np.array(diff), GREY)],
                    ylabel=f"Δ {method}",
                    signed=True,
                    note=note,
                )
            )
    return out
