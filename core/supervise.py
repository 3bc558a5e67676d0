"""The detached process that starts an experiment's queued runs, ``--jobs`` at a time.

``python -m heur.core.supervise EXP_DIR [--jobs N] [--resume]``. Each run starts through its
launcher (core.launcher: a local process, torchrun, or a SLURM job). On CUDA each job slot gets
its own GPU through ``CUDA_VISIBLE_DEVICES`` (a torchrun run of ``nproc`` ranks gets ``nproc`` of
them); on CPU the cores are shared out between the jobs (``HEUR_THREADS``, and between a torchrun
run's ranks). SLURM jobs take no local slot unless ``--jobs`` is given: SLURM queues them.
A run that references other runs' checkpoints (``core.pipeline``) starts once
each of them has completed and the file is there; when one ends otherwise, the run ends
``skipped`` with the reason, and independent runs go on. SIGTERM stops the running runs and
marks the queued ones stopped. When every run has ended it writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Optional

from . import launcher as L
from . import pipeline as P
from . import runs as R
from .summary import write_summary


def _gpus() -> list[str]:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:
        n = 0
    if n == 0:
        return []
    if vis:
        return [v.strip() for v in vis.split(",") if v.strip()][:n]
    return [str(i) for i in range(n)]


def default_jobs(n_runs: int) -> int:
    gpus = _gpus()
    if gpus:
        return max(1, min(n_runs, len(gpus)))
    return max(1, min(n_runs, os.cpu_count() or 1))


def supervise(exp_dir: Path, jobs: Optional[int] = None, resume: bool = False, poll: float = 0.2) -> None:
    # this process is the experiment's supervisor (the launcher writes the same; whoever is first):
    # read_status takes the queued runs of a gone supervisor for lost
    sup = R._read_json(exp_dir / "supervisor.json")
    if sup.get("pid") != os.getpid():
        sup.update(pid=os.getpid(), pid_start=R.process_start_time(os.getpid()), jobs=jobs, started=time.time())
        R.write_json_atomic(exp_dir / "supervisor.json", sup)
    queued = [rd for rd in R.run_dirs(exp_dir) if R.read_status(rd).state == "queued"]
    launchers = {rd: L.for_run(rd) for rd in queued}
    slurm_slots = jobs is not None  # SLURM jobs count against --jobs only when it is given
    local = [rd for rd in queued if launchers[rd].name != "slurm"]
    jobs = jobs or default_jobs(len(local) or 1)
    gpus = _gpus()
    threads = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(local) or 1)))
    stopping = False

    def on_term(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    running: dict[object, tuple[Path, object, list[str]]] = {}
    free_gpus = list(gpus)
    refs = {rd: _refs(rd) for rd in queued}
    while queued or running:
        for pid, (rd_, proc, held) in list(running.items()):
            if proc.poll() is not None:  # reaped: no zombie left behind
                del running[pid]
                launchers[rd_].ended(rd_, proc)
                free_gpus.extend(held)
        if stopping:
            for rd in queued:
                R.stop_run(rd)
            queued = []
            for rd, _proc, _ in running.values():
                R.stop_run(rd)
            _wait_all(running)
            break
        for rd in list(queued):  # a run whose dependency ended otherwise than completed is skipped
            if R.read_status(rd).state != "queued":  # stopped while queued
                queued.remove(rd)
                continue
            readiness = _readiness(rd, refs[rd])
            if readiness is not True and readiness is not None:
                R.mark_skipped(rd, readiness)
                queued.remove(rd)
        for rd in list(queued):
            launcher = launchers[rd]
            slot = launcher.name != "slurm" or slurm_slots
            if slot and sum(launchers[r].name != "slurm" or slurm_slots for r, _, _ in running.values()) >= jobs:
                continue
            if _readiness(rd, refs[rd]) is not True:
                continue
            need = L.gpus_needed(rd) if gpus else 0
            if need > 1 and need > len(free_gpus) and need <= len(gpus):
                continue  # a torchrun run's GPUs (one per rank) are busy: it waits for them
            queued.remove(rd)
            env = {"HEUR_THREADS": str(threads)}
            held = [free_gpus.pop(0) for _ in range(min(need, len(free_gpus)))]
            if held:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(held)
            try:
                proc = launcher.start(rd, resume=resume, env_extra=env)
            except Exception as e:  # a submission refused (sbatch's error): the run fails, the rest go on
                R.end_if_silent(rd, f"could not start: {e}")
                free_gpus.extend(held)
                continue
            running[proc.pid] = (rd, proc, held)
        time.sleep(poll)
    write_summary(exp_dir)


def _refs(rd: Path) -> list[P.Ref]:
    """The checkpoints of other runs a queued run needs; unreadable config: none (the run itself
    then fails at start and says why)."""
    try:
        cfg = R.read_run_config(rd)
    except Exception:
        return []
    return list(P.references(cfg).values())


def _readiness(rd: Path, refs: list[P.Ref]) -> "bool | str | None":
    """True: every run it needs completed and wrote the checkpoint; None: some still to come;
    a string: why the run can never start (it is skipped)."""
    exp_dir = rd.parent
    waiting = False
    for ref in refs:
        dep = ref.run
        st = R.read_status(exp_dir / dep)
        if st.state == "completed":
            path = ref.path(exp_dir)
            if not path.is_file():
                return P.skip_reason(dep, st.state, st.step, path)
        elif st.final:
            return P.skip_reason(dep, st.state, st.step)
        else:
            waiting = True
    return None if waiting else True


def _wait_all(running: dict) -> None:
    deadline = time.time() + 60
    for _rd, proc, _ in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except Exception:
            pass


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m heur.core.supervise")
    ap.add_argument("exp_dir")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    supervise(Path(a.exp_dir), a.jobs, a.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
