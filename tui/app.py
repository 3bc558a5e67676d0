"""``heur tui``: browse presets and runs, launch, watch live. It never trains anything.

Threads: one thread worker tails the followed runs' files (a few times a second) and polls
statuses (every ~1.5 s); it posts one message per batch. Everything that touches widgets or
the data model runs on the UI thread, in the message handlers and a 4 Hz redraw timer that
rebuilds only the visible panel, and only when its inputs changed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Footer, Log, Static, TabbedContent, TabPane, Tree

from heur.figures import connect, groups, panels
from heur.figures.panels import Shown, View
from heur.figures.rundata import RunData

from . import distill, heatmap, system
from .feed import EventBatch, ExperimentRow, Feed
from .plotting import PlotView, rich_color
from .presets import PresetInfo, scan_presets
from .screens import ConfirmScreen, HelpScreen, InfoScreen, LaunchScreen
from .sidebar import ExperimentNode, PresetNode, RunNode, Sidebar, badge, experiment_badge, first_experiment, stamp
from .source import RunSource

TABS = [
    ("loss", "Loss"),
    ("acc", "Acc"),
    ("lr", "LR"),
    ("sharp", "Sharp"),
    ("cat", "Cata"),
    ("cca", "CCA"),
    ("log", "Log"),
    ("config", "Cfg"),
    ("sys", "Sys"),
    ("conn", "Conn"),  # curve and plane runs only (shown when the experiment has one)
]
CONN_TASKS = ("curve", "plane")
_CONSOLE = Console(width=400)  # measures how a legend wraps (rich Text.wrap needs a console)
PLOT_TABS = {
    "loss": panels.loss_figure,
    "acc": panels.accuracy_figure,
    "lr": panels.lr_figure,
    "sharp": panels.sharpness_figure,
}
SMOOTHING = (0.0, 0.6, 0.9, 0.99)


def _task(run: Path) -> str:
    """A run's task as its config.toml says ("train" when it cannot be read)."""
    import tomllib

    try:
        return str(tomllib.loads((run / "config.toml").read_text()).get("task", "train"))
    except (OSError, tomllib.TOMLDecodeError):
        return "train"


class EventsRead(Message):
    def __init__(self, batch: EventBatch):
        super().__init__()
        self.batch = batch


class StatusRead(Message):
    def __init__(self, rows: list[ExperimentRow]):
        super().__init__()
        self.rows = rows


