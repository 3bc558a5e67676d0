"""task = "curve" (core.curve): a curve run between two runs' checkpoints, its exact resume, the
objective's t and regulariser, Garipov's schedule, and bad ends refused with their key."""

import json
import os

import pytest
import torch
from conftest import ROOT, heur

from heur.core import runs as R
from heur.core.checkpoint import load_checkpoint
from heur.core.config import ScheduleConfig, expand
from heur.core.curve import CurveObjective, CurveRun, summarize
from heur.core.errors import ConfigError
from heur.core.events import apply_resumes, read_events
from heur.core.measure.curves import Curve
from heur.core.preflight import check_experiment
from heur.core.schedules import build_schedule
from heur.core.train import Run

BASE = {
    "name": "conn",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256, "augment": False, "seed": 0},
    "model": {"name": "cnn", "channels": [4, 8], "width": 16, "batch_norm": True},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 2},
}
CURVE = {"task": "curve", "curve.start": "@a", "curve.end": "@b", "curve.points": 5}


def experiment(curve_sets=None, **extra):
    raw = {
        **BASE,
        **extra,
        "variant": [
            {"name": "a", "set": {"seed": 1}},
            {"name": "b", "set": {"seed": 2}},
            {"name": "curve", "set": {**CURVE, **(curve_sets or {})}},
        ],
    }
    return expand(raw, [])


def _run(cls, rd, resume=False, stop_at=None):
    r = cls(rd, resume=resume)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    if stop_at is not None:  # a SIGTERM arriving during step stop_at
        loss = r.objective.loss

        def stopping(model, x, y, step):
            if step == stop_at:
                r.stop_requested = True
            return loss(model, x, y, step)

        r.objective.loss = stopping
    r.finish(*r.train())
    return r


@pytest.fixture(scope="module")
def ends(tmp_path_factory):
    """An experiment directory whose endpoint runs a and b have completed."""
    exp = experiment()
    exp_dir = R.create_experiment(exp, tmp_path_factory.mktemp("ends") / "runs")
    for name in ("a", "b"):
        _run(Run, exp_dir / name)
    return exp_dir


def test_garipov_schedule_is_constant_then_linear_to_one_percent():
    s = build_schedule(ScheduleConfig(name="garipov"), 0.2, 10, 200)
    lr = s.lrs()
    assert lr[0] == lr[100] == 0.2  # u = t / 200 <= 0.5
    assert lr[140] == pytest.approx(0.2 * (1 - 0.99 * (0.7 - 0.5) / 0.4))  # halfway down
    assert lr[180] == pytest.approx(0.002) and lr[199] == pytest.approx(0.002)


def test_a_curve_run_defaults_to_garipovs_schedule():
    exp = experiment()
    assert exp.runs["curve"].schedule.name == "garipov"
    assert exp.runs["a"].schedule.name == "constant"


def test_t_is_uniform_and_a_function_of_seed_and_step():
    c = Curve({"w": torch.zeros(3)}, {"w": torch.ones(3)})
    obj = CurveObjective(c, torch.nn.functional.mse_loss, "regression", 7, 0.0, torch.zeros(1, 3))
    again = CurveObjective(c, torch.nn.functional.mse_loss, "regression", 7, 0.0, torch.zeros(1, 3))
    other = CurveObjective(c, torch.nn.functional.mse_loss, "regression", 8, 0.0, torch.zeros(1, 3))
    ts = [obj.t_at(s) for s in range(4000)]
    assert ts == [again.t_at(s) for s in range(4000)]
    assert ts[:50] != [other.t_at(s) for s in range(50)]
    assert all(0 <= t < 1 for t in ts)
    # uniform: each tenth holds about 400 of the 4000 draws (binomial sd 19)
    counts = torch.histc(torch.tensor(ts), bins=10, min=0, max=1)
    assert counts.min() > 320 and counts.max() < 480


