"""Probes: measurements that run inside the training loop and emit events.

A probe is built from its ``[probes.<name>]`` section and called by ``core.train`` at fixed
points. Hooks must not force a host sync unless they act at that step (the loop itself syncs
only at log steps). ``on_end`` returns fields merged into the run's result (``status.json`` and
the summary), e.g. ``{"phase": "catapult"}``.

The registry (:data:`REGISTRY`) is the one list of probes: each entry is a config section
(``[probes.<name>]``) and the class that runs it, imported only when that section is used. The
class declares the rest — its preflight check (:meth:`Probe.check`, which ``core.preflight``
calls for every configured probe) and the events it emits — so adding a probe is a new module
and one line here; neither preflight nor the loop names probes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# probe section name -> "module:Class" (imported lazily, so unused probes cost nothing), in the
# order the loop calls them: ntk first (its lambda0 is in the context the others see)
REGISTRY: dict[str, str] = {
    "ntk": "heur.core.probes.curvature:NtkProbe",
    "sharpness": "heur.core.probes.curvature:SharpnessProbe",
    "catapult": "heur.core.probes.catapult:CatapultProbe",
    "cca": "heur.core.probes.cca:CcaProbe",
}


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
    lambda0_vector: Any = None  # its eigenvector (flat): a warm start for the first Hessian measurement
    extra: dict[str, Any] = field(default_factory=dict)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.events.emit(kind, self.step, self.epoch, **fields)


class Probe:
    """Base class: override the hooks you need."""

    name = "probe"

    def __init__(self, cfg: Any):
        self.cfg = cfg  # the probe's own config section

    @classmethod
    def check(cls, section: Any, cfg: Any, plan: Any) -> None:
        """Preflight, before any run starts: raise ConfigError (with the dotted key) if this
        probe cannot run with ``section`` (its ``[probes.<name>]`` table) on the run ``cfg``
        whose core.plan.RunPlan is ``plan``. Default: nothing to check."""

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


def probe_class(name: str) -> type[Probe]:
    """The class of registered probe ``name`` (importing its module)."""
    mod_name, _, cls_name = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(mod_name), cls_name)


def configured(probes_cfg: Any) -> list[tuple[str, Any]]:
    """(name, section) of each probe the ``[probes]`` config turns on, in registry order."""
    out = []
    for name in REGISTRY:
        section = getattr(probes_cfg, name, None)
        if section is not None and getattr(section, "enabled", True) is not False:
            out.append((name, section))
    return out


def build_probes(probes_cfg: Any) -> list[Probe]:
    """One probe per configured section, in registry order."""
    return [probe_class(name)(section) for name, section in configured(probes_cfg)]
