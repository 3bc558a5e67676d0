"""Launchers: how a run's process starts, how its liveness is read, how it is stopped.

One interface, three implementations, chosen by the run's ``[launch]`` section:

- :class:`LocalLauncher` (no ``[launch]``, or ``nproc = 1``): ``python -m <task module> RUN_DIR``,
  detached (core.runs.launch_run); alive while its pid (with its start time) is; stopped by
  SIGTERM to its process group.
- :class:`TorchrunLauncher` (``nproc > 1``): ``python -m torch.distributed.run --standalone
  --nproc-per-node N -m heur.core.train RUN_DIR``, detached the same way; status.json keeps
  torchrun's pid, so liveness and stopping are the local ones: torchrun forwards SIGTERM to
  every rank (core.train makes them stop at the same step). When torchrun ends and the run has no
  ``end`` event (rank 0 died), :meth:`Launcher.ended` ends it ``failed``.
- ``SlurmLauncher`` (``launcher = "slurm"``, core.slurm): a SLURM job through submitit;
  liveness from status.json's heartbeat and the job id (squeue), not a local pid.

The supervisor (core.supervise) starts runs through :func:`for_run`; ``heur runs``, the TUI and
``heur stop`` go through core.runs, which reads status.json's ``launcher`` field (the one place a
status is interpreted: core.runs imports no launcher, so imports run one way).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

from . import runs as R
from .atomic import write_json_atomic
from .config import LaunchConfig, RunConfig

__all__ = ["Launcher", "LocalLauncher", "TorchrunLauncher", "SlurmLauncher", "for_config", "for_run", "gpus_needed"]


class Launcher:
    """start / alive / stop (and ended, once the handle :meth:`start` returned has finished)."""

    name = "local"

    def start(self, run_dir: Path, resume: bool = False, env_extra: Optional[dict[str, str]] = None) -> Any:
        """Start the run; returns a handle with ``poll()`` (None while the run goes on) and ``wait(timeout)``."""
        raise NotImplementedError

    def alive(self, run_dir: Path, status: dict[str, Any]) -> bool:
        """Whether the run that status.json (``status``) calls running still runs (core.runs reads
        it the same way for ``heur runs`` and the TUI: :func:`heur.core.runs.run_alive`)."""
        return R.run_alive(status)

    def stop(self, run_dir: Path, status: dict[str, Any], sig: int = signal.SIGTERM) -> bool:
        """Ask a running run to checkpoint and end ``stopped``; True if something was signalled
        (core.runs.stop_run, which ``heur stop`` calls, comes here through status.json)."""
        return R.signal_run(status, sig)

    def ended(self, run_dir: Path, handle: Any) -> None:
        """Called by the supervisor once ``handle`` has finished."""


class LocalLauncher(Launcher):
    """One process on this machine: today's behaviour (core.runs.launch_run)."""

    def start(self, run_dir: Path, resume: bool = False, env_extra: Optional[dict[str, str]] = None) -> Any:
        return R.launch_run(run_dir, resume=resume, env_extra=env_extra)


