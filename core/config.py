"""Preset schema: TOML -> typed, validated config; ``--set`` overrides; variants and grids.

A preset is a TOML file with top-level ``name``, ``description``, ``seed``, ``device``, the
sections ``[data] [model] [optim] [schedule] [train] [probes]``, and optionally
``[[variant]]`` tables (``name`` + ``set = {"dotted.key" = value}``) and a ``[grid]`` table
(``"dotted.key" = [values]``). :func:`load_experiment` expands it into one resolved
:class:`RunConfig` per run, validating every one before anything starts.

Every problem is raised as :class:`ConfigError` naming the file, the dotted key and what was
expected.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError


class _Section(BaseModel):
    """Strict types: a string is not a number, a boolean is not an integer, 1.5 is not an
    integer (an integer is a float, though), and no float may be inf or nan."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _lists_are_tuples(cls, data: Any) -> Any:
        """TOML (and the JSON a checkpoint keeps) has lists only: a list is a tuple field's value."""
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                if typing.get_origin(f.annotation) is tuple and isinstance(data.get(name), list):
                    data = {**data, name: tuple(data[name])}
        return data


PositiveInt = Field(gt=0)
SEED_MAX = 2**32 - 1  # what numpy's and torch's generators all take (the loop derives seed * 7_368_787 + step)
EPOCHS_MAX = 1e6
STEPS_MAX = 10**9
NAME_MAX = 200  # bytes of a run's or experiment's name: a directory name (255), with room for the timestamp


# --------------------------------------------------------------------------- sections


class DataConfig(_Section):
    """``[data]``: which dataset, where it lives and how much of it to use."""

    name: Literal["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "synthetic", "teacher_student"] = "digits"
    root: str = "data"
    download: bool = False
    checksums: bool = Field(
        default=True, description="cifar10/100 folder: check torchvision's published md5 of each batch file"
    )
    subset: Optional[int] = Field(default=None, gt=0, description="cap on training samples")
    test_subset: Optional[int] = Field(default=None, gt=0, description="cap on test samples")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="digits/synthetic: held-out share")
    augment: bool = True
    crop_padding: Optional[int] = Field(default=None, ge=0)
    flip: Optional[bool] = None
    normalize: bool = True
    # synthetic / teacher_student
    n_train: int = Field(default=1024, gt=0)
    n_test: int = Field(default=512, gt=0)
    dim: int = Field(default=32, gt=0)
    classes: int = Field(default=10, gt=1)
    out_dim: int = Field(default=1, gt=0, description="teacher_student: regression outputs")
    noise: float = Field(default=0.0, ge=0)
    teacher_width: int = Field(default=64, gt=0)
    seed: Optional[int] = Field(
        default=None, description="seed of the train/test split and of generated data (default: the run's seed)"
    )


