"""The training loop. One run = one process: ``python -m heur.core.train RUN_DIR [--resume]``.

The process reads ``RUN_DIR/config.toml``, derives its plan (core.plan), trains, and writes
``events.jsonl``,
``status.json`` and ``checkpoints/``. It syncs with the host only at log steps (every
``train.log_every`` steps), at evals and when a probe acts. SIGTERM (or SIGINT) saves a
checkpoint and ends the run as ``stopped``; a non-finite loss or one above
``train.diverge_loss`` ends it as ``diverged``; an exception ends it as ``failed`` with the
traceback in ``stdout.log``.

The loop never calls the model itself: the run's objective (core.objective) gives the loss of
each batch and the metrics of each evaluation, and checkpoints what it needs for an exact resume.

Started by torchrun (``launch.nproc > 1``: core.launcher), the process is one rank of a
DistributedDataParallel run (core.distributed): every rank takes its shard of the same global
batch; rank 0 alone writes events, status and checkpoints and runs the probes and evaluations;
the ranks agree at each log step whether to stop (one SIGTERM from ``heur stop`` reaches them
all through torchrun), so they stop at the same step and rank 0 saves one checkpoint.
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
from typing import Any, Optional

import torch

from . import checkpoint
from . import runs as runs_mod
from .config import RunConfig
from .data import DeviceBatcher, augment_policy, load_data
from .device import resolve_device, rng_state, set_rng_state
from .distributed import Dist, from_env, world_size_from_env
from .errors import ConfigError
from .events import EventWriter
from .models import build_model
from .objective import Objective, build_objective, make_loss
from .plan import RunPlan, plan_run
from .probes import Probe, TrainContext, build_probes


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _check_data_against_plan(plan: RunPlan, data: Any) -> None:
    """The plan is derived without loading the data: the loaded data must agree with it."""
    got = (data.n_train, tuple(data.input_shape), data.num_outputs)
    want = (plan.train_size, plan.input_shape, plan.num_outputs)
    if got != want:
        raise RuntimeError(
            f"the loaded data has (train size, input shape, outputs) = {got}; "
            f"the plan derived {want} from the config (core.data's size table)"
        )


def _recorded_start(run_dir: Path) -> dict[str, Any]:
    """The run's first ``start`` event ({} if none): the settings a resumed process keeps."""
    from .events import read_events

    return next((ev for ev in read_events(run_dir / "events.jsonl") if ev.get("kind") == "start"), {})


