"""A real tiny run with every probe (ntk, sharpness, catapult, cca), trained in-process on CPU:
every event it wrote matches core/schema.py, and its own events.jsonl, tailed and decoded by
the TUI, gives panels equal to those events — live (before the run's last events) and after."""

from __future__ import annotations

import json

import numpy as np
import pytest

from heur.core import runs as R
from heur.core.config import expand
from heur.core.events import read_events
from heur.core.preflight import check_experiment
from heur.core.schema import EVAL_RESULT, KINDS, problems
from heur.core.train import Run
from heur.figures import panels as figures
from heur.figures.rundata import RunData
from heur.tui import heatmap
from heur.tui.feed import Feed

# a wide-enough NTK-parametrised MLP at lr = 8/lambda0 on full-batch GD catapults in its first
# steps (Lewkowycz et al.); 30 one-step epochs, a CCA snapshot every 10
PRESET = {
    "name": "allprobes",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 128, "augment": False},
    "model": {"name": "mlp", "width": 64, "depth": 2, "parametrization": "ntk", "bias": False},
    "optim": {"name": "sgd", "lr_ntk": 8.0},
    "train": {
        "loss": "mse",
        "mse_reduction": "half_sum",
        "full_batch": True,
        "epochs": 30,
        "log_every": 1,
        "eval_every": 10,
    },
    "probes": {
        "ntk": {"batch": 128, "every": 10},
        "sharpness": {"batch": 128, "every": 5, "max_iter": 10, "tol": 3e-3},
        "catapult": {"factor": 1.2},
        "cca": {"every_epochs": 10, "samples": 100, "method": "cka"},
    },
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    exp = expand(PRESET, [])
    check_experiment(exp)
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp_path_factory.mktemp("real") / "runs"))
    r = Run(rd)
    r.setup()
    state, reason, last = r.train()
    r.finish(state, reason, last)
    assert state == "completed", reason
    return rd, read_events(rd / "events.jsonl")


