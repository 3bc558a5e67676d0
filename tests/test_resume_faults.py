"""Faults a resume must survive (issue 17): a torn last event line, a corrupt newest checkpoint,
another thread count, wall time over several processes. The oracle is always the same run
trained without interruption."""

import os
import shutil
import time

import pytest
import torch

from heur.core import runs as R
from heur.core.config import expand
from heur.core.events import apply_resumes, read_events
from heur.core.train import Run

BASE = {
    "name": "t",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256, "augment": True},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 4, "batch_size": 32, "log_every": 2, "checkpoint_every": 1},
}


def run_inprocess(run_dir, resume=False):
    r = Run(run_dir, resume=resume)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    state, reason, last = r.train()
    r.finish(state, reason, last)
    return r, state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A run trained start to end (8 steps an epoch, step_8/16/24 and final.pt), on one thread."""
    before = torch.get_num_threads()
    os.environ["HEUR_THREADS"] = "1"
    try:
        exp_dir = R.create_experiment(expand(BASE, []), tmp_path_factory.mktemp("u") / "runs")
        (rd,) = R.run_dirs(exp_dir)
        run_inprocess(rd)
    finally:
        del os.environ["HEUR_THREADS"]
        torch.set_num_threads(before)
    return rd


def interrupted_copy(src, dst, keep_up_to):
    """The run as if killed after its ``step_<keep_up_to>`` checkpoint: later files and events gone."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints").iterdir():
        if p.name == "final.pt" or int(p.stem.split("_")[1]) > keep_up_to:
            p.unlink()
    lines = (dst / "events.jsonl").read_text().splitlines(keepends=True)
    import json

    kept = [ln for ln in lines if json.loads(ln)["step"] <= keep_up_to and json.loads(ln)["kind"] != "end"]
    (dst / "events.jsonl").write_text("".join(kept))
    R.queue_resume(dst)
    return dst


def final_weights(rd):
    return torch.load(rd / "checkpoints" / "final.pt", weights_only=True)["model"]


def assert_same_run(rd, ref):
    w, w_ref = final_weights(rd), final_weights(ref)
    assert all(torch.equal(w[k], w_ref[k]) for k in w_ref)
    losses = [e["loss"] for e in apply_resumes(read_events(rd / "events.jsonl")) if e["kind"] == "train"]
    assert losses == [e["loss"] for e in read_events(ref / "events.jsonl") if e["kind"] == "train"]


def test_a_torn_last_event_line_does_not_swallow_the_resume_event(uninterrupted, tmp_path):
    rd = interrupted_copy(uninterrupted, tmp_path / "t", 16)
    with open(rd / "events.jsonl", "a") as f:
        f.write('{"kind":"train","step":17,"epo')  # killed mid-write
    run_inprocess(rd, resume=True)
    evs = read_events(rd / "events.jsonl")
    (resume,) = [e for e in evs if e["kind"] == "resume"]
    assert resume["from_step"] == 17 and resume["checkpoint"] == "checkpoints/step_16.pt"
    assert evs[-1]["kind"] == "end" and evs[-1]["state"] == "completed"
    assert_same_run(rd, uninterrupted)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_good_one(uninterrupted, tmp_path, capsys):
    rd = interrupted_copy(uninterrupted, tmp_path / "c", 24)
    newest = rd / "checkpoints" / "step_24.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # killed while the disk filled up
    _, state = run_inprocess(rd, resume=True)
    assert state == "completed"
    (resume,) = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "resume"]
    assert resume["checkpoint"] == "checkpoints/step_16.pt" and resume["skipped"] == ["step_24.pt"]
    assert "step_24.pt" in capsys.readouterr().out
    assert_same_run(rd, uninterrupted)


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(uninterrupted, tmp_path):
    from heur.core.errors import ConfigError

    rd = interrupted_copy(uninterrupted, tmp_path / "n", 8)
    (rd / "checkpoints" / "step_8.pt").write_bytes(b"garbage")
    r = Run(rd, resume=True)
    r.setup()
    with pytest.raises(ConfigError, match="no readable checkpoint"):
        r.train()


def test_a_resumed_run_keeps_the_thread_count_it_started_with(uninterrupted, tmp_path, monkeypatch):
    (start,) = [e for e in read_events(uninterrupted / "events.jsonl") if e["kind"] == "start"]
    assert start["threads"] == 1 and start["deterministic"] is False
    rd = interrupted_copy(uninterrupted, tmp_path / "th", 16)
    monkeypatch.setenv("HEUR_THREADS", "2")  # what the supervisor hands a run resumed alone
    before = torch.get_num_threads()
    try:
        r, _ = run_inprocess(rd, resume=True)
        assert r.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    (resume,) = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "resume"]
    assert resume["threads"] == 1
    assert_same_run(rd, uninterrupted)


def test_wall_time_sums_the_processes_of_a_resumed_run(uninterrupted, tmp_path):
    rd = interrupted_copy(uninterrupted, tmp_path / "w", 16)
    ck = torch.load(rd / "checkpoints" / "step_16.pt", weights_only=True)
    before = ck["wall_time"]
    assert before > 0
    t = time.time()
    run_inprocess(rd, resume=True)
    segment = time.time() - t
    (end,) = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "end"]
    assert end["result"]["wall_time"] == pytest.approx(before + segment, abs=0.25)
    assert R.read_status(rd).result["wall_time"] == end["result"]["wall_time"]