def test_the_regulariser_is_half_wd_times_the_squared_norm_of_w_t():
    model = torch.nn.Linear(2, 1, bias=False)
    a, b = {"weight": torch.tensor([[1.0, 0.0]])}, {"weight": torch.tensor([[0.0, 3.0]])}
    c = Curve(a, b, bends=1)
    x, y = torch.zeros(4, 2), torch.zeros(4, 1)  # the data term is 0
    obj = CurveObjective(c, torch.nn.functional.mse_loss, "regression", 0, 0.1, x)
    t = obj.t_at(3)
    w = torch.tensor([1 - t, 3 * t])  # on the straight line while untrained
    assert obj.loss(model, x, y, 3).item() == pytest.approx(0.5 * 0.1 * float(w @ w), rel=1e-6)


def test_summarize_reads_maxima_barriers_and_errors_off_the_rows():
    ts = [0.0, 0.5, 1.0]
    mk = lambda tl, acc: {"t": 0, "train_loss": tl, "train_accuracy": None, "test_loss": 0, "test_accuracy": acc}  # noqa: E731
    curve = [mk(0.1, 0.9), mk(0.3, 0.8), mk(0.2, 0.95)]
    line = [mk(0.1, 0.9), mk(2.0, 0.3), mk(0.2, 0.95)]
    r = summarize(ts, curve, line)
    assert r["start_test_error"] == pytest.approx(0.1) and r["end_test_error"] == pytest.approx(0.05)
    assert r["curve_max_train_loss"] == 0.3 and r["line_max_train_loss"] == 2.0
    assert r["line_barrier_train_loss"] == pytest.approx(2.0 - 0.15)
    assert r["line_barrier_test_error"] == pytest.approx(0.7 - 0.075)
    assert r["curve_max_test_error"] == pytest.approx(0.2)


