"""Run directories for the TUI tests, written per the contract in DESIGN.md ("The run directory").

Deterministic: fixed times, seeded noise. Every event goes through ``core.schema.make``, so a
fixture writes only kinds and fields the engine declares (and a field it renames fails here).
:func:`make_runs` builds a small runs folder with
two experiments, read through the real ``core.runs``; :class:`RecordingSource` fakes only
launching and stopping (the real ones are exercised by the slow end-to-end test).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

from heur.core.schema import make
from heur.tui.source import RunSource

T0 = 1_795_000_000.0  # a fixed "now" for every fixture


def ev(kind: str, step: int, epoch: float, t: float, **fields: Any) -> str:
    """One events.jsonl line; :class:`~heur.core.schema.SchemaError` for a field the engine does
    not declare."""
    return json.dumps(make(kind, step, epoch, t, **fields), separators=(",", ":"))


def write_run(
    run: Path,
    *,
    steps: int = 400,
    lr: float = 0.1,
    spike_at: int | None = None,
    state: str = "completed",
    with_probes: bool = True,
    seed: int = 0,
    batch: int = 32,
    steps_per_epoch: int = 50,
    torn: bool = False,
    malformed: bool = False,
    total_steps: int | None = None,
) -> Path:
    """One run dir: config.toml, events.jsonl, status.json, stdout.log."""
    rng = random.Random(seed)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text(
        f'name = "{run.name}"\nseed = {seed}\n\n[optim]\nname = "sgd"\nlr = {lr}\n\n'
        f"[train]\nepochs = {steps // steps_per_epoch}\nbatch_size = {batch}\n"
    )
    lines = [ev("start", 0, 0.0, T0)]
    if with_probes:
        lam0 = (3.0 if spike_at is not None else 1.0) / lr  # eta*lambda0 = 3: catapult phase
        lines.append(
            ev(
                "ntk",
                0,
                0.0,
                T0,
                lambda_ntk=lam0,
                lambda0=lam0,
                normalisation="mean",
                batch=256,
                source="init",
                lr=lr,
                lr_times_lambda=lr * lam0,
                lr_lazy_edge=2 / lam0,
                lr_uv_max=4 / lam0,
                lr_relu_max=12 / lam0,
            )
        )
    layers = ["fc1", "fc2", "fc3"]

    # the CCA probe: a snapshot at step 0 and at each epoch's end, each against the one before;
    # a completed run adds every snapshot against the last one
    def cca_vals(e: float) -> list[float]:
        return [min(1.0, 0.3 + 0.7 * (1 - math.exp(-e * (i + 1) / 3))) for i in range(3)]

    for s in range(1, steps + 1):
        e = s / steps_per_epoch
        loss = 2.3 * math.exp(-s * (2 + 3 * lr) / steps) + 0.05 + 0.02 * rng.random()
        if spike_at is not None and spike_at <= s < spike_at + 6:
            loss *= 1 + 8 * math.sin(math.pi * (s - spike_at) / 6)
        lines.append(ev("train", s, e, T0 + s, samples=s * batch, loss=loss, lr=lr, grad_norm=1.0 + rng.random()))
        if malformed and s == steps // 2:
            lines.append('{"kind": "train", "step": oops')
            lines.append("not json at all")
        if s % steps_per_epoch == 0:
            for split in ("train", "test"):
                lines.append(
                    ev(
                        "eval",
                        s,
                        e,
                        T0 + s,
                        split=split,
                        loss=loss * (1.1 if split == "test" else 1),
                        accuracy=min(0.99, 0.1 + 0.9 * (1 - math.exp(-s / steps * 3))),
                    )
                )
            if with_probes:
                lines.append(
                    ev(
                        "cca",
                        s,
                        e,
                        T0 + s,
                        layers=layers,
                        values=cca_vals(e),
                        method="svcca",
                        against="previous",
                        epoch_a=e - 1,
                        epoch_b=e,
                    )
                )
        if with_probes and s % 20 == 0:
            lam = 2.0 / lr * (0.6 + 0.3 * math.exp(-s / steps))
            lines.append(ev("sharpness", s, e, T0 + s, lambda_max=lam, lr=lr, threshold=2.0 / lr))
    if with_probes and spike_at is not None:
        lines.append(
            ev(
                "catapult",
                spike_at + 6,
                (spike_at + 6) / steps_per_epoch,
                T0 + spike_at,
                start_step=spike_at,
                peak_step=spike_at + 3,
                end_step=spike_at + 6,
                peak_ratio=8.9,
            )
        )
    if with_probes and state == "completed" and steps >= steps_per_epoch:
        epochs = [float(k) for k in range(steps // steps_per_epoch + 1)]
        matrix = [[min(1.0, 0.2 + 0.8 * (x / epochs[-1]) ** (i + 1)) for x in epochs] for i in range(3)]
        lines.append(
            ev(
                "cca",
                steps,
                steps / steps_per_epoch,
                T0 + steps,
                layers=layers,
                values=[row[0] for row in matrix],
                method="svcca",
                against="final",
                epoch_a=epochs[0],
                epoch_b=epochs[-1],
                epochs=epochs,
                matrix=matrix,
            )
        )
    if state in ("completed", "diverged", "stopped"):
        lines.append(ev("end", steps, steps / steps_per_epoch, T0 + steps, state=state, reason=""))
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"kind":"train","step":' + str(steps + 1)
    (run / "events.jsonl").write_text(text)
    (run / "stdout.log").write_text("".join(f"step {s} loss ok\n" for s in range(0, steps + 1, 50)))
    write_status(run, state=state, step=steps, total_steps=total_steps or steps, epoch=steps / steps_per_epoch)
    return run


def write_status(run: Path, **fields: Any) -> None:
    """status.json as core.runs writes it; a ``running`` run gets this process as its pid."""
    from heur.core.runs import process_start_time

    d = {
        "state": "queued",
        "name": run.name,
        "pid": None,
        "step": 0,
        "total_steps": 0,
        "epoch": 0.0,
        "heartbeat": T0,
        "result": {},
    }
    d.update(fields)
    if d["state"] == "running" and "pid" not in fields:
        d["pid"] = os.getpid()
        d["pid_start"] = process_start_time(os.getpid())
    (run / "status.json").write_text(json.dumps(d))


def write_experiment(runs_dir: Path, name: str, stamp: str, created: float, runs: list[str] = ()) -> Path:
    exp = runs_dir / f"{name}-{stamp}"
    exp.mkdir(parents=True, exist_ok=True)
    names = ", ".join(f'"{r}"' for r in runs)
    (exp / "experiment.toml").write_text(f'name = "{name}"\n\n[heur]\ncreated = {created}\nruns = [{names}]\n')
    return exp


def write_distill_experiment(runs_dir: Path, compare_events: list[dict[str, Any]]) -> tuple[Path, Path]:
    """(experiment, its compare run): an independent and a distilled student (``[distill]`` teacher
    ``@teacher``), both completed, and a completed compare run whose events.jsonl holds
    ``compare_events`` (event dicts) and its end event."""
    exp = write_experiment(runs_dir, "distill", "20261202-120000", T0, ["indep", "distilled", "compare"])
    for name, body in (("indep", ""), ("distilled", '[distill]\nteacher = "@teacher"\n')):
        (exp / name).mkdir()
        (exp / name / "config.toml").write_text(f'name = "{name}"\n{body}')
        write_status(exp / name, state="completed")
        (exp / name / "events.jsonl").write_text("")
    rd = exp / "compare"
    rd.mkdir()
    (rd / "config.toml").write_text('name = "compare"\ntask = "compare"\n')
    n = len(compare_events)
    lines = [json.dumps(e) for e in compare_events]
    lines.append(ev("end", n, 0.0, T0, state="completed", reason=f"compared {n}", result={}))
    (rd / "events.jsonl").write_text("\n".join(lines) + "\n")
    write_status(rd, state="completed", step=n, total_steps=n)
    return exp, rd


def make_runs(runs_dir: Path) -> dict[str, Path]:
    """Two experiments: a finished catapult sweep (two runs) and a warmup pair (one running)."""
    a = write_experiment(runs_dir, "catapult_mlp", "20261123-100000", T0, ["lr=0.5", "lr=1.5"])
    lazy = write_run(a / "lr=0.5", lr=0.5, seed=1)
    cat = write_run(a / "lr=1.5", lr=1.5, spike_at=30, seed=2, malformed=True)
    b = write_experiment(runs_dir, "warmup", "20261123-110000", T0 + 3600, ["small_batch", "large_batch"])
    sb = write_run(b / "small_batch", steps=300, seed=3, with_probes=False)
    lb = write_run(
        b / "large_batch", steps=150, batch=256, seed=4, state="running", total_steps=300, with_probes=False, torn=True
    )
    return {"catapult": a, "lazy": lazy, "cat": cat, "warmup": b, "sb": sb, "lb": lb}


# --------------------------------------------------------------------------- recording source


class RecordingSource(RunSource):
    """The real source for reading; launching and stopping are recorded and faked (fast)."""

    def __init__(self, runs_dir: Path):
        super().__init__(runs_dir)
        self.launched: list[tuple[Path, list[str]]] = []
        self.stopped: list[Path] = []

    def launch(self, preset: Path, overrides: list[str]) -> Path:
        self.validate(preset, overrides)
        self.launched.append((preset, overrides))
        exp = write_experiment(self.runs_dir, Path(preset).stem, "20261123-120000", T0 + 7200, ["run"])
        write_run(exp / "run", steps=100, state="running", total_steps=200, with_probes=False)
        return exp

    def stop_run(self, run: Path) -> bool:
        self.stopped.append(run)
        write_status(run, state="stopped")
        return True

    def stop_experiment(self, exp: Path) -> int:
        return sum(self.stop_run(r) for r in sorted(exp.iterdir()) if (r / "config.toml").is_file())


TINY_PRESET = """name = "tiny"
description = "a tiny MLP on 200 digits, one epoch"
seed = 0
device = "cpu"

[data]
name = "digits"
subset = 200

[model]
name = "mlp"
width = 16

[train]
epochs = 1
batch_size = 50
log_every = 1
"""


def make_presets(presets_dir: Path) -> Path:
    presets_dir.mkdir(parents=True, exist_ok=True)
    p = presets_dir / "tiny.toml"
    p.write_text(TINY_PRESET)
    (presets_dir / "paper").mkdir(exist_ok=True)
    (presets_dir / "paper" / "big.toml").write_text(
        'name = "big"\ndescription = "the paper setting"\n[model]\nname = "vgg16"\n'
    )
    return p