class ModelConfig(_Section):
    """``[model]``: the architecture."""

    name: str = "cnn"
    width: int = Field(default=128, gt=0)
    depth: int = Field(default=2, gt=0)
    activation: Literal["relu", "tanh", "gelu", "linear"] = "relu"
    parametrization: Literal["sp", "ntk", "mup"] = "sp"
    batch_norm: bool = False
    channels: list[int] = Field(default_factory=lambda: [32, 64])
    fc: Optional[list[int]] = Field(
        default=None, description="cnn/vgg: hidden fc widths (blocks fc1..fcM); cnn default [width], vgg [512, 512]"
    )
    head: Literal["fc", "pool"] = Field(
        default="fc", description='vgg: "fc" the papers\' fc stack, "pool" global pooling + one linear layer'
    )
    dropout: Optional[float] = Field(
        default=None, ge=0, lt=1, description="before each hidden fc layer; default 0.5 for vgg, 0 for cnn"
    )
    init_scale: float = Field(default=1.0, gt=0, description="multiplies the init std")
    bias: bool = True
    init_from: Optional[str] = Field(
        default=None,
        min_length=1,
        description="start from these weights: '@RUN', '@RUN:CHECKPOINT' or a checkpoint path (core.pipeline)",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        known = ("mlp", "uv", "cnn", "vgg11", "vgg16", "resnet20")
        if v in known or (v.startswith("tv:") and len(v) > 3):
            return v
        raise ValueError(f"expected one of {', '.join(known)} or 'tv:<torchvision model>', got {v!r}")

    @field_validator("fc")
    @classmethod
    def _fc(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and any(c <= 0 for c in v):
            raise ValueError("expected a list of positive widths")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[int]) -> list[int]:
        if not v or any(c <= 0 for c in v):
            raise ValueError("expected a non-empty list of positive channel counts")
        return v


class OptimConfig(_Section):
    """``[optim]``: optimizer and learning rate."""

    name: Literal["sgd", "adam", "adamw", "gi_adam"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    lr_ntk: Optional[float] = Field(
        default=None, gt=0, description="if set, lr = lr_ntk / lambda0 (NTK top eigenvalue at init)"
    )
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    weight_decay_norm_bias: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    lr_scaling: Literal["none", "linear"] = "none"
    base_batch_size: int = Field(default=256, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("expected two numbers in [0, 1)")
        return v

    @model_validator(mode="after")
    def _nesterov(self) -> "OptimConfig":
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs momentum > 0 (key optim.momentum)")
        return self


class WarmupConfig(_Section):
    """``[schedule.warmup]``: ramps the lr up before the main schedule starts."""

    epochs: Optional[float] = Field(default=None, ge=0)
    steps: Optional[int] = Field(default=None, ge=0)
    shape: Literal["linear", "exponential", "cosine", "adam_bias"] = "linear"
    start_factor: float = Field(default=0.0, ge=0, le=1)
    beta2: float = Field(default=0.999, gt=0, lt=1, description="shape adam_bias: match optim.betas[1]")

    @model_validator(mode="after")
    def _one_duration(self) -> "WarmupConfig":
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give warmup as epochs or steps, not both")
        return self


class ScheduleConfig(_Section):
    """``[schedule]``: the lr as a function of the optimizer step (see core.schedules)."""

    name: Literal[
        "constant", "step", "multistep", "linear", "cosine", "sgdr", "exponential", "polynomial", "garipov"
    ] = "constant"
    step_size: Optional[float] = Field(default=None, gt=0)
    step_size_steps: Optional[int] = Field(default=None, gt=0)
    milestones: Optional[list[float]] = None
    milestones_steps: Optional[list[int]] = None
    gamma: float = Field(default=0.1, gt=0)
    end_factor: float = Field(default=0.0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    t0: Optional[float] = Field(default=None, gt=0)
    t0_steps: Optional[int] = Field(default=None, gt=0)
    t_mult: float = Field(default=1.0, ge=1)
    power: float = Field(default=1.0, gt=0)
    warmup: Optional[WarmupConfig] = None


class TrainConfig(_Section):
    """``[train]``: the loop."""

    epochs: float = Field(default=10, gt=0, le=EPOCHS_MAX)
    max_steps: Optional[int] = Field(default=None, gt=0, le=STEPS_MAX)
    batch_size: int = Field(default=128, gt=0)
    full_batch: bool = False
    drop_last: bool = False
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    mse_reduction: Literal["mean", "half_sum"] = "mean"
    log_every: int = Field(default=10, gt=0, description="steps between train events")
    eval_every: float = Field(default=1, gt=0, description="epochs between evals")
    eval_batch_size: int = Field(default=1024, gt=0)
    eval_train_samples: int = Field(default=10000, gt=0)
    checkpoint_every: float = Field(default=0, ge=0, description="epochs; 0 = only final.pt")
    checkpoint_before_restart: bool = False
    diverge_loss: float = Field(default=1e6, gt=0, description="loss above this ends the run as diverged")
    freeze: list[str] = Field(default_factory=list, description="blocks that get no updates at first (core.freeze)")
    freeze_epochs: Optional[float] = Field(default=None, ge=0, description="how long train.freeze lasts, in epochs")
    freeze_steps: Optional[int] = Field(default=None, ge=0, description="how long train.freeze lasts, in steps")


class SharpnessProbe(_Section):
    every: int = Field(default=50, gt=0, description="steps")
    batch: int = Field(default=512, gt=0, description="samples")
    k: int = Field(default=1, ge=1)
    method: Literal["lanczos", "power"] = "lanczos"
    max_iter: int = Field(default=20, gt=0)
    tol: float = Field(default=1e-3, gt=0)
    at_steps: list[int] = Field(
        default_factory=list, description="steps measured besides every `every` (the first ones)"
    )
    plain: bool = Field(
        default=True,
        description="Adam family: also the Hessian's own top eigenvalue (false: only the preconditioned one, "
        "which Adam's edge applies to; half the products)",
    )

    @field_validator("at_steps")
    @classmethod
    def _positive_steps(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError("expected steps > 0 (step 0 is always measured)")
        return v


class NtkProbe(_Section):
    at_init: bool = True
    every: int = Field(default=0, ge=0, description="steps; 0 = at init only")
    batch: int = Field(default=512, gt=0)


class CatapultProbe(_Section):
    enabled: bool = True
    factor: float = Field(default=2.0, gt=1)


class CcaProbe(_Section):
    every_epochs: float = Field(default=1, gt=0)
    samples: int = Field(default=500, gt=0)
    method: Literal["svcca", "pwcca", "cka"] = "svcca"
    layers: Union[Literal["auto"], list[str]] = "auto"
    conv: Literal["flatten", "mean", "dft"] = "mean"


class DistillConfig(_Section):
    """``[distill]`` on a train run: learn from a teacher's softened outputs (core.distill)."""

    teacher: str = Field(
        min_length=1, description="the teacher: '@RUN', '@RUN:CHECKPOINT' or a checkpoint path (core.pipeline)"
    )
    temperature: float = Field(default=4.0, gt=0, description="T: both outputs are softened by softmax(z / T)")
    alpha: float = Field(default=0.9, ge=0, le=1, description="weight of the soft (teacher) term")


class CompareConfig(_Section):
    """``[compare]`` of a ``task = "compare"`` run: per-layer similarity of checkpoints (core.compare_task)."""

    checkpoints: list[str] = Field(
        min_length=2, description="'@RUN', '@RUN:CHECKPOINT' or paths; the first against each of the others"
    )
    method: Literal["svcca", "pwcca", "cka"] = "cka"
    samples: int = Field(default=1000, gt=0, description="test inputs in the probe set (at most)")
    conv: Literal["flatten", "mean", "dft"] = "mean"
    layers: Union[Literal["auto"], list[str]] = "auto"
    batch_size: int = Field(default=512, gt=0)

    @field_validator("checkpoints")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if any(not isinstance(c, str) or not c for c in v):
            raise ValueError("expected non-empty checkpoint references or paths")
        return v


class ProbesConfig(_Section):
    sharpness: Optional[SharpnessProbe] = None
    ntk: Optional[NtkProbe] = None
    catapult: Optional[CatapultProbe] = None
    cca: Optional[CcaProbe] = None


class CurveConfig(_Section):
    """``[curve]`` (``task = "curve"``, core.curve): a mode-connectivity curve between two checkpoints."""

    start: str = Field(min_length=1, description="one end: '@RUN', '@RUN:CHECKPOINT' or a checkpoint path")
    end: str = Field(min_length=1, description="the other end, of the same architecture")
    kind: Literal["bezier", "polychain"] = "bezier"
    bends: int = Field(default=1, ge=1, description="trainable points between the ends")
    fix_ends: bool = True
    points: int = Field(default=61, ge=2, description="evenly spaced t (0 and 1 included) evaluated at the end")


class PlaneConfig(_Section):
    """``[plane]`` (``task = "plane"``, core.plane): a loss grid on the plane through three checkpoints."""

    start: str = Field(min_length=1, description="w0: '@RUN', '@RUN:CHECKPOINT' or a checkpoint path")
    bend: str = Field(min_length=1, description="w1, off the line (a curve run's checkpoint: its middle bend)")
    end: str = Field(min_length=1, description="w2")
    grid: int = Field(default=21, ge=2, description="points a side")
    margin: float = Field(default=0.2, ge=0, description="beyond [0, 1] in units of the points' spans")
    project: list[str] = Field(
        default_factory=list, description="checkpoints projected onto the plane: '@RUN:step_*', '@RUN:NAME' or paths"
    )


SBATCH_OWN = ("partition", "time", "mem", "gpus-per-node", "gres", "signal", "output", "error", "job-name", "open-mode")


class SlurmConfig(_Section):
    """``[launch.slurm]``: the sbatch settings of each run's job (core.slurm, through submitit)."""

    partition: Optional[str] = Field(
        default=None, min_length=1, description="sbatch --partition (default: the cluster's)"
    )
    gpus_per_run: int = Field(default=0, ge=0, description="GPUs of each run's job (one per rank: launch.nproc)")
    cpus_per_run: Optional[int] = Field(default=None, gt=0, description="CPU cores of each run's job")
    time: Union[int, str] = Field(
        default=60, description="time limit as sbatch --time reads it: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]"
    )
    mem: Optional[str] = Field(default=None, description="memory of each run's job, e.g. '16G'")
    sbatch: dict[str, Union[str, int, bool]] = Field(
        default_factory=dict, description='extra sbatch options, e.g. {account = "lab", qos = "high"}'
    )
    setup: list[str] = Field(default_factory=list, description="shell lines run before the run (module load ...)")
    signal_delay_s: int = Field(default=120, ge=10, description="seconds between the USR2 warning and the limit")
    max_requeue: int = Field(default=3, ge=0, description="time-outs after which the job is not requeued again")

    @field_validator("time")
    @classmethod
    def _time(cls, v: Union[int, str]) -> Union[int, str]:
        ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        ok = ok or isinstance(v, str) and bool(re.fullmatch(r"\d+(:\d{2}){0,2}|\d+-\d+(:\d{2}){0,2}", v))
        if not ok:
            raise ValueError(f"expected minutes > 0 or sbatch's MM:SS, HH:MM:SS, D-HH[:MM[:SS]], got {v!r}")
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"\d+[KMGT]?", v):
            raise ValueError(f"expected a size like '16G' (digits, then K, M, G or T), got {v!r}")
        return v

    @field_validator("sbatch")
    @classmethod
    def _sbatch(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", k):
                raise ValueError(f"expected sbatch long option names (account, qos, ...), got {k!r}")
            if k in SBATCH_OWN:
                raise ValueError(f"{k!r} is set by heur (launch.slurm.partition, time, mem, gpus_per_run), not here")
            if v[k] is False:
                raise ValueError(
                    f"{k!r} = false: expected true (a flag, e.g. exclusive = true) or a value; leave it out"
                )
        return v

    def time_minutes(self) -> int:
        """The time limit in whole minutes, seconds rounded up (submitit's ``timeout_min``), read as
        sbatch reads --time: "M", "M:SS", "H:MM:SS", "D-H", "D-H:MM", "D-H:MM:SS"."""
        if isinstance(self.time, int):
            return self.time
        days, dash, rest = self.time.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if dash:  # D-H, D-H:MM, D-H:MM:SS
            h, m, sec = (parts + [0, 0])[:3]
        else:  # M, M:SS, H:MM:SS
            h, m, sec = [0] * (3 - len(parts)) + parts if len(parts) == 3 else [0] + (parts + [0])[:2]
        total_s = ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec
        return max(1, -(-total_s // 60))


class LaunchConfig(_Section):
    """``[launch]``: how a run's process starts (core.launcher). ``nproc > 1`` runs it with torchrun
    (DistributedDataParallel, ``nproc`` ranks on one machine); ``launcher = "slurm"`` submits it
    as a SLURM job through submitit (torchrun inside the job when ``nproc > 1``)."""

    launcher: Literal["local", "slurm"] = "local"
    nproc: int = Field(default=1, ge=1, le=1024, description="processes (ranks) of the run; > 1: torchrun + DDP")
    slurm: Optional[SlurmConfig] = None


class RunConfig(_Section):
    """One fully resolved run."""

    name: str = "run"
    description: str = ""
    task: Literal["train", "curve", "plane", "compare"] = Field(
        default="train", description="what the run does (core.pipeline.TASKS)"
    )
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    device: str = "auto"
    check: Optional[
        Literal["catapult", "warmup", "gi_adam", "warmup_cca", "connectivity", "sgdr", "resilience", "distill"]
    ] = Field(default=None, description="theory whose verdicts the summary reports (core.verdicts)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    curve: Optional[CurveConfig] = None
    plane: Optional[PlaneConfig] = None
    distill: Optional[DistillConfig] = None
    compare: Optional[CompareConfig] = None
    launch: Optional[LaunchConfig] = Field(default=None, description="how the run starts (core.launcher)")

    @model_validator(mode="before")
    @classmethod
    def _curve_schedule(cls, d: Any) -> Any:
        """A curve run's default schedule is Garipov et al.'s (core.schedules ``garipov``)."""
        if isinstance(d, dict) and d.get("task") == "curve" and "schedule" not in d:
            d = {**d, "schedule": {"name": "garipov"}}
        return d

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", v):
            return v
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- experiment


@dataclass
class Experiment:
    """A preset expanded into runs (one per variant x grid point)."""

    name: str
    description: str
    source: str
    raw: dict[str, Any]
    runs: dict[str, RunConfig] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)  # the preset with overrides applied


_META_KEYS = ("variant", "grid")


def _section_model(path: list[str]) -> type[BaseModel] | None:
    """The pydantic model that owns the dotted prefix ``path`` (None if not a section)."""
    model: type[BaseModel] = RunConfig
    for part in path:
        f = model.model_fields.get(part)
        if f is None:
            return None
        sub = _nested_model(f.annotation)
        if sub is None:
            return None
        model = sub
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        m = _nested_model(arg)
        if m is not None:
            return m
    return None


def _all_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _nested_model(f.annotation)
        if sub is not None:
            keys.extend(_all_keys(sub, dotted + "."))
    return keys


def suggest_key(dotted: str) -> str:
    """' (did you mean ...?)' for an unknown dotted key, or ''."""
    parts = dotted.split(".")
    model = _section_model(parts[:-1])
    pool = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(parts[-1], pool, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{'.'.join(parts[:-1] + close)}'?)"
    close = difflib.get_close_matches(dotted, _all_keys(), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``0.1``, ``true``, ``[1, 2]``, ``"x"``) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"expected KEY=VALUE, got {item!r}", key="--set")
    key, _, value = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"expected KEY=VALUE, got {item!r}", key="--set")
    return key, parse_value(value.strip())


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``d[a][b][c] = value`` for ``a.b.c``, checking that the key exists in the schema."""
    parts = dotted.split(".")
    model = _section_model(parts[:-1])
    if model is None or parts[-1] not in model.model_fields or parts[-1] in _META_KEYS and len(parts) == 1:
        raise ConfigError(f"unknown key{suggest_key(dotted)}", key=dotted)
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def get_dotted(d: Any, dotted: str) -> Any:
    """``d[a][b][c]`` for ``a.b.c``, or None where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _describe_error(err: dict[str, Any]) -> tuple[str, str]:
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    # pydantic puts the union member / literal tag into loc for some errors: drop non-field names
    cleaned: list[str] = []
    model: type[BaseModel] | None = RunConfig
    for p in loc:
        if model is not None and p in model.model_fields:
            cleaned.append(p)
            model = _nested_model(model.model_fields[p].annotation)
    key = ".".join(cleaned) if cleaned else ".".join(loc)
    typ = err.get("type", "")
    inp = err.get("input")
    if typ == "extra_forbidden":
        full = ".".join(cleaned + [loc[-1]]) if loc and (not cleaned or loc[-1] != cleaned[-1]) else key
        return full, f"unknown key{suggest_key(full)}"
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        bound = next(iter(ctx.values()), "?")
        msg = f"expected a number {sym} {bound}"
    elif typ == "finite_number":
        msg = "expected a finite number"
    elif typ == "int_type" and isinstance(inp, bool):
        msg = "expected an integer, not a boolean"
    elif typ in ("int_type", "float_type", "bool_type") and isinstance(inp, str):
        want = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false"}[typ]
        msg = f"expected {want}, not a string"
    elif typ == "missing":
        msg = "required key is missing"
    elif typ == "literal_error":
        msg = f"expected {ctx.get('expected', 'one of the allowed values')}"
    elif typ.endswith("_parsing") or typ.endswith("_type"):
        msg = f"expected {msg.removeprefix('Input should be ').removeprefix('a valid ')}"
    if inp is not None and not isinstance(inp, dict) and "got" not in msg:
        msg += f", got {inp!r}"
    return key, msg


def validate_run(d: dict[str, Any], file: str | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(d)
    except ValidationError as e:
        key, msg = _describe_error(e.errors()[0])
        raise ConfigError(msg, file=file, key=key) from None


def load_toml(path: Path, what: str = "preset", missing: Optional[tuple[str, str]] = None) -> dict[str, Any]:
    """The TOML file at ``path`` (a preset, an experiment record, a run's config: ``what``), or a
    ConfigError naming the file (and the line where the TOML is malformed). ``missing``: the
    message and the file it names when there is no such file (default "no such <what> file")."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        msg, where = missing or (f"no such {what} file", str(path))
        raise ConfigError(msg, file=where) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} ({e.__class__.__name__})", file=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        text_err = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", text_err)
        line = getattr(e, "lineno", None) or (int(m.group(1)) if m else None)
        where = f"{path}:{line}" if line else str(path)
        msg = getattr(e, "msg", None) or re.sub(r"\s*\(at line \d+, column \d+\)", "", text_err)
        if m:
            msg += f" (column {m.group(2)})"
        raise ConfigError(f"malformed TOML: {msg}", file=where) from None


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt_value(x) for x in v)
    return str(v)


def _safe_name(s: str) -> str:
    """A run name from a variant/grid label: letters (any script), digits and ``._=+-`` kept."""
    return re.sub(r"[^\w.=+-]+", "-", s).strip("-") or "run"


# the files an experiment directory holds beside its runs (core.runs, core.supervise)
EXPERIMENT_FILES = ("experiment.toml", "summary.json", "supervisor.json", "supervisor.log", "supervisor.lock")


def check_run_name(name: str, key: str) -> None:
    """ConfigError unless ``name`` can be a run's directory inside an experiment: not ``.`` or
    ``..``, not one of the experiment's own files, at most NAME_MAX bytes, not only punctuation."""
    if name in (".", ".."):
        raise ConfigError(f"run name {name!r} is a path part, not a directory name", key=key)
    if name.lower() in EXPERIMENT_FILES:
        raise ConfigError(f"run name {name!r} is one of the experiment's own files", key=key)
    if len(name.encode()) > NAME_MAX:
        raise ConfigError(f"run name of {len(name.encode())} bytes: expected at most {NAME_MAX}", key=key)
    if not re.search(r"\w", name):
        raise ConfigError(f"run name {name!r}: expected letters or digits in it", key=key)


def grid_points(grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Cartesian product of a ``[grid]`` table -> [(run name, {dotted key: value})]."""
    if not grid:
        return [("", {})]
    keys = list(grid)
    lasts = [k.split(".")[-1] for k in keys]
    labels = [k if lasts.count(k.split(".")[-1]) > 1 else k.split(".")[-1] for k in keys]
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        name = "_".join(f"{lab}={_fmt_value(v)}" for lab, v in zip(labels, combo))
        out.append((_safe_name(name), dict(zip(keys, combo))))
    return out


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read, expand and validate a preset. Raises :class:`ConfigError` on any problem."""
    path = Path(path)
    file = str(path)
    raw = load_toml(path)
    try:
        return expand(raw, overrides or [], file=file)
    except ConfigError as e:
        raise e.with_file(file) from None


def expand(raw: dict[str, Any], overrides: list[str], file: str | None = None) -> Experiment:
    base = copy.deepcopy(raw)
    variants = base.pop("variant", None) or []
    grid = base.pop("grid", None) or {}
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError("expected [[variant]] tables", key="variant")
    if not isinstance(grid, dict):
        raise ConfigError("expected a [grid] table of dotted keys to lists", key="grid")
    for k, vals in grid.items():
        if not isinstance(vals, list) or not vals:
            raise ConfigError("expected a non-empty list of values", key=f"grid.{k}")
        set_dotted({}, k, None)  # validates that the key exists
    parsed = [parse_override(item) for item in overrides]
    for k, v in parsed:
        set_dotted(base, k, v)
        grid.pop(k, None)  # an explicit override pins a grid axis
    # validate the base on its own first, so errors point at the preset's own keys
    base_cfg = validate_run(base, file)
    if len(base_cfg.name.encode()) > NAME_MAX:
        raise ConfigError(f"name of {len(base_cfg.name.encode())} bytes: expected at most {NAME_MAX}", key="name")
    resolved = copy.deepcopy(base)
    if variants:
        resolved["variant"] = variants
    if grid:
        resolved["grid"] = grid
    exp = Experiment(
        name=base_cfg.name,
        description=base_cfg.description,
        source=file or "",
        raw=raw,
        resolved=resolved,
    )
    var_list: list[tuple[str, dict[str, Any]]] = []
    for i, v in enumerate(variants):
        extra = set(v) - {"name", "set"}
        if extra:
            raise ConfigError(f"unknown key {sorted(extra)[0]!r}: expected name and set", key=f"variant[{i}]")
        vname = v.get("name")
        if not isinstance(vname, str) or not vname:
            raise ConfigError("expected a non-empty name", key=f"variant[{i}].name")
        sets = v.get("set", {})
        if not isinstance(sets, dict):
            raise ConfigError('expected set = {"dotted.key" = value}', key=f"variant[{i}].set")
        safe = _safe_name(vname)
        check_run_name(safe if re.search(r"\w", vname) else vname, f"variant[{i}].name")
        var_list.append((safe, sets))
    if not var_list:
        var_list = [("", {})]
    names_seen: set[str] = set()
    for vname, sets in var_list:
        for gname, gsets in grid_points(grid):
            d = copy.deepcopy(base)
            label = f"variant '{vname}': " if vname else ""
            for k, val in list(sets.items()) + list(gsets.items()):
                try:
                    set_dotted(d, k, val)
                except ConfigError as e:
                    raise ConfigError(label + e.message, key=e.key) from None
            for k, v in parsed:  # overrides win over variants
                set_dotted(d, k, copy.deepcopy(v))
            run_name = "_".join(p for p in (vname, gname) if p) or _safe_name(base_cfg.name)
            named = run_name if vname or gname or re.search(r"\w", base_cfg.name) else base_cfg.name
            check_run_name(named, "grid" if gname else "variant" if vname else "name")
            if run_name in names_seen:
                raise ConfigError(f"two runs are both named {run_name!r}", key="variant")
            names_seen.add(run_name)
            try:
                cfg = validate_run(d, None)
            except ConfigError as e:
                raise ConfigError(label + e.message, key=e.key) from None
            exp.runs[run_name] = cfg
    return exp


# --------------------------------------------------------------------------- TOML writing


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_scalar(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_scalar(k)


def dumps_toml(d: dict[str, Any], _prefix: str = "") -> str:
    """A small TOML writer for nested dicts of scalars, lists and lists of tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    arrays: list[tuple[str, list]] = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_scalar(v)}")
    out = "\n".join(lines)
    for k, v in tables:
        name = f"{_prefix}{_toml_key(k)}"
        body = dumps_toml(v, name + ".")
        head = f"[{name}]"
        out += ("\n\n" if out else "") + head + ("\n" + body if body else "")
    for k, items in arrays:
        for item in items:
            name = f"{_prefix}{_toml_key(k)}"
            out += f"\n\n[[{name}]]\n" + "\n".join(
                f"{_toml_key(ik)} = {_toml_scalar(iv)}" for ik, iv in item.items() if iv is not None
            )
    return out.strip() + "\n" if _prefix == "" else out.strip()
