"""The TUI driven by keys (Textual's Pilot) over fixture run directories."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time

import pytest
from fixtures_tui import RecordingSource, ev, make_presets, make_runs

from heur.core.runs import process_start_time
from heur.tui.app import HeurApp, final_checkpoint
from heur.tui.plotting import PlotView
from heur.tui.screens import ConfirmScreen, HelpScreen, InfoScreen, LaunchScreen
from heur.tui.sidebar import ExperimentNode, PresetNode, RunNode, Sidebar


def sync(fn):
    """Run an async test body with asyncio.run (no pytest async plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        return asyncio.run(fn(*a, **k))

    return wrapper


async def until(pilot, cond, timeout=30.0):  # a wait, not a timing claim: generous for a loaded machine
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        await pilot.pause(0.05)


def make_app(tmp_path, **kw):
    runs = make_runs(tmp_path / "runs")
    make_presets(tmp_path / "presets")
    src = RecordingSource(tmp_path / "runs")
    app = HeurApp(tmp_path / "runs", tmp_path / "presets", source=src, **kw)
    app.EVENT_PERIOD = 0.05
    app.STATUS_PERIOD = 0.2
    return app, runs, src


async def goto(pilot, app, pred):
    """From the top of the sidebar, press down until the highlighted node satisfies pred (the app
    opens with the cursor on the most recent experiment)."""
    sb = app.query_one(Sidebar)
    if not getattr(app, "_opened_seen", False):  # the app's own opening move, once
        await until(pilot, lambda: app.status_polls >= 1)
        if app.rows:  # the first poll opened the most recent experiment: wait for the cursor to get there
            await until(pilot, lambda: sb.cursor_node is not None and isinstance(sb.cursor_node.data, ExperimentNode))
        app._opened_seen = True
    sb.cursor_line = 0
    await pilot.pause()
    for _ in range(40):
        node = sb.cursor_node
        if node is not None and pred(node.data):
            return node.data
        await pilot.press("down")
    raise AssertionError("node not found")


@sync
async def test_navigate_select_experiment_and_loss_fills(tmp_path):
    app, runs, _ = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        data = await goto(pilot, app, lambda d: isinstance(d, ExperimentNode) and d.path == runs["catapult"])
        assert data.name == "catapult_mlp"
        await until(
            pilot, lambda: app.experiment == runs["catapult"] and all(len(d["train"]) for d in app.data.values())
        )
        assert {p.name: len(d["train"]) for p, d in app.data.items()} == {"lr=0.5": 400, "lr=1.5": 400}
        # lazy: only the selected experiment's event files are followed
        assert set(app.feed._readers) == {runs["lazy"], runs["cat"]}
        plot = app.query_one("#plot-loss", PlotView)
        # the figure catches up with the selection on the next redraw tick
        await until(pilot, lambda: plot.figure is not None and any(s.marker == "▲" for s in plot.figure.series))
        lines = [s for s in plot.figure.series if s.kind == "line"]
        assert len({s.color for s in lines}) == 2  # two runs overlaid
        # decimated to the plot's width: one min/max bucket per column (two points at most)
        assert all(len(s.x) <= 2 * plot.size.width for s in lines)
        assert any(s.marker == "▲" for s in plot.figure.series)
        # toggles
        await pilot.press("l")
        await until(pilot, lambda: plot.figure.ylog)
        await pilot.press("x")
        assert app.view.xaxis == "samples"
        await pilot.press("s")
        assert app.view.smoothing == 0.6
        # focus on one run: r cycles all -> first -> second -> all
        await pilot.press("r")
        assert app.focus_run == runs["lazy"]
        await until(pilot, lambda: len({s.color for s in plot.figure.series if s.kind == "line"}) == 1)
        await pilot.press("r", "r")
        assert app.focus_run is None


@sync
async def test_panels_switch_and_show_probe_data_or_hints(tmp_path):
    app, runs, _ = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        await goto(pilot, app, lambda d: isinstance(d, ExperimentNode) and d.path == runs["catapult"])
        await pilot.press("enter")  # expand
        await goto(pilot, app, lambda d: isinstance(d, RunNode) and d.path == runs["cat"])
        await until(pilot, lambda: app.focus_run == runs["cat"] and app.data[runs["cat"]].events > 0)
        await pilot.press("4")
        sharp = app.query_one("#plot-sharp", PlotView)
        await until(pilot, lambda: sharp.figure is not None and sharp.figure.has_data())
        assert any(h.label == "λ0 (NTK)" for h in sharp.figure.hlines)
        await pilot.press("5")
        await until(pilot, lambda: "33" in str(app.query_one("#cat-text").render()))
        await pilot.press("6")
        await until(pilot, lambda: "fc1" in str(app.query_one("#cca-text").render()))
        await pilot.press("7")
        await until(pilot, lambda: any("step 400" in ln for ln in app.query_one("#log-view").lines))
        await pilot.press("8")
        await until(pilot, lambda: "lr = 1.5" in app.config_text)
        # a run without probes: labelled empty panels
        app.query_one(Sidebar).select_path(runs["warmup"])
        await until(pilot, lambda: app.experiment == runs["warmup"])
        await pilot.press("4")
        await until(pilot, lambda: sharp.figure is not None and not sharp.figure.has_data())
        assert "[probes.sharpness]" in sharp.figure.empty
        await pilot.press("6")
        await until(pilot, lambda: "[probes.cca]" in str(app.query_one("#cca-text").render()))


@sync
async def test_help_screen(tmp_path):
    app, _, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause(0.1)
        svg = app.export_screenshot()
        assert "smoothing" in svg and "launch" in svg
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@sync
async def test_live_run_streams_new_events_and_state(tmp_path):
    app, runs, _ = make_app(tmp_path)
    lb = runs["lb"]
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        app.query_one(Sidebar).select_path(lb)
        await until(pilot, lambda: app.focus_run == lb and len(app.data[lb]["train"]) == 150)
        v0 = app.data[lb].version
        with open(lb / "events.jsonl", "a") as f:  # complete the torn line, then more steps
            f.write(',"epoch":3.02,"time":1,"samples":1,"loss":0.5,"lr":0.1,"grad_norm":1}\n')
            for s in range(152, 160):
                f.write(ev("train", s, s / 50, 2, samples=s * 256, loss=0.4, lr=0.1, grad_norm=1) + "\n")
        await until(pilot, lambda: len(app.data[lb]["train"]) == 159)
        assert app.data[lb].version > v0
        st = json.loads((lb / "status.json").read_text())
        st["state"] = "lost"
        (lb / "status.json").write_text(json.dumps(st))
        await until(pilot, lambda: getattr(app.statuses.get(lb), "state", None) == "lost")
        label = app.query_one(Sidebar)._run_nodes[lb].label.plain
        assert "lost" in label


@sync
async def test_experiment_deleted_while_shown(tmp_path):
    import shutil

    app, runs, _ = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        app.query_one(Sidebar).select_path(runs["catapult"])
        await until(pilot, lambda: app.experiment == runs["catapult"])
        shutil.rmtree(runs["catapult"])
        # the node goes; the tree highlights a neighbour, which is then shown
        await until(
            pilot,
            lambda: (
                runs["catapult"] not in app.rows
                and app.experiment != runs["catapult"]
                and runs["catapult"] / "lr=0.5" not in app.data
            ),
        )
        assert runs["catapult"] not in app.query_one(Sidebar)._exp_nodes


@sync
async def test_launch_validates_inline_and_launches(tmp_path):
    app, runs, src = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        await goto(pilot, app, lambda d: isinstance(d, PresetNode) and d.info.name == "tiny")
        await pilot.press("n")
        assert isinstance(app.screen, LaunchScreen)
        scr = app.screen
        await until(pilot, lambda: scr.checked == "")
        assert scr.valid and "1 run" in scr.message
        await pilot.press(*"optim.lr=-1")
        await until(pilot, lambda: scr.checked == "optim.lr=-1")
        assert not scr.valid and scr.message.startswith("optim.lr: expected a number > 0")
        await pilot.press("enter")  # refused while invalid
        assert app.screen is scr and src.launched == []
        for _ in range(2):
            await pilot.press("backspace")
        await pilot.press("0", ".", "5")
        await until(pilot, lambda: scr.checked == "optim.lr=0.5")
        assert scr.valid, scr.message
        # the engine's preflight is part of the check: a probe batch larger than the data
        await pilot.press(*" probes.ntk.batch=512")
        await until(pilot, lambda: scr.checked == "optim.lr=0.5 probes.ntk.batch=512")
        assert not scr.valid and "probes.ntk.batch" in scr.message, scr.message
        for _ in range(len(" probes.ntk.batch=512")):
            await pilot.press("backspace")
        await until(pilot, lambda: scr.checked == "optim.lr=0.5" and scr.valid)
        await pilot.press("enter")
        await until(pilot, lambda: src.launched)
        assert src.launched and src.launched[0][1] == ["optim.lr=0.5"]
        exp = tmp_path / "runs" / "tiny-20261123-120000"
        await until(pilot, lambda: app.experiment == exp and len(app.data[exp / "run"]["train"]) == 100)


@sync
async def test_stop_asks_then_stops(tmp_path):
    app, runs, src = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        app.query_one(Sidebar).select_path(runs["lb"])
        await pilot.pause(0.1)
        await pilot.press("X")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert src.stopped == []
        await pilot.press("X", "y")
        assert src.stopped == [runs["lb"]]
        await until(pilot, lambda: getattr(app.statuses.get(runs["lb"]), "state", None) == "stopped")


@sync
async def test_mark_two_runs_and_compare_command(tmp_path):
    app, runs, _ = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.rows)
        sb = app.query_one(Sidebar)
        sb.select_path(runs["lazy"])
        await pilot.pause(0.05)
        await pilot.press("m")
        sb.select_path(runs["cat"])
        await pilot.pause(0.05)
        await pilot.press("m", "c")
        assert isinstance(app.screen, InfoScreen)
        cmd = app.screen.body
        assert cmd == f"heur compare {final_checkpoint(runs['lazy'])} {final_checkpoint(runs['cat'])}"
        assert app.clipboard == cmd
        assert sb._run_nodes[runs["cat"]].label.plain.startswith("* ")


