"""SLURM through submitit, without a cluster.

- The submission path end to end from the CLI: stand-in ``sbatch``/``srun``/``squeue``/``scancel``
  scripts on PATH record their arguments and answer like SLURM; the sbatch script submitit wrote
  is checked line by line against ``[launch.slurm]``; ``heur runs`` and ``heur stop`` read and
  signal the job through squeue and scancel.
- The job path with submitit's LocalExecutor: the pickled job runs the run on this machine; USR2
  (SLURM's warning before a time limit or a preemption) makes the run checkpoint, the job
  requeue, and the requeued job resume it, ending where one uninterrupted process ends.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import heur, train_in_process

from heur.core import runs as R
from heur.core import slurm_queue
from heur.core.events import apply_resumes, read_events

submitit = pytest.importorskip("submitit")

PRESET = """
name = "sl"
device = "cuda"              # the compute node's GPUs: not checked on the login node
[data]
name = "digits"
subset = 256
[model]
name = "mlp"
width = 16
depth = 1
[train]
epochs = 2
batch_size = 32
[launch]
launcher = "local"           # --launcher slurm switches it
nproc = 2
[launch.slurm]
partition = "gpu"
gpus_per_run = 2
time = "1:30:00"
mem = "16G"
setup = ["module load cuda"]
sbatch = {account = "lab", exclusive = true}
"""


def _fake_slurm(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A bin folder of stand-ins that log their arguments under ``fake/`` and answer like SLURM."""
    fake = tmp_path / "fake"
    fake.mkdir()
    scripts = {
        "sbatch": 'echo "$@" >> "$FAKE_SLURM/sbatch.args"\n'
        'cp "${@: -1}" "$FAKE_SLURM/job.sh"\n'
        'echo "Submitted batch job 4242"',
        "srun": "exit 0",  # submitit only looks for it
        "squeue": 'echo "$@" >> "$FAKE_SLURM/squeue.args"\ncat "$FAKE_SLURM/squeue.out" 2>/dev/null\nexit 0',
        "scancel": 'echo "$@" >> "$FAKE_SLURM/scancel.args"',
    }
    for name, body in scripts.items():
        p = fake / name
        p.write_text("#!/bin/bash\n" + body + "\n")
        p.chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "FAKE_SLURM": str(fake)}
    return fake, env


def _set_status(rd: Path, **fields) -> None:
    d = json.loads((rd / "status.json").read_text())
    d.update(fields)
    (rd / "status.json").write_text(json.dumps(d))


def _state(rd: Path, squeue: str | None, fake: Path) -> R.RunStatus:
    if squeue is not None:
        (fake / "squeue.out").write_text(squeue)
    slurm_queue._cache["at"] = 0.0  # ask squeue again now
    return R.read_status(rd)


def test_sbatch_script_liveness_and_stop_through_stand_in_slurm_commands(tmp_path, monkeypatch):
    fake, env = _fake_slurm(tmp_path)
    preset = tmp_path / "sl.toml"
    preset.write_text(PRESET)
    runs = tmp_path / "runs"
    r = heur("run", str(preset), "--launcher", "slurm", "--detach", "--runs-dir", str(runs), env=env)
    assert r.returncode == 0, r.stderr
    exp = next(runs.iterdir())
    rd = exp / "sl"
    deadline = time.time() + 60
    while "job_id" not in json.loads((rd / "status.json").read_text()):
        assert time.time() < deadline, (exp / "supervisor.log").read_text()
        time.sleep(0.1)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        # what sbatch got: one script, its options from [launch.slurm]
        submitted = (fake / "sbatch.args").read_text().split()
        assert len(submitted) == 1 and submitted[0].endswith(".sh"), submitted  # one job: sbatch SCRIPT
        script = (fake / "job.sh").read_text().splitlines()
        for line in (
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-node=2",
            "#SBATCH --time=90",
            "#SBATCH --mem=16G",
            "#SBATCH --account=lab",
            "#SBATCH --exclusive",
            "#SBATCH --signal=USR2@120",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --job-name=heur-{exp.name}-sl",
            "module load cuda",
        ):
            assert line in script, (line, script)
        cmd = script[-1] if script[-1] else script[-2]
        assert cmd.startswith("srun --unbuffered") and f"-m submitit.core._submit {rd / 'slurm'}" in cmd, cmd
        st = json.loads((rd / "status.json").read_text())
        assert st["state"] == "queued" and st["job_id"] == "4242" and st["launcher"] == "slurm"

        # liveness: the heartbeat first, then squeue; never a local pid
        old = time.time() - 3600
        _set_status(rd, heartbeat=old)
        assert _state(rd, "4242|PENDING\n", fake).state == "queued"
        _set_status(rd, state="running", host="node7", pid=1, heartbeat=time.time(), step=3)  # as the job writes it
        assert _state(rd, "", fake).state == "running"  # fresh heartbeat: squeue not asked
        _set_status(rd, heartbeat=old)
        assert _state(rd, "4242|RUNNING\n999|PENDING\n", fake).state == "running"

        # heur stop: scancel --signal=TERM, so the run checkpoints before the job ends
        assert R.stop(rd) == 1  # what heur stop calls
        assert (fake / "scancel.args").read_text().split() == ["--signal=TERM", "4242"]

        # the job vanished (not in squeue) without an end event: lost, with the reason
        st = _state(rd, "", fake)
        assert st.state == "lost" and "SLURM job 4242 vanished" in st.reason
    finally:
        R.stop_experiment(exp)