class HeurApp(App):
    TITLE = "heur"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #body { height: 1fr; }
    #main { width: 1fr; }
    #info { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; }
    #cat-text, #cca-text, #config-text, #sys-text, #plane-text { padding: 0 1; }
    .conn-plot { height: 14; }
    .hidden { display: none; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("n", "launch", "launch"),
        Binding("X", "stop", "stop"),
        Binding("R", "resume", "resume", show=False),
        Binding("N", "relaunch", "relaunch", show=False),
        Binding("P", "pin", "pin", show=False),
        Binding("g", "cycle_group", "group"),
        Binding("L", "legend", "legend", show=False),
        Binding("l", "toggle_log", "log"),
        Binding("s", "cycle_smoothing", "smooth"),
        Binding("x", "cycle_xaxis", "x-axis"),
        Binding("r", "cycle_focus", "run"),
        Binding("m", "mark", "mark", show=False),
        Binding("c", "compare", "compare", show=False),
        Binding("p", "show_path", "path", show=False),
        Binding("w", "report", "report", show=False),
        Binding("b", "toggle_sidebar", "sidebar", show=False),
        Binding("t", "toggle_theme", "theme", show=False),
        Binding("left_square_bracket", "prev_tab", "prev tab", show=False),
        Binding("right_square_bracket", "next_tab", "next tab", show=False),
        *[Binding(str((i + 1) % 10), f"tab('{tid}')", label, show=False) for i, (tid, label) in enumerate(TABS)],
    ]

    EVENT_PERIOD = 0.25
    STATUS_PERIOD = 1.5
    REDRAW_PERIOD = 0.25
    MAX_DUTY = 0.025  # share of a core that redrawing a live plot may take
    SYSTEM_PERIOD = 1.0  # the system panel's sampling period while it is shown

    def __init__(
        self, runs_dir: str | Path = "runs", presets_dir: str | Path = "presets", source: Any = None, live: bool = True
    ):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.presets_dir = Path(presets_dir)
        self.source = source if source is not None else RunSource(self.runs_dir)
        self.feed = Feed(self.source)
        self.live = live
        self.view = View()
        self.presets: list[PresetInfo] = []
        self.rows: dict[Path, ExperimentRow] = {}
        self.statuses: dict[Path, Any] = {}
        self._row_order: list[Path] = []
        # the experiment on screen
        self.experiment: Path | None = None
        self.run_paths: list[Path] = []
        self.data: dict[Path, RunData] = {}
        self.logs: dict[Path, str] = {}
        self.focus_run: Path | None = None  # None = all runs overlaid
        self.generation = 0
        self._pending: tuple[Path, Path | None] | None = None
        self._opened = False  # the first status poll opens the most recent experiment
        self._launched: Path | None = None  # an experiment launched here, shown once it is listed
        self._drawn: dict[str, Any] = {}
        self.redraws = 0
        self.reader_cpu = 0.0
        self._main_screen = None
        self.config_text = ""
        self.status_polls = 0
        self.last_report: Path | None = None  # the last report the w key wrote
        self.conn_shown = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.pins: list[Path] = []  # runs of any experiment overlaid on every experiment shown
        self.group_key: str | None = None  # None, groups.SEED (all but the seed) or a dotted grid key
        self.configs: dict[Path, dict[str, Any]] = {}  # run -> its flattened config (grouping)
        self.grid_keys: list[str] = []  # the shown experiment's [grid] keys
        self.sampler: Any = None  # core.system.Sampler, made when the system panel is first shown
        self.system_sample: Any = None
        self._deferred_toasts: list[tuple[str, dict]] = []

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield Static("", id="info")
                with TabbedContent(id="tabs", initial="loss"):
                    for tid, label in TABS:
                        with TabPane(label, id=tid):
                            if tid in PLOT_TABS:
                                yield PlotView(id=f"plot-{tid}")
                            elif tid == "cat":
                                with VerticalScroll():
                                    yield PlotView(id="plot-cat", classes="cat-plot")
                                    yield Static("", id="cat-text")
                            elif tid == "cca":
                                with VerticalScroll():
                                    yield Static("", id="cca-text")
                            elif tid == "log":
                                yield Log(id="log-view", max_lines=2000)
                            elif tid == "conn":
                                with VerticalScroll():
                                    yield PlotView(id="plot-curve-loss", classes="conn-plot")
                                    yield PlotView(id="plot-curve-err", classes="conn-plot")
                                    yield Static("", id="plane-text")
                            elif tid == "sys":
                                with VerticalScroll():
                                    yield Static("", id="sys-text")
                            else:
                                with VerticalScroll():
                                    yield Static("", id="config-text")
        yield Footer(compact=True)

    def _q(self, selector, expect_type=None):
        """query_one on the main screen (a modal on top must not hide the panels)."""
        screen = self._main_screen or self.screen
        return screen.query_one(selector, expect_type) if expect_type else screen.query_one(selector)

    def on_mount(self) -> None:
        self._main_screen = self.screen
        self.presets = scan_presets(self.presets_dir)
        sb = self._q(Sidebar)
        sb.set_presets(self.presets, self.presets_dir.resolve())
        sb.focus()
        self._q("#plot-cat", PlotView).styles.height = 12
        self._q(TabbedContent).hide_tab("conn")
        self._update_info()
        self.set_interval(self.REDRAW_PERIOD, self._redraw)
        self.set_interval(self.SYSTEM_PERIOD, self._sample_system)
        if self.live:
            self._reader()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.sampler is not None:
            self.sampler.close()

    def on_resize(self, event: Any) -> None:
        try:  # the legend is laid out for the width: lay it out again
            self._update_info()
        except NoMatches:
            pass

    # ------------------------------------------------------------------ reader thread
    @work(thread=True, exclusive=True, group="reader")
    def _reader(self) -> None:
        last_status = 0.0
        t_cpu = time.thread_time()
        while not self._stop.is_set():
            self.reader_cpu = time.thread_time() - t_cpu  # for the benchmark
            now = time.monotonic()
            if now - last_status >= self.STATUS_PERIOD:
                last_status = now
                rows = self.feed.poll_status()
                self.post_message(StatusRead(rows))
            batch = self.feed.poll_events()
            if batch is not None:
                self.post_message(EventsRead(batch))
            self._wake.wait(self.EVENT_PERIOD)
            self._wake.clear()

    def sync_once(self) -> None:
        """One reader round on the calling (UI) thread: for tests and snapshots (live=False)."""
        self.on_status_read(StatusRead(self.feed.poll_status()))
        batch = self.feed.poll_events()
        if batch is not None:
            self.on_events_read(EventsRead(batch))
        self._redraw()

    def poll_now(self) -> None:
        """Ask the reader for a round right away (after a selection or a launch)."""
        self._wake.set()

    # ------------------------------------------------------------------ messages
    def on_status_read(self, msg: StatusRead) -> None:
        try:
            self._status_read(msg)
        except NoMatches:  # before the panels are mounted, or while tearing down
            pass

    def _status_read(self, msg: StatusRead) -> None:
        self.status_polls += 1
        self.rows = {r.path: r for r in msg.rows}
        statuses = {p: s for r in msg.rows for p, s in r.runs}
        changed = statuses != self.statuses or list(self.rows) != self._row_order
        self.statuses = statuses
        self._row_order = list(self.rows)
        if changed:  # a quiet runs folder costs the UI thread nothing
            self._q(Sidebar).set_experiments(msg.rows)
        if not self._opened and msg.rows:
            self._opened = True
            if self.experiment is None and self._pending is None:
                self._open(first_experiment(msg.rows))
        gone = [p for p in self.pins if p not in statuses]
        if gone:  # a pinned run deleted (heur rm): unpin it
            self.pins = [p for p in self.pins if p not in gone]
            self._q(Sidebar).set_pinned(self.pins)
            if self.experiment is not None and self.experiment in self.rows:
                self._show(self.experiment, self.focus_run)
        if self.experiment is not None:
            row = self.rows.get(self.experiment)
            if row is None:  # deleted while shown
                self._show(None, None)
            elif [p for p, _ in row.runs] != self.run_paths:
                self._show(self.experiment, self.focus_run)
        if self._launched is not None and self._launched in self.rows:
            # a launch from the TUI: show it with the cursor on it (a pending selection would be
            # overwritten by the highlight the new node's insertion moves)
            launched, self._launched = self._launched, None
            self._open(launched)
        if self._pending is not None:
            self._apply_pending()
        if changed:
            self._update_info()

    def on_events_read(self, msg: EventsRead) -> None:
        b = msg.batch
        if b.generation != self.generation:
            return  # for a selection that is gone
        for run, segs in b.segments.items():
            d = self.data.get(run)
            if d is not None:
                d.apply(segs)
        for run, text in b.logs.items():
            self.logs[run] = text
            self._drawn.pop("log", None)

    # ------------------------------------------------------------------ selection
    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        data = event.node.data
        if isinstance(data, ExperimentNode):
            self._pending = (data.path, None)
        elif isinstance(data, RunNode):
            self._pending = (data.experiment, data.path)
        elif isinstance(data, PresetNode):
            p = data.info
            self._q("#info", Static).update(
                Text(f"{p.rel}: {p.description or p.error or ''}  (n: launch)", overflow="ellipsis", no_wrap=True)
            )
            return
        elif self._pending is None:  # a heading: the legend (or the hint) again, not a preset's text
            self._update_info()
            return
        self._apply_pending()

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        if isinstance(event.node.data, PresetNode):
            self.action_launch()

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        exp, run = self._pending
        if exp not in self.rows:
            return  # not listed yet: try again on the next status poll
        self._pending = None
        if exp != self.experiment:
            self._show(exp, run)
        elif run != self.focus_run:
            self.focus_run = run
            self._invalidate()

    def _open(self, exp: Path) -> None:
        """Show ``exp`` with the sidebar's cursor on it (the first screen: how are my runs doing)."""
        self._pending = (exp, None)
        self._q(Sidebar).select_path(exp)
        self._apply_pending()

    def _show(self, exp: Path | None, run: Path | None) -> None:
        """Follow an experiment's runs, reading their events from the start."""
        row = self.rows.get(exp) if exp is not None else None
        paths = [p for p, _ in row.runs] if row else []
        if exp != self.experiment:
            self.group_key = None  # another experiment's grid keys
        self.experiment = exp if row else None
        self.run_paths = paths
        followed = paths + [p for p in self.pins if p not in paths]
        self.data = {p: RunData(p.name) for p in followed}
        self.logs = {}
        self.focus_run = run if run in paths else None
        self.configs = {p: c for p in followed if (c := read_flat_config(p)) is not None}
        self.grid_keys = read_grid_keys(exp) if exp is not None else []
        self.generation = self.feed.follow(followed)
        self._show_conn_tab(any(_task(p) in CONN_TASKS for p in paths))
        self._invalidate()
        self.poll_now()

    def _show_conn_tab(self, show: bool) -> None:
        """The Conn tab appears for experiments with a curve or plane run, and only for them."""
        tabs = self._q(TabbedContent)
        if show:
            tabs.show_tab("conn")
        else:
            if tabs.active == "conn":
                tabs.active = "loss"
            tabs.hide_tab("conn")
        self.conn_shown = show

    def pinned_label(self, run: Path) -> str:
        """A pinned run of another experiment: ``experiment HH:MM/run`` (of the shown one: its name)."""
        if run.parent == self.experiment:
            return run.name
        row = self.rows.get(run.parent)
        exp = f"{row.name} {stamp(row.created)}" if row else run.parent.name
        return f"{exp}/{run.name}"

    def shown_runs(self) -> list[Shown]:
        """The experiment's runs (or the focused one), then the pinned runs of other experiments:
        those stay on screen whatever is selected (a baseline), in colours after the experiment's."""
        out = []
        for i, p in enumerate(self.run_paths):
            if self.focus_run is None or p == self.focus_run or p in self.pins:
                d = self.data.get(p)
                if d is not None:
                    out.append(Shown(p.name, d, i))
        for k, p in enumerate(p for p in self.pins if p not in self.run_paths):
            d = self.data.get(p)
            if d is not None:
                out.append(Shown(self.pinned_label(p), d, len(self.run_paths) + k))
        return out

    def shown_groups(self, shown: list[Shown]) -> list[groups.Group] | None:
        if self.group_key is None or len(shown) < 2:
            return None
        by_name = {s.name: s for s in shown}
        configs = {}
        for p, c in self.configs.items():
            name = p.name if p.parent == self.experiment else self.pinned_label(p)
            if name in by_name:
                configs[name] = c
        return groups.group_runs(shown, configs, self.group_key)

    def build(self, tab: str, shown: list[Shown], width: int) -> Any:
        """The figure of a plot panel: one line a run, or a mean ± sd band a group."""
        gs = self.shown_groups(shown)
        if gs is None:
            return PLOT_TABS[tab](shown, self.view, width)
        what = "seeds" if self.group_key == groups.SEED else f"runs of one {self.group_key}"
        return groups.grouped_figure(PLOT_TABS[tab], gs, self.view, width, what)

    def focused_run(self) -> Path | None:
        if self.focus_run is not None:
            return self.focus_run
        return self.run_paths[0] if self.run_paths else None

    # ------------------------------------------------------------------ drawing
    def _invalidate(self) -> None:
        self._drawn.clear()
        self._update_info()

    def legend_entries(self) -> list[tuple[int, str, Text]]:
        """(colour index, name, state badge) of each line on the plots: a run, a pinned run (⊙) or
        a group of runs (its size)."""
        shown = self.shown_runs()
        gs = self.shown_groups(shown)
        if gs is not None:
            out = []
            for g in gs:
                states = [self.statuses.get(self._path_of(m.name)) for m in g.members]
                out.append((g.index, f"{g.label} ({len(g.members)})", experiment_badge(states)))
            return out
        entries = []
        for s in shown:
            path = self._path_of(s.name)
            pinned = path in self.pins
            entries.append((not pinned, (s.index, ("⊙ " if pinned else "") + s.name, badge(self.statuses.get(path)))))
        # pinned runs first: a baseline stays in the legend when the others are cut to "+N more"
        return [e for _, e in sorted(entries, key=lambda e: e[0])]

    def _path_of(self, name: str) -> Path | None:
        for p in self.data:
            if (p.name if p.parent == self.experiment else self.pinned_label(p)) == name:
                return p
        return None

    def _update_info(self) -> None:
        """The legend: each line's colour, name and live state, in at most three lines; when they
        do not fit, the names alone, then as many as fit and how many more (L lists them all)."""
        info = self._q("#info", Static)
        if self.experiment is None:
            info.update(Text("select an experiment (↑↓), launch a preset (n), help (?)", style="dim"))
            return
        v = self.view
        opts = [f"x={v.xaxis}"] + (["log"] if v.ylog else []) + ([f"smooth={v.smoothing:g}"] if v.smoothing else [])
        if self.group_key is not None:
            opts.append("group=" + ("seeds" if self.group_key == groups.SEED else self.group_key))
        tail = Text("  · " + " ".join(opts), style="dim")
        width = max(20, (info.size.width or self.size.width - 32) - 2)
        info.update(legend_text(self.legend_entries(), tail, width, lines=3))

    def _redraw(self) -> None:
        """(timer) Rebuild the visible panel if anything it shows changed."""
        try:
            self._redraw_visible()
        except NoMatches:  # the screen is being torn down
            pass

    def _redraw_visible(self) -> None:
        tabs = self._q(TabbedContent)
        tab = tabs.active
        shown = self.shown_runs()
        versions = tuple((s.name, s.data.version) for s in shown)
        key: tuple = (self.experiment, self.focus_run, versions, self.view.xaxis, self.view.ylog, self.view.smoothing)
        key += (self.group_key, tuple(self.pins))
        if tab in PLOT_TABS:
            plot = self._q(f"#plot-{tab}", PlotView)
            key += (plot.size.width, plot.size.height)
            old = self._drawn.get(tab)
            if (
                old is not None
                and old != key
                and self._only_data_changed(old, key)
                and time.monotonic() - plot.drawn_at < plot.cost / self.MAX_DUTY
            ):
                return  # live data on a costly plot: redraw less often (CPU stays < MAX_DUTY)

            def draw() -> None:
                plot.figure = self.build(tab, shown, self._plot_width(plot)) if self.experiment else None
        elif tab == "cat":
            plot = self._q("#plot-cat", PlotView)
            key += (plot.size.width,)

            def draw() -> None:
                self._draw_catapult(shown, plot)
        elif tab == "cca":
            run = self.focused_run()
            d = self.data.get(run) if run else None
            cca = d.items["cca"] if d else []
            # the CCA events, not every train event (a resume re-emits the same steps' values)
            key = (run, len(cca), cca[-1].get("step") if cca else None, self.size.width)
            key += (len(d.items["compare"]) if d else 0,)  # a compare run's pairs (the distillation panel)

            def draw() -> None:
                self._draw_cca(run, d)
        elif tab == "conn":
            key += (self._q("#plot-curve-loss", PlotView).size.width, self.size.width)

            def draw() -> None:
                self._draw_conn(shown)
        elif tab == "log":
            run = self.focused_run()
            text = self.logs.get(run) if run else None
            key = (run, id(text))

            def draw() -> None:
                self._draw_log(run, text)
        elif tab == "config":
            run = self.focused_run()
            key = (run,)

            def draw() -> None:
                self._draw_config(run)
        else:
            return
        if self._drawn.get(tab) == key:
            return
        self._drawn[tab] = key
        draw()
        self.redraws += 1

    def _draw_log(self, run: Path | None, text: str | None) -> None:
        log = self._q(Log)
        log.clear()
        if run is None:
            log.write_line("no run selected")
        else:
            log.write(text if text else f"{run / 'stdout.log'} is empty: the run has printed nothing yet")

    @staticmethod
    def _only_data_changed(old: tuple, new: tuple) -> bool:
        """Same panel, view and size; only the runs' data versions moved (index 2)."""
        return old[:2] == new[:2] and old[3:] == new[3:]

    @staticmethod
    def _plot_width(plot: PlotView) -> int:
        return max(20, plot.size.width - 8)  # minus the y tick labels

    def _draw_catapult(self, shown: list[Shown], plot: PlotView) -> None:
        rows = panels.catapult_rows(shown)
        fig = panels.loss_figure(shown, self.view, self._plot_width(plot), test=False)
        fig.title = "loss with catapult peaks ▲"
        plot.figure = fig if self.experiment else None
        t = Text()
        for line in panels.regime_lines(shown):
            t.append(line + "\n")
        if rows:
            t.append(f"{'run':<14} {'start':>7} {'peak':>7} {'end':>7} {'ratio':>6}\n", style="bold")
            for r in rows:
                t.append(f"{r[0][:14]:<14} {r[1]:>7} {r[2]:>7} {r[3]:>7} {r[4]:>6}\n")
        else:
            t.append(
                "no catapult events: none detected yet, or [probes.catapult] is off ([probes.ntk] gives λ0)\n",
                style="dim",
            )
        self._q("#cat-text", Static).update(t)

    def _draw_cca(self, run: Path | None, d: RunData | None) -> None:
        box = self._q("#cca-text", Static)
        if d is not None and run is not None and d.items["compare"]:  # a compare run: the distillation panel
            evs = distill.latest_pairs(d.items["compare"])
            flags = [distill.is_distilled(run.parent, e.get("b")) for e in evs]
            width = self._q(TabbedContent).size.width - 2
            box.update(distill.render(evs, flags, width, f"{run.name}: each layer's closeness to {evs[0].get('a')}"))
            return
        live = panels.cca_matrix(d) if d is not None else None
        final = panels.cca_final(d) if d is not None else None
        if live is None and final is None:
            box.update(Text("no CCA events yet — enable [probes.cca]", style="dim"))
            return
        width = self._q(TabbedContent).size.width - 2
        out = Text()
        for m, vs in ((live, "the previous snapshot"), (final, "the final epoch")):
            if m is not None:
                layers, epochs, mat, last = m
                title = f"{run.name}: {last.get('method', 'cca')} similarity of each layer vs {vs}"
                if out:
                    out.append("\n\n")
                out.append_text(heatmap.render(layers, epochs, mat, width, title))
        if final is not None:
            out.append("\n" + settle_text(final[0], final[1], final[2]))
        box.update(out)

    def _draw_conn(self, shown: list[Shown]) -> None:
        """Curve runs: train loss and test error against t, curve beside line; plane runs: the
        grid's train loss and test error with the points marked (heur.figures.connect)."""
        figs = connect.curve_figures(shown)
        for pid, fig in zip(("#plot-curve-loss", "#plot-curve-err"), figs + [None, None]):
            plot = self._q(pid, PlotView)
            plot.display = fig is not None
            plot.figure = fig
        width = self._q(TabbedContent).size.width - 5  # the padding and the scroll bar
        out = Text(no_wrap=True, overflow="crop")
        for r in shown:
            for h in connect.plane_heatmaps(r):
                if out:
                    out.append("\n\n")
                out.append_text(heatmap.render_grid(h, width))
        if not out and not figs:
            tasks = {_task(self.run_paths[r.index]) for r in shown if r.index < len(self.run_paths)}
            out = Text(
                "no curve points yet: a curve run evaluates its curve and the line after training"
                if "curve" in tasks
                else "no plane points yet"
                if "plane" in tasks
                else "no curve or plane run shown (r: all runs)",
                style="dim",
            )
        self._q("#plane-text", Static).update(out)

    def _draw_config(self, run: Path | None) -> None:
        box = self._q("#config-text", Static)
        if run is None:
            box.update(Text("no run selected", style="dim"))
            return
        try:
            text = (run / "config.toml").read_text()
        except OSError as e:
            box.update(Text(f"cannot read {run / 'config.toml'}: {e.strerror}", style="dim"))
            return
        self.config_text = text
        box.update(
            Syntax(
                text,
                "toml",
                theme="ansi_dark" if self.current_theme.dark else "ansi_light",
                background_color="default",
                word_wrap=True,
            )
        )

    # ------------------------------------------------------------------ system panel
    def _sample_system(self) -> None:
        """(timer) One sample of CPU, memory and GPUs while the system panel is shown."""
        try:
            if self._q(TabbedContent).active != "sys":
                return
        except NoMatches:
            return
        if self.sampler is None:
            from heur.core.system import Sampler

            self.sampler = Sampler()
        self.system_sample = self.sampler.sample()
        self._q("#sys-text", Static).update(system.render(self.system_sample, self._q(TabbedContent).size.width - 2))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "sys":
            self._sample_system()  # at once, not a second later

    # ------------------------------------------------------------------ toasts
    def notify(self, message: str, **kw: Any) -> None:  # type: ignore[override]
        """A toast, held back while a dialog is open (it would cover the dialog at 80×24) and
        shown when the dialog closes."""
        if self._main_screen is not None and self.screen is not self._main_screen:
            self._deferred_toasts.append((message, kw))
            return
        super().notify(message, **kw)

    def push_screen(self, screen: Any, *a: Any, **kw: Any) -> Any:  # type: ignore[override]
        self.clear_notifications()  # a toast on screen when a dialog opens would cover it
        return super().push_screen(screen, *a, **kw)

    def _flush_toasts(self) -> None:
        pending, self._deferred_toasts = self._deferred_toasts, []
        for message, kw in pending:
            self.notify(message, **kw)

    def pop_screen(self) -> Any:  # type: ignore[override]
        done = super().pop_screen()
        self.call_after_refresh(self._flush_toasts_when_back)  # a dialog closed: its held-back toasts
        return done

    def _flush_toasts_when_back(self) -> None:
        if self.screen is self._main_screen and self._deferred_toasts:
            self._flush_toasts()

    # ------------------------------------------------------------------ actions
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_tab(self, tid: str) -> None:
        if tid == "conn" and not self.conn_shown:
            return
        self._q(TabbedContent).active = tid

    def _step_tab(self, d: int) -> None:
        tc = self._q(TabbedContent)
        ids = [t for t, _ in TABS if t != "conn" or self.conn_shown]
        tc.active = ids[(ids.index(tc.active) + d) % len(ids)]

    def action_prev_tab(self) -> None:
        self._step_tab(-1)

    def action_next_tab(self) -> None:
        self._step_tab(1)

    def action_toggle_log(self) -> None:
        self.view.ylog = not self.view.ylog
        self._invalidate()

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING.index(self.view.smoothing) if self.view.smoothing in SMOOTHING else 0
        self.view.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self._invalidate()

    def action_cycle_xaxis(self) -> None:
        i = panels.XAXES.index(self.view.xaxis)
        self.view.xaxis = panels.XAXES[(i + 1) % len(panels.XAXES)]
        self._invalidate()

    def action_cycle_focus(self) -> None:
        if not self.run_paths:
            return
        order: list[Path | None] = [None, *self.run_paths] if len(self.run_paths) > 1 else [None]
        i = order.index(self.focus_run) if self.focus_run in order else 0
        self.focus_run = order[(i + 1) % len(order)]
        self._invalidate()

    def action_toggle_sidebar(self) -> None:
        self._q(Sidebar).toggle_class("hidden")
        self._invalidate()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"
        self._invalidate()

    def _highlighted(self) -> Any:
        node = self._q(Sidebar).cursor_node
        return node.data if node is not None else None

    def action_launch(self) -> None:
        data = self._highlighted()
        if not isinstance(data, PresetNode):
            self.notify("highlight a preset in the sidebar first", severity="warning")
            return

        def done(exp_dir: Path | None) -> None:
            if exp_dir is None:
                return
            self.notify(f"launched {Path(exp_dir).name}")
            self._launched = Path(exp_dir)
            self.poll_now()

        self.push_screen(LaunchScreen(data.info, self.source.validate, self.source.launch), done)

    def action_stop(self) -> None:
        data = self._highlighted()
        if isinstance(data, RunNode):
            target, what, fn = data.path, f"run {data.path.name}", self.source.stop_run
        elif isinstance(data, ExperimentNode):
            target, what, fn = data.path, f"every run of {data.path.name}", self.source.stop_experiment
        else:
            self.notify("highlight a run or an experiment to stop", severity="warning")
            return

        def done(ok: bool | None) -> None:
            if not ok:
                return
            try:
                sent = fn(target)
            except Exception as e:  # a vanished directory, a permission problem
                self.notify(f"could not stop {what}: {e}", severity="error")
                return
            if not sent:
                self.notify(f"{what} was not running", severity="warning")
            else:
                self.notify(f"stop sent to {what}")
            self.poll_now()

        self.push_screen(ConfirmScreen(f"Stop {what}? It checkpoints and ends 'stopped'."), done)

    def action_resume(self) -> None:
        """Resume the highlighted run (failed and diverged ones too: you pointed at it) or the
        unfinished runs of the highlighted experiment, as ``heur run --resume`` does."""
        data = self._highlighted()
        if isinstance(data, RunNode):
            target, what, rerun = data.path, f"run {data.path.name}", True
        elif isinstance(data, ExperimentNode):
            target, what, rerun = data.path, f"the unfinished runs of {data.path.name}", False
        else:
            self.notify("highlight a run or an experiment to resume", severity="warning")
            return

        def done(ok: bool | None) -> None:
            if ok:
                self._resume(target, what, rerun)

        self.push_screen(ConfirmScreen(f"Resume {what} from the last checkpoint?"), done)

    @work(thread=True, group="resume")
    def _resume(self, target: Path, what: str, rerun: bool) -> None:
        try:  # may wait for a supervisor that is ending: off the UI thread
            queued, left = self.source.resume(target, rerun)
        except Exception as e:  # ConfigError: a live run, another supervisor
            msg = getattr(e, "message", None) or str(e)
            self.call_from_thread(self.notify, f"cannot resume {what}: {msg}", severity="error", timeout=8)
            return
        if queued:
            note = f"resuming {', '.join(queued)}" + (
                f"; left {', '.join(left)} (R on the run reruns it)" if left else ""
            )
            self.call_from_thread(self.notify, note)
        else:
            why = f"left {', '.join(left)}: highlight the run and press R" if left else "every run completed"
            self.call_from_thread(self.notify, f"nothing to resume ({why})", severity="warning", timeout=8)
        self.poll_now()

    def action_relaunch(self) -> None:
        """Launch the highlighted experiment's settings again as a new experiment (the highlighted
        run alone, with the runs it starts from), overrides editable first."""
        data = self._highlighted()
        if isinstance(data, RunNode):
            exp_dir, only = data.experiment, [data.path.name]
        elif isinstance(data, ExperimentNode):
            exp_dir, only = data.path, None
        else:
            self.notify("highlight a run or an experiment to launch again", severity="warning")
            return
        row = self.rows.get(exp_dir)
        name = row.name if row else exp_dir.name
        info = PresetInfo(
            exp_dir / "experiment.toml",
            f"{exp_dir.name}/experiment.toml",
            name + (f" ({only[0]})" if only else ""),
            "its settings again, as a new experiment"
            + (f": run {only[0]} and the runs it starts from" if only else ""),
        )

        def done(new_dir: Path | None) -> None:
            if new_dir is not None:
                self.notify(f"launched {Path(new_dir).name}")
                self._launched = Path(new_dir)
                self.poll_now()

        self.push_screen(
            LaunchScreen(
                info,
                lambda _p, ov: self.source.validate_again(exp_dir, ov, only),
                lambda _p, ov: self.source.relaunch(exp_dir, ov, only),
                title=f"Launch again: {name}",
            ),
            done,
        )

    def action_pin(self) -> None:
        """Pin the highlighted run: it stays on the plots whatever experiment is shown (a baseline
        to compare with); again to unpin."""
        data = self._highlighted()
        if not isinstance(data, RunNode):
            self.notify("highlight a run to pin it", severity="warning")
            return
        if data.path in self.pins:
            self.pins.remove(data.path)
        else:
            self.pins.append(data.path)
        self._q(Sidebar).set_pinned(self.pins)
        self.notify(f"pinned: {', '.join(self.pinned_label(p) for p in self.pins) or 'none'}")
        if self.experiment is not None:
            self._show(self.experiment, self.focus_run)

    def action_cycle_group(self) -> None:
        """Lines → groups of seeds (everything but the seed equal) → by each grid key → lines."""
        order: list[str | None] = [None, groups.SEED] + [k for k in self.grid_keys if k != groups.SEED]
        i = order.index(self.group_key) if self.group_key in order else 0
        self.group_key = order[(i + 1) % len(order)]
        self._invalidate()

    def action_legend(self) -> None:
        t = Text()
        for idx, name, state in self.legend_entries():
            t.append("■ ", style=rich_color(idx))
            t.append(name + " ")
            t.append_text(state)
            t.append("\n")
        t.rstrip()
        self.push_screen(InfoScreen("Legend", t if t else Text("nothing shown", style="dim"), copied=False))

    def action_mark(self) -> None:
        data = self._highlighted()
        if not isinstance(data, RunNode):
            self.notify("highlight a run to mark it", severity="warning")
            return
        sb = self._q(Sidebar)
        sb.toggle_mark(data.path)
        self.notify(f"marked: {', '.join(p.name for p in sb.marked) or 'none'}")

    def action_compare(self) -> None:
        marked = self._q(Sidebar).marked
        if len(marked) != 2:
            self.notify("mark two runs with m first", severity="warning")
            return
        cmd = "heur compare " + " ".join(str(final_checkpoint(p)) for p in marked)
        self.copy_to_clipboard(cmd)
        self.push_screen(InfoScreen("Compare the two marked runs:", cmd))

    def action_report(self) -> None:
        """Write the report of the experiment on screen (heur report, with the view's x axis, log
        scale and smoothing) in a thread; a toast gives the path, also copied to the clipboard."""
        exp = self.experiment
        if exp is None:
            self.notify("open an experiment first", severity="warning")
            return
        self.notify(f"writing the report of {exp.name} …")
        self._write_report(exp, View(self.view.xaxis, self.view.ylog, self.view.smoothing))

    @work(thread=True, exclusive=True, group="report")
    def _write_report(self, exp: Path, view: View) -> None:
        from heur.core.errors import ConfigError
        from heur.report.page import Options, write_report

        try:
            w = write_report(exp, None, Options(xaxis=view.xaxis, ylog=view.ylog, smoothing=view.smoothing))
        except (ConfigError, OSError) as e:
            self.call_from_thread(self.notify, f"no report: {e}", severity="error")
            return
        self.call_from_thread(self._report_written, w.html)

    def _report_written(self, html: Path) -> None:
        self.last_report = html
        self.copy_to_clipboard(str(html))
        self.notify(f"report written: {html}", timeout=12)

    def action_show_path(self) -> None:
        data = self._highlighted()
        path = getattr(data, "path", None)
        if path is None:
            self.notify("highlight a run or an experiment", severity="warning")
            return
        self.copy_to_clipboard(str(path))
        self.push_screen(InfoScreen("Directory:", str(path)))