@sync
async def test_quit_with_q(tmp_path):
    app, _, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.return_code is None  # running: no exit asked for yet
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0  # q itself asked the app to exit, before run_test closes it


@pytest.mark.slow
@sync
async def test_end_to_end_launch_real_run_then_stop_it(tmp_path):
    """The real engine: launch a tiny preset from the TUI, watch its loss fill, stop it."""
    from fixtures_tui import TINY_PRESET

    from heur.tui.source import RunSource

    presets = tmp_path / "presets"
    presets.mkdir()
    # long enough to still be running when we stop it: 4 steps an epoch
    (presets / "tiny.toml").write_text(TINY_PRESET.replace("epochs = 1", "epochs = 400"))
    runs = tmp_path / "runs"
    app = HeurApp(runs, presets, source=RunSource(runs))
    app.EVENT_PERIOD = 0.1
    app.STATUS_PERIOD = 0.3
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, app, lambda d: isinstance(d, PresetNode))
        await pilot.press("n")
        assert isinstance(app.screen, LaunchScreen)
        await until(pilot, lambda: app.screen.checked == "", timeout=30)
        await pilot.press(*"train.log_every=2")
        await until(pilot, lambda: app.screen.checked == "train.log_every=2" and app.screen.valid, timeout=30)
        await pilot.press("enter")
        await until(pilot, lambda: app.experiment is not None, timeout=20)
        exp = app.experiment
        assert exp.parent == runs and exp.name.startswith("tiny-")
        run = app.run_paths[0]
        await until(pilot, lambda: len(app.data[run]["train"]) >= 3, timeout=60)
        plot = app.query_one("#plot-loss", PlotView)
        await until(pilot, lambda: plot.figure is not None and plot.figure.has_data())
        assert getattr(app.statuses.get(run), "state", None) == "running"
        # stop the run from the tree
        app.query_one(Sidebar).select_path(run)
        await until(
            pilot,
            lambda: (
                app.query_one(Sidebar).cursor_node.data is not None
                and getattr(app.query_one(Sidebar).cursor_node.data, "path", None) == run
            ),
        )
        await pilot.press("X", "y")
        await until(pilot, lambda: getattr(app.statuses.get(run), "state", None) == "stopped", timeout=30)
        await until(pilot, lambda: app.data[run].items["end"], timeout=10)
        assert app.data[run].items["end"][-1]["state"] == "stopped"


