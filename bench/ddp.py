"""One process against ``--nproc`` DDP ranks (torchrun) on the same run: time per step and the
trajectory's distance.

    python bench/ddp.py [--nproc 2] [--device cpu|cuda] [--model mlp|cnn] [--epochs 20]
        [--batch 128] [--repeats 3]

Each repeat trains the same digits run twice through heur's launchers (core.launcher: a local
process, then torchrun with ``--nproc`` ranks and the same global batch), interleaved so that
drift hits both alike. Prints the median training seconds per step of each (from the run's
``start`` event to its ``end`` event: process start-up, rendezvous and data loading are left
out), their ratio, and the largest relative difference between the two runs' logged losses (the
issue asks for 1e-5 on digits; BN models differ more: each rank normalises its own shard). On a
GPU machine (``--device cuda``, one GPU per rank) this is the check of the NCCL path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from heur.core import launcher as L
from heur.core import runs as R
from heur.core.config import expand


def run_once(root: Path, args, nproc: int, k: int) -> tuple[float, dict[int, float]]:
    raw = {
        "name": f"n{nproc}-{k}",
        "seed": 0,
        "device": args.device,
        "data": {"name": "digits", "augment": False},
        "model": {"name": args.model, "width": 256, "depth": 2, "channels": [16, 32]},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "log_every": 10, "eval_every": args.epochs},
    }
    if nproc > 1:
        raw["launch"] = {"nproc": nproc}
    exp = expand(raw, [])
    rd = R.create_experiment(exp, root) / raw["name"]
    proc = L.for_run(rd).start(rd, env_extra={"HEUR_THREADS": str(args.threads)} if args.threads else None)
    proc.wait()
    events = [json.loads(line) for line in (rd / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["kind"] == "start")
    end = next(e for e in events if e["kind"] == "end")
    assert end["state"] == "completed", end
    losses = {e["step"]: e["loss"] for e in events if e["kind"] == "train"}
    return (end["time"] - start["time"]) / start["total_steps"], losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=float, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="HEUR_THREADS of the job (shared out between ranks)")
    args = ap.parse_args()
    times: dict[int, list[float]] = {1: [], args.nproc: []}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            t1, l1 = run_once(Path(tmp), args, 1, k)
            tn, ln = run_once(Path(tmp), args, args.nproc, k)
            times[1].append(t1)
            times[args.nproc].append(tn)
            worst = max([worst] + [abs(ln[s] - l1[s]) / max(abs(l1[s]), 1e-12) for s in l1])
    m1, mn = statistics.median(times[1]), statistics.median(times[args.nproc])
    print(f"device {args.device}, model {args.model}, global batch {args.batch}, {args.repeats} repeats (medians)")
    print(f"  1 process     : {m1 * 1e3:8.2f} ms/step")
    print(f"  {args.nproc} ranks (DDP) : {mn * 1e3:8.2f} ms/step   ratio {mn / m1:.2f}x")
    print(f"  largest relative difference of the logged losses: {worst:.2e} (target 1e-5)")


if __name__ == "__main__":
    main()