def legend_text(entries: list[tuple[int, str, Text]], tail: Text, width: int, lines: int = 3) -> Text:
    """The legend in ``lines`` lines of ``width``: every entry with its state if that fits, else
    the names alone, else the first ones and "+N more (L: all)"."""

    def build(with_state: bool, upto: int) -> Text:
        t = Text()
        for idx, name, state in entries[:upto]:
            if t:
                t.append("  ")
            t.append("■ ", style=rich_color(idx))
            t.append(name)
            if with_state:
                t.append(" ")
                t.append_text(state)
        if upto < len(entries):
            t.append(f"  +{len(entries) - upto} more (L: all)", style="bold")
        t.append_text(tail)
        return t

    def fits(t: Text) -> bool:
        return len(t.wrap(_CONSOLE, width)) <= lines

    for with_state in (True, False):
        t = build(with_state, len(entries))
        if fits(t):
            return t
    k = len(entries)
    while k > 1 and not fits(build(False, k)):
        k -= 1
    return build(False, k)


def read_flat_config(run: Path) -> dict[str, Any] | None:
    """A run's config.toml as dotted keys (None when unreadable), for grouping."""
    import tomllib

    try:
        return groups.flatten(tomllib.loads((run / "config.toml").read_text()))
    except (OSError, ValueError):
        return None


