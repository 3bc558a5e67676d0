"""What the training loop minimises and how it evaluates: the objective seam.

The loop (core.train) never calls the model itself: for each batch it asks its objective for
the loss, and for each evaluation split it asks it for the metrics. An :class:`Objective`:

- ``loss(model, x, y, step)``: the scalar tensor to backpropagate for the (already augmented)
  batch ``x, y`` of optimizer step ``step`` (0-based, the step about to be taken). Called once
  a step: it must not sync with the host (no ``.item()``, no Python branch on a tensor's value).
  Randomness (a curve's t) must come from a generator seeded by (seed, step), as the batches'
  augmentation does, or from the objective's checkpointed state, so a resume stays exact.
- ``evaluate(model, x, y, batch, limit)``: ``{"loss": float, "accuracy": float | None, ...}``
  over (up to ``limit`` samples of) a split, in eval mode, with one host sync. Every key becomes
  a field of that split's ``eval`` event (so it must be one the ``eval`` kind declares in
  core/schema.py) and ``<split>_<key>`` of the run's result.
- ``parameters()``: trainable tensors the objective owns besides the model's (a curve's bends);
  the loop gives them to the optimizer as one more param group.
- ``state_dict()`` / ``load_state_dict()``: what the objective needs in a checkpoint for a
  resumed run to be bit-identical to an uninterrupted one (tensors and plain values, loadable
  with ``weights_only=True``). ``load_state_dict`` restores tensors in place: the optimizer
  holds them.
- ``loss_fn``: the task's plain ``(outputs, targets)`` loss, for probes that differentiate it
  (sharpness, NTK) and for the default :meth:`Objective.evaluate`.

Which objective a run gets follows from its config through :data:`REGISTRY`: each entry says
when a config asks for it; a config none of them claims gets :class:`Supervised`. A new
objective (distillation, curve) registers itself with :func:`register_objective`; the loop is
not edited.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .measure.evaluation import evaluate

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(train_cfg: Any, task: str, num_outputs: int) -> LossFn:
    """The training loss. ``mse`` on a classification task uses one-hot targets.

    ``mse_reduction = "mean"``: L = 1/(n C) sum (f - y)^2 (torch's MSELoss);
    ``"half_sum"``: L = 1/(2n) sum_i ||f_i - y_i||^2 (the NTK / catapult convention).
    """
    if train_cfg.loss == "cross_entropy":
        if task != "classification":
            raise ConfigError('cross_entropy needs a classification dataset; use loss = "mse"', key="train.loss")
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


class Objective:
    """Base class (see the module doc for the contract). Subclasses override :meth:`loss`, and
    the rest where they differ from supervised evaluation with no state of their own."""

    name = "objective"

    def __init__(self, loss_fn: LossFn, task: str = "classification"):
        self.loss_fn = loss_fn
        self.task = task

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, limit: Optional[int] = None
    ) -> dict[str, Optional[float]]:
        loss, acc = evaluate(model, x, y, self.loss_fn, batch, limit, self.task)
        return {"loss": loss, "accuracy": acc}

    def parameters(self) -> list[torch.Tensor]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Supervised(Objective):
    """``loss_fn(model(x), y)``: cross-entropy or MSE as ``[train]`` says (:func:`make_loss`)."""

    name = "supervised"

    @classmethod
    def from_config(cls, cfg: Any, data: Any, device: Any = None) -> "Supervised":
        return cls(make_loss(cfg.train, data.task, data.num_outputs), data.task)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return self.loss_fn(model(x), y)


# --------------------------------------------------------------------------- registry

Builder = Callable[[Any, Any, Any], Objective]  # (RunConfig, DataBundle, device) -> Objective


@dataclass(frozen=True)
class Registered:
    """``when(cfg)``: does a run's config ask for this objective (None: the default, never
    claimed). ``build``: ``(cfg, data, device) -> Objective``, or ``"module:attr[.attr]"`` imported on
    first use (so an unused objective costs no import)."""

    when: Optional[Callable[[Any], bool]]
    build: Union[Builder, str]


DEFAULT = "supervised"
REGISTRY: dict[str, Registered] = {DEFAULT: Registered(None, Supervised.from_config)}


def register_objective(name: str, when: Callable[[Any], bool], build: Union[Builder, str]) -> None:
    """Make ``name`` the objective of every run whose config ``when`` accepts."""
    REGISTRY[name] = Registered(when, build)


def objective_name(cfg: Any) -> str:
    """The registered objective a run's config asks for; ConfigError if two claim it."""
    claimed = [n for n, r in REGISTRY.items() if r.when is not None and r.when(cfg)]
    if len(claimed) > 1:
        raise ConfigError(f"the run asks for two objectives at once: {claimed[0]} and {claimed[1]}")
    return claimed[0] if claimed else DEFAULT


def build_objective(cfg: Any, data: Any, device: Any = None, run_dir: Any = None) -> Objective:
    """The objective of a run (``cfg`` a RunConfig, ``data`` its loaded DataBundle). ``run_dir``:
    the run's directory, given to a builder that takes a ``run_dir`` keyword (one that resolves
    ``@run`` references, e.g. a distillation teacher)."""
    name = objective_name(cfg)
    build = REGISTRY[name].build
    if isinstance(build, str):
        mod, _, attr = build.partition(":")
        build = importlib.import_module(mod)
        for part in attr.split("."):  # "Class.from_config" too
            build = getattr(build, part)
    if run_dir is not None and "run_dir" in inspect.signature(build).parameters:
        return build(cfg, data, device, run_dir=run_dir)
    return build(cfg, data, device)


# objectives that ship with heur (each module imported on first use)
register_objective(
    "distill", lambda cfg: getattr(cfg, "distill", None) is not None, "heur.core.distill:Distill.from_config"
)
