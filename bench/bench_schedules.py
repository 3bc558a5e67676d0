"""How long `Schedule.lrs()` takes for a paper-sized run (VGG-16/CIFAR-10 SGDR: 150 epochs x 391
steps), beside calling the schedule step by step and beside stepping torch's own scheduler.

    .venv/bin/python bench/bench_schedules.py
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch

from heur.core.config import ScheduleConfig, WarmupConfig
from heur.core.schedules import build_schedule

SPE, EPOCHS = 391, 150
N = SPE * EPOCHS


def median_time(fn, repeat: int = 5) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    cfg = ScheduleConfig(name="sgdr", t0=10, t_mult=2, warmup=WarmupConfig(epochs=1))
    sch = build_schedule(cfg, 0.05, SPE, N)

    def torch_steps():
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10 * SPE, T_mult=2)
            for _ in range(N):
                s.step()

    t_lrs = median_time(sch.lrs)
    t_call = median_time(lambda: [sch(s) for s in range(N)], repeat=3)
    t_torch = median_time(torch_steps, repeat=3)
    print(f"steps: {N}")
    print(f"Schedule.lrs():            {t_lrs * 1e3:8.1f} ms  ({t_lrs / N * 1e9:6.0f} ns/step)")
    print(f"Schedule(step) per step:   {t_call * 1e3:8.1f} ms  ({t_call / N * 1e6:6.2f} us/step)")
    print(f"torch scheduler .step():   {t_torch * 1e3:8.1f} ms  ({t_torch / N * 1e6:6.2f} us/step)")
    print(f"ratio torch / lrs():       {t_torch / t_lrs:8.1f}x")


if __name__ == "__main__":
    main()