@sync
async def test_opens_on_the_most_recent_experiment_a_live_one_first(tmp_path):
    """The first screen answers "how are my runs doing": the most recent experiment is shown
    (its runs overlaid, the cursor on it) without a key pressed; a live experiment wins over a
    more recent finished one."""
    app, runs, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.rows)
        newest = max(app.rows.values(), key=lambda r: r.created).path
        await until(pilot, lambda: app.experiment == newest)
        sb = app.query_one(Sidebar)
        await until(pilot, lambda: sb.cursor_node is not None and sb.cursor_node.data.path == newest)
        await until(pilot, lambda: all(len(d["train"]) for d in app.data.values()))
    # an older experiment with a running run (its process is alive: this one) is live: it wins
    # over the newest, whose runs all ended
    older = min(app.rows.values(), key=lambda r: r.created).path
    assert older != newest

    def set_states(exp, *states):
        for rd, state in zip(sorted(p for p in exp.iterdir() if (p / "status.json").exists()), states):
            st = json.loads((rd / "status.json").read_text())
            live = state == "running"
            st.update(state=state, pid=os.getpid() if live else None)
            st.update(pid_start=process_start_time(os.getpid()) if live else None)
            (rd / "status.json").write_text(json.dumps(st))

    set_states(newest, "completed", "completed")
    set_states(older, "completed", "running")
    app2 = HeurApp(tmp_path / "runs", tmp_path / "presets", source=RecordingSource(tmp_path / "runs"))
    app2.EVENT_PERIOD, app2.STATUS_PERIOD = 0.05, 0.2
    async with app2.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app2.experiment == older)


