"""The detached process that starts an experiment's queued runs, ``--jobs`` at a time.

``python -m heur.core.supervise EXP_DIR [--jobs N] [--resume]``. On CUDA each job slot gets its
own GPU through ``CUDA_VISIBLE_DEVICES``; on CPU the cores are shared out between the jobs
(``HEUR_THREADS``). SIGTERM stops the running runs and marks the queued ones stopped. When every
run has ended it writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

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
    queued = [rd for rd in R.run_dirs(exp_dir) if R.read_status(rd).state == "queued"]
    jobs = jobs or default_jobs(len(queued))
    gpus = _gpus()
    threads = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(queued) or 1)))
    stopping = False

    def on_term(signum, frame):  # noqa: ANN001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    running: dict[int, tuple[Path, object, Optional[str]]] = {}
    free_gpus = list(gpus)
    while queued or running:
        for pid, (rd, proc, gpu) in list(running.items()):
            if proc.poll() is not None:  # reaped: no zombie left behind
                del running[pid]
                if gpu is not None:
                    free_gpus.append(gpu)
        if stopping:
            for rd in queued:
                R.stop_run(rd)
            queued = []
            for rd, proc, _ in running.values():
                R.stop_run(rd)
            _wait_all(running)
            break
        while queued and len(running) < jobs:
            rd = queued.pop(0)
            if R.read_status(rd).state != "queued":  # stopped while queued
                continue
            env = {"HEUR_THREADS": str(threads)}
            gpu = free_gpus.pop(0) if free_gpus else None
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            proc = R.launch_run(rd, resume=resume, env_extra=env)
            running[proc.pid] = (rd, proc, gpu)
        time.sleep(poll)
    write_summary(exp_dir)


def _wait_all(running: dict) -> None:
    deadline = time.time() + 60
    for rd, proc, _ in running.values():
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
