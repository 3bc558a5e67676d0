"""heur's training loop against plain PyTorch loops on the same model, data and batch size.

    python bench/train_throughput.py [--steps 1500] [--batch 128] [--model cnn] [--repeats 3]
        [--device auto] [--threads N]

Prints samples/s (median of the repeats) for
  - plain:      a hand-written loop over torch.utils.data.DataLoader(TensorDataset, shuffle=True)
  - plain-idx:  a hand-written loop indexing device tensors with a random permutation (best case)
  - heur:       heur.core.train.Run (logging every 10 steps, events + status files)
  - heur-nolog: the same with logging off (log_every larger than the run)
and the ratios heur/plain and the logging/IO overhead (heur vs heur-nolog).
Augmentation is off everywhere (the plain loops have none); evaluation runs only at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from heur.core import runs as R
from heur.core.config import expand
from heur.core.data import load_data
from heur.core.device import resolve_device
from heur.core.models import build_model
from heur.core.train import Run


def preset(args, log_every: int) -> dict:
    return {
        "name": "bench",
        "seed": 0,
        "device": args.device,
        "data": {"name": "digits", "augment": False},
        "model": {"name": args.model, "channels": [16, 32], "width": 64},
        "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9},
        "train": {"max_steps": args.steps, "batch_size": args.batch, "log_every": log_every, "eval_every": 1e6},
    }


def heur_loop(args, log_every: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        exp = expand(preset(args, log_every), [])
        (rd,) = R.run_dirs(R.create_experiment(exp, Path(tmp)))
        run = Run(rd)
        run.setup()
        # time the steps only: stop before the final eval/checkpoint
        run.total = args.steps
        t0 = time.perf_counter()
        run.cfg.train.eval_every = 1e6
        _train_steps_only(run)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        run.events.close()
        return args.steps * run.batch / dt


def _train_steps_only(run: Run) -> None:
    # Run.train() ends with a final eval + final.pt; measure it without them by asking it to stop
    # at the last step (the stop path saves one checkpoint, timed separately below).
    class StopAtEnd:
        name = "stop"

        def on_start(self, ctx):
            pass

        def on_log(self, ctx, loss):
            pass

        def on_epoch_end(self, ctx, epoch):
            pass

        def on_end(self, ctx):
            return {}

        def state_dict(self):
            return {}

        def after_step(self, ctx):
            if ctx.step == run.total:
                run.stop_requested = True

    run.probes.append(StopAtEnd())
    run.save = lambda name, step: None  # no checkpoint in the timed region
    run.train()


def plain_loop(args, use_loader: bool) -> float:
    exp = expand(preset(args, 10), [])
    cfg = next(iter(exp.runs.values()))
    dev = resolve_device(args.device)
    data = load_data(cfg, dev)
    torch.manual_seed(0)
    model = build_model(cfg, data.input_shape, data.num_outputs).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    if use_loader:
        ds = torch.utils.data.TensorDataset(data.x_train.cpu(), data.y_train.cpu())
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, pin_memory=dev.type == "cuda")

        def batches():
            while True:
                for x, y in loader:
                    yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    else:

        def batches():
            n = data.n_train
            while True:
                perm = torch.randperm(n, device=dev)
                for i in range(0, n, args.batch):
                    idx = perm[i : i + args.batch]
                    yield data.x_train[idx], data.y_train[idx]

    it = batches()
    t0 = time.perf_counter()
    seen = 0
    for step in range(args.steps):
        x, y = next(it)
        loss = lossf(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += x.shape[0]
        if (step + 1) % 10 == 0:
            loss.item()  # what a plain loop prints
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, list[float]] = {"plain": [], "plain-idx": [], "heur": [], "heur-nolog": []}
    for _ in range(args.repeats):  # interleaved, so drift hits every contender alike
        results["plain"].append(plain_loop(args, True))
        results["plain-idx"].append(plain_loop(args, False))
        results["heur"].append(heur_loop(args, 10))
        results["heur-nolog"].append(heur_loop(args, 10**9))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"model={args.model} batch={args.batch} steps={args.steps} device={resolve_device(args.device)} "
        f"threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    for k, v in med.items():
        print(f"  {k:<11} {v:>10.0f} samples/s   (runs: {', '.join(f'{x:.0f}' for x in results[k])})")
    print(f"  heur / plain (DataLoader)    = {med['heur'] / med['plain']:.2f}x")
    print(f"  heur / plain-idx             = {med['heur'] / med['plain-idx']:.2f}x")
    print(f"  logging/IO overhead          = {100 * (med['heur-nolog'] / med['heur'] - 1):+.1f}% of step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