class TorchrunLauncher(Launcher):
    """``nproc`` ranks of one run on this machine through torchrun (DDP: core.distributed)."""

    name = "torchrun"

    def __init__(self, nproc: int):
        self.nproc = nproc

    def start(self, run_dir: Path, resume: bool = False, env_extra: Optional[dict[str, str]] = None) -> Any:
        run_dir = Path(run_dir)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(env_extra or {})
        # the job slot's CPU threads shared out between the ranks (torchrun would set OMP to 1)
        share = max(1, int(env.get("HEUR_THREADS") or os.cpu_count() or 1) // self.nproc)
        env["HEUR_THREADS"] = str(share)
        env.setdefault("OMP_NUM_THREADS", str(share))
        args = R.run_command(run_dir, resume, self.nproc)
        proc = R._spawn(args, run_dir / "stdout.log", env)
        st = R._read_json(run_dir / "status.json")
        st.update(
            state="running",
            pid=proc.pid,
            pid_start=R.process_start_time(proc.pid),
            heartbeat=time.time(),
            launcher=self.name,
            nproc=self.nproc,
        )
        write_json_atomic(run_dir / "status.json", st)
        return proc

    def ended(self, run_dir: Path, handle: Any) -> None:
        code = handle.poll()
        R.end_if_silent(
            Path(run_dir), f"torchrun exited with code {code} without an end event (a rank died: see stdout.log)"
        )


class SlurmLauncher(Launcher):
    """A SLURM job per run through submitit (core.slurm): ``start`` submits it (status queued, with
    the job id); the job itself writes running and the end, on whatever node it lands."""

    name = "slurm"

    def __init__(self, launch: Optional[LaunchConfig]):
        self.launch = launch or LaunchConfig(launcher="slurm")

    def start(self, run_dir: Path, resume: bool = False, env_extra: Optional[dict[str, str]] = None) -> Any:
        from .slurm import submit

        job_id = submit(Path(run_dir), self.launch, resume=resume)
        return SlurmHandle(Path(run_dir), job_id)


class SlurmHandle:
    """The supervisor's view of a submitted run: it has ended once its state is final (read from
    the run directory on the shared filesystem, and squeue: core.runs.read_status)."""

    def __init__(self, run_dir: Path, job_id: str):
        self.run_dir, self.job_id = run_dir, job_id
        self.pid = f"slurm:{job_id}"

    def poll(self) -> Optional[int]:
        st = R.read_status(self.run_dir)
        return None if st.state in ("queued", "running") else 0

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        deadline = time.time() + (timeout if timeout is not None else float("inf"))
        while self.poll() is None and time.time() < deadline:
            time.sleep(1.0)
        return self.poll()


def for_config(cfg: RunConfig) -> Launcher:
    """The launcher a run's config asks for."""
    launch = cfg.launch
    if launch is not None and launch.launcher == "slurm":
        return SlurmLauncher(launch)
    if launch is not None and launch.nproc > 1:
        return TorchrunLauncher(launch.nproc)
    return LocalLauncher()


def for_run(run_dir: Path) -> Launcher:
    """The launcher of a run directory (its config.toml; unreadable: the local one, and the run
    fails at its start saying why)."""
    try:
        return for_config(R.read_run_config(run_dir))
    except Exception:
        return LocalLauncher()


def gpus_needed(run_dir: Path) -> int:
    """GPUs a run takes from this machine's pool (one per rank; a SLURM job takes its node's)."""
    try:
        launch = R.read_run_config(run_dir).launch
    except Exception:
        return 1
    if launch is None:
        return 1
    if launch.launcher == "slurm":
        return 0
    return launch.nproc


def check_launch(cfg: RunConfig, plan: Any) -> None:
    """Preflight of a run's ``[launch]`` (core.preflight): ConfigError naming the key when its
    ranks cannot share its batches, its task cannot run on several ranks, or SLURM cannot be
    reached from here."""
    from .errors import ConfigError

    launch = cfg.launch
    if launch is None:
        return
    n = launch.nproc
    if n > 1:
        if cfg.task != "train":
            raise ConfigError(
                f"nproc = {n} (DDP) runs train tasks only; this run's task is {cfg.task!r}", key="launch.nproc"
            )
        if cfg.train.freeze:
            raise ConfigError(
                f"nproc = {n}: DDP cannot follow train.freeze (which parameters train changes mid-run): use nproc = 1",
                key="launch.nproc",
            )
        b = plan.batch_size
        if b < n:
            raise ConfigError(
                f"nproc = {n} ranks share a global batch of {b}: expected batch >= nproc", key="launch.nproc"
            )
        rest = 0 if plan.drop_last or b >= plan.train_size else plan.train_size % b
        if 0 < rest < n:
            raise ConfigError(
                f"nproc = {n}: the last batch of each epoch has {rest} example(s), fewer than the ranks: "
                "set train.drop_last = true or another train.batch_size",
                key="launch.nproc",
            )
    if launch.launcher == "slurm":
        import importlib.util
        import shutil

        if importlib.util.find_spec("submitit") is None:
            raise ConfigError("'slurm' needs submitit: pip install 'heur[slurm]'", key="launch.launcher")
        if shutil.which("sbatch") is None:
            raise ConfigError(
                "'slurm' needs sbatch on PATH: run heur on the cluster's login node", key="launch.launcher"
            )
        sl = launch.slurm
        gpus = sl.gpus_per_run if sl is not None else 0
        if gpus and n > 1 and gpus != n:
            raise ConfigError(
                f"{gpus} GPUs for nproc = {n} ranks: expected one GPU per rank (gpus_per_run = nproc), or 0",
                key="launch.slurm.gpus_per_run",
            )
        if cfg.device.startswith("cuda") and not gpus:
            raise ConfigError(
                f"device = {cfg.device!r} needs GPUs in the job: set it > 0", key="launch.slurm.gpus_per_run"
            )
        return
    if n > 1:
        from .device import resolve_device

        dev = resolve_device(cfg.device)
        if dev.type == "mps":
            raise ConfigError(f"nproc = {n}: DDP runs on CUDA (NCCL) or the CPU (gloo), not MPS", key="launch.nproc")
        if dev.type == "cuda":
            import torch

            have = torch.cuda.device_count()
            if have < n:
                raise ConfigError(
                    f"nproc = {n} ranks need {n} GPUs (one each); this machine has {have}", key="launch.nproc"
                )
