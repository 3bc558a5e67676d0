"""The curve and plane panels (heur.figures.connect) from the events of a real tiny curve and plane
run: the figures equal the runs' own curve.json / plane.json (written from the measured rows, not
from the events), while the runs are live and after; the report renderer draws them; the TUI's
Conn tab shows them at 80x24 and only for experiments that have such runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import numpy as np
import pytest

from heur.core import runs as R
from heur.core.config import expand
from heur.core.curve import CurveRun
from heur.core.plane import PlaneRun
from heur.core.preflight import check_experiment
from heur.core.train import Run
from heur.figures import connect, registry
from heur.figures.panels import Shown
from heur.figures.rundata import RunData, decode, load_run

PRESET = {
    "name": "conn",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256, "augment": False, "seed": 0},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 2},
    "variant": [
        {"name": "a", "set": {"seed": 1, "train.checkpoint_every": 1}},
        {"name": "b", "set": {"seed": 2}},
        {"name": "curve", "set": {"task": "curve", "curve.start": "@a", "curve.end": "@b", "curve.points": 5}},
        {
            "name": "plane",
            "set": {
                "task": "plane",
                "plane.start": "@a",
                "plane.bend": "@curve",
                "plane.end": "@b",
                "plane.grid": 5,
                "plane.project": ["@a:step_*", "@curve"],
            },
        },
    ],
}


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory):
    exp = expand(PRESET, [])
    check_experiment(exp)
    d = R.create_experiment(exp, tmp_path_factory.mktemp("conn") / "runs")
    for name, cls in (("a", Run), ("b", Run), ("curve", CurveRun), ("plane", PlaneRun)):
        r = cls(d / name)
        r.status.update(state="running", pid=os.getpid(), force=True)
        r.setup()
        r.finish(*r.train())
        assert R.read_status(d / name).state == "completed"
    return d


def shown(exp_dir, *names):
    return [Shown(n, load_run(exp_dir / n), i) for i, n in enumerate(names)]


def test_curve_figures_are_the_runs_curve_json(exp_dir):
    doc = json.loads((exp_dir / "curve" / "curve.json").read_text())
    loss, err = connect.curve_figures(shown(exp_dir, "a", "curve"))  # a train run beside it adds nothing
    curve, line, ends = loss.series
    assert curve.x.tolist() == doc["curve"]["t"] and curve.y.tolist() == doc["curve"]["train_loss"]
    assert line.x.tolist() == doc["line"]["t"] and line.y.tolist() == doc["line"]["train_loss"]
    assert (curve.label, line.label, line.marker, ends.label, ends.kind) == ("curve", "line", "dot", "ends", "scatter")
    assert ends.x.tolist() == [0.0, 1.0] and ends.y.tolist() == [doc["curve"]["train_loss"][i] for i in (0, -1)]
    np.testing.assert_allclose(err.series[0].y, 1 - np.array(doc["curve"]["test_accuracy"]))
    assert connect.curve_figures(shown(exp_dir, "a", "b")) == []


def test_plane_heatmaps_are_the_runs_plane_json(exp_dir):
    doc = json.loads((exp_dir / "plane" / "plane.json").read_text())
    loss, err = connect.plane_heatmaps(shown(exp_dir, "plane")[0])
    # rows top to bottom are b from high to low: the grid's rows reversed
    np.testing.assert_array_equal(loss.values, np.array(doc["train_loss"])[::-1])
    np.testing.assert_allclose(err.values, np.array(doc["test_error"])[::-1])
    assert [float(c) for c in loss.cols] == pytest.approx(doc["a"], abs=0.01) and loss.log and not loss.note
    axis = doc["a"]

    def cell(a, b):
        near = lambda v: min(range(len(axis)), key=lambda k: abs(axis[k] - v))  # noqa: E731
        return (len(axis) - 1 - near(b), near(a))

    want = {name[0].upper(): cell(*doc["points"][name][:2]) for name in ("start", "bend", "end")}
    assert {m: (i, j) for i, j, m in loss.marks if m != "o"} == want
    inside = [p for p in doc["projected"] if all(axis[0] <= p[k] <= axis[-1] for k in "ab")]
    os_ = {(i, j) for i, j, m in loss.marks if m == "o"}
    assert os_ <= {cell(p["a"], p["b"]) for p in inside} and os_.isdisjoint(want.values())
    assert f"o {len(doc['projected'])} projected" in loss.title


def test_panels_fill_in_while_the_runs_evaluate(exp_dir):
    """The events cut halfway through the evaluation: the points so far, NaN cells, the marks."""
    from heur.core.events import read_events

    for name, kind in (("curve", "curve_point"), ("plane", "plane_point")):
        evs = read_events(exp_dir / name / "events.jsonl")
        pts = [i for i, e in enumerate(evs) if e["kind"] == kind]
        d = RunData(name)
        d.apply(decode(evs[: pts[len(pts) // 2]]))
        run = Shown(name, d, 0)
        if name == "curve":
            (loss, _) = connect.curve_figures([run])
            assert 0 < len(loss.series[0].x) < 5 and loss.series[0].x[0] == 0.0
        else:
            (loss, _) = connect.plane_heatmaps(run)
            done = int(np.isfinite(loss.values).sum())
            assert done == len(pts) // 2 and f"{done} of 25 points" in loss.note
            assert {m for _, _, m in loss.marks} >= {"S", "B", "E"}  # the points come before the grid
            assert np.isnan(loss.values[0]).all()  # the top rows (largest b) come last


def test_the_registry_and_the_report_renderer_pick_them_up(exp_dir):
    render = pytest.importorskip("heur.report.render")
    runs = shown(exp_dir, "a", "b", "curve", "plane")
    got = {p.name: figs for p, figs in registry.build(registry.Scene(runs=runs, exp_dir=exp_dir))}
    assert len(got["curve"]) == 2 and len(got["plane"]) == 2
    for d in got["curve"][:1] + got["plane"][:1]:
        assert render.to_bytes(d, "png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_tui_conn_tab_at_80x24(exp_dir, tmp_path):
    """An experiment with curve and plane runs gets the Conn tab (9): the curve plots and the
    plane's heatmap; one of train runs only does not (9 does nothing there)."""
    from test_tui_app import goto

    from heur.tui.app import HeurApp
    from heur.tui.plotting import PlotView
    from heur.tui.sidebar import ExperimentNode

    runs_dir = tmp_path / "runs"
    shutil.copytree(exp_dir, runs_dir / exp_dir.name)
    plain = runs_dir / "plain-20000101-000000"
    shutil.copytree(exp_dir, plain, ignore=shutil.ignore_patterns("curve", "plane"))
    (tmp_path / "presets").mkdir()

    async def body():
        app = HeurApp(runs_dir, tmp_path / "presets")
        app.STATUS_PERIOD = 0.2
        async with app.run_test(size=(80, 24)) as pilot:

            async def until(cond, timeout=30.0):
                for _ in range(int(timeout / 0.05)):
                    if cond():
                        return
                    await pilot.pause(0.05)
                raise AssertionError("condition not reached")

            conn = runs_dir / exp_dir.name
            await until(lambda: conn in app.rows and plain in app.rows)
            await goto(pilot, app, lambda d: isinstance(d, ExperimentNode) and d.path == conn)
            await until(lambda: app.experiment == conn)
            await until(lambda: all(d.events for d in app.data.values()))
            await pilot.press("0")
            await until(lambda: app.query_one("#tabs").active == "conn")
            plot = app.query_one("#plot-curve-loss", PlotView)
            await until(lambda: plot.figure is not None and plot.figure.has_data())
            text = app.query_one("#plane-text").render()
            plain_text = getattr(text, "plain", str(text))
            assert "train loss on the plane" in plain_text and "S" in plain_text and "B" in plain_text
            await goto(pilot, app, lambda d: isinstance(d, ExperimentNode) and d.path == plain)
            await until(lambda: app.experiment == plain)
            assert app.query_one("#tabs").active == "loss" and not app.conn_shown
            await pilot.press("0")
            await pilot.pause(0.1)
            assert app.query_one("#tabs").active == "loss"

    asyncio.run(body())


