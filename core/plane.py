"""Task ``plane``: train loss and test error on the plane through three checkpoints.

``python -m heur.core.plane RUN_DIR [--resume]`` runs one run of ``task = "plane"``. Its
``[plane]`` section names ``start`` (w0), ``bend`` (w1) and ``end`` (w2) — ``"@RUN"``,
``"@RUN:CHECKPOINT"`` or paths; a curve run's checkpoint as ``bend`` gives that curve's middle
bend — and the ``grid`` (points a side, 21) and ``margin`` (0.2). The basis and the grid units are
Garipov et al.'s (core.measure.plane): w0 at (0, 0), w2 at (1, 0), w1 at (a1, 1); the grid covers
[−margin, 1 + margin]² in those units. At every grid point the batch-norm statistics are
recomputed from the training set; each point is a ``plane_point`` event as it is measured; at the
end ``plane.json`` holds the grids (rows b, columns a), the three points' coordinates and
the steps their checkpoints were written at (``steps``), and the
result the grid's minimum train loss and test error and the bend's ``a``. ``project`` lists
checkpoints (``"@sgdr:step_*"`` globs a run's checkpoints, in step order) projected onto the
plane: their (a, b) and distance from it, as ``plane_projection`` events and in ``plane.json``
(with each checkpoint's ``step``).

Nothing trains: the run has no checkpoints. A stopped or lost plane run resumed with
``--resume`` evaluates its grid again (the same numbers: nothing in it is random).
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from . import runs as runs_mod
from .atomic import write_json_atomic
from .checkpoint import load_checkpoint
from .config import RunConfig, get_dotted
from .connect_checks import KEYS, check_plane  # noqa: F401 (check_plane: preflight's)
from .errors import ConfigError, to_config_error
from .events import EventWriter, sanitize


def project_paths(cfg: RunConfig, exp_dir: Path) -> list[tuple[str, Path]]:
    """(label, file) of every checkpoint ``plane.project`` names, globs expanded in step order."""
    from .pipeline import resolve

    def order(f: Path) -> float:
        m = re.fullmatch(r"step_(\d+)", f.stem)
        if m:
            return int(m.group(1))
        return math.inf if f.stem == "final" else int(load_checkpoint(f).get("step", 0))

    out: list[tuple[str, Path]] = []
    for value in cfg.plane.project:
        run, _, pattern = value[1:].partition(":")
        if value.startswith("@") and any(c in pattern for c in "*?["):
            files = sorted((exp_dir / run / "checkpoints").glob(pattern.removesuffix(".pt") + ".pt"), key=order)
            out += [(f"@{run}:{f.stem}", f) for f in files]
        else:
            out.append((value, resolve(value, exp_dir)))
    return out


def point_of(ck: dict[str, Any], names: list[str], bend: bool = False) -> torch.Tensor:
    """A checkpoint as one flat vector of the parameters ``names``: its model's weights, or with
    ``bend`` and a curve run's checkpoint, that curve's middle bend."""
    from .measure.plane import flatten

    obj = ck.get("objective") or {}
    if bend and obj.get("name") == "curve":
        state = obj["state"]["curve"]
        if list(state["names"]) != names:
            raise ValueError("the curve's parameters are not this model's")
        pts = state["points"]
        return pts[(pts.shape[0] - 1) // 2].detach().clone()
    return flatten(ck["model"], names)


class PlaneRun:
    """One plane run in its own process."""

    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.cfg: RunConfig = runs_mod.read_run_config(self.run_dir)
        self.resume = resume
        self.stop_requested = False
        self.status = runs_mod.StatusWriter(self.run_dir)
        self.events = EventWriter(self.run_dir / "events.jsonl")
        self.t0 = time.time()
        self.step = 0

    def setup(self) -> None:
        """The process's thread count (HEUR_THREADS, as the supervisor hands it out)."""
        threads = os.environ.get("HEUR_THREADS")
        if threads:
            torch.set_num_threads(max(1, int(threads)))

    def train(self) -> tuple[str, str, dict[str, Any]]:
        """Evaluate the grid and the projections: (state, reason, result)."""
        from .data import load_data
        from .device import resolve_device
        from .measure.connectivity import eval_row, recompute_bn_stats
        from .measure.errors import MeasurementError
        from .measure.plane import Plane, grid_axis, unflatten
        from .models import build_model
        from .objective import make_loss
        from .pipeline import _shapes, resolve, shape_mismatch
        from .plan import plan_run

        cfg, pc = self.cfg, self.cfg.plane
        if pc is None:
            raise ConfigError('task "plane" needs a [plane] section', key="plane")
        device = resolve_device(cfg.device)
        plan = plan_run(cfg)
        cks = []
        for key in KEYS:
            path = resolve(get_dotted(cfg.to_dict(), key), self.run_dir.parent)
            try:
                ck = load_checkpoint(path)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e.message}", key=key) from None
            problem = shape_mismatch(_shapes(plan.model.state_dict()), _shapes(ck.get("model", {})))
            if problem:
                raise ConfigError(f"the model of this run does not match that checkpoint: {problem}", key=key)
            cks.append(ck)
        data = load_data(cfg, device)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data.input_shape, data.num_outputs).to(device)
        model.load_state_dict(cks[0]["model"])  # the start's buffers; every grid point recomputes BN
        params = dict(model.named_parameters())
        names = list(params)
        shapes = [tuple(p.shape) for p in params.values()]
        pts = [point_of(ck, names, key == "plane.bend").to(device) for key, ck in zip(KEYS, cks)]
        try:
            plane = Plane(*pts)
        except MeasurementError as e:
            raise to_config_error(e, {"w2": "plane.end", "w1": "plane.bend"}) from None
        loss_fn = make_loss(cfg.train, data.task, data.num_outputs)
        axis = grid_axis(pc.grid, pc.margin)
        n = pc.grid * pc.grid
        if self.resume:  # everything is measured again: readers drop the old points and projections
            self.events.emit("resume", 0, 0.0, from_step=0, checkpoint="")
        else:
            self.events.emit(
                "start",
                0,
                0.0,
                name=cfg.name,
                total_steps=n,
                steps_per_epoch=n,
                batch_size=cfg.train.eval_batch_size,
                n_train=data.n_train,
                base_lr=None,
                lambda0=None,
                device=str(device),
                pid=os.getpid(),
                blocks=list(plan.blocks),
            )
        self.status.update(state="running", step=0, total_steps=n, epoch=0.0, force=True)
        # the three points and the projected checkpoints first (step 0), so a heatmap drawn while
        # the grid fills in has them marked
        coords = {key.split(".")[1]: list(plane.coordinates(p)) for key, p in zip(KEYS, pts)}
        for key, (a, b, dist) in coords.items():
            label = get_dotted(cfg.to_dict(), f"plane.{key}")
            self.events.emit("plane_projection", 0, 0.0, checkpoint=label, a=a, b=b, distance=dist, point=key)
        projected = []
        for label, path in project_paths(cfg, self.run_dir.parent):
            try:
                ck = load_checkpoint(path)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e.message}", key="plane.project") from None
            if shape_mismatch(_shapes(plan.model.state_dict()), _shapes(ck.get("model", {}))):
                raise ConfigError(f"{path}: the model of this run does not match that checkpoint", key="plane.project")
            a, b, dist = plane.coordinates(point_of(ck, names).to(device))
            projected.append({"checkpoint": label, "step": ck.get("step"), "a": a, "b": b, "distance": dist})
            self.events.emit("plane_projection", 0, 0.0, checkpoint=label, a=a, b=b, distance=dist)
        grids: dict[str, list[list[Optional[float]]]] = {k: [] for k in ("train_loss", "test_loss", "test_error")}
        bs = cfg.train.eval_batch_size
        for j, b in enumerate(axis):
            for k in grids:
                grids[k].append([])
            for i, a in enumerate(axis):
                with torch.no_grad():
                    for name, w in unflatten(plane.point(a, b, pts[0].dtype), names, shapes).items():
                        params[name].copy_(w)
                recompute_bn_stats(model, data.x_train, bs)
                row = eval_row(model, data, loss_fn, bs)
                index = j * pc.grid + i
                self.step = index + 1
                self.events.emit("plane_point", self.step, self.step / n, index=index, points=n, a=a, b=b, **row)
                err = None if row["test_accuracy"] is None else 1.0 - row["test_accuracy"]
                grids["train_loss"][-1].append(row["train_loss"])
                grids["test_loss"][-1].append(row["test_loss"])
                grids["test_error"][-1].append(err)
                self.status.update(step=self.step, epoch=self.step / n, loss=row["train_loss"])
                if self.stop_requested:
                    return "stopped", f"SIGTERM at grid point {self.step} of {n}", {}
        flat_loss = [v for r in grids["train_loss"] for v in r if v is not None]
        flat_err = [v for r in grids["test_error"] for v in r if v is not None]
        result = {
            "plane_min_train_loss": min(flat_loss) if flat_loss else None,
            "plane_min_test_error": min(flat_err) if flat_err else None,
            "bend_a": coords["bend"][0],
            "plane_dx": plane.dx,
            "plane_dy": plane.dy,
            "projected": len(projected),
        }
        doc = {
            "start": pc.start,
            "bend": pc.bend,
            "end": pc.end,
            "grid": pc.grid,
            "margin": pc.margin,
            "a": axis,
            "b": axis,
            **grids,
            "points": coords,  # name -> [a, b, distance from the plane]
            "steps": {key.split(".")[1]: ck.get("step") for key, ck in zip(KEYS, cks)},  # each checkpoint's step
            "projected": projected,
            "result": result,
        }
        write_json_atomic(self.run_dir / "plane.json", sanitize(doc))
        return "completed", f"{n} grid points", result

    def finish(self, state: str, reason: str, result: dict[str, Any]) -> None:
        result = {**result, "wall_time": time.time() - self.t0}
        n = self.cfg.plane.grid**2 if self.cfg.plane else 1
        self.events.emit("end", self.step, self.step / n, state=state, reason=reason, result=result)
        self.status.update(state=state, reason=reason, result=result, step=self.step, force=True)
        self.events.close()


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m heur.core.plane RUN_DIR [--resume]``: the training loop's process runner
    (signals, status, errors -> a readable run directory) around a :class:`PlaneRun`."""
    from .train import main as run_main

    return run_main(argv, run_class=PlaneRun, prog="python -m heur.core.plane")


if __name__ == "__main__":
    sys.exit(main())
