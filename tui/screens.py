"""Modal screens: help, launch a preset, confirm, show a command."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from .presets import PresetInfo

HELP_ROWS = [
    ("Navigation", ""),
    ("↑ ↓ / j k", "move in the sidebar (highlight shows the experiment or run)"),
    ("enter / space", "expand an experiment; on a preset: launch it"),
    ("tab / shift+tab", "move focus between sidebar and panels"),
    ("1 … 9", "panels: loss, accuracy, lr, sharpness, catapult, CCA, log, config, system"),
    ("0", "curve and plane runs: the curve beside the line, the plane's heatmap"),
    ("[ ]", "previous / next panel"),
    ("b", "hide / show the sidebar"),
    ("View", ""),
    ("l", "log scale on/off (loss, lr, sharpness)"),
    ("s", "smoothing: off → 0.6 → 0.9 → 0.99"),
    ("x", "x axis: step → examples seen → epoch"),
    ("r", "focus: all runs overlaid → one run → the next …"),
    ("g", "group: lines → seeds as mean ± sd (all but the seed equal) → by each grid key"),
    ("L", "the legend of every line (when they do not all fit above the plot)"),
    ("t", "dark / light colours"),
    ("Runs", ""),
    ("n", "launch the highlighted preset (edit overrides first)"),
    ("X", "stop the highlighted run or experiment (asks first)"),
    ("R", "resume it from its last checkpoint (a failed run too)"),
    ("N", "launch its settings again as a new experiment"),
    ("P", "pin a run: it stays on the plots of every experiment (a baseline)"),
    ("m", "mark a run for comparison (two at most)"),
    ("c", "show (and copy) `heur compare` for the two marked runs"),
    ("p", "show (and copy) the highlighted run's directory"),
    ("w", "write the experiment's report (HTML + figures; heur report) and show its path"),
    ("?", "this help"),
    ("q", "quit (runs keep running)"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold", no_wrap=True)
        t.add_column()
        for k, v in HELP_ROWS:
            if not v:
                t.add_row(Text(k, style="underline"), "")
            else:
                t.add_row(k, v)
        with VerticalScroll():
            yield Static(Text("heur tui — keys   (esc closes)", style="bold"))
            yield Static(t, id="help-table")

    def action_dismiss(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "yes", "yes"), Binding("n,escape", "no", "no")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static { width: 60; max-width: 100%; border: round $warning;
        background: $surface; padding: 1 2; }
    """

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(Text(self.question + "\n\n[y] yes   [n] no"))

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class InfoScreen(ModalScreen[None]):
    """Shows a text to copy (e.g. a command; it was also sent to the clipboard via OSC 52) or to
    read (the legend of every run): a long one scrolls."""

    BINDINGS = [Binding("escape,enter,q", "close", "close")]
    DEFAULT_CSS = """
    InfoScreen { align: center middle; }
    InfoScreen > Vertical { width: 90%; height: auto; max-height: 100%; border: round $accent;
        background: $surface; padding: 0 1; }
    InfoScreen VerticalScroll { height: auto; max-height: 100%; }
    InfoScreen #info-body { color: $text; }
    """

    def __init__(self, title: str, body: str | Text, copied: bool = True):
        super().__init__()
        self.title_text = title
        self.body = body
        self.copied = copied

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            with VerticalScroll():
                yield Static(self.body if isinstance(self.body, Text) else Text(self.body), id="info-body")
            hint = (
                "copied to the clipboard if your terminal allows OSC 52 · esc closes" if self.copied else "esc closes"
            )
            yield Static(Text(hint, style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)


EXAMPLE = "seed=1 device=cpu"  # valid for every preset (a test launches each bundled one with it)


class LaunchScreen(ModalScreen[Path | None]):
    """Edit overrides for a preset; validated as you type (in a thread: the engine's checks may
    import torch); enter launches (also in a thread), esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen > Vertical { width: 90%; max-width: 110; height: auto; border: round $accent;
        background: $surface; padding: 0 1; }
    LaunchScreen #launch-check { height: auto; min-height: 2; }
    LaunchScreen .error { color: $error; }
    LaunchScreen .ok { color: $success; }
    LaunchScreen .busy { color: $text-muted; }
    """

    def __init__(
        self,
        preset: PresetInfo,
        validate: Callable[[Path, list[str]], Any],
        launch: Callable[[Path, list[str]], Path],
        title: str | None = None,
    ):
        super().__init__()
        self.title_text = title or f"Launch {preset.name}"
        self.preset = preset
        self._validate = validate
        self._launch = launch
        self.valid = False
        self.message = ""
        self.checked: str | None = None  # the text the current verdict is about
        self.launching = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            yield Static(Text(f"{self.preset.rel}  {self.preset.description}", style="dim"))
            yield Static(f"overrides, e.g.  {EXAMPLE}  (enter launches, esc cancels)")
            yield Input(placeholder="key=value key=value …", id="launch-overrides")
            yield Static("", id="launch-check")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._request_check("")

    @staticmethod
    def overrides(text: str) -> list[str]:
        try:
            return shlex.split(text)
        except ValueError:
            return text.split()

    @staticmethod
    def describe_error(e: Exception) -> str:
        """ConfigError without its file (the preset is named above): 'key: message'."""
        msg = getattr(e, "message", None)
        key = getattr(e, "key", None)
        return f"{key}: {msg}" if key and msg else (msg or str(e))

    def _set(self, text: str, style: str) -> None:
        box = self.query_one("#launch-check", Static)
        box.update(Text(text))
        box.set_classes(style)

    def _request_check(self, text: str) -> None:
        self.valid, self.checked = False, None
        self._set("checking …", "busy")
        self._check(text)

    @work(thread=True, exclusive=True, group="launch-check")
    def _check(self, text: str) -> None:
        try:
            exp = self._validate(self.preset.path, self.overrides(text))
        except Exception as e:  # ConfigError, or anything the preset makes the engine raise
            verdict = (False, self.describe_error(e))
        else:
            names = list(getattr(exp, "runs", {}) or {})
            shown = ", ".join(names[:6]) + (" …" if len(names) > 6 else "")
            verdict = (True, f"ok: {len(names)} run{'s' if len(names) != 1 else ''}: {shown}")
        self.app.call_from_thread(self._checked, text, *verdict)

    def _checked(self, text: str, ok: bool, message: str) -> None:
        if not self.is_attached or text != self.query_one(Input).value:
            return  # stale: the user typed on
        self.valid, self.message, self.checked = ok, message, text
        self._set(message, "ok" if ok else "error")

    def on_input_changed(self, event: Input.Changed) -> None:
        self._request_check(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.launching or not self.valid or self.checked != event.value:
            if self.checked != event.value:
                self.app.bell()
            return
        self.launching = True
        self._set("launching …", "busy")
        self._do_launch(event.value)

    @work(thread=True, exclusive=True, group="launch")
    def _do_launch(self, text: str) -> None:
        try:
            exp_dir = self._launch(self.preset.path, self.overrides(text))
        except Exception as e:
            self.app.call_from_thread(self._launch_failed, self.describe_error(e))
            return
        self.app.call_from_thread(self.dismiss, exp_dir)

    def _launch_failed(self, message: str) -> None:
        self.launching = False
        self.valid, self.message = False, f"launch failed: {message}"
        self._set(self.message, "error")

    def action_cancel(self) -> None:
        self.dismiss(None)
