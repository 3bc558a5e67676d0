"""Probes: measurements that run inside the training loop and emit events.

A probe is built from its ``[probes.<name>]`` section and called by ``core.train`` at fixed
points. Hooks must not force a host sync unless they act at that step (the loop itself syncs
only at log steps). ``on_end`` returns fields merged into the run's result (``status.json`` and
the summary), e.g. ``{"phase": "catapult"}``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# probe section name -> "module:Class" (imported lazily, so unused probes cost nothing)
REGISTRY: dict[str, str] = {
    "ntk": "heur.core.probes_curvature:NtkProbe",
    "sharpness": "heur.core.probes_curvature:SharpnessProbe",
    "catapult": "heur.core.catapult:CatapultProbe",
    "cca": "heur.core.probes_cca:CcaProbe",
}
ORDER = ("ntk", "sharpness", "catapult", "cca")


@dataclass
class TrainContext:
    """What a probe may look at. ``step`` is the number of optimizer steps taken so far."""

    cfg: Any  # RunConfig
    model: Any  # nn.Module
    loss_fn: Callable  # (outputs, targets) -> scalar tensor
    optimizer: Any
    data: Any  # core.data.DataBundle
    device: Any
    run_dir: Path
    events: Any  # core.events.EventWriter
    schedule: Any  # core.schedules.Schedule
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    epoch: float = 0.0
    lr: float = 0.0
    lambda0: Optional[float] = None  # NTK top eigenvalue at init, when measured
    extra: dict[str, Any] = field(default_factory=dict)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.events.emit(kind, self.step, self.epoch, **fields)


class Probe:
    """Base class: override the hooks you need."""

    name = "probe"

    def __init__(self, cfg: Any):
        self.cfg = cfg  # the probe's own config section

    def on_start(self, ctx: TrainContext) -> None:
        """Before the first step (after ``lambda0`` is known)."""

    def after_step(self, ctx: TrainContext) -> None:
        """After every optimizer step; ``ctx.step`` already counts it."""

    def on_log(self, ctx: TrainContext, loss: float) -> None:
        """After each ``train`` event, with the logged loss (a float, maybe nan)."""

    def on_epoch_end(self, ctx: TrainContext, epoch: int) -> None:
        """After each whole epoch (``epoch`` counts from 1)."""

    def on_end(self, ctx: TrainContext) -> dict[str, Any]:
        """At the end of the run (any final state); returns result fields."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def build_probes(probes_cfg: Any) -> list[Probe]:
    out = []
    for name in ORDER:
        section = getattr(probes_cfg, name, None)
        if section is None or getattr(section, "enabled", True) is False:
            continue
        mod_name, _, cls_name = REGISTRY[name].partition(":")
        cls = getattr(importlib.import_module(mod_name), cls_name)
        out.append(cls(section))
    return out
