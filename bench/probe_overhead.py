"""Benchmark: each probe's share of the training loop, on the presets that use it, at the presets'
probe settings.

One representative run of each preset is trained in this process (setup + train + finish, one
torch thread, as the supervisor gives each of two runs on two cores), once to warm up and then
``--repeats`` times, in turns. Every probe hook (on_start, after_step, on_end) is timed in
process CPU time, and so is the whole run: the probe's share is its CPU time over the rest of
the run's (the training loop without it). CPU time, not wall time, because this machine is
shared: a busy neighbour stretches wall time but not the CPU time a computation takes (with one
thread). Printed with each: the
probe's settings, its measurements and (sharpness) the Hessian-vector products they took.

    python bench/probe_overhead.py [--repeats 3] [--presets warmup_lb,warmup_sharpness,gi_adam,catapult_uv,catapult_mlp]
        [--set warmup_lb:train.epochs=30 ...]

``--set PRESET:key=value`` overrides a key of one preset (e.g. fewer epochs of warmup_lb: its CCA
probe snapshots every 5 epochs, so the share does not depend on the length).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model  # bench/machine.py

PRESETS = Path(__file__).resolve().parents[1] / "presets"
# preset -> overrides picking one representative run of it (the first run otherwise)
RUNS = {
    "warmup_lb": ['variant="lb_warmup_seed=1"'],  # its seed 0 diverges at step 93 on some CPUs
    "catapult_uv": ["optim.lr_ntk=3.0"],
    "catapult_mlp": ["optim.lr_ntk=8.0"],
    "warmup_sharpness": ["optim.lr_ntk=48.0", "schedule.warmup.steps=32"],
    "gi_adam": [],
}
GOAL = 0.15


class ProbeClock:
    """Process CPU seconds spent inside every probe hook, per probe name (patched on the classes)."""

    def __init__(self):
        import importlib

        from heur.core.probes import REGISTRY

        self.seconds: dict[str, float] = {}
        self._saved = []
        for target in REGISTRY.values():
            mod, _, name = target.partition(":")
            cls = getattr(importlib.import_module(mod), name)
            for hook in ("on_start", "after_step", "on_end"):
                if hook in cls.__dict__:
                    self._wrap(cls, hook)

    def _wrap(self, cls, hook):
        orig = cls.__dict__[hook]
        clock = self

        def timed(probe, ctx, _orig=orig):
            t = time.process_time()
            try:
                return _orig(probe, ctx)
            finally:
                clock.seconds[probe.name] = clock.seconds.get(probe.name, 0.0) + time.process_time() - t

        setattr(cls, hook, timed)
        self._saved.append((cls, hook, orig))

    def restore(self):
        for cls, hook, orig in self._saved:
            setattr(cls, hook, orig)


def one_run(preset: str, overrides: list[str], root: Path) -> dict:
    from heur.core import runs as R
    from heur.core.config import load_experiment
    from heur.core.train import Run

    exp = load_experiment(PRESETS / f"{preset}.toml", ['device="cpu"'] + [o for o in overrides if "variant=" not in o])
    variant = next((o.split("=", 1)[1].strip('"') for o in overrides if o.startswith("variant=")), None)
    # the variant's run (its first seed where the preset runs several)
    ours = [r for r in exp.runs if variant and (r == variant or r.startswith(variant + "_"))]
    name = ours[0] if ours else next(iter(exp.runs))
    exp.runs = {name: exp.runs[name]}
    (rd,) = R.run_dirs(R.create_experiment(exp, root))
    clock = ProbeClock()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        run = Run(rd)
        run.setup()
        run.finish(*run.train())
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    finally:
        clock.restore()
    hvps, measures, steps = 0, 0, 0
    for line in (rd / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        steps = max(steps, int(ev.get("step") or 0))
        if ev.get("kind") == "sharpness":
            hvps += ev.get("hvps") or 0
            measures += 1
    cfg = exp.runs[name]
    return {
        "run": name,
        "cpu": cpu,
        "wall": wall,
        "probes": clock.seconds,
        "hvps": hvps,
        "measures": measures,
        "steps": steps,
        "cfg": cfg,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", default="warmup_lb,warmup_sharpness,gi_adam,catapult_uv,catapult_mlp")
    ap.add_argument("--set", action="append", default=[], help="PRESET:key=value")
    a = ap.parse_args()
    torch.set_num_threads(1)
    presets = [p.strip() for p in a.presets.split(",") if p.strip()]
    extra: dict[str, list[str]] = {}
    for s in a.set:
        p, kv = s.split(":", 1)
        extra.setdefault(p, []).append(kv)
    root = Path(tempfile.mkdtemp(prefix="bench-probes-"))
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} CPUs), one torch thread; load average {os.getloadavg()[0]:.1f}; "
        f"{a.repeats} rounds, presets in turns; process CPU time"
    )
    rows: dict[str, list[dict]] = {p: [] for p in presets}
    for p in presets:  # warm-up: imports, first calls, first touches (not counted)
        one_run(p, RUNS.get(p, []) + extra.get(p, []), root)
    for _ in range(a.repeats):
        for p in presets:
            rows[p].append(one_run(p, RUNS.get(p, []) + extra.get(p, []), root))
    print(f"  {'preset (run)':<34} {'probe':<10} {'settings':<48} {'share of the loop':<22} notes")
    for p in presets:
        rs = rows[p]
        names = sorted({k for r in rs for k in r["probes"] if k in ("cca", "sharpness")})
        for k in names:
            shares = [r["probes"].get(k, 0.0) / (r["cpu"] - sum(r["probes"].values())) for r in rs]
            cfg = rs[0]["cfg"]
            sec = getattr(cfg.probes, k)
            if k == "cca":
                settings = f"every {sec.every_epochs:g} epochs, {sec.samples} samples, {sec.method}"
                notes = f"{cfg.train.epochs} epochs"
            else:
                settings = f"every {sec.every}, batch {sec.batch}, max_iter {sec.max_iter}, tol {sec.tol:g}"
                # what a product costs in training steps (a measurement's set-up, one forward and
                # gradient graph, counted as one product): the share is about
                # (measurements + HVPs) x this / steps, so it shows how far the settings decide it
                per = [
                    (r["probes"][k] / (r["measures"] + r["hvps"]))
                    / ((r["cpu"] - sum(r["probes"].values())) / r["steps"])
                    for r in rs
                    if r["steps"] and r["measures"]
                ]
                notes = (
                    f"{statistics.median(r['measures'] for r in rs):g} measurements, "
                    f"{statistics.median(r['hvps'] for r in rs):g} HVPs in {rs[0]['steps']} steps, "
                    f"a product ~{statistics.median(per):.2f} steps"
                )
            med = statistics.median(shares)
            mark = "ok" if med <= GOAL else "ABOVE"
            print(
                f"  {p + ' (' + rs[0]['run'] + ')':<34} {k:<10} {settings:<48} "
                f"{100 * med:5.1f}% ({100 * min(shares):.1f}-{100 * max(shares):.1f}) {mark:<5} {notes}; "
                f"run CPU {statistics.median(r['cpu'] for r in rs):.2f} s"
            )
    print(f"  goal: each probe <= {100 * GOAL:.0f}% of the training loop without it")


if __name__ == "__main__":
    main()
