"""Snapshots of the main screens over fixture run dirs (fixed times, no live clock, UTC).

Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time

import pytest
from fixtures_tui import RecordingSource, make_presets, make_runs

from heur.tui.app import HeurApp
from heur.tui.sidebar import Sidebar


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _app(tmp_path):
    runs = make_runs(tmp_path / "runs")
    make_presets(tmp_path / "presets")
    app = HeurApp(tmp_path / "runs", tmp_path / "presets", source=RecordingSource(tmp_path / "runs"), live=False)
    return app, runs


def _select(app, runs, key, run=None):
    async def before(pilot):
        app.sync_once()
        await pilot.pause()
        app.query_one(Sidebar).select_path(runs[key])
        await pilot.pause()
        await pilot.pause()
        app.sync_once()
        await pilot.pause()
        app.sync_once()  # the log tail arrives on the second round after following
        await pilot.pause()

    return before


def test_snapshot_loss_80x24(tmp_path, utc, snap_compare):
    app, runs = _app(tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_select(app, runs, "catapult"))


def test_snapshot_sharpness_single_run(tmp_path, utc, snap_compare):
    app, runs = _app(tmp_path)
    assert snap_compare(app, terminal_size=(100, 30), press=["4"], run_before=_select(app, runs, "cat"))


def test_snapshot_catapult_and_cca(tmp_path, utc, snap_compare):
    app, runs = _app(tmp_path)
    assert snap_compare(app, terminal_size=(120, 36), press=["6"], run_before=_select(app, runs, "cat"))


def test_snapshot_empty_probe_panel_light(tmp_path, utc, snap_compare):
    app, runs = _app(tmp_path)

    async def before(pilot):
        app.theme = "textual-light"
        await _select(app, runs, "warmup")(pilot)

    assert snap_compare(app, terminal_size=(100, 30), press=["4"], run_before=before)


def test_snapshot_help(tmp_path, utc, snap_compare):
    app, runs = _app(tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), press=["question_mark"], run_before=_select(app, runs, "catapult"))


def test_snapshot_launch_with_error(tmp_path, utc, snap_compare):
    app, runs = _app(tmp_path)

    async def before(pilot):
        app.sync_once()
        await pilot.pause()
        app.query_one(Sidebar).cursor_line = 0  # the app opened on the most recent experiment
        await pilot.pause()
        for _ in range(2):  # Presets > tiny
            await pilot.press("down")
        await pilot.press("n", *"optim.lr=-1")
        t0 = time.monotonic()
        while app.screen.checked != "optim.lr=-1" and time.monotonic() - t0 < 30:
            await pilot.pause(0.05)

    assert snap_compare(app, terminal_size=(100, 30), run_before=before)
