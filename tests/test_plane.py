"""The plane through three points (core.measure.plane) and task = "plane" (core.plane)."""

import json
import os

import pytest
import torch

from heur.core import runs as R
from heur.core.config import expand
from heur.core.curve import CurveRun
from heur.core.errors import ConfigError
from heur.core.measure.plane import Plane, PlaneError, grid_axis
from heur.core.plane import PlaneRun
from heur.core.preflight import check_experiment
from heur.core.train import Run


def test_the_three_points_land_at_their_coordinates():
    # an orthonormal frame by hand: w0 = c, w2 = c + 2 e1, w1 = c + e1 + 3 e2 (+ rotated into 6-d)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    e1, e2, c = q[:, 0], q[:, 1], torch.randn(6, dtype=torch.float64)
    w0, w2, w1 = c, c + 2 * e1, c + e1 + 3 * e2
    p = Plane(w0, w1, w2)
    assert p.dx == pytest.approx(2) and p.dy == pytest.approx(3)
    for w, (a, b) in ((w0, (0, 0)), (w1, (0.5, 1)), (w2, (1, 0))):
        x, y, dist = p.coordinates(w)
        assert (x, y) == (pytest.approx(a, abs=1e-12), pytest.approx(b, abs=1e-12)) and dist == pytest.approx(
            0, abs=1e-12
        )
    # a point of the plane projects onto itself; one off it keeps its distance
    x, y, dist = p.coordinates(p.point(0.3, -0.2, torch.float64))
    assert (x, y, dist) == (pytest.approx(0.3), pytest.approx(-0.2), pytest.approx(0, abs=1e-12))
    off = p.point(0.3, 0.7, torch.float64) + 0.5 * q[:, 4]
    x, y, dist = p.coordinates(off)
    assert (x, y, dist) == (pytest.approx(0.3), pytest.approx(0.7), pytest.approx(0.5))


def test_points_that_span_no_plane_are_refused():
    a, b = torch.zeros(4), torch.ones(4)
    with pytest.raises(PlaneError) as e:
        Plane(a, b, a.clone())
    assert e.value.arg == "w2"
    with pytest.raises(PlaneError) as e:
        Plane(a, 0.5 * b, b)  # on the line
    assert e.value.arg == "w1"
    assert grid_axis(3, 0.2) == pytest.approx([-0.2, 0.5, 1.2])


BASE = {
    "name": "pl",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256, "augment": False, "seed": 0},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 2},
}


def experiment(plane_sets=None):
    plane = {"task": "plane", "plane.start": "@a", "plane.bend": "@curve", "plane.end": "@b", "plane.grid": 3}
    return expand(
        {
            **BASE,
            "variant": [
                {"name": "a", "set": {"seed": 1}},
                {"name": "b", "set": {"seed": 2}},
                {"name": "curve", "set": {"task": "curve", "curve.start": "@a", "curve.end": "@b", "curve.points": 3}},
                {"name": "plane", "set": {**plane, **(plane_sets or {})}},
            ],
        },
        [],
    )


def _go(cls, rd):
    r = cls(rd)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    r.finish(*r.train())


def test_plane_through_two_ends_and_a_curve_bend(tmp_path):
    exp = experiment({"plane.margin": 0.0})
    check_experiment(exp)
    exp_dir = R.create_experiment(exp, tmp_path / "runs")
    for name, cls in (("a", Run), ("b", Run), ("curve", CurveRun), ("plane", PlaneRun)):
        _go(cls, exp_dir / name)
        assert R.read_status(exp_dir / name).state == "completed", R.read_status(exp_dir / name).reason
    doc = json.loads((exp_dir / "plane" / "plane.json").read_text())
    assert doc["a"] == [0.0, 0.5, 1.0]
    pts = doc["points"]
    assert pts["start"] == pytest.approx([0, 0, 0], abs=1e-6) and pts["end"] == pytest.approx([1, 0, 0], abs=1e-6)
    assert pts["bend"][1] == pytest.approx(1) and pts["bend"][2] == pytest.approx(0, abs=1e-4)
    # grid (a, b) = (0, 0) and (1, 0) are the two ends: the curve measured the same numbers there
    curve = json.loads((exp_dir / "curve" / "curve.json").read_text())["curve"]
    assert doc["train_loss"][0][0] == pytest.approx(curve["train_loss"][0], rel=1e-6)
    assert doc["train_loss"][0][2] == pytest.approx(curve["train_loss"][-1], rel=1e-4)
    assert doc["test_error"][0][0] == pytest.approx(1 - curve["test_accuracy"][0])
    st = R.read_status(exp_dir / "plane")
    assert st.result["plane_min_train_loss"] <= doc["train_loss"][0][0]