class _Silent:
    """The event log and status of a rank other than 0: it writes nothing (rank 0 writes them)."""

    data: dict[str, Any] = {}

    def emit(self, kind: str, step: int, epoch: float, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, "step": step, "epoch": epoch, **fields}

    def update(self, force: bool = False, **fields: Any) -> None:
        pass

    def heartbeat(self, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Run:
    """One training run inside its own process (or one rank of it: core.distributed)."""

    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.cfg: RunConfig = runs_mod.read_run_config(self.run_dir)
        self.resume = resume
        self.stop_requested = False
        self.dist: Optional[Dist] = None  # joined in setup() when torchrun started this process
        self.main_rank = world_size_from_env() == 1 or os.environ.get("RANK", "0") == "0"
        if self.main_rank:
            self.status = runs_mod.StatusWriter(self.run_dir)
            self.events = EventWriter(self.run_dir / "events.jsonl")
        else:
            self.status = self.events = _Silent()  # type: ignore[assignment]
        self.t0 = time.time()
        self.wall_before = 0.0  # wall time of the earlier processes of a resumed run, up to its checkpoint

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        threads = os.environ.get("HEUR_THREADS")
        started = _recorded_start(self.run_dir) if self.resume else {}
        kept = started.get("threads")
        if isinstance(kept, int) and kept > 0:  # the trajectory depends on the thread count: keep the start's
            threads = str(kept)
        if started.get("deterministic") is True:
            torch.use_deterministic_algorithms(True)
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.threads = torch.get_num_threads()
        self.device = resolve_device(cfg.device)
        self.dist = from_env(self.device)  # one rank of torchrun's group: its device (cuda:LOCAL_RANK)
        if self.dist is not None:
            self.device = self.dist.device
        torch.manual_seed(cfg.seed)
        self.plan: RunPlan = plan_run(cfg)  # sizes, steps, base lr, blocks: read from here on
        self.data = load_data(cfg, self.device)
        _check_data_against_plan(self.plan, self.data)
        self.objective: Objective = self.make_objective()
        # the task's plain loss, for probes that differentiate it (sharpness, NTK)
        self.loss_fn = make_loss(cfg.train, self.data.task, self.data.num_outputs)
        self.model = build_model(cfg, self.data.input_shape, self.data.num_outputs).to(self.device)
        self.model.train()
        self.init_from: Optional[Path] = None
        if cfg.model.init_from and not (self.resume and runs_mod.latest_checkpoint(self.run_dir)):
            from .pipeline import load_init_weights  # another run's weights; the optimizer starts fresh

            self.init_from = load_init_weights(self.model, cfg.model.init_from, self.run_dir.parent)
        self.spe = self.plan.steps_per_epoch
        self.total = self.plan.total_steps
        self.batch = self.plan.batch_size
        pad, flip = augment_policy(cfg, self.data)
        self.batcher = DeviceBatcher(self.data, self.batch, self.spe, cfg.seed, pad, flip, cfg.train.drop_last)
        from .optim import build_optimizer, run_base_lr
        from .schedules import build_schedule

        self.lambda0: Optional[float] = None
        lambda0_vector: Optional[torch.Tensor] = None  # a warm start for the sharpness probe
        if cfg.optim.lr_ntk is not None:
            from .probes.curvature import measure_lambda0_info

            lam0 = measure_lambda0_info(self.model, cfg, self.data)
            self.lambda0, lambda0_vector = float(lam0.top), lam0.vector
            if self.dist is not None:  # every rank measured it; rank 0's value for all
                import torch.distributed as dist

                box = [self.lambda0]
                dist.broadcast_object_list(box, src=0)
                self.lambda0 = float(box[0])
        self.base_lr = (
            self.plan.base_lr if self.plan.base_lr is not None else run_base_lr(cfg, self.lambda0, self.batch)
        )
        self.optimizer = build_optimizer(self.model, cfg.optim, self.base_lr)
        extra = [t for t in self.objective.parameters() if t.requires_grad]
        if extra:  # tensors the objective trains (a curve's bends): one more group, the optimizer's defaults
            self.optimizer.add_param_group({"params": extra})
        self.schedule = build_schedule(cfg.schedule, self.base_lr, self.spe, self.total)
        self.restarts = set(getattr(self.schedule, "restart_steps", []) or [])
        self.probes: list[Probe] = build_probes(cfg.probes) if self.main_rank else []  # rank 0 measures
        # the module the training steps call: DDP's wrapper (gradients all-reduced) on several ranks;
        # evaluation, probes and checkpoints use the plain model (no collective, same state dict)
        self.step_model = self.dist.wrap(self.model) if self.dist is not None else self.model
        self.ctx = TrainContext(
            cfg=cfg,
            model=self.model,
            loss_fn=self.loss_fn,
            optimizer=self.optimizer,
            data=self.data,
            device=self.device,
            run_dir=self.run_dir,
            events=self.events,
            schedule=self.schedule,
            steps_per_epoch=self.spe,
            total_steps=self.total,
            lambda0=self.lambda0,
            lambda0_vector=lambda0_vector,
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad] + extra  # for the grad norm
        from .freeze import Freezer  # train.freeze: blocks out of autograd for the first steps

        self.freezer = Freezer.from_run(self.model, cfg.train, self.spe)
        self.start_step = 0
        self.loss_acc = torch.zeros((), device=self.device)
        self.n_acc = 0
        self.restart_k = 0

    def make_objective(self) -> Objective:
        """The run's objective (a task's run class overrides this: core.curve)."""
        return build_objective(self.cfg, self.data, self.device, run_dir=self.run_dir)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, step: int) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
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
            "wall_time": self.wall_before + time.time() - self.t0,
            "probes": {p.name: p.state_dict() for p in self.probes},
            "objective": {"name": self.objective.name, "state": self.objective.state_dict()},
            "rng": rng_state(self.device),  # dropout's draws continue where they were
        }

    def save(self, name: str, step: int) -> Optional[Path]:
        """Write ``checkpoints/<name>``. On several ranks every rank calls it at the same step (the
        logged-loss accumulator is summed over them); rank 0 writes, the others return None."""
        global_acc = None
        if self.dist is not None:  # the sum of global-batch means so far, as one process keeps it
            global_acc = float(self.dist.sum_(self.loss_acc.detach().clone()).item()) / self.dist.world
            if not self.dist.main:
                return None
        path = self.run_dir / "checkpoints" / name
        state = self.checkpoint_state(step)
        if global_acc is not None:
            state["loss_acc"] = global_acc
        checkpoint.save_checkpoint(path, state)
        self.events.emit("checkpoint", step, step / self.spe, path=str(path.relative_to(self.run_dir)))
        return path

    def load_latest(self) -> bool:
        """Load the newest readable checkpoint; a newer one that cannot be read (a corrupt file)
        is passed over, named on stdout.log and in the resume event."""
        skipped: list[str] = []
        path, ck = None, None
        for cand in runs_mod.checkpoints_newest_first(self.run_dir):
            try:
                ck = checkpoint.load_checkpoint(cand)  # on the CPU; load_state_dict copies to the device
                path = cand
                break
            except ConfigError as e:
                print(f"resume: passing over {e}", flush=True)
                skipped.append(cand.name)
        if path is None or ck is None:
            if skipped:
                raise ConfigError(
                    f"no readable checkpoint ({', '.join(skipped)} could not be read)", file=str(self.run_dir)
                )
            return False
        self.model.load_state_dict(ck["model"])
        obj = ck.get("objective") or {"name": self.objective.name, "state": {}}  # older checkpoints: supervised
        if obj["name"] != self.objective.name:
            raise RuntimeError(
                f"{path.name} was written by objective {obj['name']!r}, this run has {self.objective.name!r}"
            )
        self.objective.load_state_dict(obj["state"])  # in place: the optimizer holds those tensors
        self.optimizer.load_state_dict(ck["optimizer"])
        if ck.get("rng"):
            set_rng_state(ck["rng"], self.device)
        self.start_step = int(ck["step"])
        acc = float(ck.get("loss_acc", 0.0))
        if self.dist is not None:  # rank 0 carries the sum for all: the log step sums and divides by N
            acc = acc * self.dist.world if self.dist.main else 0.0
        self.loss_acc.fill_(acc)
        self.n_acc = int(ck.get("n_acc", 0))
        self.restart_k = int(ck.get("restart_k", 0))
        self.wall_before = float(ck.get("wall_time", 0.0))
        for p in self.probes:
            st = ck.get("probes", {}).get(p.name)
            if st:
                p.load_state_dict(st)
        # the resumed process writes steps > start_step: points from start_step + 1 on are replaced
        self.events.emit(
            "resume",
            self.start_step,
            self.start_step / self.spe,
            from_step=self.start_step + 1,
            checkpoint=str(path.relative_to(self.run_dir)),
            threads=self.threads,
            **({"skipped": skipped} if skipped else {}),
        )
        return True

    # ------------------------------------------------------------------ loop
    def eval_event(self, step: int) -> dict[str, Any]:
        tc = self.cfg.train
        out: dict[str, Any] = {}
        for split, x, y, limit in (
            ("train", self.data.x_train, self.data.y_train, tc.eval_train_samples),
            ("test", self.data.x_test, self.data.y_test, None),
        ):
            metrics = self.objective.evaluate(self.model, x, y, tc.eval_batch_size, limit)
            self.events.emit("eval", step, step / self.spe, split=split, **metrics)
            out.update({f"{split}_{k}": v for k, v in metrics.items()})
        self.status.update(test_accuracy=out.get("test_accuracy"))  # what `heur runs` shows while running
        return out

    def recorded_result(self, step: int) -> dict[str, Any]:
        """What :meth:`train` returned as ``last`` when it ended at ``step``, read back from the
        events the earlier process wrote: the eval events at ``step`` (``<split>_<metric>``) and
        the last train event's loss (``train_loss_running``)."""
        from .events import apply_resumes, read_events

        out: dict[str, Any] = {}
        for ev in apply_resumes(read_events(self.run_dir / "events.jsonl")):
            if ev.get("kind") == "train":
                out["train_loss_running"] = ev.get("loss")
            elif ev.get("kind") == "eval" and ev.get("step") == step:
                skip = ("kind", "step", "epoch", "time", "split")
                out.update({f"{ev['split']}_{k}": v for k, v in ev.items() if k not in skip})
        return out

    def train(self) -> tuple[str, str, dict[str, Any]]:
        cfg, tc = self.cfg, self.cfg.train
        spe, total = self.spe, self.total
        eval_steps = max(1, int(round(tc.eval_every * spe)))
        ckpt_steps = int(round(tc.checkpoint_every * spe)) if tc.checkpoint_every > 0 else 0
        resumed = self.resume and self.load_latest()
        if resumed and self.start_step >= total:
            # final.pt was written: the process ended in the work after training (a curve run's
            # evaluation along the curve). Its final eval events and final.pt stand (the resume
            # event's from_step is past them): nothing is trained, evaluated or saved again
            self.ctx.step, self.ctx.epoch = total, total / spe
            return "completed", f"trained {total} steps", self.recorded_result(total)
        if not resumed:
            self.events.emit(
                "start",
                0,
                0.0,
                name=cfg.name,
                total_steps=total,
                steps_per_epoch=spe,
                batch_size=self.batch,
                n_train=self.plan.train_size,
                base_lr=self.base_lr,
                lambda0=self.lambda0,
                device=str(self.device),
                pid=os.getpid(),
                blocks=list(self.plan.blocks),
                threads=self.threads,
                deterministic=torch.are_deterministic_algorithms_enabled(),
                **({"world_size": self.dist.world} if self.dist is not None else {}),
            )
        ctx = self.ctx
        ctx.step, ctx.epoch = self.start_step, self.start_step / spe
        if not resumed:
            for p in self.probes:
                p.on_start(ctx)
        model, opt, objective, params = self.step_model, self.optimizer, self.objective, self.params
        dist = self.dist
        stop_flag = torch.zeros((), device=self.device) if dist is not None else None  # 1: this rank was signalled
        last: dict[str, Any] = {}
        state, reason = "completed", f"trained {total} steps"
        lr_prev = None
        step = self.start_step
        self.status.update(state="running", step=step, total_steps=total, epoch=step / spe, force=True)
        freezer = self.freezer
        while step < total:
            if freezer is not None:
                freezer.set_step(step)
            lr = self.schedule(step)
            if lr != lr_prev:
                for g in opt.param_groups:
                    g["lr"] = lr
                lr_prev = lr
            x, y = self.batcher.batch_at(step)
            if dist is None:
                loss = objective.loss(model, x, y, step)  # no host sync: the loss stays on the device
            else:  # this rank's shard of the global batch, weighted so DDP's average is its gradient
                x, y, weight = dist.shard(x, y)
                loss = objective.loss(model, x, y, step) * weight
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
            stop_now = False
            if log_now:
                mean = self.loss_acc / self.n_acc
                if dist is not None and stop_flag is not None:  # the global batch's loss; was any rank signalled
                    stop_flag.fill_(1.0 if self.stop_requested else 0.0)
                    both = dist.sum_(torch.stack([mean, stop_flag]))
                    mean, stop_now = both[0] / dist.world, bool(both[1].item() > 0)
                vals = torch.stack([mean, gnorm.to(self.loss_acc)]).tolist()
                loss_val, gn = vals
                self.loss_acc.zero_()
                self.n_acc = 0
                self.events.emit(
                    "train", step, step / spe, loss=loss_val, lr=lr, grad_norm=gn, samples=self.plan.samples_at(step)
                )
                last["train_loss_running"] = loss_val
                for p in self.probes:
                    p.on_log(ctx, loss_val)
                if not math.isfinite(loss_val) or loss_val > tc.diverge_loss:
                    state = "diverged"
                    reason = (
                        f"loss {loss_val:.4g} at step {step}"
                        if math.isfinite(loss_val)
                        else f"non-finite loss at step {step}"
                    )
                    break
                self.status.update(step=step, epoch=step / spe, loss=loss_val, lr=lr)
            else:
                self.status.heartbeat(step=step, epoch=step / spe)
            if step in self.restarts:
                self.restart_k += 1
                if tc.checkpoint_before_restart:
                    self.save(f"restart_{self.restart_k}.pt", step)
                self.events.emit("restart", step, step / spe, index=self.restart_k, lr_next=self.schedule(step))
            if step % eval_steps == 0 and step < total and self.main_rank:
                last.update(self.eval_event(step))
            if step % spe == 0:
                for p in self.probes:
                    p.on_epoch_end(ctx, step // spe)
            if ckpt_steps and step % ckpt_steps == 0 and step < total:
                self.save(f"step_{step}.pt", step)
            if dist is None:
                stop_now = self.stop_requested
            else:  # the ranks stop together, at a log step (they agreed there)
                stop_now = stop_now and log_now
            if stop_now:
                state, reason = "stopped", f"SIGTERM at step {step}"
                self.save(f"step_{step}.pt", step)
                break
        ctx.extra["state"] = state
        if state == "completed":
            if self.main_rank:
                last.update(self.eval_event(step))
            self.save("final.pt", step)
        return state, reason, last

    def finish(self, state: str, reason: str, last: dict[str, Any]) -> None:
        result: dict[str, Any] = dict(last)
        result["wall_time"] = self.wall_before + time.time() - self.t0  # summed over a resumed run's processes
        if getattr(self, "lambda0", None) is not None:
            result["lambda0"] = self.lambda0
        if hasattr(self, "base_lr"):
            result["base_lr"] = self.base_lr
        if getattr(self, "init_from", None) is not None:
            result["init_from"] = self.cfg.model.init_from  # as the preset wrote it ("@sgdr:restart_1")
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


def main(argv: Optional[list[str]] = None, run_class: type = Run, prog: str = "python -m heur.core.train") -> int:
    """A task's process: ``run_class(run_dir, resume)`` with ``stop_requested``, ``status``,
    ``setup()``, ``train() -> (state, reason, result)`` and ``finish(...)`` (Run, CurveRun, PlaneRun)."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    run = run_class(Path(args.run_dir), resume=args.resume)

    def on_signal(signum: int, frame: Any) -> None:
        run.stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if world_size_from_env() == 1:
        run.status.update(state="running", pid=os.getpid(), force=True)
    else:  # torchrun's pid (the launcher wrote it) stays: stopping signals its process group
        run.status.update(state="running", rank0_pid=os.getpid(), force=True)
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
    if getattr(run, "dist", None) is not None:
        run.dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
