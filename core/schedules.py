"""Placeholder: constant learning rate (the full schedules module is being written)."""

from __future__ import annotations

from typing import Any


class Schedule:
    def __init__(self, base_lr: float, total_steps: int):
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.warmup_steps = 0
        self.restart_steps: list[int] = []

    def __call__(self, step: int) -> float:
        return self.base_lr

    def lrs(self) -> list[float]:
        return [self(s) for s in range(self.total_steps)]


def build_schedule(cfg: Any, base_lr: float, steps_per_epoch: int, total_steps: int) -> Schedule:
    return Schedule(base_lr, total_steps)


def validate_schedule(cfg: Any) -> None:
    pass