def test_a_stopped_plane_run_resumes_and_its_panel_shows_each_point_once(exp_dir, tmp_path):
    """A plane run stopped at grid point 7 (as SIGTERM does), then resumed: the same plane.json as
    the run never stopped; readers (apply_resumes, the TUI's RunData) keep each grid point and each
    projection once."""
    from heur.core.events import apply_resumes, read_events

    d = tmp_path / "exp"
    shutil.copytree(exp_dir, d, ignore=shutil.ignore_patterns("plane.json", "events.jsonl", "status.json"))
    for name in ("a", "b", "curve"):  # the ends' events are not needed; their checkpoints are there
        assert (d / name / "checkpoints" / "final.pt").is_file()
    r = PlaneRun(d / "plane")
    r.setup()
    emit = r.events.emit

    def stopping(kind, *a, **kw):
        emit(kind, *a, **kw)
        if kind == "plane_point" and kw["index"] == 6:
            r.stop_requested = True

    r.events.emit = stopping
    r.finish(*r.train())
    assert R.read_status(d / "plane").state == "stopped" and not (d / "plane" / "plane.json").exists()
    r = PlaneRun(d / "plane", resume=True)
    r.setup()
    r.finish(*r.train())
    assert R.read_status(d / "plane").state == "completed"
    mine, ref = (json.loads((x / "plane" / "plane.json").read_text()) for x in (d, exp_dir))
    assert mine == ref
    kept = apply_resumes(read_events(d / "plane" / "events.jsonl"))
    assert [e["index"] for e in kept if e["kind"] == "plane_point"] == list(range(25))
    assert len([e for e in kept if e["kind"] == "plane_projection"]) == 3 + len(ref["projected"])
    data = load_run(d / "plane")
    assert len(data["plane_point"]) == 25 and len(data.items["plane_projection"]) == 3 + len(ref["projected"])
