"""Task ``curve``: train a mode-connectivity curve between two checkpoints, then evaluate it.

``python -m heur.core.curve RUN_DIR [--resume]`` runs one run of ``task = "curve"``. Its
``[curve]`` section names the two ends (``start``, ``end``: ``"@RUN"``, ``"@RUN:CHECKPOINT"`` or
a checkpoint path, resolved like every reference of core.pipeline), the ``kind`` (bezier or
polychain), the number of ``bends``, ``fix_ends`` and the ``points`` evaluated at the end. The
run's ``[model]`` and ``[data]`` must be the ends' (preflight compares the models' names and
shapes, and the data split of referenced runs; the run checks the files again at its start):
a mismatch is a one-line error on ``curve.start`` / ``curve.end``, exit 2.

Training is the ordinary loop of core.train with the :class:`CurveObjective` (Garipov et al.
2018): each minibatch draws one t ~ U(0, 1) from a generator seeded by (seed, step), so a resumed
run is bit-identical, and minimises ``loss(model at w(t)) + 0.5 · wd · ||w(t)||²`` (wd =
``optim.weight_decay``, applied to the point of the curve; the optimizer's own weight decay is
off for the curve's points). Every heur optimizer and schedule works; the default schedule is
``garipov`` (constant for half the steps, linear decay to 0.01× by 90%). The run's ``eval``
events measure the curve at t = 0.25, 0.5 and 0.75 (:data:`EVAL_TS`), batch-norm statistics
recomputed at each: they report the worst of the three (the highest loss and its accuracy),
its ``t`` and the ``mean_loss`` over the three, so the loss panel shows the barrier the curve
still has while it trains (three evaluations of the model per eval step). Checkpoints hold the
curve's points (``objective.state.curve``); ``final.pt``'s model is w(0.5).

After the last step the curve and the straight line between its ends are evaluated at
``points`` evenly spaced t (0 and 1 included), BN statistics recomputed at every t: one
``curve_point`` event per t and path as they are measured, then ``curve.json`` and the result
fields of :func:`summarize` (each end's train loss and test error, the maximum along the curve
and along the line, both barriers, the curve's length). A run stopped during this evaluation
(``final.pt`` written) resumes it where it stopped: the points already measured keep their
events (the resume event's ``from_step`` is past them) and are not measured again.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from .atomic import write_json_atomic
from .checkpoint import load_checkpoint
from .config import RunConfig, get_dotted
from .connect_checks import ENDS, _first_diff, check_curve, split_key  # noqa: F401 (check_curve: preflight's)
from .errors import ConfigError, to_config_error
from .measure.connectivity import barrier, recompute_bn_stats
from .measure.curves import Curve, CurveError, curve_length, path_rows
from .objective import LossFn, Objective, make_loss
from .train import Run
from .train import main as train_main

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
_MASK64 = 2**64 - 1
EVAL_T = 0.5  # the point final.pt's model holds
# the t the run's eval events measure while it trains (BN recomputed at each, once per eval step):
# the events report the worst of them (the highest loss), naming its t, and their mean loss
EVAL_TS = (0.25, 0.5, 0.75)

# --------------------------------------------------------------------------- the objective


class CurveObjective(Objective):
    """The loss of a random point of the curve (see the module doc). ``evaluate`` measures the
    curve at :data:`EVAL_TS` and reports its worst point there."""

    name = "curve"

    def __init__(
        self,
        curve: Curve,
        loss_fn: LossFn,
        task: str,
        seed: int,
        weight_decay: float,
        x_train: torch.Tensor,
        bn_batch: int = 512,
    ):
        super().__init__(loss_fn, task)
        self.curve = curve
        self.seed = int(seed)
        self.weight_decay = float(weight_decay)
        self.x_train = x_train
        self.bn_batch = bn_batch
        self._bn_at: Optional[tuple[int, int]] = None
        self._bn: dict[float, dict[str, torch.Tensor]] = {}  # t -> the model's buffers, BN recomputed at w(t)

    def t_at(self, step: int) -> float:
        """The t of optimizer step ``step``: uniform in [0, 1), a function of (seed, step) alone
        (splitmix64 of the pair, 53 bits: a microsecond on the host, no device work)."""
        z = (self.seed * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + 0x6375727665) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        return (z >> 11) / 2.0**53

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        t = self.t_at(step)
        flat = self.curve.flat(t)
        loss = self.loss_fn(self.curve.forward(model, x, t, flat), y)
        if self.weight_decay:
            loss = loss + (0.5 * self.weight_decay) * torch.dot(flat, flat)
        return loss

    def evaluate(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, limit: Optional[int] = None
    ) -> dict[str, Optional[float]]:
        """The curve at each t of :data:`EVAL_TS` (batch-norm statistics recomputed at each, once
        per state of the curve: the train and test splits of one eval step share them): ``loss``
        and ``accuracy`` at the t with the highest loss (the curve's worst point there; a
        non-finite loss is the worst), that ``t``, and ``mean_loss`` over the t (the training
        objective's expectation over t, without the fixed ends). The model is left at w(0.5)."""
        version = (self.curve.bends._version, self.curve.ends._version)
        if self._bn_at != version:  # the curve moved since the last evaluation: BN at every t again
            self._bn = {}
            for t in EVAL_TS:
                self.curve.load_into(model, t)
                if recompute_bn_stats(model, self.x_train, self.bn_batch):
                    self._bn[t] = {n: b.detach().clone() for n, b in model.named_buffers()}
            self._bn_at = version
        rows = []
        for t in EVAL_TS:
            self._load(model, t)
            rows.append((t, super().evaluate(model, x, y, batch, limit)))
        self._load(model, EVAL_T)

        def badness(row: tuple[float, dict]) -> float:
            v = row[1]["loss"]
            return math.inf if v is None or not math.isfinite(v) else v

        t, worst = max(rows, key=badness)
        losses = [r["loss"] for _, r in rows]
        mean = None if None in losses else sum(losses) / len(losses)
        return {**worst, "t": t, "mean_loss": mean}

    def _load(self, model: torch.nn.Module, t: float) -> None:
        """The model at w(t), with the BN statistics recomputed there."""
        self.curve.load_into(model, t)
        if t in self._bn:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(self._bn[t][n])

    def parameters(self) -> list[torch.Tensor]:
        return self.curve.parameters()

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.curve.load_state_dict(state["curve"])
        except (KeyError, CurveError):
            raise RuntimeError("the checkpoint's curve does not match this run's [curve] section") from None
        self._bn_at = None


# --------------------------------------------------------------------------- summary of the paths


def _error(row: dict) -> Optional[float]:
    acc = row.get("test_accuracy")
    return None if acc is None else 1.0 - acc


def _max(vals: list) -> Optional[float]:
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def summarize(ts: list[float], curve_rows: list[dict], line_rows: list[dict]) -> dict[str, Any]:
    """The result fields of a curve run from its two evaluated paths (rows as :func:`path_rows`
    gives them, at the same ``ts`` with 0 and 1). Test error = 1 − test accuracy (None for
    regression); a barrier is the path's height above the chord between its ends."""
    out: dict[str, Any] = {}
    for end, row in (("start", curve_rows[0]), ("end", curve_rows[-1])):
        out[f"{end}_train_loss"] = row["train_loss"]
        out[f"{end}_test_error"] = _error(row)
    for path, rows in (("curve", curve_rows), ("line", line_rows)):
        losses = [r["train_loss"] for r in rows]
        errors = [_error(r) for r in rows]
        out[f"{path}_max_train_loss"] = _max(losses)
        out[f"{path}_max_test_error"] = _max(errors)
        out[f"{path}_barrier_train_loss"] = barrier(ts, losses)
        out[f"{path}_barrier_test_error"] = None if None in errors else barrier(ts, errors)
    return out


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows as columns ``t``, ``train_loss``, ... (as ``heur compare --json``'s interpolation)."""
    return {k: [r[k] for r in rows] for k in ("t", *METRICS)}


# --------------------------------------------------------------------------- the run


class CurveRun(Run):
    """A run of ``task = "curve"``: the training loop of core.train with a :class:`CurveObjective`."""

    def setup(self) -> None:
        from .pipeline import resolve

        cfg = self.cfg
        if cfg.curve is None:
            raise ConfigError('task "curve" needs a [curve] section', key="curve")
        self.ends: list[dict[str, Any]] = []
        for key in ENDS:
            path = resolve(get_dotted(cfg.to_dict(), key), self.run_dir.parent)
            try:
                self.ends.append(load_checkpoint(path))
            except ConfigError as e:
                raise ConfigError(f"{path}: {e.message}", key=key) from None
        super().setup()
        # the model's own weights never train (the curve's points do): it holds the start's buffers
        self.model.load_state_dict(self.ends[0]["model"])
        self.optimizer.param_groups[-1]["weight_decay"] = 0.0  # the curve's group: L2 is on w(t), in the loss
        for key, ck in zip(ENDS, self.ends):
            theirs = ck.get("config")
            try:
                other = RunConfig.model_validate(theirs) if isinstance(theirs, dict) else None
            except Exception:
                other = None
            if other is not None and split_key(other) != split_key(cfg):
                print(
                    f"note: {key}: that checkpoint was trained on other data than this run "
                    f"({_first_diff(split_key(other), split_key(cfg))}); its test error here may be optimistic",
                    flush=True,
                )

    def make_objective(self) -> Objective:
        from .pipeline import _shapes, shape_mismatch

        cfg, cc = self.cfg, self.cfg.curve
        meta = self.plan.model
        for key, ck in zip(ENDS, self.ends):
            problem = shape_mismatch(_shapes(meta.state_dict()), _shapes(ck.get("model", {})))
            if problem:
                raise ConfigError(f"the model of this run does not match that checkpoint: {problem}", key=key)
        names = [n for n, _ in meta.named_parameters()]
        start, end = ({n: ck["model"][n].to(self.device) for n in names} for ck in self.ends)
        try:
            curve = Curve(start, end, cc.kind, cc.bends, cc.fix_ends)
        except CurveError as e:
            raise to_config_error(e, {"end": "curve.end", "kind": "curve.kind", "bends": "curve.bends"}) from None
        loss_fn = make_loss(cfg.train, self.data.task, self.data.num_outputs)
        return CurveObjective(
            curve,
            loss_fn,
            self.data.task,
            cfg.seed,
            cfg.optim.weight_decay,
            self.data.x_train,
            cfg.train.eval_batch_size,
        )

    def train(self) -> tuple[str, str, dict[str, Any]]:
        state, reason, last = super().train()
        if state != "completed":
            return state, reason, last
        done = self.along_curve()
        if done is None:
            return "stopped", f"SIGTERM while evaluating the curve (step {self.total})", last
        last.update(done)
        return state, reason + f", then the curve and the line at {self.cfg.curve.points} points", last

    def recorded_points(self, step: int, n: int) -> dict[tuple[str, int], dict]:
        """(path, index) -> row of the ``curve_point`` events at ``step`` (of ``n`` points) that
        earlier processes of this run wrote and a later ``resume`` keeps: the evaluation of a run
        stopped during it goes on from where it stopped (a resume from final.pt keeps them)."""
        from .events import apply_resumes, read_events

        out = {}
        for ev in apply_resumes(read_events(self.run_dir / "events.jsonl")):
            if ev.get("kind") == "curve_point" and ev.get("step") == step and ev.get("points") == n:
                out[ev["path"], ev["index"]] = {"t": ev["t"], **{k: ev[k] for k in METRICS}}
        return out

    def along_curve(self) -> Optional[dict[str, Any]]:
        """Evaluate the curve and the line at every t (events as they come), write curve.json;
        returns the result fields (None when stopped on the way). A resumed run measures only
        the points its earlier processes did not (:meth:`recorded_points`): each t has one
        ``curve_point`` event per path."""
        cfg, step = self.cfg, self.total
        curve: Curve = self.objective.curve
        line = Curve(curve.point(0), curve.point(curve.n_points - 1), bends=0)
        n = cfg.curve.points
        ts = [i / (n - 1) for i in range(n)]
        rows: dict[str, list[dict]] = {"curve": [], "line": []}
        bs = cfg.train.eval_batch_size
        done = self.recorded_points(step, n) if self.resume else {}
        for i, t in enumerate(ts):
            for path, c in (("curve", curve), ("line", line)):
                if (path, i) in done:  # measured by the process this one resumes: its event stands
                    rows[path].append(done[path, i])
                    continue
                row = path_rows(c, self.model, self.data, [t], self.objective.loss_fn, bs)[0]
                rows[path].append(row)
                fields = {k: row[k] for k in METRICS}
                self.events.emit("curve_point", step, step / self.spe, path=path, index=i, points=n, t=t, **fields)
            self.status.heartbeat(step=step, epoch=step / self.spe)
            if self.stop_requested:
                return None
        result = summarize(ts, rows["curve"], rows["line"])
        result["curve_length"] = curve_length(curve, ts)
        result["line_length"] = curve_length(line, [0.0, 1.0])
        doc = {
            "kind": cfg.curve.kind,
            "bends": cfg.curve.bends,
            "fix_ends": cfg.curve.fix_ends,
            "start": cfg.curve.start,
            "end": cfg.curve.end,
            "curve": columns(rows["curve"]),
            "line": columns(rows["line"]),
            "result": result,
        }
        from .events import sanitize

        write_json_atomic(self.run_dir / "curve.json", sanitize(doc))
        curve.load_into(self.model, EVAL_T)  # leave the model at the midpoint, as final.pt holds it
        return result


# --------------------------------------------------------------------------- heur connect

_TRAIN_KEPT = ("batch_size", "full_batch", "drop_last", "loss", "mse_reduction", "eval_batch_size", "log_every")


def connect_preset(
    start: Path | str,
    end: Path | str,
    kind: str = "bezier",
    bends: int = 1,
    epochs: Optional[float] = None,
    device: str = "auto",
) -> dict[str, Any]:
    """The preset of ``heur connect``: one curve run between two checkpoint files, its model, data
    (split pinned by ``data.seed``), optimizer and batch read from ``start``'s config; the schedule
    is Garipov's; ``epochs`` defaults to the start's. ConfigError naming the file for a file that
    is not a heur checkpoint."""
    ck = load_checkpoint(start)
    load_checkpoint(end)  # refused here, with its name, before anything else
    src = ck.get("config")
    if not isinstance(src, dict):
        raise ConfigError("checkpoint has no 'config' entry", file=str(start))
    from .config import validate_run

    a = validate_run(src, str(start))
    data = a.data.model_dump(mode="json", exclude_none=True)
    data["seed"] = a.seed if a.data.seed is None else a.data.seed
    model = a.model.model_dump(mode="json", exclude_none=True)
    model.pop("init_from", None)
    train = {k: v for k, v in a.train.model_dump(mode="json", exclude_none=True).items() if k in _TRAIN_KEPT}
    train["epochs"] = float(epochs) if epochs is not None else a.train.epochs
    return {
        "name": "connect",
        "description": f"a {kind} curve ({bends} bend(s)) between {start} and {end}",
        "task": "curve",
        "check": "connectivity",
        "seed": a.seed,
        "device": device,
        "data": data,
        "model": model,
        "optim": a.optim.model_dump(mode="json", exclude_none=True),
        "train": train,
        "curve": {"start": str(Path(start).resolve()), "end": str(Path(end).resolve()), "kind": kind, "bends": bends},
    }


def data_note(start: Path | str, end: Path | str) -> Optional[str]:
    """A warning when the two checkpoints were trained on different data splits, else None."""
    from .config import validate_run

    keys = []
    for p in (start, end):
        cfg = load_checkpoint(p).get("config")
        try:
            keys.append(split_key(validate_run(cfg, str(p))) if isinstance(cfg, dict) else None)
        except ConfigError:  # a config this heur no longer reads: nothing to compare
            keys.append(None)
    if None in keys or keys[0] == keys[1]:
        return None
    return (
        f"the two checkpoints were trained on different data ({_first_diff(keys[1], keys[0])}, end vs start): "
        "the curve uses the start's split, so the end's test error may be optimistic"
    )


def quick_curve(
    start: Path | str,
    end: Path | str,
    epochs: Optional[float] = None,
    points: int = 11,
    runs_dir: Optional[Path | str] = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``heur compare --curve``: one curve run between two checkpoints, trained in this process
    (its run directory under ``runs_dir`` like any other); returns ``curve.json``'s columns of the
    curve and the line, the result and the run directory. ConfigError as ``heur connect`` gives."""
    from . import runs as R
    from .config import expand
    from .preflight import check_experiment

    raw = connect_preset(start, end, epochs=epochs, device=device)
    raw["curve"]["points"] = points
    exp = expand(raw, [])
    check_experiment(exp)
    (rd,) = R.run_dirs(R.create_experiment(exp, runs_dir))
    run = CurveRun(rd)
    run.status.update(state="running", pid=os.getpid(), force=True)
    try:
        run.setup()
        state, reason, last = run.train()
    except Exception as e:
        run.finish("failed", f"{type(e).__name__}: {e}", {})
        raise
    run.finish(state, reason, last)
    doc = json.loads((rd / "curve.json").read_text()) if (rd / "curve.json").is_file() else {}
    return {"curve": doc.get("curve"), "line": doc.get("line"), "result": last, "run_dir": str(rd), "state": state}


def main(argv: Optional[list[str]] = None) -> int:
    return train_main(argv, run_class=CurveRun, prog="python -m heur.core.curve")


if __name__ == "__main__":
    sys.exit(main())
