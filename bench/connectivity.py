"""A curve's training step against an ordinary training step of the same model and batch.

    python bench/connectivity.py [--model cnn] [--epochs 3] [--batch 128] [--bends 1]
        [--repeats 3] [--device auto] [--threads N]

Both go through heur's loop (core.train.Run and core.curve.CurveRun: events, status, the
objective seam), on digits without augmentation, interleaved ``--repeats`` times so that drift
hits both alike. Prints the median seconds per epoch of each, the ratio curve / train (the issue's
target: at most 1.3x), the seconds per evaluated t of the curve's final evaluation (BN
recomputed, train and test split, curve and line) and per grid point of a plane (core.plane).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from heur.core import checkpoint
from heur.core import runs as R
from heur.core.config import expand
from heur.core.curve import CurveRun
from heur.core.models import build_model
from heur.core.plan import plan_run
from heur.core.train import Run


def base(args) -> dict:
    return {
        "name": "bench",
        "seed": 0,
        "device": args.device,
        "data": {"name": "digits", "augment": False, "seed": 0},
        "model": {"name": args.model, "channels": [16, 32], "width": 64, "batch_norm": args.model == "cnn"},
        "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "log_every": 10, "eval_every": 1e6},
    }


def write_ends(args, tmp: Path) -> list[str]:
    """Two checkpoints of the model at two random inits (the speed does not depend on training)."""
    paths = []
    for seed in (1, 2):  # the model's init follows the run's seed: one config per end
        cfg = next(iter(expand({**base(args), "seed": seed}, []).runs.values()))
        plan = plan_run(cfg)
        torch.manual_seed(seed)
        model = build_model(cfg, plan.input_shape, plan.num_outputs)
        path = tmp / f"end{seed}.pt"
        checkpoint.save_checkpoint(
            path,
            {
                "format": checkpoint.FORMAT,
                "version": checkpoint.VERSION,
                "model": model.state_dict(),
                "config": cfg.to_dict(),
                "input_shape": list(plan.input_shape),
                "num_outputs": plan.num_outputs,
                "step": 0,
                "epoch": 0.0,
            },
        )
        paths.append(str(path))
    return paths


class _StopAtEnd:
    """A probe that asks the loop to stop after its last step: no final eval or checkpoint timed."""

    name = "stop"

    def __init__(self, run):
        self.run = run

    def on_start(self, ctx): ...
    def on_log(self, ctx, loss): ...
    def on_epoch_end(self, ctx, epoch): ...
    def state_dict(self):
        return {}

    def on_end(self, ctx):
        return {}

    def after_step(self, ctx):
        if ctx.step == self.run.total:
            self.run.stop_requested = True


def timed(args, tmp: Path, ends: list[str], curve: bool) -> tuple[float, object]:
    raw = base(args)
    if curve:
        raw.update(task="curve", curve={"start": ends[0], "end": ends[1], "bends": args.bends})
    exp = expand(raw, [])
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp / "runs"))
    run = (CurveRun if curve else Run)(rd)
    run.setup()
    run.probes.append(_StopAtEnd(run))
    run.save = lambda name, step: None
    t0 = time.perf_counter()
    run.train()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return dt / (run.total / run.spe), run


def eval_per_point(run, points: int) -> float:
    run.cfg.curve.points = points
    run.stop_requested = False  # the timed training ended by asking to stop: not the evaluation
    t0 = time.perf_counter()
    run.along_curve()
    return (time.perf_counter() - t0) / points


def plane_per_point(run, points: int) -> float:
    """Seconds per grid point of the plane through the curve's ends and bend, measured as core.plane
    does it (load the point, recompute BN, evaluate train and test)."""
    from heur.core.measure.connectivity import eval_row, recompute_bn_stats
    from heur.core.measure.plane import Plane, grid_axis, unflatten

    curve = run.objective.curve
    plane = Plane(curve.ends[0], curve.bends[0], curve.ends[1])
    params = dict(run.model.named_parameters())
    names, shapes = list(params), [tuple(p.shape) for p in params.values()]
    axis = grid_axis(points, 0.2)
    t0 = time.perf_counter()
    for b in axis[:1]:
        for a in axis:
            with torch.no_grad():
                for n, w in unflatten(plane.point(a, b), names, shapes).items():
                    params[n].copy_(w)
            recompute_bn_stats(run.model, run.data.x_train, run.cfg.train.eval_batch_size)
            eval_row(run.model, run.data, run.objective.loss_fn, run.cfg.train.eval_batch_size)
    return (time.perf_counter() - t0) / len(axis)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bends", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--points", type=int, default=11, help="t evaluated for the seconds per point")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res: dict[str, list[float]] = {"train": [], "curve": []}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ends = write_ends(args, tmp)
        last = None
        for i in range(args.repeats):
            for kind in ("train", "curve"):
                dt, run = timed(args, tmp / f"{kind}{i}", ends, kind == "curve")
                res[kind].append(dt)
                if kind == "curve":
                    last = run
        per_point = eval_per_point(last, args.points)
        per_grid = plane_per_point(last, args.points)
        device = last.device
    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"model={args.model} batch={args.batch} epochs={args.epochs:g} bends={args.bends} device={device} "
        f"threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    for k, v in med.items():
        print(f"  {k:<6} {v:8.4f} s/epoch   (runs: {', '.join(f'{x:.4f}' for x in res[k])})")
    print(f"  curve / train epoch = {med['curve'] / med['train']:.2f}x   (target: <= 1.3x)")
    print(f"  curve evaluation    = {per_point:.4f} s per t (curve + line, BN recomputed, train + test)")
    print(f"  plane evaluation    = {per_grid:.4f} s per grid point (BN recomputed, train + test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