def test_a_plane_through_the_same_point_twice_is_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"plane.end: .*'@a' is also plane.start: expected different checkpoints"):
        check_experiment(experiment({"plane.end": "@a"}))


def test_the_terminal_heatmap_shades_the_grid_and_marks_the_points():
    from heur.cli.plane_view import SHADES, render_plane

    axis = grid_axis(5, 0.0)  # 0, .25, .5, .75, 1
    loss = [[(a - 0.5) ** 2 + b**2 + 0.01 for a in axis] for b in axis]  # rows b, columns a
    doc = {"a": axis, "b": axis, "train_loss": loss, "points": {"start": [0, 0], "bend": [0.5, 1], "end": [1, 0]}}
    lines = render_plane(doc)
    assert len(lines) == 5 and all(len(x) == 10 for x in lines)
    bottom, top = lines[-1], lines[0]  # b = 0 is printed last
    assert bottom[0] == "S" and bottom[-1] == "E" and top[4] == "B"
    assert bottom[4] == SHADES[0]  # the minimum, at (0.5, 0)
    assert top[0] == SHADES[-1]  # the maximum, at (0, 1)


def test_projected_checkpoints_land_where_they_lie(tmp_path):
    # the curve's final model is its midpoint w(0.5) = a/4 + bend/2 + b/4: inside the plane, at
    # 0.25 (0, 0) + 0.5 (a1, 1) + 0.25 (1, 0), distance 0; the end projects onto (1, 0)
    exp = experiment({"plane.project": ["@a:step_*", "@curve", "@b"]})
    exp.runs["a"].train.checkpoint_every = 1
    check_experiment(exp)
    exp_dir = R.create_experiment(exp, tmp_path / "runs")
    for name, cls in (("a", Run), ("b", Run), ("curve", CurveRun), ("plane", PlaneRun)):
        _go(cls, exp_dir / name)
        assert R.read_status(exp_dir / name).state == "completed", R.read_status(exp_dir / name).reason
    doc = json.loads((exp_dir / "plane" / "plane.json").read_text())
    proj = {p["checkpoint"]: p for p in doc["projected"]}
    assert list(proj) == ["@a:step_4", "@curve", "@b"]  # 4 steps an epoch, epochs 2: step_4 only
    a1 = doc["points"]["bend"][0]
    mid = proj["@curve"]
    assert (mid["a"], mid["b"]) == (pytest.approx(0.5 * a1 + 0.25, abs=1e-4), pytest.approx(0.5, abs=1e-4))
    assert mid["distance"] == pytest.approx(0, abs=1e-3)
    assert (proj["@b"]["a"], proj["@b"]["b"]) == (pytest.approx(1, abs=1e-5), pytest.approx(0, abs=1e-5))
    assert proj["@a:step_4"]["distance"] > 0.01  # an earlier iterate lies off the plane


def test_a_projection_glob_that_matches_nothing_is_refused():
    with pytest.raises(ConfigError, match=r"plane.project\[0\]: .*matches none of the checkpoints run 'a' writes"):
        check_experiment(experiment({"plane.project": ["@a:epoch_*"]}))


