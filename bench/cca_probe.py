"""Benchmark: the cost of the CCA probe on the warmup_lb preset (digits, small CNN).

Each variant is trained in this process with and without ``[probes.cca]``, alternating, and the
medians of the training time (``Run.train`` + ``Run.finish``: the loop, the snapshots and the
final matrix) are printed side by side, with the probe's own timer (cca.json ``seconds``).
One torch thread (as the supervisor gives each of two runs on two cores).

    python bench/cca_probe.py [--repeats 3] [--variants sb,lb_warmup,lb_no_warmup]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from heur.core import runs as R
from heur.core.config import load_experiment
from heur.core.train import Run

PRESET = Path(__file__).resolve().parents[1] / "presets" / "warmup_lb.toml"


def one(variant: str, probe: bool, root: Path) -> tuple[float, float]:
    exp = load_experiment(PRESET, ['device="cpu"', "seed=0"])  # seed pinned: the preset's seed grid off
    cfg = exp.runs[variant]
    if not probe:
        cfg.probes.cca = None
    exp.runs = {variant: cfg}
    (rd,) = R.run_dirs(R.create_experiment(exp, root))
    r = Run(rd)
    r.setup()
    t0 = time.perf_counter()
    r.finish(*r.train())
    dt = time.perf_counter() - t0
    sec = json.loads((rd / "cca.json").read_text())["seconds"] if probe else 0.0
    return dt, sec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="sb,lb_warmup,lb_no_warmup")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-cca-"))
    print(f"{'variant':<14}{'without (s)':>12}{'with (s)':>10}{'ratio':>8}{'probe timer (s)':>17}")
    for v in args.variants.split(","):
        one(v, True, root)  # warm-up: imports, first calls
        wo, wi, pt = [], [], []
        for _ in range(args.repeats):
            wo.append(one(v, False, root)[0])
            dt, sec = one(v, True, root)
            wi.append(dt)
            pt.append(sec)
        a, b = statistics.median(wo), statistics.median(wi)
        print(f"{v:<14}{a:>12.2f}{b:>10.2f}{b / a:>8.3f}{statistics.median(pt):>17.2f}")


if __name__ == "__main__":
    main()
