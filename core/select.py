"""``--only``: which runs of an experiment a command picks, by name or shell-style pattern.

A run that starts from another run's checkpoint (``core.pipeline``) cannot start without it, so a
selection must hold every run its runs need — or, when resuming an existing experiment, find
them already completed there. Otherwise it is refused (exit 2) naming the missing run: heur never
trains a run you did not ask for behind your back, and never starts one that will be skipped.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Optional

from .errors import ConfigError

__all__ = ["match_runs", "check_closed", "with_dependencies"]


def match_runs(names: Iterable[str], patterns: list[str], key: str = "--only") -> list[str]:
    """The names (in their order) that equal or match (``fnmatch``: ``*``, ``?``, ``[ab]``) one of
    ``patterns``. ConfigError naming the pattern when one matches nothing."""
    names = list(names)
    picked: set[str] = set()
    for pat in patterns:
        hit = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hit:
            shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
            raise ConfigError(f"no run matches {pat!r} (the runs: {shown})", key=key)
        picked.update(hit)
    return [n for n in names if n in picked]


def check_closed(
    selected: list[str],
    needs: Callable[[str], list[str]],
    completed: Optional[Callable[[str], bool]] = None,
    key: str = "--only",
) -> None:
    """ConfigError when a selected run needs a run that is neither selected nor (``completed``)
    already completed: ``needs(name)`` lists the runs a run starts from."""
    chosen = set(selected)
    for name in selected:
        for dep in needs(name):
            if dep in chosen or (completed is not None and completed(dep)):
                continue
            raise ConfigError(
                f"run {name!r} starts from run {dep!r}, which is not selected"
                + (" and has not completed" if completed is not None else "")
                + f": add --only {dep}",
                key=key,
            )


def with_dependencies(selected: list[str], needs: Callable[[str], list[str]], order: list[str]) -> list[str]:
    """``selected`` and every run they start from, directly or not, in ``order`` (the TUI's
    relaunch of one run: the dialog says which runs come along)."""
    keep: set[str] = set()
    todo = list(selected)
    while todo:
        n = todo.pop()
        if n not in keep:
            keep.add(n)
            todo.extend(needs(n))
    return [n for n in order if n in keep]
