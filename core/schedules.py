"""Learning-rate schedules as pure functions of the optimizer step.

``build_schedule(cfg, base_lr, steps_per_epoch, total_steps)`` returns a :class:`Schedule`;
``schedule(step)`` is the lr that the optimizer uses for its step number ``step`` (0-based), and
``schedule.lrs()`` lists it for steps ``0 .. total_steps-1``. Nothing here imports torch.

Conventions (the same as stepping torch's own schedulers once per optimizer step):

- **Durations.** Every duration is given in epochs (``step_size``, ``milestones``, ``t0``,
  ``warmup.epochs``; fractions allowed) or in steps (``step_size_steps``, ``milestones_steps``,
  ``t0_steps``, ``warmup.steps``). Epochs become steps as ``floor(epochs * steps_per_epoch +
  0.5)`` (round half up), and at least 1 step where the duration must be positive. When both
  forms of a main-schedule duration are given, the ``*_steps`` key wins.
- **Warmup.** ``[schedule.warmup]`` lasts ``W`` steps (0 = no warmup) and multiplies the base lr
  by a factor that rises from ``start_factor`` at step 0 towards 1 at step ``W`` (which it never
  uses: step ``W`` is the first step of the main schedule), with ``u = s / W``:
  ``linear``: ``f0 + (1 - f0) u`` (torch ``LinearLR(start_factor=f0, total_iters=W)``);
  ``cosine``: ``f0 + (1 - f0) (1 - cos(pi u)) / 2``;
  ``exponential``: ``f0 ** (1 - u)`` (geometric, the same ratio every step). An exponential
  ramp cannot start from 0, so ``start_factor = 0`` means a start at
  :data:`EXP_WARMUP_FLOOR` (1e-3 of the base lr) there;
  ``adam_bias``: ``f0 + (1 - f0) sqrt((1 - b2^(s+1)) / (1 - b2^W))`` with ``b2 = warmup.beta2``:
  GI-Adam's built-in warmup (with a steady gradient its step t is ``lr sqrt(1 - b2^t)``),
  scaled to reach 1 at W (for W >= 3 / (1 - b2) that scaling is under 3%), so Adam with this
  warmup is the control that separates "GI-Adam helps" from "GI-Adam is a longer warmup".
- **Main phase.** The main schedule runs over the ``M = total_steps - W`` steps after warmup,
  with its own step counter ``t = s - W`` starting at 0, exactly like torch
  ``SequentialLR([warmup, main], milestones=[W])``. So ``milestones``, ``step_size`` and ``t0``
  count from the end of warmup, and ``linear``/``cosine``/``polynomial`` span ``M`` steps.
  Factors of the base lr ``b`` (``m`` = ``min_lr``):
  ``constant``: 1; ``step``: ``gamma ** floor(t / step_size)`` (StepLR);
  ``multistep``: ``gamma ** (number of milestones <= t)`` (MultiStepLR);
  ``linear``: ``1 + (end_factor - 1) t / M`` (LinearLR(1, end_factor, M); like torch it reaches
  ``end_factor`` at ``t = M``, one step after the last one);
  ``cosine``: ``m + (b - m)(1 + cos(pi t / M)) / 2`` (CosineAnnealingLR(T_max=M, eta_min=m));
  ``sgdr``: the same cosine within each cycle, cycle ``i`` lasting ``T_i = t0 * t_mult ** i``
  steps (CosineAnnealingWarmRestarts(T_0, T_mult, eta_min); for a non-integer ``t_mult`` each
  cycle length is rounded to the nearest step, which torch does not do);
  ``exponential``: ``gamma`` is the decay per *epoch*, applied smoothly per step:
  ``gamma ** (t / steps_per_epoch)`` (ExponentialLR with per-step gamma
  ``gamma ** (1 / steps_per_epoch)``);
  ``polynomial``: ``m + (b - m)(1 - t / M) ** power`` (torch PolynomialLR(total_iters=M,
  power) decays to 0: it is the case ``min_lr = 0``);
  ``garipov`` (Garipov et al. 2018's schedule for curves, the default of ``task = "curve"``): with
  ``u = t / M``, 1 for ``u <= 0.5``, then linear down to :data:`GARIPOV_END` (0.01) at
  ``u = 0.9``, and 0.01 after (their code sets it per epoch; here per step).
- **Restarts.** ``Schedule.restart_steps`` lists the global steps (warmup included) at which an
  SGDR cycle begins again, i.e. where the lr jumps back up; the first cycle's start is not a
  restart. The iterate "just before a restart" is the model after optimizer step
  ``restart - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import ConfigError

GARIPOV_END = 0.01
"""The ``garipov`` schedule's final factor of the base lr."""

