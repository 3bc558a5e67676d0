"""Speed of the TUI's data path and drawing. Prints figures (medians); no assertions.

    python bench/tui.py            # all three
    python bench/tui.py --quick    # smaller sizes

1. Ingestion: events per second through core.events.EventReader (parse), heur.tui.model.decode
   (columns), and the two together — against a goal of >= 100,000/s. Side by side: a
   one-call parse of the whole chunk (what EventReader could do instead).
2. Redraw: 8 runs x 50,000 train points: build the loss figure (min/max decimation to the
   plot width) and render it with plotext at 120x32 — goal <= 50 ms. For scale, one run drawn
   without decimation.
3. Idle CPU of the headless app following one live run (a separate process appends 10 train
   events a second) over ~10 s, as a share of one core — goal < 5 %.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heur.core.events import EventReader
from heur.figures import panels as figures
from heur.figures.rundata import RunData, decode

QUICK = "--quick" in sys.argv


def _line(step: int, rng: random.Random) -> str:
    ev = {
        "kind": "train",
        "step": step,
        "epoch": step / 390,
        "time": 1.7e9 + step * 0.01,
        "loss": 2.3 * rng.random(),
        "lr": 0.1,
        "grad_norm": 1.0 + rng.random(),
        "samples": step * 128,
    }
    return json.dumps(ev, separators=(",", ":"))


def write_events(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write('{"kind":"start","step":0,"epoch":0.0,"time":1.7e9}\n')
        for s in range(1, n + 1):
            f.write(_line(s, rng) + "\n")
            if s % 390 == 0:
                f.write(
                    json.dumps(
                        {
                            "kind": "eval",
                            "step": s,
                            "epoch": s / 390,
                            "time": 1.7e9,
                            "split": "test",
                            "loss": 1.0,
                            "accuracy": 0.5,
                        }
                    )
                    + "\n"
                )


def median_time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# --------------------------------------------------------------------------- 1. ingestion


def bench_ingest(tmp: Path) -> None:
    n = 100_000 if QUICK else 300_000
    path = tmp / "events.jsonl"
    write_events(path, n)
    total = sum(1 for _ in open(path))
    size_mb = path.stat().st_size / 1e6

    def read():
        return EventReader(path).read()

    t_read = median_time(read, 3)
    events = read()
    t_decode = median_time(lambda: decode(events), 3)

    def both():
        d = RunData("r")
        d.apply(decode(EventReader(path).read()))
        return d

    t_both = median_time(both, 3)

    def one_call_parse():  # the suggested EventReader parse: one json.loads per chunk
        data = path.read_bytes()
        end = data.rfind(b"\n")
        body = data[:end].replace(b"\n", b",")
        return json.loads(b"[" + body + b"]")

    t_one = median_time(one_call_parse, 3)

    # incremental tail: 1,000 new lines at a time (what a live run gives between polls)
    inc_path = tmp / "inc.jsonl"
    rng = random.Random(1)
    chunk = "".join(_line(s, rng) + "\n" for s in range(1000))
    inc_path.write_text("")
    reader = EventReader(inc_path)
    ts = []
    for _ in range(30):
        with open(inc_path, "a") as f:
            f.write(chunk)
        t0 = time.perf_counter()
        decode(reader.read())
        ts.append(time.perf_counter() - t0)
    t_inc = statistics.median(ts)

    print(f"1. ingestion ({total:,} lines, {size_mb:.0f} MB)")
    print(f"   EventReader.read (parse)      {total / t_read:>12,.0f} events/s  ({t_read * 1e3:.0f} ms)")
    print(f"   model.decode (columns)        {total / t_decode:>12,.0f} events/s  ({t_decode * 1e3:.0f} ms)")
    print(
        f"   reader + decode + apply       {total / t_both:>12,.0f} events/s  ({t_both * 1e3:.0f} ms)"
        f"   goal >= 100,000/s: {'met' if total / t_both >= 1e5 else 'NOT met'}"
    )
    print(f"   incremental, 1,000-line tail  {1000 / t_inc:>12,.0f} events/s  ({t_inc * 1e3:.1f} ms a poll)")
    print(
        f"   side by side: one json.loads per chunk {total / t_one:,.0f} events/s "
        f"= {t_read / t_one:.1f}x EventReader's per-line loop"
    )


# --------------------------------------------------------------------------- 2. redraw


def bench_redraw() -> None:
    from textual_plotext.plot import Plot

    from heur.tui.plotting import _draw

    n_runs, n_pts = 8, 50_000
    width, height = 120, 32
    rng = np.random.default_rng(0)
    shown = []
    for i in range(n_runs):
        d = RunData(f"run{i}")
        steps = np.arange(1, n_pts + 1, dtype=float)
        loss = 2.3 * np.exp(-steps / (5000 * (i + 1))) + 0.05 * rng.random(n_pts)
        loss[1000 * (i + 1)] = 20.0  # a spike each
        d.tables["train"].extend(
            {
                "step": steps,
                "epoch": steps / 390,
                "samples": steps * 128,
                "loss": loss,
                "lr": np.full(n_pts, 0.1),
                "grad_norm": np.ones(n_pts),
            }
        )
        ev_steps = steps[::390]
        d.tables["eval_test"].extend(
            {
                "step": ev_steps,
                "epoch": ev_steps / 390,
                "loss": np.interp(ev_steps, steps, loss),
                "accuracy": np.full(ev_steps.size, 0.5),
            }
        )
        shown.append(figures.Shown(d.name, d, i))
    view = figures.View()
    plot_w = width - 8

    def build():
        return figures.loss_figure(shown, view, plot_w)

    fig = build()

    def render(f):
        p = Plot()
        p.plotsize(width, height)
        p._set_size(width, height)
        _draw(p, f)
        return p.build()

    t_fig = median_time(build, 7)
    t_plot = median_time(lambda: render(fig), 7)
    t_total = median_time(lambda: render(build()), 7)
    view_s = figures.View(smoothing=0.9)
    t_smooth = median_time(lambda: render(figures.loss_figure(shown, view_s, plot_w)), 5)
    # scale: one run, 50,000 points, not decimated
    from heur.figures.figure import Figure, Series

    tr = shown[0].data["train"]
    raw = Figure(series=[Series(tr["step"], tr["loss"])])
    t_raw = median_time(lambda: render(raw), 1 if not QUICK else 1)
    print(f"2. redraw: {n_runs} runs x {n_pts:,} points, loss panel {width}x{height}")
    print(f"   figure (decimate {fig.points():,} points drawn)  {t_fig * 1e3:6.1f} ms")
    print(f"   plotext render                          {t_plot * 1e3:6.1f} ms")
    print(
        f"   total                                   {t_total * 1e3:6.1f} ms   goal <= 50 ms: "
        f"{'met' if t_total <= 0.05 else 'NOT met'}"
    )
    print(f"   total with smoothing 0.9                {t_smooth * 1e3:6.1f} ms")
    # noisy minibatch losses (noise ~ the curve's height): drawn as two envelope edges
    for sh in shown:
        sh.data["train"]["loss"][:] += rng.random(n_pts)
    t_noisy = median_time(lambda: render(build()), 5)
    print(f"   total, noisy losses (envelopes)         {t_noisy * 1e3:6.1f} ms")
    print(f"   for scale: 1 run x {n_pts:,} points undecimated {t_raw * 1e3:8.0f} ms")


# --------------------------------------------------------------------------- 3. idle CPU

WRITER = r"""
import json, sys, time, random
path, seconds = sys.argv[1], float(sys.argv[2])
rng = random.Random(0)
step = int(sys.argv[3])
t_end = time.time() + seconds
with open(path, "a") as f:
    while time.time() < t_end:
        step += 1
        f.write(json.dumps({"kind": "train", "step": step, "epoch": step / 390, "time": time.time(),
                            "loss": rng.random(), "lr": 0.1, "grad_norm": 1.0,
                            "samples": step * 128}) + "\n")
        f.flush()
        time.sleep(0.1)