def read_grid_keys(exp: Path) -> list[str]:
    """The dotted keys of an experiment's [grid] (its experiment.toml), in order."""
    import tomllib

    try:
        grid = tomllib.loads((exp / "experiment.toml").read_text()).get("grid") or {}
    except (OSError, ValueError):
        return []
    return [str(k) for k in grid]


def settle_text(layers: list[str], epochs: list[float], mat: Any) -> str:
    """When the deeper and the shallower layers settle (mean similarity to the final epoch at
    0.9 or above from then on, core.probes.cca), as ``heur run``'s summary says it: "never" when
    only the final epoch itself reaches it."""
    from heur.core.probes.cca import SETTLE_THRESHOLD, layer_groups, settle_epoch

    rows = [[None if v != v else float(v) for v in row] for row in mat.tolist()]
    shallow, deep = layer_groups(layers)
    parts = []
    for name, group in (("deeper", deep), ("shallower", shallow)):
        e = settle_epoch(list(epochs), rows, group)
        parts.append(f"{name} layers settle: " + ("never" if e >= epochs[-1] else f"epoch {e:g}"))
    return "; ".join(parts) + f"  (similarity to the final epoch ≥ {SETTLE_THRESHOLD:g} from then on)"


def final_checkpoint(run: Path) -> Path:
    """``<run>/checkpoints/final.pt`` (or ``<run>/final.pt`` where that is what exists)."""
    p = run / "checkpoints" / "final.pt"
    if not p.exists() and (run / "final.pt").exists():
        return run / "final.pt"
    return p
