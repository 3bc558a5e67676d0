"""DDP through torchrun on this CPU (gloo): a run of 2 ranks against one process over the same
global batch, stopping, resuming, a rank that dies, and the preflight of ``[launch]``.

The oracle of the trajectory is heur's own one-process loop, which the rest of the suite checks
against torch's schedulers and losses: with the same global batch (sharded unevenly here: batch
25 over 2 ranks is 12 + 13 examples) the 2-rank losses and weights must equal it to 1e-5.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import heur, train_in_process

from heur.core import launcher as L
from heur.core import runs as R
from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.events import apply_resumes, read_events

BASE = {
    "name": "ddp",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits", "subset": 256},
    "model": {"name": "mlp", "width": 32, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    # 256 = 10 x 25 + 6: every epoch ends with a batch of 6 (3 + 3); the others are 12 + 13
    "train": {"epochs": 30, "batch_size": 25, "log_every": 5, "eval_every": 10},
}
ENV = {"HEUR_THREADS": "1", "OMP_NUM_THREADS": "1"}  # one thread per rank: 2 cores here


def _experiment(tmp_path: Path, name: str, nproc: int, **train) -> Path:
    raw = json.loads(json.dumps(BASE))
    raw["name"] = name
    raw["train"].update(train)
    if nproc > 1:
        raw["launch"] = {"nproc": nproc}
    exp = expand(raw, [])
    return R.create_experiment(exp, tmp_path / "runs") / name


def _losses(rd: Path) -> dict[int, float]:
    """Step -> logged train loss, the resumed process's points replacing the stopped one's."""
    return {e["step"]: e["loss"] for e in apply_resumes(read_events(rd / "events.jsonl")) if e["kind"] == "train"}


def _kinds(rd: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in (rd / "events.jsonl").read_text().splitlines()]


def _start(rd: Path, resume: bool = False):
    return L.for_run(rd).start(rd, resume=resume, env_extra=dict(ENV))


def _wait(proc, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout=timeout)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("torchrun did not end: a hung run") from None


def _wait_for(pred, timeout: float = 90, what: str = "") -> None:
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _reference(tmp_path: Path) -> tuple[dict[int, float], dict]:
    torch.set_num_threads(1)
    rd = _experiment(tmp_path, "one", 1)
    r, state = train_in_process(rd)
    assert state == "completed"
    return _losses(rd), {k: v.clone() for k, v in r.model.state_dict().items()}


@pytest.mark.slow
def test_two_ranks_follow_one_process_and_resume_exactly_after_sigterm(tmp_path):
    ref, ref_weights = _reference(tmp_path)
    rd = _experiment(tmp_path, "two", 2)
    assert L.for_run(rd).name == "torchrun"
    proc = _start(rd)
    _wait_for(lambda: (rd / "events.jsonl").is_file() and "train" in _kinds(rd), what="the first train event")
    assert R.read_status(rd).state == "running"
    assert R.stop(rd) == 1  # heur stop: SIGTERM to torchrun, which forwards it to both ranks
    _wait(proc)
    L.for_run(rd).ended(rd, proc)  # what the supervisor does once torchrun has exited
    st = R.read_status(rd)
    assert st.state == "stopped", (st.state, st.reason, (rd / "stdout.log").read_text()[-2000:])
    ckpts = sorted(p.name for p in (rd / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1 and ckpts[0] == f"step_{st.step}.pt", ckpts  # one checkpoint, by rank 0
    assert st.step % BASE["train"]["log_every"] == 0 and 0 < st.step < 330  # the ranks agree at a log step
    proc = _start(rd, resume=True)
    _wait(proc)
    assert R.read_status(rd).state == "completed", (rd / "stdout.log").read_text()[-2000:]
    kinds = _kinds(rd)
    assert kinds.count("start") == 1 and kinds.count("resume") == 1 and kinds.count("end") == 2  # written once
    start = json.loads((rd / "events.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["batch_size"] == 25  # the global batch
    got = _losses(rd)
    assert got.keys() == ref.keys()
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=1e-5), s
    final = torch.load(rd / "checkpoints" / "final.pt", weights_only=True)["model"]
    for k, v in ref_weights.items():
        torch.testing.assert_close(final[k], v, rtol=1e-5, atol=1e-6)


def _ranks(agent_pid: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of torchrun's workers (its children, each with LOCAL_RANK in its environment)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            env = (p / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if ppid == agent_pid:
            for e in env:
                if e.startswith(b"LOCAL_RANK="):
                    out[int(e.split(b"=")[1])] = int(p.name)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_rank_that_dies_ends_the_run_failed_not_hung(tmp_path, victim):
    rd = _experiment(tmp_path, "dies", 2, epochs=2000)
    proc = _start(rd)
    _wait_for(lambda: (rd / "events.jsonl").is_file() and "train" in _kinds(rd), what="the first train event")
    ranks = _ranks(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[victim], signal.SIGKILL)
    code = _wait(proc, timeout=90)  # gloo reports the closed peer; torchrun ends the other rank
    assert code != 0
    L.for_run(rd).ended(rd, proc)
    st = R.read_status(rd)
    assert st.state == "failed", (st.state, st.reason)
    assert _kinds(rd).count("end") == 1
    if victim == 0:  # nobody was left to write the end: the launcher did
        assert "torchrun exited" in st.reason
    assert all(not R.pid_alive(pid, None) for pid in ranks.values())


def _check(tmp_path: Path, **over) -> None:
    from heur.core.preflight import check_experiment

    raw = json.loads(json.dumps(BASE))
    for dotted, v in over.items():
        sec, _, key = dotted.partition("__")
        raw.setdefault(sec, {})[key] = v
    check_experiment(expand(raw, []))


@pytest.mark.parametrize(
    "over, message",
    [
        ({"launch__nproc": 2, "train__freeze": ["fc1"], "train__freeze_epochs": 1}, "train.freeze"),
        ({"launch__nproc": 32}, "expected batch >= nproc"),
        ({"launch__nproc": 4, "train__batch_size": 127}, "last batch of each epoch has 2 example(s)"),
    ],
)
def test_launch_preflight_refuses_what_ddp_cannot_shard(tmp_path, over, message):
    with pytest.raises(ConfigError) as e:
        _check(tmp_path, **over)
    assert e.value.key == "launch.nproc" and message in str(e.value)
    _check(tmp_path, launch__nproc=4, train__batch_size=127, train__drop_last=True)  # drop_last: fine


def test_bad_launch_flags_exit_2_naming_the_file_and_key(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('name = "p"\ndevice = "cpu"\n[data]\nname = "digits"\n[model]\nname = "mlp"\n')
    r = heur("run", str(p), "--launcher", "pbs", "--nproc", "2", "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert f"{p}: launch.launcher: expected 'local' or 'slurm', got 'pbs'" in r.stderr
    from heur.core.launch import prepare

    with pytest.raises(ConfigError) as e:  # what --nproc 2 sets, on a batch of 1
        prepare(p, ["launch.nproc=2", "train.batch_size=1"])
    assert str(e.value).startswith(f"{p}: launch.nproc: ")
    with pytest.raises(ConfigError) as e:
        prepare(p, ["launch.launcher='slurm'"])  # no sbatch on this machine's PATH
    assert "launch.launcher" in str(e.value) and "sbatch" in str(e.value)
