"""A run as a SLURM job, through submitit (``pip install 'heur[slurm]'``).

``submit`` builds a ``submitit.SlurmExecutor`` from the run's ``[launch.slurm]`` (partition,
GPUs, time, memory, extra sbatch options, setup lines) and submits :class:`RunJob`, pickled into
``<run>/slurm/`` beside submitit's logs. The run directory on the shared filesystem stays the
contract: the job writes status.json, events and checkpoints there from whatever node it lands
on, and the login node reads them (core.runs; liveness from the heartbeat and squeue:
core.slurm_queue).

On the node, :class:`RunJob` starts the run's own process (``python -m heur.core.train`` or, with
``nproc > 1``, torchrun: core.runs.run_command) in a session of its own and waits for it:

- ``heur stop`` sends ``scancel --signal=TERM JOB``: the run checkpoints and ends ``stopped``, the
  job ends (SIGTERM reaching the job's own process is forwarded to the run).
- Before a time limit or a preemption SLURM sends USR2 (submitit asks for it ``signal_delay_s``
  ahead); submitit calls :meth:`RunJob.checkpoint`: the run is stopped (it checkpoints), marked
  queued, and the job requeued with a ``RunJob`` that resumes from that checkpoint. Time-outs
  requeue at most ``max_requeue`` times; preemptions always.
- A run process that dies without an ``end`` event ends the run ``failed``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from . import runs as R
from .atomic import write_json_atomic
from .config import LaunchConfig, SlurmConfig

__all__ = ["RunJob", "executor_for", "submit"]


class RunJob:
    """The function a run's SLURM job runs (pickled by submitit, called on the node)."""

    def __init__(self, run_dir: str, nproc: int = 1, resume: bool = False, grace_s: float = 100.0):
        self.run_dir = str(run_dir)
        self.nproc = nproc
        self.resume = resume
        self.grace_s = grace_s  # how long the run may take to checkpoint after USR2
        self._proc: Optional[subprocess.Popen] = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._proc = None

    def __call__(self) -> str:
        run_dir = Path(self.run_dir)
        job_id = _job_id()
        resume = self.resume or R.latest_checkpoint(run_dir) is not None  # a requeued job continues
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cpus = int(env.get("HEUR_THREADS") or cpus)  # the job's cores, unless HEUR_THREADS says
        env["HEUR_THREADS"] = str(max(1, cpus))
        if self.nproc > 1:  # shared out between torchrun's ranks
            env["HEUR_THREADS"] = env["OMP_NUM_THREADS"] = str(max(1, cpus // self.nproc))
        st = R._read_json(run_dir / "status.json")
        st.update(state="running", launcher="slurm", job_id=job_id, host=socket.gethostname(), heartbeat=time.time())
        write_json_atomic(run_dir / "status.json", st)
        with open(run_dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                R.run_command(run_dir, resume, self.nproc),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the signals below reach all of it
                preexec_fn=_ignore_usr2,  # USR2 is the job's (submitit checkpoints through SIGTERM)
                env=env,
            )
        proc = self._proc

        def forward(signum: int, frame: Any) -> None:  # heur stop: scancel --signal=TERM
            _signal_group(proc, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        started = time.time()
        code = proc.wait()
        # torchrun given SIGTERM twice (SLURM's and ours) exits before its ranks: give rank 0 the
        # time to write its checkpoint and end before the job (and SLURM with it) ends
        deadline = time.time() + self.grace_s
        while not _ended_since(run_dir, started) and time.time() < deadline and self.nproc > 1:
            time.sleep(0.2)
        R.end_if_silent(run_dir, f"its process exited with code {code} in SLURM job {job_id} without an end event")
        return R.read_status(run_dir).state

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SLURM's warning before a time limit or a preemption (USR2, through submitit): stop the
        run (it saves a checkpoint), mark it queued and requeue the job to resume it. None (no
        requeue) when the run had ended otherwise than stopped."""
        from submitit.helpers import DelayedSubmission

        run_dir = Path(self.run_dir)
        proc = self._proc
        if proc is not None and R.process_start_time(proc.pid) is not None:
            _signal_group(proc, signal.SIGTERM)
            # not proc.wait(): __call__ is inside it (this runs in the signal handler) and holds its
            # lock; a process that has exited is a zombie until then, which process_start_time says
            deadline = time.time() + self.grace_s
            while R.process_start_time(proc.pid) is not None and time.time() < deadline:
                time.sleep(0.05)
        end = R._end_event(run_dir)
        if end is not None and end.get("state") in ("completed", "diverged", "failed", "skipped"):
            return None  # it ended by itself: nothing to continue
        st = R._read_json(run_dir / "status.json")
        st.update(
            state="queued",
            reason=f"requeued by SLURM (time limit or preemption) at step {st.get('step', 0)}",
            requeues=int(st.get("requeues") or 0) + 1,
            heartbeat=time.time(),
        )
        write_json_atomic(run_dir / "status.json", st)
        return DelayedSubmission(RunJob(self.run_dir, self.nproc, resume=True, grace_s=self.grace_s))


def _ended_since(run_dir: Path, t: float) -> bool:
    end = R._end_event(run_dir)
    return end is not None and float(end.get("time") or 0.0) >= t


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _job_id() -> str:
    if os.environ.get("SLURM_JOB_ID"):
        return os.environ["SLURM_JOB_ID"]
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:
        return ""


def executor_for(run_dir: Path, launch: LaunchConfig) -> Any:
    """submitit's SlurmExecutor for one run: its files under ``<run>/slurm/``, its sbatch
    options from ``[launch.slurm]``."""
    import submitit

    sl = launch.slurm or SlurmConfig()
    ex = submitit.SlurmExecutor(folder=Path(run_dir) / "slurm", max_num_timeout=sl.max_requeue)
    params: dict[str, Any] = {
        "job_name": f"heur-{Path(run_dir).parent.name}-{Path(run_dir).name}",
        "time": sl.time_minutes(),
        "nodes": 1,
        "ntasks_per_node": 1,  # one task: the run's process, or torchrun with its nproc ranks
        "signal_delay_s": sl.signal_delay_s,
        "stderr_to_stdout": True,
        "additional_parameters": dict(sl.sbatch),
    }
    if sl.setup:
        params["setup"] = list(sl.setup)
    if sl.partition:
        params["partition"] = sl.partition
    if sl.gpus_per_run:
        params["gpus_per_node"] = sl.gpus_per_run
    if sl.cpus_per_run:
        params["cpus_per_task"] = sl.cpus_per_run
    if sl.mem:
        params["mem"] = sl.mem
    ex.update_parameters(**params)
    return ex


def submit(run_dir: Path, launch: LaunchConfig, resume: bool = False, executor: Any = None) -> str:
    """Submit the run as a job (``executor``: submitit's LocalExecutor in tests; default
    :func:`executor_for`). status.json says queued, with the job id; returns the job id."""
    run_dir = Path(run_dir)
    sl = launch.slurm or SlurmConfig()
    st = R._read_json(run_dir / "status.json")
    st.update(state="queued", launcher="slurm", submitted=time.time(), heartbeat=time.time())
    write_json_atomic(run_dir / "status.json", st)
    ex = executor if executor is not None else executor_for(run_dir, launch)
    job = ex.submit(RunJob(str(run_dir), launch.nproc, resume, grace_s=max(5.0, sl.signal_delay_s - 10.0)))
    st = R._read_json(run_dir / "status.json")
    if "job_id" not in st:  # the job may have started (and written its id) already
        st["job_id"] = str(job.job_id)
        write_json_atomic(run_dir / "status.json", st)
    return str(job.job_id)