def test_the_launch_dialogs_example_is_valid_for_every_bundled_preset():
    """The dialog's own example passes the one launch check (load + references + preflight) for
    each preset heur ships (its old example, train.epochs=2, was refused for warmup_lb)."""
    from conftest import ROOT

    from heur.core import launch as L
    from heur.tui.screens import EXAMPLE, LaunchScreen

    presets = sorted((ROOT / "presets").rglob("*.toml"))
    assert len(presets) >= 6
    for p in presets:
        if "paper" in p.parts:  # paper twins need CIFAR-10 on disk
            continue
        L.prepare(p, LaunchScreen.overrides(EXAMPLE))


@sync
async def test_headings_empty_log_and_missing_presets_say_what_is_there(tmp_path):
    from textual.widgets import Log, Static

    app, runs, _ = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, app, lambda d: isinstance(d, PresetNode))
        info = app.query_one("#info", Static)
        assert "(n: launch)" in str(info.render())
        sb = app.query_one(Sidebar)
        await goto(pilot, app, lambda d: d is None and sb.cursor_node is sb.runs_node)
        await pilot.pause()
        assert "(n: launch)" not in str(info.render())  # the heading does not keep the preset's text
        # an empty stdout.log says so
        rd = runs["sb"]
        (rd / "stdout.log").write_text("")
        sb.select_path(rd)
        await until(pilot, lambda: app.focus_run == rd)
        await pilot.press("7")
        await until(pilot, lambda: any("is empty" in line for line in app.query_one(Log).lines))
    # no presets: the sidebar says where it looked
    empty = tmp_path / "nopresets"
    empty.mkdir()
    app2 = HeurApp(tmp_path / "runs", empty, source=RecordingSource(tmp_path / "runs"))
    async with app2.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        labels = [str(n.label) for n in app2.query_one(Sidebar).presets_node.children]
        assert labels == [f"none in {empty.resolve()}"]
