"""``train.freeze``: named blocks that get no updates at the start of a run.

``train.freeze = ["fc1", "fc2", "out"]`` with ``train.freeze_epochs = E`` (or ``freeze_steps = N``):
for the first ``round(E * steps_per_epoch)`` (or N) optimizer steps the parameters of those
blocks (names from the model's block list, core.plan.RunPlan.blocks) are taken out of autograd
(``requires_grad = False``): no gradient is computed for them, so the optimizer skips them
entirely — no gradient step, no weight decay, no momentum, no Adam moments (their optimizer state
starts when they are released). From step N on they train like the rest. This is Gotmare et al.'s
control for the warmup finding: large-batch training without warmup, the fully connected stack
frozen early. Batch-norm running statistics inside a frozen block still update in train mode
(they are buffers, not parameters). Curvature probes differentiate the parameters that require
grad, so inside the window a sharpness is that of the trainable subspace (the one the optimizer
moves in); ``optim.lr_ntk``'s lambda0 is measured before the window starts, over all parameters.

``check_freeze(cfg, plan)`` is the preflight check (unknown block -> ConfigError on
``train.freeze``; a missing or double duration on ``train.freeze_epochs``).
:class:`Freezer` is what the loop uses: ``set_step(step)`` before the first step (a resumed run
too) and at every step, a Python comparison (no host sync).
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from .errors import ConfigError

__all__ = ["check_freeze", "freeze_steps", "Freezer"]


def freeze_steps(train_cfg: Any, steps_per_epoch: int) -> int:
    """Optimizer steps the frozen blocks wait (0 when nothing is frozen)."""
    if not train_cfg.freeze:
        return 0
    if train_cfg.freeze_steps is not None:
        return int(train_cfg.freeze_steps)
    return int(round(float(train_cfg.freeze_epochs) * steps_per_epoch))


def check_freeze(cfg: Any, plan: Any) -> None:
    """ConfigError before a run starts if ``train.freeze`` names a block the model does not have,
    or its duration is missing or given twice."""
    tc = cfg.train
    if not tc.freeze:
        if tc.freeze_epochs is not None or tc.freeze_steps is not None:
            raise ConfigError("a freeze duration without blocks: set train.freeze = [block names]", key="train.freeze")
        return
    blocks = list(plan.blocks)
    unknown = [b for b in tc.freeze if b not in blocks]
    if unknown:
        have = ", ".join(blocks) if blocks else "none"
        raise ConfigError(f"the model has no block {unknown[0]!r} (its blocks: {have})", key="train.freeze")
    if tc.freeze_epochs is None and tc.freeze_steps is None:
        raise ConfigError("train.freeze needs freeze_epochs or freeze_steps", key="train.freeze_epochs")
    if tc.freeze_epochs is not None and tc.freeze_steps is not None:
        raise ConfigError("give the freeze as freeze_epochs or freeze_steps, not both", key="train.freeze_epochs")


class Freezer:
    """Switches the named blocks' parameters out of autograd before step ``until`` and back in from it."""

    def __init__(self, model: nn.Module, blocks: list[str], until: int):
        mods = dict(model.named_modules())
        self.until = int(until)
        seen: set[int] = set()
        self.params: list[nn.Parameter] = []
        for b in blocks:
            for p in mods[b].parameters():
                if id(p) not in seen and p.requires_grad:
                    seen.add(id(p))
                    self.params.append(p)
        self._frozen: Optional[bool] = None

    @classmethod
    def from_run(cls, model: nn.Module, train_cfg: Any, steps_per_epoch: int) -> Optional["Freezer"]:
        if not train_cfg.freeze:
            return None
        return cls(model, list(train_cfg.freeze), freeze_steps(train_cfg, steps_per_epoch))

    @property
    def frozen(self) -> bool:
        return bool(self._frozen)

    def set_step(self, step: int) -> None:
        """Before optimizer step ``step`` (0-based): frozen while ``step < until``."""
        want = step < self.until
        if want is self._frozen:
            return
        for p in self.params:
            p.requires_grad_(not want)
            if want:
                p.grad = None
        self._frozen = want
