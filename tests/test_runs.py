"""core.runs: states that stay true under faults (issue 17). A corrupt status.json, a killed
supervisor, a second supervisor, a resume of failed runs, Ctrl-C in `heur run`."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import heur

from heur.core import runs as R
from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.events import EventWriter

BASE = {
    "name": "r",
    "device": "cpu",
    "data": {"name": "digits", "subset": 128},
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "train": {"epochs": 1, "batch_size": 32},
    "variant": [{"name": "a", "set": {}}, {"name": "b", "set": {"seed": 1}}],
}


def make(tmp_path, raw=BASE, overrides=()):
    exp_dir = R.create_experiment(expand(raw, list(overrides)), tmp_path / "runs")
    return exp_dir, R.run_dirs(exp_dir)


def write_events(rd, *events):
    with EventWriter(rd / "events.jsonl") as w:
        for kind, fields in events:
            w.emit(kind, fields.pop("step", 0), 0.0, **fields)


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    start = R.process_start_time(p.pid)
    p.wait()
    return p.pid, start


START = ("start", {"name": "a", "total_steps": 4, "steps_per_epoch": 4, "batch_size": 32, "n_train": 128,
                   "base_lr": 0.1, "lambda0": None, "device": "cpu", "pid": 1, "blocks": []})  # fmt: skip


@pytest.mark.parametrize("corrupt", ["{not json", "", "[1, 2]", '{"name": "a"}'])
def test_an_unreadable_status_json_is_read_from_the_events(tmp_path, corrupt):
    exp_dir, (a, b) = make(tmp_path)
    write_events(a, START, ("end", {"step": 4, "state": "completed", "reason": "trained 4 steps", "result": {"x": 1}}))
    (a / "status.json").write_text(corrupt)
    st = R.read_status(a)
    assert st.state == "completed" and st.result == {"x": 1} and "events.jsonl" in st.reason
    # started, no end: nothing says it runs -> lost; no events at all -> still queued
    write_events(b, START)
    (b / "status.json").write_text(corrupt)
    assert R.read_status(b).state == "lost"
    (b / "events.jsonl").unlink()
    assert R.read_status(b).state == "queued"
    # and --resume leaves the completed run alone
    _, queued = R.queue_resume(exp_dir)
    assert queued == [b]


def test_events_win_when_status_json_says_queued_after_a_completed_end(tmp_path):
    _, (a, _) = make(tmp_path)
    write_events(a, START, ("end", {"step": 4, "state": "completed", "reason": "trained 4 steps", "result": {}}))
    assert json.loads((a / "status.json").read_text())["state"] == "queued"
    assert R.read_status(a).state == "completed"


def test_queued_runs_of_a_dead_supervisor_are_lost_and_resumable(tmp_path):
    exp_dir, (a, b) = make(tmp_path)
    assert R.read_status(a).state == "queued"  # no supervisor yet (being launched): queued
    pid, start = dead_pid()
    (exp_dir / "supervisor.json").write_text(json.dumps({"pid": pid, "pid_start": start}))
    st = R.read_status(a)
    assert st.state == "lost" and f"supervisor (pid {pid}) is gone" in st.reason and st.final
    (exp_dir / "supervisor.json").write_text(
        json.dumps({"pid": os.getpid(), "pid_start": R.process_start_time(os.getpid())})
    )
    assert R.read_status(a).state == "queued"  # a live supervisor: queued
    (exp_dir / "supervisor.json").write_text(json.dumps({"pid": pid, "pid_start": start}))
    _, queued = R.queue_resume(exp_dir)
    assert queued == [a, b]


@pytest.mark.slow
def test_a_killed_supervisor_leaves_its_queued_runs_lost(tmp_path):
    """The real thing: a supervisor with --jobs 1 SIGKILLed while its first run trains."""
    exp_dir, (a, b) = make(tmp_path, overrides=["train.epochs=100000"])
    sup = R.start_supervisor(exp_dir, jobs=1)
    deadline = time.time() + 60
    while R.read_status(a).state != "running" and time.time() < deadline:
        time.sleep(0.05)
    assert R.read_status(b).state == "queued"
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    st = R.read_status(b)
    assert st.state == "lost" and "supervisor" in st.reason
    R.stop_run(a)
    deadline = time.time() + 60
    while R.read_status(a).state == "running" and time.time() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_one_supervisor_per_experiment(tmp_path):
    exp_dir, (a, b) = make(tmp_path, overrides=["train.epochs=100000"])
    sup = R.start_supervisor(exp_dir, jobs=1)
    try:
        with pytest.raises(ConfigError, match=f"another supervisor \\(pid {sup.pid}\\)"):
            R.start_supervisor(exp_dir, jobs=1)
        assert json.loads((exp_dir / "supervisor.json").read_text())["pid"] == sup.pid  # not overwritten
        r = heur("run", "--resume", str(b), "--detach")  # b is queued behind a: the supervisor lives
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"supervisor (pid {sup.pid}) is still running" in r.stderr
    finally:
        R.stop(exp_dir)
        sup.wait(timeout=60)
    # once it has exited the lock is free again
    plan = R.resume_plan(exp_dir)
    assert plan.queued == [a, b]
    sup2 = R.start_supervisor(exp_dir, jobs=1)
    R.stop(exp_dir)
    sup2.wait(timeout=60)


def test_resume_leaves_failed_and_diverged_runs_unless_asked(tmp_path):
    raw = dict(BASE, variant=BASE["variant"] + [{"name": "c", "set": {"seed": 2}}])
    exp_dir, (a, b, c) = make(tmp_path, raw)
    for rd, state in ((a, "failed"), (b, "diverged"), (c, "stopped")):
        d = json.loads((rd / "status.json").read_text())
        d["state"] = state
        (rd / "status.json").write_text(json.dumps(d))
    plan = R.resume_plan(exp_dir)
    assert plan.queued == [c] and plan.left == [(a, "failed"), (b, "diverged")]
    assert R.read_status(a).state == "failed"
    plan = R.resume_plan(exp_dir, rerun_failed=True)
    assert plan.queued == [a, b, c] and plan.left == []


def test_resume_says_what_it_left(tmp_path):
    exp_dir, (a, b) = make(tmp_path)
    for rd in (a, b):
        d = json.loads((rd / "status.json").read_text())
        d["state"] = "failed"
        (rd / "status.json").write_text(json.dumps(d))
    r = heur("run", "--resume", str(exp_dir), "--detach")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"heur: error: {exp_dir}: nothing to resume (left a (failed), b (failed): add --rerun-failed)"
    ]


def test_resume_refuses_a_run_whose_config_no_longer_reads(tmp_path):
    """A stopped run whose config.toml was broken by hand: one line naming the file and the line,
    exit 2, and no run's status changed (nothing is queued, not even the sound run beside it)."""
    exp_dir, (a, b) = make(tmp_path)
    for rd in (a, b):
        d = json.loads((rd / "status.json").read_text())
        d["state"] = "stopped"
        (rd / "status.json").write_text(json.dumps(d))
    (b / "config.toml").write_text('name = "b"\n[optim\n')
    r = heur("run", "--resume", str(exp_dir), "--detach")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"heur: error: {b / 'config.toml'}:2: malformed TOML")
    assert R.read_status(a).state == "stopped" and R.read_status(b).state == "stopped"


@pytest.mark.slow
def test_ctrl_c_in_heur_run_stops_the_runs_and_exits_130(tiny_preset, tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "heur.cli.main", "run", str(tiny_preset), "--runs-dir", str(runs)]
    p = subprocess.Popen(cmd + ["--set", "train.epochs=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    status = None
    while time.time() < deadline:
        found = list(runs.glob("*/tiny/status.json")) if runs.exists() else []
        if found and json.loads(found[0].read_text() or "{}").get("step", 0) > 0:
            status = found[0]
            break
        time.sleep(0.1)
    assert status is not None
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out, err)
    assert json.loads(status.read_text())["state"] == "stopped"


def test_heur_runs_shows_why_a_run_is_lost(tmp_path):
    exp_dir, (a, b) = make(tmp_path)
    pid, start = dead_pid()
    (exp_dir / "supervisor.json").write_text(json.dumps({"pid": pid, "pid_start": start}))
    r = heur("runs", "--runs-dir", str(tmp_path / "runs"), env={"COLUMNS": "200"})
    assert r.returncode == 0 and r.stdout.count("lost") >= 2 and f"supervisor (pid {pid}) is gone" in r.stdout
