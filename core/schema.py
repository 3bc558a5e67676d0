"""The event schema: each kind of ``events.jsonl`` event and its fields, declared once.

The writer (:class:`core.events.EventWriter` refuses a field not declared here for a declared
kind), the TUI's decoder and figures (they name their columns through :func:`columns`), the
summary (:data:`EVAL_RESULT`) and the test fixtures (:func:`make`) all read this table, so a
field the engine does not write cannot be drawn, summarised or faked.

Every event has :data:`COMMON` (``kind``, ``step``, ``epoch``, ``time``). A kind lists the
fields its writer always passes (``required``: the value may still be ``null``) and those it
passes only sometimes (``optional``). A kind with ``variants`` has a discriminating field whose
value may add fields of its own: a ``cca`` event ``against="final"`` carries ``epochs`` and
``matrix``, one ``against="previous"`` does not; an ``eval`` event's ``split`` is train or
test. Readers ignore kinds they do not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

COMMON = ("kind", "step", "epoch", "time")


class SchemaError(ValueError):
    """An event that does not match its declaration (a programming error, not a user's)."""


@dataclass(frozen=True)
class Kind:
    """One event kind: ``required`` and ``optional`` map a field to what it holds."""

    name: str
    doc: str
    required: Mapping[str, str]
    optional: Mapping[str, str] = field(default_factory=dict)
    # (discriminating field, {value: {extra field: doc}}): the field is required and takes one
    # of these values; each value's extra fields are required with it and refused without it
    variants: tuple[str, Mapping[str, Mapping[str, str]]] | None = None

    def __post_init__(self) -> None:
        base = frozenset(self.required) | frozenset(self.optional)
        if self.variants is not None:
            base |= {self.variants[0]}
        object.__setattr__(self, "_base", base)
        extra = {} if self.variants is None else {v: frozenset(f) for v, f in self.variants[1].items()}
        object.__setattr__(self, "_allowed", {v: base | f for v, f in extra.items()})

    @property
    def fields(self) -> frozenset[str]:
        """Every field an event of this kind may carry (besides :data:`COMMON`)."""
        return frozenset().union(self._base, *self._allowed.values())

    def unknown(self, fields: Mapping[str, Any]) -> list[str]:
        """Fields not declared for this kind (for a variant kind: not for that variant's value).
        Cheap enough for every emit: one set difference."""
        if self.variants is None:
            allowed = self._base
        else:
            allowed = self._allowed.get(fields.get(self.variants[0]), self._base)
        return sorted(k for k in fields.keys() - allowed if k not in COMMON)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "start",
            "the run begins (not written again by a resumed process)",
            {
                "name": "the run's name",
                "total_steps": "optimizer steps the run will take",
                "steps_per_epoch": "optimizer steps per epoch",
                "batch_size": "examples per step",
                "n_train": "training examples",
                "base_lr": "the schedule's peak learning rate",
                "lambda0": "NTK top eigenvalue at init when optim.lr_ntk needed it, else null",
                "device": "torch device",
                "pid": "the training process",
                "blocks": "the model's block names",
            },
            optional={
                "threads": "torch's intra-op CPU threads (a resumed process keeps them: results depend on them)",
                "deterministic": "torch.use_deterministic_algorithms was on",
                "world_size": "ranks of a DistributedDataParallel run (torchrun; absent for one process)",
            },
        ),
        Kind(
            "train",
            "a logged step, every train.log_every steps and at the last",
            {
                "loss": "mean training loss over the steps since the last train event",
                "lr": "learning rate of this step",
                "grad_norm": "global gradient norm of this step",
                "samples": "training examples seen so far",
            },
        ),
        Kind(
            "eval",
            "the model on one split",
            {
                "loss": "mean loss",
                "accuracy": "share classified right (null for regression)",
            },
            {  # [distill] runs (core.distill): the two terms of the loss and the agreement with the teacher
                "hard_loss": "distill: cross-entropy with the labels (the same as loss)",
                "soft_loss": "distill: T^2 KL(teacher_T || student_T), before the alpha weighting",
                "agreement": "distill: share of inputs where the student's top-1 class is the teacher's",
                "teacher_kl": "distill: KL(teacher || student) of the plain (T = 1) softmax outputs",
                # task curve (core.curve): loss and accuracy are those of the curve's worst point among
                # t = 0.25, 0.5, 0.75 (the highest loss, BN recomputed at each)
                "t": "curve: the t of the reported loss and accuracy (the worst of 0.25, 0.5, 0.75)",
                "mean_loss": "curve: the mean loss over t = 0.25, 0.5, 0.75",
            },
            variants=("split", {"train": {}, "test": {}}),
        ),
        Kind(
            "lr",
            "a learning-rate point between train events (the contract's; no writer today)",
            {
                "lr": "learning rate",
            },
        ),
        Kind(
            "sharpness",
            "[probes.sharpness]: top Hessian eigenvalues of the training loss",
            {
                "lambda_max": "top eigenvalue (null: Adam family with probes.sharpness.plain = false)",
                "top_k": "the top k eigenvalues (null as lambda_max)",
                "lr": "learning rate",
                "threshold": "the stability threshold (2/lr for SGD)",
                "threshold_kind": "which formula",
                "method": "eigen solver",
                "normalisation": "loss normalisation the values refer to",
                "mode": "model mode while measuring",
                "batch": "examples measured on",
                "hvps": "Hessian-vector products",
                "converged": "the solver converged",
                "batch_loss": "loss on the measured batch",
                "ratio": "measured / threshold",
                "seconds": "time the measurement took",
            },
            {
                "preconditioned_sharpness": "Adam family: top eigenvalue of P^-1 H (at step 0: the first step's P)",
                "adam_step": "Adam family: the step count t of the preconditioner P_t",
                "target_threshold": "Adam family at lr 0 (warmup start): the threshold at the run's base lr",
            },
        ),
        Kind(
            "ntk",
            "[probes.ntk]: top NTK eigenvalue, at init and every probes.ntk.every steps",
            {
                "lambda_ntk": "top eigenvalue now",
                "lambda0": "top eigenvalue at init (null if not measured)",
                "normalisation": "loss normalisation",
                "batch": "examples measured on",
                "source": "init, lr_ntk (measured for optim.lr_ntk) or step",
                "lr": "learning rate",
                "lr_times_lambda": "lr * lambda_ntk",
            },
            {
                "lr_lazy_edge": "2/lambda0: the lazy phase's edge",
                "lr_uv_max": "4/lambda0: the divergence edge of the uv model and linear networks",
                "lr_relu_max": "12/lambda0: the ReLU networks' catapult edge",
                "hvps": "NTK-vector products",
                "converged": "the solver converged",
            },
        ),
        Kind(
            "catapult",
            "[probes.catapult]: a loss spike that rose and fell back, at its end step",
            {
                "start_step": "the level before the rise",
                "peak_step": "highest loss",
                "end_step": "back below the base",
                "base_loss": "loss at start_step",
                "peak_loss": "loss at peak_step",
                "peak_ratio": "peak_loss / base_loss",
                "lr": "learning rate",
            },
            {
                "sharpness_before": "last sharpness at or before start_step (with [probes.sharpness])",
                "sharpness_after": "last sharpness in [peak_step, end_step]",
            },
        ),
        Kind(
            "cca",
            "[probes.cca]: layer similarity between two snapshots of the run's activations",
            {
                "layers": "probed layer names",
                "values": "one similarity a layer (null where undefined)",
                "method": "similarity measure",
                "epoch_a": "epoch of the older snapshot",
                "epoch_b": "epoch of the newer snapshot",
            },
            variants=(
                "against",
                {
                    "previous": {  # live, at each snapshot: each layer against the snapshot before
                        "weight_change": "[layer] ||W_b - W_a|| / ||W_a|| of the layer's parameters (null: none)",
                        "live_units": "[layer] fraction of units non-zero on some probe input at epoch_b",
                    },
                    "final": {  # once, when the run completed: every snapshot against the last one
                        "epochs": "the snapshots' epochs",
                        "matrix": "[layer][snapshot] similarity to the last snapshot",
                    },
                },
            ),
        ),
        Kind(
            "curve_point",
            "task curve (core.curve): one evaluated t of the trained curve or of the straight line beside it",
            {
                "path": "curve or line",
                "index": "position of t among the evaluated points",
                "points": "how many t are evaluated",
                "t": "the point's t in [0, 1]",
                "train_loss": "mean training loss at w(t), BN recomputed",
                "train_accuracy": "training accuracy (null for regression)",
                "test_loss": "mean test loss",
                "test_accuracy": "test accuracy (null for regression)",
            },
        ),
        Kind(
            "plane_point",
            "task plane (core.plane): one grid point of the plane through three checkpoints",
            {
                "index": "position in the grid, row by row (b outer, a inner)",
                "points": "grid points in all",
                "a": "coordinate along u (0 at the start, 1 at the end)",
                "b": "coordinate along v (1 at the bend)",
                "train_loss": "mean training loss there, BN recomputed",
                "train_accuracy": "training accuracy (null for regression)",
                "test_loss": "mean test loss",
                "test_accuracy": "test accuracy (null for regression)",
            },
        ),
        Kind(
            "plane_projection",
            "task plane: a [plane] project checkpoint projected onto the plane",
            {
                "checkpoint": "the checkpoint, relative to the experiment (or as given)",
                "a": "coordinate along u",
                "b": "coordinate along v",
                "distance": "norm of what the projection leaves out",
            },
            optional={"point": "start, bend or end: one of the plane's three points (absent for [plane] project)"},
        ),
        Kind(
            "compare",
            "a compare run (core.compare_task): one checkpoint against the reference, step = the pair's index",
            {
                "a": "the reference checkpoint as the preset names it",
                "b": "the other checkpoint",
                "method": "similarity measure",
                "layers_a": "the reference's layers (the matrix's rows)",
                "layers_b": "the other model's layers (the matrix's columns)",
                "values": "per layer of b: its similarity to a (core.compare_task.closeness)",
                "matrix": "[layer of a][layer of b] similarity; null when the architectures match",
                "agreement": "share of probe inputs with the same top-1 class (null for regression)",
            },
        ),
        Kind("checkpoint", "a checkpoint was written", {"path": "relative to the run directory"}),
        Kind(
            "restart",
            "a warm restart of the schedule",
            {
                "index": "restarts so far",
                "lr_next": "learning rate of the next step",
            },
        ),
        Kind(
            "resume",
            "a resumed process: readers drop the points at or after from_step",
            {
                "from_step": "first step the resumed process writes again",
                "checkpoint": "the checkpoint it loaded",
            },
            optional={
                "threads": "CPU threads of the resumed process (those of the start event)",
                "skipped": "newer checkpoints that could not be read, passed over",
            },
        ),
        Kind(
            "end",
            "the run ended",
            {
                "state": "completed, diverged, stopped, failed or skipped",
                "reason": "one line",
                "result": "last metrics (EVAL_RESULT keys, wall_time) and the probes' summaries",
            },
        ),
    )
}