"""


def bench_idle(tmp: Path) -> None:
    from heur.core.runs import process_start_time
    from heur.tui.app import HeurApp
    from heur.tui.sidebar import Sidebar

    runs = tmp / "runs"
    exp = runs / "live-20260101-000000"
    run = exp / "run"
    run.mkdir(parents=True)
    (exp / "experiment.toml").write_text('name = "live"\n[heur]\ncreated = 1.7e9\nruns = ["run"]\n')
    (run / "config.toml").write_text('name = "run"\n')
    n0 = 20_000
    write_events(run / "events.jsonl", n0)
    # 100 finished experiments beside it, so the status poll has something to list
    for k in range(100):
        e = runs / f"old{k:03d}-20250101-000000"
        (e / "r").mkdir(parents=True)
        (e / "experiment.toml").write_text(f'name = "old{k}"\n[heur]\ncreated = {1.6e9 + k}\nruns = ["r"]\n')
        (e / "r" / "config.toml").write_text('name = "r"\n')
        (e / "r" / "status.json").write_text('{"state": "completed", "step": 10, "total_steps": 10}')
    seconds = 5.0 if QUICK else 10.0
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run / "events.jsonl"), str(seconds + 4), str(n0)])
    (run / "status.json").write_text(
        json.dumps(
            {
                "state": "running",
                "pid": writer.pid,
                "pid_start": process_start_time(writer.pid),
                "step": n0,
                "total_steps": 10 * n0,
            }
        )
    )

    app = HeurApp(runs, tmp / "presets")
    result = {}

    async def main():
        async with app.run_test(size=(120, 36)) as pilot:
            t0 = time.monotonic()
            while exp not in app.rows:
                await pilot.pause(0.05)
            app.query_one(Sidebar).select_path(exp)
            while not (app.experiment == exp and len(app.data[run]["train"]) >= n0):
                await pilot.pause(0.05)
            result["load_s"] = time.monotonic() - t0
            await pilot.pause(1.0)
            r0, w0, d0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), app.redraws
            n_before = len(app.data[run]["train"])
            await asyncio.sleep(seconds)
            r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            result.update(
                cpu=cpu / (w1 - w0), redraws=app.redraws - d0, wall=w1 - w0, new=len(app.data[run]["train"]) - n_before
            )

    asyncio.run(main())
    writer.wait()
    print("3. idle CPU: headless app at 120x36 following 1 live run (10 events/s), 101 experiments listed")
    print(f"   reattach: read {n0:,} existing events and drew them in {result['load_s']:.2f} s")
    print(
        f"   over {result['wall']:.1f} s: CPU {result['cpu'] * 100:.1f} % of one core, "
        f"{result['redraws']} panel redraws, {result['new']} new events shown"
        f"   goal < 5 %: {'met' if result['cpu'] < 0.05 else 'NOT met'}"
    )


if __name__ == "__main__":
    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(other processes slow every figure below)"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_ingest(tmp)
        bench_redraw()
        bench_idle(tmp)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
