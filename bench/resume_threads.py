"""Measurement: does torch's CPU thread count change a run's trajectory, and does a run resumed
under another ``HEUR_THREADS`` (what the supervisor hands a run resumed alone) still end where
the uninterrupted run ends?

Three runs of one config (a small CNN on digits, 6 epochs, checkpoint every epoch), each its own
process: uninterrupted on 2 threads; uninterrupted on 1 thread; the 2-thread run cut back to its
epoch-3 checkpoint and resumed with HEUR_THREADS=1. Prints each final train loss and whether the
final weights are bitwise equal to the 2-thread run's.

    python bench/resume_threads.py [WORK_DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from heur.core import runs as R
from heur.core.config import expand

BASE = {
    "name": "t",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "augment": True},
    "model": {"name": "cnn", "channels": [32, 64], "width": 128},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 6, "batch_size": 64, "log_every": 5, "checkpoint_every": 1},
}
CUT_EPOCH = 3


def train(root: Path, threads: int, resume_from: Path | None = None) -> Path:
    exp = R.create_experiment(expand(BASE, []), root / f"t{threads}{'r' if resume_from else ''}")
    (rd,) = R.run_dirs(exp)
    if resume_from is not None:  # the run as if killed after its epoch-CUT_EPOCH checkpoint
        shutil.rmtree(rd)
        shutil.copytree(resume_from, rd)
        spe = json.loads((rd / "events.jsonl").read_text().splitlines()[0])["steps_per_epoch"]
        for p in (rd / "checkpoints").iterdir():
            if p.name == "final.pt" or int(p.stem.split("_")[1]) > CUT_EPOCH * spe:
                p.unlink()
        R.queue_resume(rd)
    env = dict(os.environ, HEUR_THREADS=str(threads))
    args = [sys.executable, "-m", "heur.core.train", str(rd)] + (["--resume"] if resume_from else [])
    subprocess.run(args, check=True, env=env)
    return rd


def final(rd: Path) -> tuple[dict, float]:
    weights = torch.load(rd / "checkpoints" / "final.pt", weights_only=True)["model"]
    return weights, json.loads((rd / "status.json").read_text())["result"].get("train_loss")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="resume_threads-"))
    a, b = train(root, 2), train(root, 1)
    c = train(root, 1, resume_from=a)
    (wa, la), (wb, lb), (wc, lc) = final(a), final(b), final(c)

    def same(x: dict, y: dict) -> bool:
        return all(torch.equal(x[k], y[k]) for k in x)

    print(f"2 threads, uninterrupted: train loss {la!r}")
    print(f"1 thread, uninterrupted: train loss {lb!r}; bitwise = the 2-thread run: {same(wa, wb)}")
    print(f"2 threads, resumed at epoch {CUT_EPOCH} under HEUR_THREADS=1: train loss {lc!r}; ", end="")
    print(f"bitwise = the 2-thread run: {same(wa, wc)}")


if __name__ == "__main__":
    main()
