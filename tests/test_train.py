"""The training loop end to end on digits: loss falls, events parse, divergence, checkpoints,
SIGTERM + resume reproduce the uninterrupted trajectory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from heur.core import runs as R
from heur.core.checkpoint import rebuild_from_checkpoint
from heur.core.config import expand
from heur.core.events import apply_resumes, read_events
from heur.core.objective import evaluate, make_loss
from heur.core.train import Run

BASE = {
    "name": "t",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256},
    "model": {"name": "mlp", "width": 32, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 4, "batch_size": 32, "log_every": 2},
}


def make_exp(tmp_path, overrides=(), raw=None):
    exp = expand(raw or BASE, list(overrides))
    return R.create_experiment(exp, tmp_path / "runs")


def run_inprocess(run_dir, resume=False):
    r = Run(run_dir, resume=resume)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    state, reason, last = r.train()
    r.finish(state, reason, last)
    return r, state


def test_loss_falls_and_events_follow_the_contract(tmp_path):
    exp_dir = make_exp(tmp_path)
    (rd,) = R.run_dirs(exp_dir)
    _, state = run_inprocess(rd)
    assert state == "completed"
    evs = read_events(rd / "events.jsonl")
    kinds = [e["kind"] for e in evs]
    assert kinds[0] == "start" and kinds[-1] == "end" and evs[-1]["state"] == "completed"
    train = [e for e in evs if e["kind"] == "train"]
    assert len(train) == 4 * 8 // 2
    assert train[-1]["loss"] < 0.6 * train[0]["loss"]
    assert [e["samples"] for e in train[:4]] == [64, 128, 192, 256]
    assert all({"kind", "step", "epoch", "time", "lr", "grad_norm"} <= set(e) for e in train)
    evals = [e for e in evs if e["kind"] == "eval"]
    assert {e["split"] for e in evals} == {"train", "test"} and len(evals) == 2 * 4
    st = R.read_status(rd)
    assert st.state == "completed" and st.step == 32 and st.result["test_accuracy"] > 0.5
    assert (rd / "checkpoints" / "final.pt").is_file()


def test_checkpoint_loads_weights_only_and_rebuilds_the_model(tmp_path):
    exp_dir = make_exp(tmp_path, ["model.name=cnn", "model.batch_norm=true", "train.epochs=1"])
    (rd,) = R.run_dirs(exp_dir)
    r, _ = run_inprocess(rd)
    ck = torch.load(rd / "checkpoints" / "final.pt", weights_only=True)
    assert ck["step"] == 8 and ck["config"]["model"]["name"] == "cnn"
    model, cfg, bundle = rebuild_from_checkpoint(rd / "checkpoints" / "final.pt")
    loss_fn = make_loss(cfg.train, bundle.task, bundle.num_outputs)
    got = evaluate(model, bundle.x_test, bundle.y_test, loss_fn, 512)
    want = evaluate(r.model, r.data.x_test, r.data.y_test, r.loss_fn, 512)
    assert got == pytest.approx(want, rel=1e-6)


def test_divergence_ends_run_as_diverged_with_the_step(tmp_path):
    exp_dir = make_exp(tmp_path, ["optim.lr=1e4", 'train.loss="mse"', "train.log_every=1"])
    (rd,) = R.run_dirs(exp_dir)
    _, state = run_inprocess(rd)
    assert state == "diverged"
    end = read_events(rd / "events.jsonl")[-1]
    assert end["kind"] == "end" and end["state"] == "diverged" and "step" in end["reason"]
    assert R.read_status(rd).state == "diverged"


def test_mse_losses_match_their_definitions():
    from types import SimpleNamespace

    out, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    mean = make_loss(SimpleNamespace(loss="mse", mse_reduction="mean"), "classification", 3)
    half = make_loss(SimpleNamespace(loss="mse", mse_reduction="half_sum"), "classification", 3)
    assert torch.isclose(mean(out, y), ((out - onehot) ** 2).sum() / 15)
    assert torch.isclose(half(out, y), ((out - onehot) ** 2).sum() / 10)


def _final_weights(rd):
    return torch.load(rd / "checkpoints" / "final.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_sigterm_then_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HEUR_THREADS", "1")  # small model: one thread each, no spinning under load
    over = ["train.epochs=100", "model.name=mlp", "model.depth=2", "data.augment=true", "train.log_every=1"]
    exp_dir = make_exp(tmp_path, over)
    (rd,) = R.run_dirs(exp_dir)
    proc = R.launch_run(rd)
    deadline = time.time() + 120
    while time.time() < deadline:  # stop as soon as a few steps are logged
        if any(e["kind"] == "train" and e["step"] >= 5 for e in read_events(rd / "events.jsonl")):
            break
        time.sleep(0.01)
    R.stop_run(rd)
    proc.wait(timeout=60)
    st = R.read_status(rd)
    assert st.state == "stopped", st.reason
    stopped_at = st.step
    assert 5 <= stopped_at < 800
    assert (rd / "checkpoints" / f"step_{stopped_at}.pt").is_file()
    # resume to the end in a new process
    R.queue_resume(rd)
    subprocess.run([sys.executable, "-m", "heur.core.train", str(rd), "--resume"], check=True, timeout=300)
    assert R.read_status(rd).state == "completed"
    # the same run uninterrupted
    exp2 = make_exp(tmp_path / "b", over)
    (rd2,) = R.run_dirs(exp2)
    subprocess.run([sys.executable, "-m", "heur.core.train", str(rd2)], check=True, timeout=300)
    w1, w2 = _final_weights(rd), _final_weights(rd2)
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    # readers see one trajectory: the resumed file, with resumes applied, equals the uninterrupted one
    e1 = [e["loss"] for e in apply_resumes(read_events(rd / "events.jsonl")) if e["kind"] == "train"]
    e2 = [e["loss"] for e in read_events(rd2 / "events.jsonl") if e["kind"] == "train"]
    assert e1 == e2


def test_sigkill_shows_as_lost(tmp_path):
    exp_dir = make_exp(tmp_path, ["train.epochs=100000"])  # cannot finish before the kill
    (rd,) = R.run_dirs(exp_dir)
    proc = R.launch_run(rd)
    deadline = time.time() + 60
    while R.read_status(rd).step < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    st = R.read_status(rd)
    assert st.state == "lost"
    json.loads((rd / "status.json").read_text())  # still readable


def test_sgdr_emits_restarts_and_saves_the_iterate_before_each(tmp_path):
    from heur.core.data import steps_per_epoch
    from heur.core.schedules import build_schedule

    over = [
        'schedule.name="sgdr"',
        "schedule.t0=1",
        "schedule.t_mult=2",
        "train.epochs=7",
        "train.checkpoint_before_restart=true",
        'optim.name="gi_adam"',
        "optim.lr=0.01",
    ]
    exp_dir = make_exp(tmp_path, over)
    (rd,) = R.run_dirs(exp_dir)
    r, state = run_inprocess(rd)
    assert state == "completed"
    sched = build_schedule(r.cfg.schedule, r.base_lr, steps_per_epoch(r.cfg), r.total)
    expected = [s for s in sched.restart_steps if s < r.total]
    assert expected == [8, 24]  # t0 = 1 epoch of 8 steps, then 2 epochs
    evs = read_events(rd / "events.jsonl")
    restarts = [e for e in evs if e["kind"] == "restart"]
    assert [e["step"] for e in restarts] == expected
    for k, step in enumerate(expected, start=1):
        ck = torch.load(rd / "checkpoints" / f"restart_{k}.pt", weights_only=True)
        assert ck["step"] == step
    lrs = {e["step"]: e["lr"] for e in evs if e["kind"] == "train"}
    # the lr logged with step s is the one used for the step that ended there (index s - 1)
    for s, lr in lrs.items():
        assert lr == pytest.approx(sched(s - 1), rel=1e-12)
