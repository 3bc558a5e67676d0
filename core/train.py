"""The training loop. One run = one process: ``python -m heur.core.train RUN_DIR [--resume]``.

The process reads ``RUN_DIR/config.toml``, trains, and writes ``events.jsonl``,
``status.json`` and ``checkpoints/``. It syncs with the host only at log steps (every
``train.log_every`` steps), at evals and when a probe acts. SIGTERM (or SIGINT) saves a
checkpoint and ends the run as ``stopped``; a non-finite loss or one above
``train.diverge_loss`` ends it as ``diverged``; an exception ends it as ``failed`` with the
traceback in ``stdout.log``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from . import runs as runs_mod
from .config import RunConfig
from .data import DeviceBatcher, augment_policy, batch_size, eval_batches, load_data, steps_per_epoch, total_steps
from .errors import ConfigError
from .events import EventWriter
from .models import build_model
from .probes import Probe, TrainContext, build_probes


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here", key="device")
    return torch.device(name)


def make_loss(train_cfg: Any, task: str, num_outputs: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss. ``mse`` on a classification task uses one-hot targets.

    ``mse_reduction = "mean"``: L = 1/(n C) sum (f - y)^2 (torch's MSELoss);
    ``"half_sum"``: L = 1/(2n) sum_i ||f_i - y_i||^2 (the NTK / catapult convention).
    """
    if train_cfg.loss == "cross_entropy":
        if task != "classification":
            raise ConfigError("cross_entropy needs a classification dataset; use loss = \"mse\"",
                              key="train.loss")
        return F.cross_entropy

    half = train_cfg.mse_reduction == "half_sum"

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dtype == torch.long:
            y = F.one_hot(y, num_outputs).to(out.dtype)
        y = y.reshape(out.shape)
        if half:
            return 0.5 * (out - y).pow(2).sum() / out.shape[0]
        return F.mse_loss(out, y)

    return mse


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
             batch: int, limit: Optional[int] = None, task: str = "classification") -> tuple[float, Optional[float]]:
    """Mean loss and accuracy over (up to ``limit`` samples of) a split, in eval mode (the model's
    mode is restored); batches move to the model's device; one host sync."""
    was_training = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), x.device)
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros((), device=dev, dtype=torch.float64)
    n = 0
    for xb, yb in eval_batches(x, y, batch, limit):
        xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        out = model(xb)
        loss_sum += loss_fn(out, yb).double() * xb.shape[0]
        if task == "classification":
            correct += (out.argmax(1) == yb).sum()
        n += xb.shape[0]
    model.train(was_training)
    vals = torch.stack([loss_sum, correct]).tolist()
    return vals[0] / max(n, 1), (vals[1] / max(n, 1) if task == "classification" else None)


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write: temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class Run:
    """One training run inside its own process."""

    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.cfg: RunConfig = runs_mod.read_run_config(self.run_dir)
        self.resume = resume
        self.stop_requested = False
        self.status = runs_mod.StatusWriter(self.run_dir)
        self.events = EventWriter(self.run_dir / "events.jsonl")
        self.t0 = time.time()

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        threads = os.environ.get("HEUR_THREADS")
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.data = load_data(cfg, self.device)
        self.loss_fn = make_loss(cfg.train, self.data.task, self.data.num_outputs)
        self.model = build_model(cfg, self.data.input_shape, self.data.num_outputs).to(self.device)
        self.model.train()
        self.spe = steps_per_epoch(cfg)
        self.total = total_steps(cfg)
        self.batch = batch_size(cfg)
        pad, flip = augment_policy(cfg, self.data)
        self.batcher = DeviceBatcher(self.data, self.batch, self.spe, cfg.seed, pad, flip, cfg.train.drop_last)
        from .optim import build_optimizer, run_base_lr
        from .schedules import build_schedule

        self.lambda0: Optional[float] = None
        if cfg.optim.lr_ntk is not None:
            from .probes_curvature import measure_lambda0

            self.lambda0 = float(measure_lambda0(self.model, cfg, self.data))
        self.base_lr = run_base_lr(cfg, self.lambda0)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.base_lr)
        self.schedule = build_schedule(cfg.schedule, self.base_lr, self.spe, self.total)
        self.restarts = set(getattr(self.schedule, "restart_steps", []) or [])
        self.probes: list[Probe] = build_probes(cfg.probes)
        self.ctx = TrainContext(
            cfg=cfg, model=self.model, loss_fn=self.loss_fn, optimizer=self.optimizer, data=self.data,
            device=self.device, run_dir=self.run_dir, events=self.events, schedule=self.schedule,
            steps_per_epoch=self.spe, total_steps=self.total, lambda0=self.lambda0,
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.start_step = 0
        self.loss_acc = torch.zeros((), device=self.device)
        self.n_acc = 0
        self.restart_k = 0

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, step: int) -> dict[str, Any]:
        return {
            "format": "heur-checkpoint",
            "version": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "step": step,
            "epoch": step / self.spe,
            "input_shape": list(self.data.input_shape),
            "num_outputs": self.data.num_outputs,
            "base_lr": self.base_lr,
            "lambda0": self.lambda0,
            "loss_acc": float(self.loss_acc.item()),
            "n_acc": self.n_acc,
            "restart_k": self.restart_k,
            "probes": {p.name: p.state_dict() for p in self.probes},
        }

    def save(self, name: str, step: int) -> Path:
        path = self.run_dir / "checkpoints" / name
        save_checkpoint(path, self.checkpoint_state(step))
        self.events.emit("checkpoint", step, step / self.spe, path=str(path.relative_to(self.run_dir)))
        return path

    def load_latest(self) -> bool:
        path = runs_mod.latest_checkpoint(self.run_dir)
        if path is None:
            return False
        ck = runs_mod.load_checkpoint(path)  # on the CPU; load_state_dict copies to the device
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.start_step = int(ck["step"])
        self.loss_acc.fill_(float(ck.get("loss_acc", 0.0)))
        self.n_acc = int(ck.get("n_acc", 0))
        self.restart_k = int(ck.get("restart_k", 0))
        for p in self.probes:
            st = ck.get("probes", {}).get(p.name)
            if st:
                p.load_state_dict(st)
        # the resumed process writes steps > start_step: points from start_step + 1 on are replaced
        self.events.emit("resume", self.start_step, self.start_step / self.spe, from_step=self.start_step + 1,
                         checkpoint=str(path.relative_to(self.run_dir)))
        return True

    # ------------------------------------------------------------------ loop
    def samples_at(self, step: int) -> int:
        n = self.data.n_train
        per_epoch = self.spe * self.batch if self.cfg.train.drop_last else n
        e, i = divmod(step, self.spe)
        return e * per_epoch + min(i * self.batch, per_epoch)

    def eval_event(self, step: int) -> dict[str, Any]:
        tc = self.cfg.train
        out: dict[str, Any] = {}
        for split, x, y, limit in (("train", self.data.x_train, self.data.y_train, tc.eval_train_samples),
                                   ("test", self.data.x_test, self.data.y_test, None)):
            loss, acc = evaluate(self.model, x, y, self.loss_fn, tc.eval_batch_size, limit, self.data.task)
            self.events.emit("eval", step, step / self.spe, split=split, loss=loss, accuracy=acc)
            out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, acc
        return out

    def train(self) -> tuple[str, str, dict[str, Any]]:
        cfg, tc = self.cfg, self.cfg.train
        spe, total = self.spe, self.total
        eval_steps = max(1, int(round(tc.eval_every * spe)))
        ckpt_steps = int(round(tc.checkpoint_every * spe)) if tc.checkpoint_every > 0 else 0
        resumed = self.resume and self.load_latest()
        if not resumed:
            self.events.emit("start", 0, 0.0, name=cfg.name, total_steps=total, steps_per_epoch=spe,
                             batch_size=self.batch, n_train=self.data.n_train, base_lr=self.base_lr,
                             lambda0=self.lambda0, device=str(self.device), pid=os.getpid(),
                             blocks=list(getattr(self.model, "heur_blocks", [])))
        ctx = self.ctx
        ctx.step, ctx.epoch = self.start_step, self.start_step / spe
        if not resumed:
            for p in self.probes:
                p.on_start(ctx)
        model, opt, loss_fn, params = self.model, self.optimizer, self.loss_fn, self.params
        last: dict[str, Any] = {}
        state, reason = "completed", f"trained {total} steps"
        lr_prev = None
        step = self.start_step
        self.status.update(state="running", step=step, total_steps=total, epoch=step / spe, force=True)
        while step < total:
            lr = self.schedule(step)
            if lr != lr_prev:
                for g in opt.param_groups:
                    g["lr"] = lr
                lr_prev = lr
            x, y = self.batcher.batch_at(step)
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            log_now = (step + 1) % tc.log_every == 0 or step + 1 == total
            gnorm = _grad_norm(params) if log_now else None
            opt.step()
            self.loss_acc += loss.detach()
            self.n_acc += 1
            step += 1
            ctx.step, ctx.epoch, ctx.lr = step, step / spe, lr
            for p in self.probes:
                p.after_step(ctx)
            if log_now:
                vals = torch.stack([self.loss_acc / self.n_acc, gnorm.to(self.loss_acc)]).tolist()
                loss_val, gn = vals
                self.loss_acc.zero_()
                self.n_acc = 0
                self.events.emit("train", step, step / spe, loss=loss_val, lr=lr, grad_norm=gn,
                                 samples=self.samples_at(step))
                last["train_loss_running"] = loss_val
                for p in self.probes:
                    p.on_log(ctx, loss_val)
                if not math.isfinite(loss_val) or loss_val > tc.diverge_loss:
                    state = "diverged"
                    reason = (f"loss {loss_val:.4g} at step {step}" if math.isfinite(loss_val)
                              else f"non-finite loss at step {step}")
                    break
                self.status.update(step=step, epoch=step / spe, loss=loss_val, lr=lr)
            else:
                self.status.heartbeat(step=step, epoch=step / spe)
            if step in self.restarts:
                self.restart_k += 1
                if tc.checkpoint_before_restart:
                    self.save(f"restart_{self.restart_k}.pt", step)
                self.events.emit("restart", step, step / spe, index=self.restart_k, lr_next=self.schedule(step))
            if step % eval_steps == 0 and step < total:
                last.update(self.eval_event(step))
            if step % spe == 0:
                for p in self.probes:
                    p.on_epoch_end(ctx, step // spe)
            if ckpt_steps and step % ckpt_steps == 0 and step < total:
                self.save(f"step_{step}.pt", step)
            if self.stop_requested:
                state, reason = "stopped", f"SIGTERM at step {step}"
                self.save(f"step_{step}.pt", step)
                break
        ctx.extra["state"] = state
        if state == "completed":
            last.update(self.eval_event(step))
            self.save("final.pt", step)
        return state, reason, last

    def finish(self, state: str, reason: str, last: dict[str, Any]) -> None:
        result: dict[str, Any] = dict(last)
        result["wall_time"] = time.time() - self.t0
        if getattr(self, "lambda0", None) is not None:
            result["lambda0"] = self.lambda0
        if hasattr(self, "base_lr"):
            result["base_lr"] = self.base_lr
        for p in getattr(self, "probes", []):
            try:
                result.update(p.on_end(self.ctx))
            except Exception:  # a probe's summary must not hide the run's own result
                traceback.print_exc()
        step = getattr(self, "ctx", None).step if hasattr(self, "ctx") else 0
        spe = getattr(self, "spe", 1)
        self.events.emit("end", step, step / spe, state=state, reason=reason, result=result)
        self.status.update(state=state, reason=reason, result=result, step=step, epoch=step / spe, force=True)
        self.events.close()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m heur.core.train")
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    run = Run(Path(args.run_dir), resume=args.resume)

    def on_signal(signum: int, frame: Any) -> None:
        run.stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run.status.update(state="running", pid=os.getpid(), force=True)
    try:
        run.setup()
        state, reason, last = run.train()
    except ConfigError as e:
        print(f"heur: error: {e}", file=sys.stderr)
        run.finish("failed", str(e), {})
        return 2
    except Exception as e:  # the traceback goes to stdout.log; the run dir stays readable
        traceback.print_exc()
        run.finish("failed", f"{type(e).__name__}: {e}", {})
        return 1
    run.finish(state, reason, last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