EVAL_SPLITS = tuple(KINDS["eval"].variants[1])  # ("train", "test")
# the last ``eval`` of each split as the ``end`` event's result (and so status.json and the
# summary) names it: ``<split>_<metric>``
EVAL_RESULT = tuple(f"{s}_{f}" for s in EVAL_SPLITS for f in KINDS["eval"].required)


def kinds(*names: str) -> tuple[str, ...]:
    """``names`` after checking that each is a declared kind."""
    missing = [n for n in names if n not in KINDS]
    if missing:
        raise SchemaError(f"undeclared event kind {', '.join(missing)} (core/schema.py)")
    return names


def columns(kind: str, *names: str) -> tuple[str, ...]:
    """``("step", "epoch", *names)`` after checking that ``kind`` declares each name: a reader
    names the fields it uses through this, so it cannot use one the writer never writes."""
    spec = KINDS[kinds(kind)[0]]
    missing = [n for n in names if n not in spec.fields and n not in COMMON]
    if missing:
        raise SchemaError(f"event {kind!r} declares no field {', '.join(missing)} (core/schema.py)")
    return ("step", "epoch", *names)


def problems(event: Mapping[str, Any]) -> list[str]:
    """What is wrong with a whole event against its declaration (empty: it is valid)."""
    kind = event.get("kind")
    spec = KINDS.get(kind)  # type: ignore[arg-type]
    if spec is None:
        return [f"undeclared kind {kind!r}"]
    out = [f"{kind}: missing {c!r}" for c in COMMON if c not in event]
    need: Iterable[str] = spec.required
    if spec.variants is not None:
        key, cases = spec.variants
        value = event.get(key)
        if value not in cases:
            out.append(f"{kind}: {key}={value!r} is none of {sorted(cases)}")
        else:
            need = [*need, key, *cases[value]]
    out += [f"{kind}: missing {f!r}" for f in need if f not in event]
    out += [f"{kind}: undeclared field {f!r}" for f in spec.unknown(event)]
    return out


def make(kind: str, step: int, epoch: float, time: float, **fields: Any) -> dict[str, Any]:
    """An event for a test fixture: the kind must be declared and every field too (a fixture
    may leave fields out, as readers must cope with, but never invent one)."""
    spec = KINDS.get(kind)
    if spec is None:
        raise SchemaError(f"undeclared kind {kind!r} (core/schema.py)")
    bad = spec.unknown(fields)
    if bad:
        raise SchemaError(f"event {kind!r} declares no field {', '.join(bad)} (core/schema.py)")
    if spec.variants is not None and spec.variants[0] in fields and fields[spec.variants[0]] not in spec.variants[1]:
        raise SchemaError(f"event {kind!r}: {spec.variants[0]}={fields[spec.variants[0]]!r} is not declared")
    return {"kind": kind, "step": step, "epoch": epoch, "time": time, **fields}
