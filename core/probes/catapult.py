"""``[probes.catapult]``: the catapult detector (core.measure.catapult) fed the logged train loss."""

from __future__ import annotations

from typing import Any, Optional

from ..measure.catapult import CatapultDetector, predicted_phase
from . import Probe, TrainContext

__all__ = ["CatapultProbe", "edge_kind"]

RELU_MODELS = ("cnn", "vgg11", "vgg16", "resnet20")  # heur's own conv nets: ReLU throughout


def edge_kind(model_name: Optional[str], activation: Optional[str] = None) -> Optional[str]:
    """The network kind whose divergence edge the catapult theory predicts
    (core.measure.catapult.divergence_edge): "uv" for the uv model, the activation of an
    ``mlp`` ("linear", "relu", "tanh", "gelu"), "relu" for heur's conv nets, None for others
    (torchvision models: heur does not know their nonlinearity)."""
    if model_name == "uv":
        return "uv"
    if model_name == "mlp":
        return activation or "relu"
    if model_name in RELU_MODELS:
        return "relu"
    return None


def _sharpness_at(history: list, lo: Optional[int], hi: Optional[int]) -> Optional[float]:
    """The last sharpness value measured at a step in [lo, hi] (None bounds are open)."""
    best = None
    for step, lam in history:
        if (lo is None or step >= lo) and (hi is None or step <= hi):
            best = lam
    return best


class CatapultProbe(Probe):
    """``[probes.catapult]`` (enabled, factor): feeds each logged train loss to a
    :class:`CatapultDetector` and emits a ``catapult`` event per spike, with
    ``sharpness_before`` / ``sharpness_after`` when the sharpness probe keeps
    ``ctx.extra["sharpness_history"]`` (list of (step, lambda_max)). ``on_end`` returns
    ``phase`` ("lazy" | "catapult" | "diverged"), ``catapults`` and, when ``optim.lr_ntk`` is
    set, ``predicted_phase`` (from the network's nonlinearity, :func:`edge_kind`; None above 2
    where no theory predicts the edge) and ``edge_kind``. The loss must be logged often enough to see the spike
    (``train.log_every`` of a few steps; a uv catapult lasts about ten).
    """

    name = "catapult"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.detector = CatapultDetector(getattr(cfg, "factor", 2.0))

    def on_log(self, ctx: TrainContext, loss: float) -> None:
        ev = self.detector.update(ctx.step, loss)
        if ev is None:
            return
        fields = dict(ev)
        hist = ctx.extra.get("sharpness_history") or []
        if hist:
            fields["sharpness_before"] = _sharpness_at(hist, None, ev["start_step"])
            fields["sharpness_after"] = _sharpness_at(hist, ev["peak_step"], ev["end_step"])
        fields["lr"] = ctx.lr
        ctx.emit("catapult", **fields)

    def on_end(self, ctx: TrainContext) -> dict[str, Any]:
        if ctx.extra.get("state") == "diverged" or self.detector.diverged:
            phase = "diverged"
        elif self.detector.events:
            phase = "catapult"
        else:
            phase = "lazy"
        out: dict[str, Any] = {"phase": phase, "catapults": len(self.detector.events)}
        if self.detector.pending is not None and phase != "diverged":
            out["catapult_pending"] = True
        lr_ntk = getattr(getattr(ctx.cfg, "optim", None), "lr_ntk", None)
        if lr_ntk is not None:
            kind = edge_kind(ctx.cfg.model.name, getattr(ctx.cfg.model, "activation", None))
            out["predicted_phase"] = predicted_phase(lr_ntk, kind)
            out["edge_kind"] = kind
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "detector" in state:
            self.detector.load_state_dict(state["detector"])
