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