def test_curve_run_trains_only_the_bends_and_evaluates_both_paths(ends):
    rd = ends / "curve"
    r = _run(CurveRun, rd)
    st = R.read_status(rd)
    assert st.state == "completed", st.reason
    ck = load_checkpoint(rd / "checkpoints" / "final.pt")
    saved = ck["objective"]["state"]["curve"]
    a = load_checkpoint(ends / "a" / "checkpoints" / "final.pt")["model"]
    b = load_checkpoint(ends / "b" / "checkpoints" / "final.pt")["model"]
    names = saved["names"]
    flat_a = torch.cat([a[n].reshape(-1) for n in names])
    flat_b = torch.cat([b[n].reshape(-1) for n in names])
    assert torch.equal(saved["ends"][0], flat_a) and torch.equal(saved["ends"][1], flat_b)  # fixed ends
    assert not torch.allclose(saved["points"][0], (flat_a + flat_b) / 2)  # the bend left the line
    events = read_events(rd / "events.jsonl")
    pts = [e for e in events if e["kind"] == "curve_point"]
    assert [(e["path"], e["index"]) for e in pts] == [(p, i) for i in range(5) for p in ("curve", "line")]
    evals = [e for e in events if e["kind"] == "eval"]
    assert evals and all(e["t"] in (0.25, 0.5, 0.75) and e["loss"] >= e["mean_loss"] for e in evals)
    doc = json.loads((rd / "curve.json").read_text())
    assert doc["curve"]["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # both paths start and end at the same weights (BN recomputed the same way): the same numbers
    for k in ("train_loss", "test_loss"):
        assert doc["curve"][k][0] == pytest.approx(doc["line"][k][0], rel=1e-6)
        assert doc["curve"][k][-1] == pytest.approx(doc["line"][k][-1], rel=1e-6)
    for k in ("start_test_error", "curve_max_train_loss", "line_barrier_train_loss", "curve_length"):
        assert st.result[k] == doc["result"][k]
    assert st.result["curve_length"] >= st.result["line_length"] * (1 - 1e-6)
    assert r.optimizer.param_groups[-1]["weight_decay"] == 0.0


def test_eval_events_report_the_worst_of_three_points_of_the_curve(ends, monkeypatch):
    """The objective's evaluation: the highest loss among t = 0.25, 0.5, 0.75 with BN recomputed
    at each (path_rows, the curve's own evaluation, is the oracle), its t and the mean; BN is
    recomputed once per t for the two splits of an eval step, again when the curve moves."""
    import heur.core.curve as C
    from heur.core.measure.curves import path_rows

    r = CurveRun(ends / "curve")
    r.setup()
    obj, data = r.objective, r.data
    with torch.no_grad():  # a bend off the line, so the three points differ
        obj.curve.bends += 0.05 * torch.randn(obj.curve.bends.shape, generator=torch.Generator().manual_seed(0))
    rows = path_rows(obj.curve, r.model, data, C.EVAL_TS, obj.loss_fn, 512)
    calls = []
    real = C.recompute_bn_stats
    monkeypatch.setattr(C, "recompute_bn_stats", lambda *a: calls.append(1) or real(*a))
    got_train = obj.evaluate(r.model, data.x_train, data.y_train, 512)
    got = obj.evaluate(r.model, data.x_test, data.y_test, 512)
    assert len(calls) == 3
    worst = max(rows, key=lambda row: row["test_loss"])
    assert got["t"] == worst["t"] and got["loss"] == pytest.approx(worst["test_loss"], rel=1e-5)
    assert got["accuracy"] == pytest.approx(worst["test_accuracy"])
    assert got["mean_loss"] == pytest.approx(sum(row["test_loss"] for row in rows) / 3, rel=1e-5)
    assert got_train["loss"] == pytest.approx(max(row["train_loss"] for row in rows), rel=1e-5)
    with torch.no_grad():
        obj.curve.bends *= 1.0  # an in-place change of the curve
    obj.evaluate(r.model, data.x_test, data.y_test, 512)
    assert len(calls) == 6
    mid = {n: v for n, v in obj.curve.weights(0.5).items()}
    assert all(torch.equal(p, mid[n]) for n, p in r.model.named_parameters())  # left at w(0.5)


def _stop_in_evaluation(r, after):
    """A SIGTERM (its handler sets stop_requested) arriving as the ``after``-th curve_point is written."""
    emit, seen = r.events.emit, []

    def emitting(kind, *a, **kw):
        emit(kind, *a, **kw)
        if kind == "curve_point":
            seen.append(kw["index"])
            if len(seen) == after:
                r.stop_requested = True

    r.events.emit = emitting


@pytest.mark.slow
def test_a_stopped_curve_run_resumes_exactly(ends, tmp_path):
    """Stopped in training, resumed, stopped again during the evaluation along the curve, resumed:
    the same curve, curve.json and events as a run never stopped, each t measured once."""
    import shutil

    rd1, rd2 = tmp_path / "x" / "curve", tmp_path / "y" / "curve"
    for rd in (rd1, rd2):  # two copies of the experiment, the ends shared
        shutil.copytree(ends, rd.parent, ignore=shutil.ignore_patterns("curve", "summary.json"))
        shutil.copytree(ends / "curve", rd, ignore=shutil.ignore_patterns("checkpoints", "*.jsonl", "curve.json"))
    _run(CurveRun, rd1)
    _run(CurveRun, rd2, stop_at=3)
    st = R.read_status(rd2)
    assert st.state == "stopped" and (rd2 / "checkpoints" / "step_4.pt").is_file()
    R.queue_resume(rd2)
    r = CurveRun(rd2, resume=True)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    _stop_in_evaluation(r, after=3)  # during t = 0.25: the run stops once both paths have it
    r.finish(*r.train())
    st = R.read_status(rd2)
    assert st.state == "stopped" and "evaluating the curve" in st.reason
    assert not (rd2 / "curve.json").exists() and (rd2 / "checkpoints" / "final.pt").is_file()
    R.queue_resume(rd2)
    _run(CurveRun, rd2, resume=True)
    assert R.read_status(rd2).state == "completed"
    raw = read_events(rd2 / "events.jsonl")
    # each t once per path in the file itself; the last process measured only the 6 points left
    pts = [(e["path"], e["index"]) for e in raw if e["kind"] == "curve_point"]
    assert sorted(pts) == sorted((p, i) for i in range(5) for p in ("curve", "line"))
    last_resume = max(i for i, e in enumerate(raw) if e["kind"] == "resume")
    assert len([e for e in raw[last_resume:] if e["kind"] == "curve_point"]) == 6
    total = R.read_status(rd1).step
    for kind in ("eval", "checkpoint"):  # the final eval and final.pt are not written again
        n1 = len([e for e in read_events(rd1 / "events.jsonl") if e["kind"] == kind and e["step"] == total])
        assert len([e for e in raw if e["kind"] == kind and e["step"] == total]) == n1
    kept = apply_resumes(raw)
    points = [e for e in read_events(rd1 / "events.jsonl") if e["kind"] == "curve_point"]
    strip = lambda es: sorted(({k: v for k, v in e.items() if k != "time"} for e in es), key=str)  # noqa: E731
    assert strip(e for e in kept if e["kind"] == "curve_point") == strip(points)
    assert raw[-1]["kind"] == "end" and raw[-1]["step"] == total and R.read_status(rd2).step == total
    res1, res2 = R.read_status(rd1).result, R.read_status(rd2).result
    assert {k: v for k, v in res1.items() if k != "wall_time"} == {k: v for k, v in res2.items() if k != "wall_time"}
    s1 = load_checkpoint(rd1 / "checkpoints" / "final.pt")["objective"]["state"]["curve"]
    s2 = load_checkpoint(rd2 / "checkpoints" / "final.pt")["objective"]["state"]["curve"]
    assert torch.equal(s1["points"], s2["points"])
    e1 = [e["loss"] for e in read_events(rd1 / "events.jsonl") if e["kind"] == "train"]
    e2 = [e["loss"] for e in apply_resumes(read_events(rd2 / "events.jsonl")) if e["kind"] == "train"]
    assert e1 == e2
    assert json.loads((rd1 / "curve.json").read_text()) == json.loads((rd2 / "curve.json").read_text())


def test_ends_of_another_architecture_are_refused_before_start():
    raw = {
        **BASE,
        "variant": [
            {"name": "a", "set": {}},
            {"name": "b", "set": {"model.width": 12}},
            {"name": "curve", "set": CURVE},
        ],
    }
    with pytest.raises(ConfigError, match=r"curve.end: run 'curve': the model of this run does not match .*'b'"):
        check_experiment(expand(raw, []))


def test_ends_on_another_data_split_are_refused():
    raw = {**BASE, "data": {**BASE["data"], "seed": None}}
    raw["data"].pop("seed")
    exp = expand(
        {**raw, "variant": [{"name": "a", "set": {"seed": 1}}, {"name": "b", "set": {}}, {"name": "c", "set": CURVE}]},
        [],
    )
    with pytest.raises(ConfigError, match=r"curve.start: .*trains on other data .*data.seed 1 there, 0 here"):
        check_experiment(exp)


def test_the_same_end_twice_is_refused():
    with pytest.raises(ConfigError, match=r"curve.end: .*expected different checkpoints"):
        check_experiment(experiment({"curve.end": "@a"}))


def test_a_curve_without_its_section_or_with_probes_is_refused():
    raw = {**BASE, "task": "curve"}
    with pytest.raises(ConfigError, match=r"curve: task 'curve' needs a \[curve\] section"):
        check_experiment(expand(raw, []))


def test_a_missing_end_file_exits_2_naming_the_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(
        'name = "c"\ntask = "curve"\ndevice = "cpu"\n[data]\nname = "digits"\n[model]\nname = "mlp"\n'
        f'[curve]\nstart = "{tmp_path}/nope.pt"\nend = "{tmp_path}/nope2.pt"\n'
    )
    res = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"))
    assert res.returncode == 2, res.stderr
    assert "curve.start" in res.stderr and "no such checkpoint file" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_ends_that_do_not_fit_at_the_start_fail_the_run_with_the_key(ends, tmp_path):
    import shutil

    rd = tmp_path / "e" / "curve"
    shutil.copytree(ends, rd.parent, ignore=shutil.ignore_patterns("curve", "summary.json"))
    shutil.copytree(ends / "curve", rd, ignore=shutil.ignore_patterns("checkpoints", "*.jsonl", "curve.json"))
    (rd / "config.toml").write_text((rd / "config.toml").read_text().replace("width = 16", "width = 12"))
    with pytest.raises(ConfigError, match=r"curve.start: the model of this run does not match"):
        CurveRun(rd).setup()


def _row(**kw):
    row = {
        "run": "curve",
        "state": "completed",
        "line_barrier_train_loss": 0.6,
        "curve_barrier_train_loss": 0.05,
        "curve_max_train_loss": 0.06,
        "line_max_train_loss": 0.62,
        "start_test_error": 0.02,
        "end_test_error": 0.03,
        "curve_max_test_error": 0.04,
        "line_max_test_error": 0.2,
    }
    return {**row, **kw}


def test_connectivity_verdict_passes_and_fails_on_its_margins():
    from heur.core.verdicts import connectivity_verdicts

    def ok(**kw):
        return connectivity_verdicts({"check": "connectivity", "runs": [_row(**kw)]})[0]["ok"]

    assert ok() is True
    assert ok(line_barrier_train_loss=0.05, curve_barrier_train_loss=0.0) is False  # no barrier on the line
    assert ok(curve_barrier_train_loss=0.2) is False  # 0.2 > 0.25 x 0.6
    assert ok(curve_max_test_error=0.0501) is False  # worse end 3% + 2 points
    assert ok(curve_max_test_error=0.0499) is True
    assert ok(state="failed") is False
    rows = connectivity_verdicts({"runs": [_row()]})
    assert "margin +1.00 points" in rows[0]["text"] and "7.75%" in rows[-1]["text"]


@pytest.mark.slow
def test_connect_preset_end_to_end_shows_the_curve_below_the_line(tmp_path):
    res = heur("run", str(ROOT / "presets" / "connect.toml"), "--runs-dir", str(tmp_path / "runs"), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verdict" in res.stdout
    (exp_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((exp_dir / "summary.json").read_text())
    (row,) = [r for r in summary["runs"] if r["run"] == "curve"]
    # a trained curve between digits MLPs of different seeds: its max train loss far below the line's
    assert row["curve_max_train_loss"] < 0.25 * row["line_max_train_loss"]
    assert row["line_barrier_train_loss"] > 0.1
    assert all(v["ok"] is not False for v in summary["verdicts"]), summary["verdicts"]


def _sgdr_summary(tmp_path, sgdr_barrier, sgd_barrier, curve_losses, curve_accs):
    for run, sched in (("sgdr", "sgdr"), ("sgd", "step")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.toml").write_text(f'[schedule]\nname = "{sched}"\n')
    rows = [{"run": "sgdr", "state": "completed"}, {"run": "sgd", "state": "completed"}]
    for name, start, lb in (("c_sgdr", "@sgdr:restart_1", sgdr_barrier), ("c_sgd", "@sgd:step_46", sgd_barrier)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.toml").write_text(f'task = "curve"\n[curve]\nstart = "{start}"\nend = "@x"\n')
        ts = [i / (len(curve_losses) - 1) for i in range(len(curve_losses))]
        (tmp_path / name / "curve.json").write_text(
            json.dumps({"curve": {"t": ts, "train_loss": curve_losses, "test_accuracy": curve_accs}})
        )
        rows.append(_row(run=name, line_barrier_train_loss=lb, line_barrier_test_error=0.1))
    return {"check": "sgdr", "path": str(tmp_path), "runs": rows}


def test_sgdr_verdict_reads_barriers_by_the_snapshots_schedule_and_can_fail(tmp_path):
    from heur.core.verdicts import sgdr_verdicts

    (tmp_path / "g").mkdir()
    good = _sgdr_summary(tmp_path / "g", 0.5, 0.01, [0.1, 0.05, 0.08], [0.95, 0.9, 0.94])
    rows = sgdr_verdicts(good)
    overall = [r for r in rows if r["run"] is None and r["ok"] is not None]
    assert [r["ok"] for r in overall] == [True, True], rows
    assert "SGDR 1/1, SGD 0/1" in overall[0]["text"]
    assert any("no barrier" in r["text"] for r in rows if r["run"] == "c_sgd")
    # no barrier anywhere, and a curve whose best point generalises better: both claims fail
    (tmp_path / "b").mkdir()
    bad = _sgdr_summary(tmp_path / "b", 0.0, 0.0, [0.1, 0.05, 0.08], [0.95, 0.97, 0.94])
    assert [r["ok"] for r in sgdr_verdicts(bad) if r["run"] is None and r["ok"] is not None] == [False, False]
    # SGD snapshots of a run that collapsed to chance (91% test error): not "no barrier" but a failure
    (tmp_path / "c").mkdir()
    dead = _sgdr_summary(tmp_path / "c", 0.5, 0.0, [0.1, 0.05, 0.08], [0.95, 0.9, 0.94])
    dead["runs"][-1]["end_test_error"] = 0.91
    rows = sgdr_verdicts(dead)
    (sgd,) = [r for r in rows if r["run"] == "c_sgd"]
    assert sgd["ok"] is False and "91.00% test error" in sgd["text"] and "not trained" in sgd["text"]
    assert [r["ok"] for r in rows if r["run"] is None and r["ok"] is not None][0] is False


def test_resilience_verdict_fails_a_variant_that_is_not_connected():
    from heur.core.verdicts import resilience_verdicts

    rows = [_row(run="curve_A"), _row(run="curve_B", curve_max_test_error=0.06)]
    out = resilience_verdicts({"check": "resilience", "runs": rows})
    assert [r["ok"] for r in out[:3]] == [True, False, False]
    assert "variants connected to G: 1/2" in out[2]["text"] and "margin -1.00 points" in out[1]["text"]
    assert resilience_verdicts({"runs": [_row(run="curve_A")]})[1]["ok"] is True


@pytest.mark.parametrize("preset", ["connect", "sgdr_connect", "resilience"])
def test_the_connectivity_presets_pass_preflight(preset):
    exp = check_experiment_of(ROOT / "presets" / f"{preset}.toml")
    tasks = {cfg.task for cfg in exp.runs.values()}
    assert "curve" in tasks


def check_experiment_of(path):
    from heur.core.launch import prepare

    return prepare(path)


@pytest.mark.slow
def test_the_paper_twins_validate_with_the_reference_settings(tmp_path):
    """presets/paper/*connect*/resilience: what `heur run --dry-run` checks (the CLI on one, the
    same launch path in process on the others), on a stand-in CIFAR-10 folder (no CIFAR-10 here),
    and the settings of Garipov's README: endpoints 200 epochs at lr 0.05, wd 5e-4, batch 128,
    momentum 0.9; curves 600 epochs at lr 0.015 with one trainable bend (his num_bends = 3)."""
    from test_data_models import _fake_cifar10

    from heur.core.launch import prepare

    _fake_cifar10(tmp_path / "data")
    sets = [f'data.root="{tmp_path / "data"}"', "data.checksums=false"]
    paper = ROOT / "presets" / "paper"
    res = heur("run", str(paper / "connect_cifar10.toml"), "--dry-run", "--set", sets[0], "--set", sets[1])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bezier  curve.start = @a; curve.end = @b" in res.stdout
    for name, check in (
        ("connect_cifar10", "connectivity"),
        ("sgdr_connect_cifar10", "sgdr"),
        ("resilience_cifar10", "resilience"),
    ):
        exp = prepare(paper / f"{name}.toml", sets)
        assert exp.raw["check"] == check
        for cfg in exp.runs.values():
            assert (cfg.data.name, cfg.model.name, cfg.model.batch_norm) == ("cifar10", "vgg16", False)
            if cfg.task == "curve":
                c = (cfg.train.epochs, cfg.optim.lr, cfg.optim.weight_decay, cfg.curve.bends, cfg.schedule.name)
                assert c == (600, 0.015, 5e-4, 1, "garipov") and cfg.curve.points == 61
            elif cfg.task == "train" and name != "resilience_cifar10":
                assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum) == (0.05, 5e-4, 0.9)
                assert cfg.train.batch_size == 128
    g = prepare(paper / "resilience_cifar10.toml", sets).runs["G"]
    assert (g.train.epochs, g.optim.lr, g.optim.weight_decay, g.train.batch_size) == (200, 0.05, 5e-4, 128)
    exp = prepare(paper / "sgdr_connect_cifar10.toml", sets)
    sgdr = exp.runs["sgdr"]
    spe = 391  # 50,000 training images in batches of 128, the last one partial
    restarts = build_schedule(sgdr.schedule, 1.0, spe, int(sgdr.train.epochs * spe)).restart_steps
    assert [s / spe for s in restarts] == [10, 30, 70] and sgdr.train.epochs == 150  # snapshots 30, 70, 150
    assert exp.runs["curve_sgd_30_70"].curve.start == f"@sgd:step_{30 * spe}"
    assert exp.runs["curve_sgd_30_70"].curve.end == f"@sgd:step_{70 * spe}"


@pytest.mark.slow
def test_a_sigterm_during_the_evaluation_resumes_it_in_a_new_process(ends, tmp_path, monkeypatch):
    """The curve run's own process (R.launch_run) gets SIGTERM once its evaluation along the curve
    has begun; `python -m heur.core.curve --resume` finishes it: each t once per path in the file,
    the points measured before the stop kept as they were."""
    import shutil
    import subprocess
    import sys
    import time

    monkeypatch.setenv("HEUR_THREADS", "1")
    rd = tmp_path / "x" / "curve"
    shutil.copytree(ends, rd.parent, ignore=shutil.ignore_patterns("curve", "summary.json"))
    shutil.copytree(ends / "curve", rd, ignore=shutil.ignore_patterns("checkpoints", "*.jsonl", "curve.json"))
    cfg = (rd / "config.toml").read_text()
    assert "points = 5" in cfg
    (rd / "config.toml").write_text(cfg.replace("points = 5", "points = 61"))  # an evaluation long enough to land in
    proc = R.launch_run(rd)
    deadline = time.time() + 120
    while time.time() < deadline and not any(e["kind"] == "curve_point" for e in read_events(rd / "events.jsonl")):
        time.sleep(0.01)
    R.stop_run(rd)
    proc.wait(timeout=60)
    st = R.read_status(rd)
    assert st.state == "stopped" and "evaluating the curve" in st.reason, st.reason
    before = {(e["path"], e["index"]): e for e in read_events(rd / "events.jsonl") if e["kind"] == "curve_point"}
    assert 0 < len(before) < 122
    R.queue_resume(rd)
    subprocess.run([sys.executable, "-m", "heur.core.curve", str(rd), "--resume"], check=True, timeout=300)
    assert R.read_status(rd).state == "completed"
    raw = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "curve_point"]
    assert sorted((e["path"], e["index"]) for e in raw) == sorted((p, i) for i in range(61) for p in ("curve", "line"))
    assert all(raw[k] == e for k, e in enumerate(before.values()))  # the first process's points, untouched
    doc = json.loads((rd / "curve.json").read_text())
    assert len(doc["curve"]["t"]) == 61 and doc["curve"]["train_loss"][0] == before["curve", 0]["train_loss"]
