"""`heur connect A.pt B.pt`: one curve run between two checkpoints from the command line, its
--json document, and bad ends refused with exit 2."""

import json
import os

import pytest
from conftest import heur

from heur.core import runs as R
from heur.core.config import expand
from heur.core.train import Run

BASE = {
    "name": "ends",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256, "augment": False, "seed": 3},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 2},
}


@pytest.fixture(scope="module")
def ends(tmp_path_factory):
    raw = {
        **BASE,
        "variant": [
            {"name": "a", "set": {"seed": 1}},
            {"name": "b", "set": {"seed": 2}},
            {"name": "wide", "set": {"model.width": 20}},
        ],
    }
    exp_dir = R.create_experiment(expand(raw, []), tmp_path_factory.mktemp("ends") / "runs")
    for name in ("a", "b", "wide"):
        r = Run(exp_dir / name)
        r.status.update(state="running", pid=os.getpid(), force=True)
        r.setup()
        r.finish(*r.train())
    return {n: exp_dir / n / "checkpoints" / "final.pt" for n in ("a", "b", "wide")}


@pytest.mark.slow
def test_connect_json_has_the_curve_and_the_line_and_agrees_with_compare(ends, tmp_path):
    a, b = str(ends["a"]), str(ends["b"])
    res = heur("connect", a, b, "--epochs", "1", "--set", "curve.points=3", "--json", "--runs-dir", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)  # one JSON document and nothing else
    assert set(doc) == {"curve", "line", "result"}
    for path in ("curve", "line"):
        assert doc[path]["t"] == [0.0, 0.5, 1.0]
        assert set(doc[path]) == {"t", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert doc["result"]["line_barrier_train_loss"] is not None and doc["result"]["curve_length"] > 0
    # the ends of both paths are the two checkpoints: heur compare measures the same numbers there
    cmp = json.loads(heur("compare", a, b, "--points", "3", "--json").stdout)["interpolation"]
    for k in ("train_loss", "test_loss", "test_accuracy"):
        for i in (0, -1):
            assert doc["curve"][k][i] == pytest.approx(cmp[k][i], rel=1e-5)
        assert doc["line"][k][1] == pytest.approx(cmp[k][1], rel=1e-5)  # the midpoint of the line too
    run_dir = doc["result"]["run_dir"]
    cfg = open(os.path.join(run_dir, "config.toml")).read()
    assert 'task = "curve"' in cfg and 'name = "garipov"' in cfg and "epochs = 1.0" in cfg


def test_connect_refuses_ends_of_different_architectures(ends, tmp_path):
    res = heur("connect", str(ends["a"]), str(ends["wide"]), "--runs-dir", str(tmp_path))
    assert res.returncode == 2
    assert "curve.end" in res.stderr and "does not match" in res.stderr and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())


def test_connect_refuses_a_missing_end_and_a_bad_option(ends, tmp_path):
    res = heur("connect", str(ends["a"]), str(tmp_path / "nope.pt"), "--runs-dir", str(tmp_path))
    assert res.returncode == 2 and "nope.pt: no such checkpoint file" in res.stderr
    res = heur("connect", str(ends["a"]), str(ends["b"]), "--curve", "spline", "--runs-dir", str(tmp_path))
    assert res.returncode == 2 and "--curve" in res.stderr


@pytest.mark.slow
def test_compare_curve_adds_a_short_curve_beside_the_line(ends, tmp_path):
    a, b = str(ends["a"]), str(ends["b"])
    res = heur(
        "compare", a, b, "--points", "3", "--curve", "--epochs", "1", "--json", env={"HEUR_RUNS_DIR": str(tmp_path)}
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    cv, line = doc["curve"], doc["interpolation"]
    assert cv["curve"]["t"] == line["t"] == [0.0, 0.5, 1.0]
    for k in ("train_loss", "test_accuracy"):  # the line of the curve run is compare's own line
        assert cv["line"][k] == pytest.approx(line[k], rel=1e-5)
    assert not any("other data" in n for n in doc["notes"])  # data.seed pins one split for both