def test_sgdr_basin_verdict_on_a_real_plane_and_a_ridge_it_must_fail(tmp_path):
    """A tiny SGDR run (a restart after epoch 1, the end at epoch 3, a checkpoint every half epoch),
    the curve between its pre-restart snapshot and its final iterate, and the plane through them
    with every iterate projected: the verdict joins the two snapshots and the 3 iterates between
    them (steps 6, 8, 10) on the grid.
    Then a constructed grid where a ridge of 1 nat parts two valleys: it must fail, and pass once
    the ridge is lowered below the margin."""
    from heur.core.summary import collect
    from heur.core.verdicts import BASIN_MARGIN, plane_basins, sgdr_verdicts

    sgdr = {"schedule.name": "sgdr", "schedule.t0": 1, "schedule.t_mult": 2, "train.epochs": 3}
    sgdr.update({"train.checkpoint_before_restart": True, "train.checkpoint_every": 0.5})
    curve = {"task": "curve", "curve.start": "@sgdr:restart_1", "curve.end": "@sgdr", "curve.points": 3}
    plane = {"task": "plane", "plane.start": "@sgdr:restart_1", "plane.bend": "@curve"}
    plane.update({"plane.end": "@sgdr", "plane.grid": 5, "plane.project": ["@sgdr:step_*"]})
    variants = [{"name": "sgdr", "set": sgdr}, {"name": "curve", "set": curve}, {"name": "plane", "set": plane}]
    exp = expand({**BASE, "check": "sgdr", "variant": variants}, [])
    check_experiment(exp)
    exp_dir = R.create_experiment(exp, tmp_path / "runs")
    for name, cls in (("sgdr", Run), ("curve", CurveRun), ("plane", PlaneRun)):
        _go(cls, exp_dir / name)
        assert R.read_status(exp_dir / name).state == "completed", R.read_status(exp_dir / name).reason
    doc = json.loads((exp_dir / "plane" / "plane.json").read_text())
    assert doc["steps"]["start"] == 4 and doc["steps"]["end"] == 12  # 4 steps an epoch
    b = plane_basins(doc)
    assert b["iterates"] == 3
    # the oracle: the two snapshots' own grid cells and a brute-force minimax path (every level)
    vals = sorted({v for row in doc["train_loss"] for v in row})
    axis = doc["a"]
    near = lambda x: min(range(len(axis)), key=lambda k: abs(axis[k] - x))  # noqa: E731
    pts = [doc["points"]["start"], *[[p["a"], p["b"]] for p in doc["projected"] if 4 < p["step"] < 12]]
    pts.append(doc["points"]["end"])
    cells = {(near(p[1]), near(p[0])) for p in pts if all(axis[0] <= x <= axis[-1] for x in p[:2])}
    assert b["joined"] == len(pts) - b["outside"] and b["joined"] >= 2
    assert b["level"] == _brute_minimax(doc["train_loss"], cells, vals)
    assert b["top"] == max(doc["train_loss"][j][i] for j, i in cells)
    rows = sgdr_verdicts(collect(exp_dir))
    (row,) = [r for r in rows if r["run"] == "plane"]
    assert row["ok"] is (b["ridge"] <= BASIN_MARGIN)
    assert f"claim: one basin, no ridge between them higher than {BASIN_MARGIN:g} nats" in row["text"]
    # constructed: start (0, 0) and end (1, 0) in two valleys parted by a ridge at a = 0.5
    axis = grid_axis(5, 0.0)
    ridge = [[0.1 + (1.0 if a == 0.5 else 0.0) for a in axis] for _ in axis]
    doc = {
        "a": axis,
        "b": axis,
        "train_loss": ridge,
        "points": {"start": [0, 0, 0], "bend": [0.5, 1, 0], "end": [1, 0, 0]},
        "steps": {"start": 10, "bend": 5, "end": 30},
        "projected": [{"checkpoint": "@s:step_20", "step": 20, "a": 0.25, "b": 0.0, "distance": 0.0}],
    }
    b = plane_basins(doc)
    assert b["ridge"] == pytest.approx(1.0) and b["iterates"] == 1
    (tmp_path / "x" / "plane").mkdir(parents=True)
    (tmp_path / "x" / "plane" / "plane.json").write_text(json.dumps(doc))
    summary = {"check": "sgdr", "path": str(tmp_path / "x"), "runs": [{"run": "plane", "state": "completed"}]}
    summary["runs"][0]["plane_min_train_loss"] = 0.1
    (row,) = [r for r in sgdr_verdicts(summary) if r["run"] == "plane"]
    assert row["ok"] is False and "1 above the highest" in row["text"]
    ridge[1][2] = 0.15  # a pass at b = 0.25, 0.05 above the valleys: one basin
    (tmp_path / "x" / "plane" / "plane.json").write_text(json.dumps(doc))
    (row,) = [r for r in sgdr_verdicts(summary) if r["run"] == "plane"]
    assert row["ok"] is True and plane_basins(doc)["ridge"] == pytest.approx(0.05)
    doc["projected"][0]["step"] = 40  # after the end snapshot: nothing between them to check
    assert plane_basins(doc) is None
    doc["projected"][0]["step"] = 20
    doc["points"]["start"], doc["points"]["end"], doc["projected"][0]["a"] = [5, 5, 0], [6, 5, 0], 7
    assert plane_basins(doc) is None  # none of them on the grid


def _brute_minimax(grid, cells, levels):
    """The lowest level at which a flood fill from one cell reaches all the others."""
    nb, na = len(grid), len(grid[0])
    for level in levels:
        ok = {(j, i) for j in range(nb) for i in range(na) if grid[j][i] <= level}
        if not cells <= ok:
            continue
        start = next(iter(cells))
        seen, todo = {start}, [start]
        while todo:
            j, i = todo.pop()
            for c in ((j + 1, i), (j - 1, i), (j, i + 1), (j, i - 1)):
                if c in ok and c not in seen:
                    seen.add(c)
                    todo.append(c)
        if cells <= seen:
            return level
    return None