def of(events, kind, **match):
    return [e for e in events if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


def tui_data(run_dir):
    """What the TUI holds for a run: its Feed tails the file, decode + apply as the app does."""
    feed = Feed(None)
    feed.follow([run_dir])
    d = RunData(run_dir.name)
    batch = feed.poll_events()
    assert batch is not None
    d.apply(batch.segments[run_dir])
    return d


def test_every_event_the_run_wrote_is_declared(run):
    rd, events = run
    kinds = {e["kind"] for e in events}
    assert {"start", "train", "eval", "ntk", "sharpness", "catapult", "cca", "checkpoint", "end"} <= kinds
    assert kinds <= set(KINDS)
    assert [(e["kind"], p) for e in events for p in problems(e)] == []
    # the result (status.json, the summary) names the last eval of each split as the schema says
    (end,) = of(events, "end")
    for split in ("train", "test"):
        last = of(events, "eval", split=split)[-1]
        assert end["result"][f"{split}_loss"] == last["loss"]
        assert end["result"][f"{split}_accuracy"] == last["accuracy"]
    assert set(EVAL_RESULT) <= set(R.read_status(rd).result)


def test_panels_equal_the_run_events_after_it_ended(run):
    rd, events = run
    d = tui_data(rd)
    # train loss and sharpness, ntk columns: the events' values at the events' steps
    train = of(events, "train")
    np.testing.assert_array_equal(d["train"]["step"], [e["step"] for e in train])
    np.testing.assert_array_equal(d["train"]["loss"], [e["loss"] for e in train])
    sharp = of(events, "sharpness")
    assert len(sharp) >= 5
    np.testing.assert_array_equal(d["sharpness"]["step"], [e["step"] for e in sharp])
    np.testing.assert_array_equal(d["sharpness"]["lambda_max"], [e["lambda_max"] for e in sharp])
    np.testing.assert_array_equal(d["sharpness"]["threshold"], [e["threshold"] for e in sharp])
    shown = [figures.Shown(rd.name, d, 0)]
    fig = figures.sharpness_figure(shown, figures.View(), 200)
    assert fig.series[0].y.tolist() == [e["lambda_max"] for e in sharp]
    ntk = of(events, "ntk")
    assert [e["source"] for e in ntk][:2] == ["lr_ntk", "step"]
    np.testing.assert_array_equal(d["ntk"]["lambda_ntk"], [e["lambda_ntk"] for e in ntk])
    hl = figures.lr_figure(shown, figures.View(), 200).hlines
    assert [h.y for h in hl] == [ntk[0]["lr_lazy_edge"], ntk[0]["lr_uv_max"], ntk[0]["lr_relu_max"]]
    assert f"λ0 = {ntk[0]['lambda0']:.4g}" in figures.regime_lines(shown)[0]
    # catapults: the table rows and the peak marks
    cats = of(events, "catapult")
    assert cats
    assert figures.catapult_rows(shown) == [
        (rd.name, str(c["start_step"]), str(c["peak_step"]), str(c["end_step"]), f"{c['peak_ratio']:.3g}") for c in cats
    ]
    marks = figures.catapult_marks(shown[0], figures.View())
    assert marks.x.tolist() == [float(c["peak_step"]) for c in cats]
    assert marks.y.tolist() == [c["peak_loss"] for c in cats]
    # CCA: one live column per snapshot after the first, labelled with its epoch ...
    live = of(events, "cca", against="previous")
    (fin,) = of(events, "cca", against="final")
    layers, epochs, mat, _ = figures.cca_matrix(d)
    assert epochs == [10.0, 20.0, 30.0] == [e["epoch"] for e in live]
    assert layers == live[-1]["layers"]
    np.testing.assert_array_equal(mat.T, np.array([e["values"] for e in live], dtype=float))
    assert "epoch 10 … 30" in heatmap.render(layers, epochs, mat, 80).plain
    # ... and the completed run's every-snapshot-against-the-last matrix as a figure of its own
    layers, epochs, mat, _ = figures.cca_final(d)
    assert epochs == fin["epochs"] == [0.0, 10.0, 20.0, 30.0] and layers == fin["layers"]
    np.testing.assert_array_equal(mat, np.array(fin["matrix"], dtype=float))


def test_panels_while_the_run_was_live(run, tmp_path):
    """The same file cut before the final CCA event, then grown to its end: the live heatmap
    never changes when the final event arrives."""
    rd, events = run
    lines = (rd / "events.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if json.loads(line).get("against") == "final")
    live_dir = tmp_path / rd.name
    live_dir.mkdir()
    f = live_dir / "events.jsonl"
    f.write_text("".join(lines[:cut]))
    feed = Feed(None)
    feed.follow([live_dir])
    d = RunData(rd.name)
    d.apply(feed.poll_events().segments[live_dir])
    assert figures.cca_final(d) is None
    before = figures.cca_matrix(d)
    assert before[1] == [e["epoch"] for e in of(events, "cca", against="previous")]
    with open(f, "a") as out:
        out.write("".join(lines[cut:]))
    d.apply(feed.poll_events().segments[live_dir])
    after = figures.cca_matrix(d)
    assert after[1] == before[1] and np.array_equal(after[2], before[2], equal_nan=True)
    assert figures.cca_final(d) is not None


def test_writer_refuses_a_field_its_kind_does_not_declare(tmp_path):
    from heur.core.events import EventWriter
    from heur.core.schema import SchemaError

    with EventWriter(tmp_path / "events.jsonl") as w:
        with pytest.raises(SchemaError, match="thr_2"):
            w.emit("ntk", 0, 0.0, lambda_ntk=1.0, thr_2=2.0)
        with pytest.raises(SchemaError, match="matrix"):  # a live cca event has no matrix
            w.emit("cca", 1, 1.0, layers=["a"], values=[1.0], against="previous", matrix=[[1.0]])
        w.emit("future_point", 2, 1.0, t=0.5)  # a kind not declared yet is written as it is
    assert [e["kind"] for e in read_events(tmp_path / "events.jsonl")] == ["future_point"]
    assert problems({"kind": "future_point", "step": 2, "epoch": 1.0, "time": 0.0}) == [
        "undeclared kind 'future_point'"
    ]


def test_schema_problems_name_what_is_wrong():
    ok = {"kind": "train", "step": 1, "epoch": 0.1, "time": 0.0, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0, "samples": 8}
    assert problems(ok) == []
    assert problems({**ok, "extra": 1}) == ["train: undeclared field 'extra'"]
    assert problems({k: v for k, v in ok.items() if k not in ("loss", "time")}) == [
        "train: missing 'time'",
        "train: missing 'loss'",
    ]
    ev = {"kind": "eval", "step": 1, "epoch": 0.1, "time": 0.0, "loss": 1.0, "accuracy": 0.5}
    assert problems({**ev, "split": "test"}) == []
    assert problems({**ev, "split": "val"}) == ["eval: split='val' is none of ['test', 'train']"]


def _train_real(preset, runs_dir):
    exp = expand(preset, [])
    check_experiment(exp)
    (rd,) = R.run_dirs(R.create_experiment(exp, runs_dir))
    r = Run(rd)
    r.setup()
    state, reason, last = r.train()
    r.finish(state, reason, last)
    return rd, state


def test_sharpness_panel_of_a_real_run_on_a_cosine_schedule(tmp_path):
    """Heavy-ball SGD on a cosine schedule to lr 0: the edge is drawn as a series labelled from
    the run's own events (threshold · lr = 2(1 + μ) = 3.8 for μ = 0.9), and the edge points that
    lr → 0 sends far above the curve are cut, so they do not flatten it; the title says where."""
    preset = {
        "name": "sgdcos",
        "device": "cpu",
        "seed": 0,
        "data": {"name": "digits", "subset": 128, "augment": False},
        "model": {"name": "mlp", "width": 32, "depth": 2},
        "optim": {"name": "sgd", "lr": 0.3, "momentum": 0.9},  # the edge starts near λmax (about 5)
        "schedule": {"name": "cosine"},
        "train": {"full_batch": True, "epochs": 12, "log_every": 1, "eval_every": 12},
        "probes": {"sharpness": {"batch": 128, "every": 1, "max_iter": 20, "tol": 1e-3}},
    }
    rd, state = _train_real(preset, tmp_path / "runs")
    assert state == "completed"
    sharp = of(read_events(rd / "events.jsonl"), "sharpness")
    lam = [e["lambda_max"] for e in sharp]
    thr = [e["threshold"] for e in sharp]
    for e in sharp:  # the events' own edge: 2(1 + 0.9)/lr
        assert e["threshold"] == pytest.approx(3.8 / e["lr"], rel=1e-9)
    d = tui_data(rd)
    fig = figures.sharpness_figure([figures.Shown(rd.name, d, 0)], figures.View(), 200)
    assert fig.series[0].y.tolist() == lam
    assert "λmax ─  3.8/η" in fig.title and "P⁻¹H" not in fig.title
    cap = figures.EDGE_CAP * max(lam)
    assert max(thr) > cap  # lr → 0 at the end sends the edge far above the curve ...
    assert fig.state == [f"edge cut > {cap:.3g}"]  # ... so it is cut, and the title says where
    (edge,) = [s for s in fig.series if s.marker == "dot"]
    assert edge.label == "3.8/η"
    assert edge.y.tolist() == [t for t in thr if t <= cap] and len(edge.y) > 0


def test_a_diverged_run_does_not_squash_the_loss_panel(tmp_path):
    """Two real runs, one diverging (its loss climbs by many decades before it turns non-finite):
    the loss panel cuts what is above 1e3 times the largest first loss, names the run it cut, and
    keeps every point of the healthy run."""
    base = {
        "device": "cpu",
        "seed": 0,
        "data": {"name": "digits", "subset": 256, "augment": False},
        "model": {"name": "mlp", "width": 32, "depth": 2},
        "train": {"full_batch": True, "epochs": 30, "log_every": 1, "eval_every": 30},
    }
    ok_rd, ok_state = _train_real({**base, "name": "calm", "optim": {"name": "sgd", "lr": 0.1}}, tmp_path / "a")
    bad_rd, bad_state = _train_real({**base, "name": "wild", "optim": {"name": "sgd", "lr": 40.0}}, tmp_path / "b")
    assert (ok_state, bad_state) == ("completed", "diverged")
    calm, wild = tui_data(ok_rd), tui_data(bad_rd)
    losses = wild["train"]["loss"]
    cap = figures.LOSS_CAP * max(calm["train"]["loss"][0], losses[0])
    assert np.nanmax(losses[np.isfinite(losses)]) > cap  # it did climb out of the plausible range
    shown = [figures.Shown("calm", calm, 0), figures.Shown("wild", wild, 1)]
    fig = figures.loss_figure(shown, figures.View(), 400)
    assert f"cut > {cap:.3g}: wild" in fig.state
    ys = np.concatenate([s.y for s in fig.series])
    assert ys[np.isfinite(ys)].max() <= cap
    calm_y = np.concatenate([s.y for s in fig.series if s.color == shown[0].color and s.kind == "line"])
    assert sorted(calm_y.tolist()) == sorted(calm["train"]["loss"].tolist())  # nothing of it cut
    alone = figures.loss_figure(shown[:1], figures.View(), 400)
    assert not any("cut" in st for st in alone.state)
