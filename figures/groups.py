"""Runs drawn as groups: the seeds of one setting as their mean line with a ± sd band.

Runs are grouped either by everything but the seed (``key = "seed"``: runs whose resolved
configs are equal once ``seed`` is set aside) or by the value of one dotted key (``key =
"optim.lr"``: every run with the same lr, whatever else differs). A group becomes three
synthetic runs — the mean of its members, the mean + sd and the mean − sd, point by point on
the steps every member logged — and the panels' own builders draw them: the mean as a line in
the group's colour, the band edges as light dotted lines (marker "·") of the same colour. Pure data: no UI library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .figure import Figure
from .panels import Shown, View, loss_cap
from .rundata import COLUMNS, RunData

SEED = "seed"  # the grouping key that means "everything but the seed"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys -> values (lists as tuples, so they compare and hash)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The dotted keys whose value differs between the (flattened) configs, in first-seen order."""
    keys: list[str] = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def _short(key: str) -> str:
    return key.split(".")[-1]


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _without_seed(name: str) -> str:
    """A grid run's name with its ``seed=N`` part taken out (``sb_seed=2`` -> ``sb``)."""
    return re.sub(r"(^|_)seed=[^_]*", "", name).strip("_")


@dataclass
class Group:
    """Runs drawn as one line; ``index``: its colour (the groups' order, so groups never share one)."""

    label: str
    members: list[Shown] = field(default_factory=list)
    index: int = 0


def group_runs(runs: list[Shown], configs: dict[str, dict[str, Any]], key: str) -> list[Group]:
    """Groups of ``runs`` (in order of first member) by ``key`` (:data:`SEED` or a dotted key);
    ``configs``: run name -> its flattened config. A run without a config is a group of its own.
    Labels name what tells the groups apart: the varying keys but the seed, or ``key=value``."""
    flat = {r.name: configs.get(r.name) for r in runs}
    known = [c for c in flat.values() if c is not None]
    differ = [k for k in varying_keys(known) if k != SEED] if key == SEED else [key]
    groups: dict[Any, Group] = {}
    for r in runs:
        c = flat[r.name]
        if c is None:
            gid: Any = ("run", r.name)
            label = r.name
        elif key == SEED:
            gid = tuple(sorted((k, repr(v)) for k, v in c.items() if k != SEED))
            label = " ".join(f"{_short(k)}={_value(c.get(k))}" for k in differ) or "all"
        else:
            gid = ("key", repr(c.get(key)))
            label = f"{_short(key)}={_value(c.get(key))}"
        g = groups.setdefault(gid, Group(label))
        g.members.append(r)
    out = list(groups.values())
    if key == SEED:
        for g in out:  # the run names without their seed say it best ("lb_warmup_lr=0.16")
            names = {_without_seed(r.name) for r in g.members}
            if len(names) == 1 and len(g.members) > 1:
                g.label = names.pop() or g.label
    seen: dict[str, int] = {}
    for i, g in enumerate(out):
        g.index = i  # the same label twice (configs differ only in a key not shown): number them
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label += f" #{seen[g.label]}"
    return out


def _common_steps(tables: list[Any]) -> np.ndarray:
    """The steps every member logged (their intersection); members of one setting log the same
    steps, so nothing is interpolated then."""
    steps = None
    for t in tables:
        s = np.unique(t["step"][np.isfinite(t["step"])])
        steps = s if steps is None else np.intersect1d(steps, s)
    return steps if steps is not None else np.empty(0)


def stats(members: list[Shown], cut: set[str] | None = None) -> tuple[RunData, RunData, RunData, int]:
    """(mean, mean + sd, mean − sd, n) of the members' columns, as three RunData; sd is the
    sample standard deviation (ddof 1) over the members finite at a step (0 where only one is).
    A member's loss above the line panels' cap (a diverging run) is left out of the statistics
    from that step on, as the line panels cut it; its name is added to ``cut``."""
    out = [RunData(name) for name in ("mean", "hi", "lo")]
    cap = loss_cap(members)
    for kind, cols in COLUMNS.items():
        tables = [m.data[kind] for m in members if len(m.data[kind])]
        if len(tables) != len(members):
            continue  # a kind some member lacks: no band of it
        steps = _common_steps(tables)
        if steps.size == 0:
            continue
        mean, hi, lo = ({}, {}, {})
        for c in cols:
            vals = []
            for t in tables:
                s, y = t["step"], t[c]
                _, first = np.unique(s, return_index=True)  # a resumed run may repeat a step: its first
                idx = first[np.searchsorted(s[first], steps)]
                vals.append(y[idx])
            v = np.vstack(vals)
            if c == "loss":
                for i, row in enumerate(v):
                    over = np.flatnonzero(~(np.abs(row) <= cap))  # above the cap, or no longer finite
                    if over.size and np.isfinite(row[over[0]]):
                        row[over[0] :] = np.nan  # diverging: nothing after it is a loss of that setting
                        if cut is not None:
                            cut.add(members[i].name)
            ok = np.isfinite(v)
            n = ok.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                m = np.where(n > 0, np.nansum(np.where(ok, v, 0.0), axis=0) / np.maximum(n, 1), np.nan)
                dev = np.where(ok, v - m, 0.0)
                sd = np.where(n > 1, np.sqrt((dev**2).sum(axis=0) / np.maximum(n - 1, 1)), 0.0)
            if c in ("step", "epoch", "samples"):
                sd = np.zeros_like(m)
            mean[c], hi[c], lo[c] = m, m + sd, m - sd
        for d, cols_ in zip(out, (mean, hi, lo)):
            d.tables[kind].extend(cols_)
            d.version += 1
    return out[0], out[1], out[2], len(members)


Builder = Callable[[list[Shown], View, int], Figure]


def grouped_figure(build: Builder, groups: list[Group], view: View, width: int, what: str = "seeds") -> Figure:
    """The figure ``build`` draws for the groups' means, with each group's mean ± sd edges as
    dotted lines in its colour (groups of one run: its line alone)."""
    means, edges = [], []
    cut: set[str] = set()
    for g in groups:
        mean, hi, lo, n = stats(g.members, cut)
        idx = g.index
        means.append(Shown(f"{g.label} (n={n})" if n > 1 else g.label, mean, idx))
        if n > 1:
            edges += [Shown(g.label, hi, idx), Shown(g.label, lo, idx)]
    fig = build(means, view, width)
    if edges:
        band = build(edges, view, width)
        for s in band.series:
            if s.kind == "line" and not s.raw:
                s.label, s.marker = None, "·"  # a light dotted edge (plotext draws the character)
                fig.series.append(s)
        fig.state.append(f"mean ± sd over {what}")
        fig.key.append(("dotted", f"± sd over {what}"))  # what the dotted edges are (the report's legend)
    if cut:
        fig.state.append(f"diverged, left out: {', '.join(sorted(cut))}")
    return fig
