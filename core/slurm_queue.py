"""What SLURM says about a run's job, asked from the login node: ``squeue`` and ``scancel``.

A run submitted to SLURM (core.slurm) keeps its job id in status.json. Whether it still lives is
read from its heartbeat first (the training loop refreshes it every few seconds, on whatever node
it runs, through the shared filesystem); only when the heartbeat is stale is SLURM asked:
``squeue`` lists the user's jobs in one call, cached for a few seconds, so a dashboard watching
many runs costs one call per refresh. A job SLURM no longer lists has vanished (cancelled,
killed, node failure): a run it left without an ``end`` event is lost.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import time
from typing import Any, Optional

__all__ = ["ACTIVE", "job_state", "alive", "cancel", "HEARTBEAT_FRESH_S"]

# squeue's states of a job that will still run or is running (squeue --format=%T)
ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)
HEARTBEAT_FRESH_S = 60.0  # a heartbeat younger than this: the job lives, SLURM is not asked
NO_SQUEUE_STALE_S = 600.0  # without squeue (not a SLURM node): a heartbeat older than this is lost
_CACHE_S = 5.0
_cache: dict[str, Any] = {"at": 0.0, "states": None}


def _squeue() -> Optional[dict[str, str]]:
    """job id -> state for the user's jobs; None when squeue cannot be run here."""
    try:
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%i|%T", f"--user={getpass.getuser()}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    states = {}
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state.strip().split()[0] if state.strip() else ""
    return states


def job_state(job_id: str, since: Optional[float] = None) -> Optional[str]:
    """SLURM's state of ``job_id`` ('' when squeue does not list it; None when squeue cannot be
    run). The cached listing serves when it was taken after ``since`` (the submission: a listing
    older than that cannot know the job)."""
    now = time.time()
    at = _cache["at"]
    if _cache["states"] is None or now - at > _CACHE_S or (since is not None and at < since):
        _cache.update(at=now, states=_squeue())
    states = _cache["states"]
    if states is None:
        return None
    return states.get(str(job_id), "")


def alive(status: dict[str, Any]) -> bool:
    """Whether a submitted run (status.json with ``job_id``) still lives: a fresh heartbeat, else
    squeue lists its job as pending or running; without squeue, a heartbeat not older than
    NO_SQUEUE_STALE_S."""
    beat = status.get("heartbeat")
    age = time.time() - float(beat) if isinstance(beat, (int, float)) else float("inf")
    if age < HEARTBEAT_FRESH_S:
        return True
    job = status.get("job_id")
    if not job:
        return False
    state = job_state(str(job), status.get("submitted"))
    if state is None:
        return age < NO_SQUEUE_STALE_S
    return state in ACTIVE


def cancel(job_id: str, signal: Optional[str] = None) -> bool:
    """``scancel JOB`` (the job ends), or with ``signal`` (e.g. ``"TERM"``) ``scancel
    --signal=TERM JOB``: the signal goes to the job's processes, and the run checkpoints and ends
    ``stopped``. False when scancel cannot be run or refuses."""
    args = ["scancel"] + ([f"--signal={signal}"] if signal else []) + [str(job_id)]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, env=dict(os.environ))
    except (OSError, subprocess.SubprocessError):
        return False
    _cache["at"] = 0.0  # the next look asks SLURM again
    return out.returncode == 0
