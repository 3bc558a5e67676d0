"""Knowledge distillation (Hinton et al. 2015): a student trained on a teacher's softened outputs.

A ``train`` run with a ``[distill]`` section gets the :class:`Distill` objective (registered in
core.objective): ``teacher`` is ``"@RUN"``, ``"@RUN:CHECKPOINT"`` or a checkpoint path (any heur
model, ``tv:`` models included; core.pipeline resolves and checks it before the run starts),
``temperature`` T (default 4) and ``alpha`` (weight of the soft term, default 0.9). For logits
s (student) and t (teacher) of a batch with labels y, the loss is

    alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

(the KL a batch mean of per-example sums; the T^2 keeps the soft term's gradients on the scale of
the hard term's as T changes). The teacher runs in eval mode, without gradients, on the run's
device, on the same (augmented) batch as the student; its parameters are frozen and never change.
Teacher and student may differ in architecture, not in their inputs or number of outputs.

Each evaluation adds to the ``eval`` event (core/schema.py): ``hard_loss`` (= ``loss``: the
plain cross-entropy, so the summary compares distilled and independent runs on one loss),
``soft_loss`` (T^2 KL, before alpha), ``agreement`` (share of inputs whose top-1 class is the
teacher's) and ``teacher_kl`` (KL(teacher || student) at T = 1). The objective has no state of
its own (the teacher is fixed, nothing is random), so a resumed run is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .measure.evaluation import eval_batches
from .objective import Objective

__all__ = ["Distill", "distill_terms", "check_distill", "load_teacher"]

KEY = "distill.teacher"


def distill_terms(
    student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft, hard): T^2 KL(softmax(t/T) || softmax(s/T)) (batch mean) and CE(s, y)."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    soft = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (temperature * temperature)
    return soft, F.cross_entropy(student, y)


def _needs_classification(cfg: Any, task: str) -> None:
    if task != "classification":
        raise ConfigError("distillation needs a classification dataset (the teacher's classes)", key="distill")
    if cfg.train.loss != "cross_entropy":
        raise ConfigError('distillation trains with cross_entropy: expected loss = "cross_entropy"', key="train.loss")


def load_teacher(value: str, run_dir: Optional[Path], device: Any, input_shape: tuple, num_outputs: int):
    """The teacher model the key names (resolved against the run's experiment), frozen, in eval mode,
    on ``device``. ConfigError on ``distill.teacher`` when it is no checkpoint or does not fit."""
    from .checkpoint import model_from_checkpoint
    from .pipeline import resolve

    path = resolve(value, run_dir.parent if run_dir is not None else Path("."))
    try:
        teacher, _cfg, ck = model_from_checkpoint(path, device)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", key=KEY) from None
    _fits(tuple(int(s) for s in ck["input_shape"]), int(ck["num_outputs"]), input_shape, num_outputs, str(path))
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher, path


def _fits(t_shape: tuple, t_out: int, shape: tuple, out: int, what: str) -> None:
    if t_out != out:
        raise ConfigError(f"the teacher ({what}) has {t_out} outputs, this run's model has {out}", key=KEY)
    if tuple(t_shape) != tuple(shape):
        raise ConfigError(
            f"the teacher ({what}) takes inputs of shape {tuple(t_shape)}, this run's data has {tuple(shape)}", key=KEY
        )


def check_distill(cfg: Any, exp: Any) -> None:
    """Preflight of a ``[distill]`` run: a classification run with cross-entropy, and a teacher that
    takes the same inputs and has as many outputs (read from the referenced run's config, or from
    the checkpoint file) — before anything starts."""
    if cfg.distill is None:
        return
    from .data import data_shape
    from .pipeline import parse_ref

    mine = data_shape(cfg.data)
    _needs_classification(cfg, "regression" if cfg.data.name == "teacher_student" else "classification")
    if mine is None:
        return
    ref = parse_ref(cfg.distill.teacher, KEY)
    if ref is not None:
        other = exp.runs[ref.run]
        if other.task != "train":
            raise ConfigError(f"run {ref.run!r} is a {other.task} run: it has no model to teach with", key=KEY)
        theirs = data_shape(other.data)
        if theirs is None:
            return
        _fits(theirs[0], theirs[1], mine[0], mine[1], f"run {ref.run!r}")
    else:
        from .checkpoint import load_checkpoint

        ck = load_checkpoint(cfg.distill.teacher)  # check_paths has checked it is one
        if "num_outputs" in ck and "input_shape" in ck:
            _fits(tuple(ck["input_shape"]), int(ck["num_outputs"]), mine[0], mine[1], cfg.distill.teacher)


class Distill(Objective):
    """See the module doc."""

    name = "distill"

    def __init__(self, teacher: torch.nn.Module, temperature: float, alpha: float):
        super().__init__(F.cross_entropy, "classification")
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    @classmethod
    def from_config(cls, cfg: Any, data: Any, device: Any = None, run_dir: Any = None) -> "Distill":
        _needs_classification(cfg, data.task)
        dev = device if device is not None else data.x_train.device
        teacher, _ = load_teacher(
            cfg.distill.teacher, Path(run_dir) if run_dir else None, dev, tuple(data.input_shape), data.num_outputs
        )
        return cls(teacher, cfg.distill.temperature, cfg.distill.alpha)

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()  # whatever a caller did to it: the teacher is always evaluated
        with torch.no_grad():
            return self.teacher(x)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        out = model(x)
        if self.alpha == 0.0:  # the plain cross-entropy: no teacher pass needed
            return F.cross_entropy(out, y)
        soft, hard = distill_terms(out, self._teacher(x), y, self.temperature)
        if self.alpha == 1.0:
            return self.alpha * soft
        return self.alpha * soft + (1.0 - self.alpha) * hard

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, limit: Optional[int] = None
    ) -> dict[str, Optional[float]]:
        was = model.training
        model.eval()
        dev = next((p.device for p in model.parameters()), x.device)
        sums = torch.zeros(5, device=dev, dtype=torch.float64)  # hard, soft, correct, agree, kl at T=1
        n = 0
        for xb, yb in eval_batches(x, y, batch, limit):
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            s, t = model(xb), self._teacher(xb)
            soft, hard = distill_terms(s, t, yb, self.temperature)
            kl1, _ = distill_terms(s, t, yb, 1.0)
            k = xb.shape[0]
            sums += torch.stack(
                [
                    hard.double() * k,
                    soft.double() * k,
                    (s.argmax(1) == yb).sum().double(),
                    (s.argmax(1) == t.argmax(1)).sum().double(),
                    kl1.double() * k,
                ]
            )
            n += k
        model.train(was)
        hard, soft, correct, agree, kl1 = (v / max(n, 1) for v in sums.tolist())  # the one host sync
        return {
            "loss": hard,
            "accuracy": correct,
            "hard_loss": hard,
            "soft_loss": soft,
            "agreement": agree,
            "teacher_kl": kl1,
        }