EXP_WARMUP_FLOOR = 1e-3
"""Where exponential warmup starts when ``start_factor`` is 0 (a fraction of the base lr)."""


def epochs_to_steps(epochs: float, steps_per_epoch: int, positive: bool = True) -> int:
    """``epochs * steps_per_epoch`` rounded half up; at least 1 if ``positive``."""
    n = int(math.floor(epochs * steps_per_epoch + 0.5))
    return max(1, n) if positive else max(0, n)


@dataclass
class Schedule:
    """The resolved schedule: base lr, step counts and the main schedule's parameters."""

    name: str
    base_lr: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0
    warmup_shape: str = "linear"
    start_factor: float = 0.0
    warmup_beta2: float = 0.999
    gamma: float = 0.1
    step_size: int = 1
    milestones: list[int] = field(default_factory=list)
    end_factor: float = 0.0
    min_lr: float = 0.0
    t0: int = 1
    t_mult: float = 1.0
    power: float = 1.0
    restart_steps: list[int] = field(default_factory=list)
    cycle_starts: list[int] = field(default_factory=list)  # main-phase steps where cycles begin
    _table: Optional[list[float]] = field(default=None, repr=False, compare=False)

    @property
    def main_steps(self) -> int:
        return self.total_steps - self.warmup_steps

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.total_steps:
            if self._table is None:
                self._table = self.lrs()
            return self._table[step]
        return float(self._lr(np.array([step], dtype=np.int64))[0])

    def lrs(self) -> list[float]:
        """The lr of every step ``0 .. total_steps - 1``."""
        return self._lr(np.arange(self.total_steps, dtype=np.int64)).tolist()

    # -- vectorised core ------------------------------------------------------------------

    def _lr(self, s: np.ndarray) -> np.ndarray:
        out = np.empty(s.shape, dtype=np.float64)
        w = self.warmup_steps
        warm = s < w
        if warm.any():
            out[warm] = self.base_lr * self._warmup_factor(s[warm].astype(np.float64) / w)
        main = ~warm
        if main.any():
            out[main] = self._main_lr(s[main] - w)
        return out

    def _warmup_factor(self, u: np.ndarray) -> np.ndarray:
        f0 = self.start_factor
        if self.warmup_shape == "linear":
            return f0 + (1.0 - f0) * u
        if self.warmup_shape == "cosine":
            return f0 + (1.0 - f0) * (1.0 - np.cos(np.pi * u)) / 2.0
        if self.warmup_shape == "exponential":
            f0 = f0 if f0 > 0 else EXP_WARMUP_FLOOR
            return f0 ** (1.0 - u)
        if self.warmup_shape == "adam_bias":
            b2, w = self.warmup_beta2, self.warmup_steps
            t = np.rint(u * w) + 1.0  # Adam's step count of schedule step s
            return f0 + (1.0 - f0) * np.sqrt((1.0 - b2**t) / (1.0 - b2**w))
        raise ValueError(f"unknown warmup shape {self.warmup_shape!r}")

    def _main_lr(self, t: np.ndarray) -> np.ndarray:
        b, m, n = self.base_lr, self.min_lr, self.name
        tf = t.astype(np.float64)
        big_m = self.main_steps
        if n == "constant":
            return np.full(t.shape, b)
        if n == "step":
            return b * self.gamma ** (t // self.step_size).astype(np.float64)
        if n == "multistep":
            k = np.searchsorted(np.asarray(self.milestones, dtype=np.int64), t, side="right")
            return b * self.gamma ** k.astype(np.float64)
        if n == "linear":
            return b * (1.0 + (self.end_factor - 1.0) * tf / big_m)
        if n == "cosine":
            return m + (b - m) * (1.0 + np.cos(np.pi * tf / big_m)) / 2.0
        if n == "sgdr":
            if t.size and int(t.max()) >= self.cycle_starts[-1] + self._cycle_len(len(self.cycle_starts) - 1):
                self._plan_cycles(int(t.max()))  # beyond total_steps: extend the cycles
            starts = np.asarray(self.cycle_starts, dtype=np.int64)
            lengths = np.asarray([self._cycle_len(i) for i in range(len(starts))], dtype=np.float64)
            i = np.searchsorted(starts, t, side="right") - 1
            tc = (t - starts[i]).astype(np.float64)
            return m + (b - m) * (1.0 + np.cos(np.pi * tc / lengths[i])) / 2.0
        if n == "exponential":
            return b * self.gamma ** (tf / self.steps_per_epoch)
        if n == "polynomial":
            return m + (b - m) * np.clip(1.0 - tf / big_m, 0.0, None) ** self.power
        if n == "garipov":  # Garipov et al.'s curve schedule, per step instead of per epoch
            u = tf / big_m
            return b * np.where(
                u <= 0.5, 1.0, np.where(u <= 0.9, 1.0 - (1.0 - GARIPOV_END) * (u - 0.5) / 0.4, GARIPOV_END)
            )
        raise ValueError(f"unknown schedule {n!r}")

    def _cycle_len(self, i: int) -> int:
        return max(1, int(math.floor(self.t0 * self.t_mult**i + 0.5)))

    def _plan_cycles(self, upto: int) -> None:
        """Cycle starts (main-phase steps) covering ``0 .. upto`` and the global restart steps."""
        starts, s, i = [0], 0, 0
        while True:
            s += self._cycle_len(i)
            i += 1
            if s > upto:
                break
            starts.append(s)
        self.cycle_starts = starts
        w, n = self.warmup_steps, self.total_steps
        self.restart_steps = [w + c for c in starts[1:] if w + c < n]


def _err(msg: str, key: str) -> ConfigError:
    return ConfigError(msg, key=f"schedule.{key}")


def _duration(cfg: Any, key: str, spe: int, required_for: str) -> int:
    steps = getattr(cfg, f"{key}_steps")
    if steps is not None:
        if steps <= 0:
            raise _err(f"expected a number of steps > 0, got {steps}", f"{key}_steps")
        return int(steps)
    ep = getattr(cfg, key)
    if ep is None:
        raise _err(f"schedule '{required_for}' needs {key} (epochs) or {key}_steps", key)
    if ep <= 0:
        raise _err(f"expected a number of epochs > 0, got {ep}", key)
    return epochs_to_steps(ep, spe)


def _milestones(cfg: Any, spe: int) -> tuple[list[int], str]:
    if cfg.milestones_steps is not None:
        key, raw = "milestones_steps", list(cfg.milestones_steps)
        steps = [int(x) for x in raw]
    elif cfg.milestones is not None:
        key, raw = "milestones", list(cfg.milestones)
        steps = []
    else:
        raise _err("schedule 'multistep' needs milestones (epochs) or milestones_steps", "milestones")
    if not raw:
        raise _err("expected a non-empty list", key)
    for x in raw:
        if x <= 0:
            raise _err(f"expected milestones > 0, got {x}", key)
    for a, c in zip(raw, raw[1:]):
        if c <= a:
            raise _err(f"expected increasing milestones, got {a} then {c}", key)
    if key == "milestones":
        steps = [epochs_to_steps(x, spe) for x in raw]
        for a, c, ea, ec in zip(steps, steps[1:], raw, raw[1:]):
            if c <= a:
                raise _err(
                    f"milestones {ea} and {ec} epochs both round to step {a} "
                    f"({spe} steps per epoch): expected distinct steps",
                    key,
                )
    return steps, key


def build_schedule(cfg: Any, base_lr: float, steps_per_epoch: int, total_steps: int) -> Schedule:
    """Resolve a ``[schedule]`` config (a ``ScheduleConfig``) into a :class:`Schedule`.

    Raises :class:`ConfigError` (key ``schedule.<key>``) for a schedule that cannot run:
    missing or non-positive durations, milestones that do not increase or lie past the end,
    warmup as long as training or longer, ``t_mult < 1``.
    """
    if steps_per_epoch <= 0 or total_steps <= 0:
        raise ValueError("steps_per_epoch and total_steps must be positive")
    spe, n = int(steps_per_epoch), int(total_steps)
    sch = Schedule(name=cfg.name, base_lr=float(base_lr), steps_per_epoch=spe, total_steps=n)
    wu = cfg.warmup
    if wu is not None:
        if wu.steps is not None:
            w, wkey = int(wu.steps), "warmup.steps"
        elif wu.epochs is not None:
            w, wkey = (epochs_to_steps(wu.epochs, spe) if wu.epochs > 0 else 0), "warmup.epochs"
        else:
            raise _err("give the warmup's length as epochs or steps", "warmup")
        if w < 0:
            raise _err(f"expected a length >= 0, got {w}", wkey)
        if w >= n:
            raise _err(
                f"warmup of {w} steps is not shorter than training ({n} steps): expected a shorter warmup",
                wkey,
            )
        sch.warmup_steps = w
        sch.warmup_shape = wu.shape
        sch.start_factor = float(wu.start_factor)
        sch.warmup_beta2 = float(getattr(wu, "beta2", 0.999))
    big_m = n - sch.warmup_steps
    sch.gamma = float(cfg.gamma)
    sch.min_lr = float(cfg.min_lr)
    sch.end_factor = float(cfg.end_factor)
    sch.power = float(cfg.power)
    if cfg.name == "step":
        sch.step_size = _duration(cfg, "step_size", spe, "step")
    elif cfg.name == "multistep":
        ms, key = _milestones(cfg, spe)
        if ms[-1] >= big_m:
            raise _err(
                f"milestone at step {ms[-1]} after warmup is past the end of the main phase "
                f"({big_m} steps): expected milestones before it",
                key,
            )
        sch.milestones = ms
    elif cfg.name == "sgdr":
        if cfg.t_mult < 1:
            raise _err(f"expected t_mult >= 1, got {cfg.t_mult}", "t_mult")
        sch.t0 = _duration(cfg, "t0", spe, "sgdr")
        sch.t_mult = float(cfg.t_mult)
        sch._plan_cycles(big_m)
    return sch


def validate_schedule(cfg: Any, plan: Any = None) -> Schedule:
    """Check a run's ``[schedule]`` against its step counts and base lr (from ``plan``, the run's
    core.plan.RunPlan, derived here when not given); raise :class:`ConfigError`. Returns the
    schedule at the run's base lr (in units of lr_ntk/lambda0 when ``optim.lr_ntk`` is set: that
    base lr is known only once lambda0 is measured)."""
    from .optim import run_base_lr

    if plan is None:
        from .plan import plan_run

        plan = plan_run(cfg)
    base = plan.base_lr if plan.base_lr is not None else run_base_lr(cfg, batch=plan.batch_size)
    sch = build_schedule(cfg.schedule, base, plan.steps_per_epoch, plan.total_steps)
    # min_lr is absolute (torch's eta_min); above the base lr the decay would raise the lr
    if cfg.optim.lr_ntk is None and cfg.schedule.min_lr > base:
        raise _err(f"expected at most the base lr ({base:g}), got {cfg.schedule.min_lr:g}", "min_lr")
    return sch
