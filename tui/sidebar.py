"""The sidebar: presets, then experiments and their runs with live state badges.

The tree is updated in place from each status poll (labels changed, nodes added and removed)
so the cursor stays where the user left it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from heur.core.runs import FINAL_STATES

from .feed import ExperimentRow
from .presets import PresetInfo

# state -> (short text, style); styles are mid-luminance so they read on dark and light
STATE_STYLE = {
    "queued": "rgb(128,128,128)",
    "running": "bold rgb(0,130,200)",
    "completed": "rgb(60,160,75)",
    "diverged": "bold rgb(230,25,75)",
    "failed": "bold rgb(230,25,75)",
    "stopped": "rgb(230,120,0)",
    "lost": "bold rgb(200,50,200)",
    "skipped": "dim rgb(128,128,128)",  # a run it needs did not complete: it never started
    "?": "rgb(128,128,128)",
}


@dataclass
class PresetNode:
    info: PresetInfo


@dataclass
class ExperimentNode:
    path: Path
    name: str
    created: float


@dataclass
class RunNode:
    path: Path
    experiment: Path


def _styled(text: str, style: str) -> Text:
    """A span with its own style (not the Text's base style, which would colour what follows)."""
    t = Text()
    t.append(text, style=style)
    return t


def badge(status: Any) -> Text:
    """``running 45%`` / ``completed`` / ... as styled text."""
    state = getattr(status, "state", None) or "?"
    style = STATE_STYLE.get(state, STATE_STYLE["?"])
    if state == "running":
        try:
            pct = float(status.progress) * 100
            return _styled(f"{pct:3.0f}%", style)
        except (TypeError, ValueError, AttributeError):
            return _styled("running", style)
    needs = getattr(status, "needs", None)
    if state == "queued" and needs:  # a pipeline run waiting for the runs whose checkpoints it takes
        return _styled(f"waits {','.join(needs)}", style)
    return _styled(state, style)


def experiment_badge(statuses: list[Any]) -> Text:
    states = [getattr(s, "state", None) or "?" for s in statuses]
    running = [s for s in statuses if getattr(s, "state", None) == "running"]
    if running:
        done = sum(1 for s in states if s in FINAL_STATES)
        total = len(states)
        try:
            pct = (done + sum(float(s.progress) for s in running)) / max(total, 1) * 100
        except (TypeError, ValueError, AttributeError):
            pct = 0.0
        return _styled(f"{pct:3.0f}%", STATE_STYLE["running"])
    for worst in ("failed", "lost", "diverged", "stopped", "skipped", "queued"):
        n = states.count(worst)
        if n:
            txt = worst if n == len(states) else f"{n} {worst}"
            return _styled(txt, STATE_STYLE[worst])
    if states and all(s == "completed" for s in states):
        return _styled("completed", STATE_STYLE["completed"])
    return _styled("—", STATE_STYLE["?"])


def stamp(t: float, now: float | None = None) -> str:
    """When an experiment started: ``14:05`` today, ``11-18 12:06`` on another day."""
    if not t:
        return ""
    day = time.strftime("%Y-%m-%d", time.localtime(now if now is not None else time.time()))
    same_day = time.strftime("%Y-%m-%d", time.localtime(t)) == day
    return time.strftime("%H:%M" if same_day else "%m-%d %H:%M", time.localtime(t))


def first_experiment(rows: list[ExperimentRow]) -> Path:
    """The experiment to open on: the most recent one with a run running or queued, else the most
    recent one."""
    by_age = sorted(rows, key=lambda r: (r.created, r.path.name), reverse=True)
    live = [r for r in by_age if any(getattr(s, "state", None) in ("running", "queued") for _, s in r.runs)]
    return (live or by_age)[0].path


class Sidebar(Tree):
    BINDINGS = [
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
    ]
    DEFAULT_CSS = """
    Sidebar { width: 30; border-right: vkey $foreground 30%; overflow-x: hidden; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__("heur", **kw)
        self.show_root = False
        self.guide_depth = 2
        self.presets_node = self.root.add("Presets", expand=True)
        self.runs_node = self.root.add("Experiments", expand=True)
        self._exp_nodes: dict[Path, TreeNode] = {}
        self._run_nodes: dict[Path, TreeNode] = {}
        self.marked: list[Path] = []
        self.pinned: list[Path] = []

    # -- presets
    def set_presets(self, presets: list[PresetInfo], where: Path | None = None) -> None:
        self.presets_node.remove_children()
        for p in presets:
            label = Text(p.rel.removesuffix(".toml"))
            if p.error:
                label.append(" (unreadable)", style=STATE_STYLE["failed"])
            self.presets_node.add_leaf(label, data=PresetNode(p))
        self.presets_node.set_label(Text(f"Presets ({len(presets)})", style="bold"))
        if not presets:
            self.presets_node.add_leaf(Text(f"none in {where}" if where else "none found", style="dim"))

    # -- experiments
    def set_experiments(self, rows: list[ExperimentRow]) -> None:
        rows = sorted(rows, key=lambda r: (r.created, r.path.name), reverse=True)
        wanted = {r.path for r in rows}
        for p in list(self._exp_nodes):
            if p not in wanted:
                node = self._exp_nodes.pop(p)
                for rp in [rp for rp, n in self._run_nodes.items() if n.parent is node]:
                    self._run_nodes.pop(rp)
                node.remove()
        for i, row in enumerate(rows):
            node = self._exp_nodes.get(row.path)
            label = self._exp_label(row)
            if node is None:
                before = None
                if i + 1 < len(rows):
                    nxt = next((self._exp_nodes[r.path] for r in rows[i + 1 :] if r.path in self._exp_nodes), None)
                    before = nxt
                node = self.runs_node.add(
                    label, data=ExperimentNode(row.path, row.name, row.created), before=before, expand=False
                )
                self._exp_nodes[row.path] = node
            elif node.label != label:
                node.set_label(label)
            self._set_runs(node, row)
        self.runs_node.set_label(Text(f"Experiments ({len(rows)})", style="bold"))

    def _exp_label(self, row: ExperimentRow) -> Text:
        """``14:05 completed warmup_lb``: the start time first, so that experiments of one preset
        stay distinguishable when the sidebar cuts the label."""
        t = Text(stamp(row.created) + " ", style="dim") if row.created else Text()
        t.append_text(experiment_badge([s for _, s in row.runs]))
        t.append(" " + row.name)
        return t

    def _set_runs(self, exp: TreeNode, row: ExperimentRow) -> None:
        wanted = {p for p, _ in row.runs}
        for child in list(exp.children):
            if isinstance(child.data, RunNode) and child.data.path not in wanted:
                self._run_nodes.pop(child.data.path, None)
                child.remove()
        for path, status in row.runs:
            label = self._run_label(path, status)
            node = self._run_nodes.get(path)
            if node is None:
                self._run_nodes[path] = exp.add_leaf(label, data=RunNode(path, row.path))
            elif node.label != label:
                node.set_label(label)

    def _run_label(self, path: Path, status: Any) -> Text:
        t = Text("* " if path in self.marked else "")
        if path in self.pinned:
            t.append("⊙ ", style="bold")
        t.append_text(badge(status))
        t.append(" ")
        t.append(path.name)
        return t

    def set_pinned(self, pins: list[Path]) -> None:
        """Runs pinned to every plot: ``⊙`` before their name."""
        changed = set(pins) ^ set(self.pinned)
        self.pinned = list(pins)
        for run in changed:
            node = self._run_nodes.get(run)
            if node is not None:
                plain = node.label.plain
                label = node.label.copy()
                star = 2 if plain.startswith("* ") else 0
                if run in self.pinned and plain[star : star + 2] != "⊙ ":
                    label = label[:star] + Text("⊙ ", style="bold") + label[star:]
                elif run not in self.pinned and plain[star : star + 2] == "⊙ ":
                    label = label[:star] + label[star + 2 :]
                node.set_label(label)

    def toggle_mark(self, run: Path) -> None:
        """Mark a run for ``heur compare`` (at most two: the oldest mark drops)."""
        if run in self.marked:
            self.marked.remove(run)
        else:
            self.marked.append(run)
            if len(self.marked) > 2:
                self._relabel(self.marked.pop(0))
        self._relabel(run)

    def _relabel(self, run: Path) -> None:
        node = self._run_nodes.get(run)
        if node is None:
            return
        label = node.label.copy()
        plain = label.plain
        if run in self.marked and not plain.startswith("* "):
            label = Text("* ") + label
        elif run not in self.marked and plain.startswith("* "):
            label = label[2:]
        node.set_label(label)

    def select_path(self, path: Path) -> bool:
        node = self._exp_nodes.get(path) or self._run_nodes.get(path)
        if node is None:
            return False
        if node.parent is not None and not node.parent.is_expanded:
            node.parent.expand()
        # after the refresh: a node added moments ago has no line in the tree until then
        self.call_after_refresh(self.move_cursor, node)
        return True