def test_stop_cancels_a_pending_job(tmp_path, monkeypatch):
    fake, env = _fake_slurm(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rd = tmp_path / "exp" / "run"
    rd.mkdir(parents=True)
    (rd / "config.toml").write_text('name = "run"\n')
    (rd / "status.json").write_text(
        json.dumps({"state": "queued", "launcher": "slurm", "job_id": "77", "heartbeat": time.time() - 3600})
    )
    assert _state(rd, "77|PENDING\n", fake).state == "queued"
    assert R.stop_run(rd)
    assert (fake / "scancel.args").read_text().split() == ["77"]
    assert R.read_status(rd).state == "stopped"


JOB = {
    "name": "job",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits", "subset": 256},
    "model": {"name": "mlp", "width": 32, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 60, "batch_size": 32, "log_every": 8, "eval_every": 20},
}


def _losses(rd: Path) -> dict[int, float]:
    """Step -> logged train loss, the resumed process's points replacing the stopped one's."""
    return {e["step"]: e["loss"] for e in apply_resumes(read_events(rd / "events.jsonl")) if e["kind"] == "train"}


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                out.append(int(p.name))
    return out


@pytest.mark.slow
def test_job_path_requeues_on_usr2_stops_on_term_and_resumes_where_one_process_ends(tmp_path, monkeypatch):
    from heur.core.config import expand
    from heur.core.slurm import submit

    monkeypatch.setenv("HEUR_THREADS", "1")  # the job's run too (the trajectory depends on it)
    ref_dir = R.create_experiment(expand(JOB, []), tmp_path / "ref") / "job"
    _, state = train_in_process(ref_dir)
    assert state == "completed"
    exp = expand({**JOB, "launch": {"launcher": "slurm"}}, [])
    rd = R.create_experiment(exp, tmp_path / "runs") / "job"
    ex = submitit.LocalExecutor(folder=rd / "slurm")
    ex.update_parameters(timeout_min=10)
    job_id = submit(rd, exp.runs["job"].launch, executor=ex)
    assert json.loads((rd / "status.json").read_text())["job_id"] == job_id
    deadline = time.time() + 120
    while not ((rd / "events.jsonl").is_file() and '"train"' in (rd / "events.jsonl").read_text()):
        assert time.time() < deadline, (rd / "stdout.log").read_text() if (rd / "stdout.log").exists() else "no log"
        time.sleep(0.05)
    assert R.read_status(rd).state == "running"
    task = _children(int(job_id))  # the controller's task: submitit's _submit, which runs RunJob
    assert len(task) == 1
    os.kill(task[0], signal.SIGUSR2)  # SLURM's warning before the limit / a preemption

    def kinds() -> list[str]:
        return [json.loads(line)["kind"] for line in (rd / "events.jsonl").read_text().splitlines()]

    while not (kinds().count("resume") == 1 and kinds()[-1] == "train"):  # the requeued job trains on
        assert time.time() < deadline + 120, (R.read_status(rd), (rd / "stdout.log").read_text()[-3000:])
        time.sleep(0.05)
    assert json.loads((rd / "status.json").read_text())["requeues"] == 1
    task = _children(int(job_id))
    os.kill(task[0], signal.SIGTERM)  # heur stop's scancel --signal=TERM: the job forwards it to the run
    while R.read_status(rd).state != "stopped" or R.process_start_time(int(job_id)) is not None:
        assert time.time() < deadline + 180, (R.read_status(rd), (rd / "stdout.log").read_text()[-3000:])
        time.sleep(0.1)  # the run checkpointed and the job ended (no requeue)
    submit(rd, exp.runs["job"].launch, resume=True, executor=submitit.LocalExecutor(folder=rd / "slurm"))
    while R.read_status(rd).state != "completed":
        assert time.time() < deadline + 240, (R.read_status(rd), (rd / "stdout.log").read_text()[-3000:])
        time.sleep(0.1)
    ends = [json.loads(line)["state"] for line in (rd / "events.jsonl").read_text().splitlines() if '"end"' in line]
    assert ends == ["stopped", "stopped", "completed"] and kinds().count("resume") == 2 and kinds().count("start") == 1
    assert len(list((rd / "checkpoints").glob("step_*.pt"))) == 2  # one per stop
    got, ref = _losses(rd), _losses(ref_dir)
    assert got.keys() == ref.keys()
    for s in ref:
        assert got[s] == ref[s], s  # stopped, requeued and resumed: bit-identical
