"""Experiments as pipelines: checkpoint references between runs, and the order runs start in.

A string value ``"@RUN"`` where a key takes a checkpoint means the final checkpoint of run
``RUN`` of the same experiment (``RUN/checkpoints/final.pt``); ``"@RUN:NAME"`` means its
``checkpoints/NAME.pt`` (``"@sgdr:restart_2"``, ``"@g:step_300"``). Anything else is a path to
a checkpoint file. RUN is a run's name as ``heur run --dry-run`` lists it (variant, then grid
point: ``"@large_batch_lr=0.1"``).

:func:`check_references` runs when a preset expands, before anything starts: unknown run
names, a run that references itself, cycles, and checkpoint names the referenced run can never
write are refused naming the file, the dotted key and the run. The supervisor
(``core.supervise``) starts a run once every run it references has completed and the file
exists; when one ends otherwise, the dependents end ``skipped`` with :func:`skip_reason`.

Every run also has a ``task`` (``"train"``: today's runs; the connectivity and distillation
tasks register here): the module whose ``main(argv)`` runs it in its own process, and the
config sections it requires and allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from .config import Experiment, RunConfig, get_dotted
from .errors import ConfigError

# dotted keys whose value is a checkpoint: a reference or a path (the tasks of later issues add theirs)
# (a key whose value is a list, ``compare.checkpoints``, holds one per item: ``compare.checkpoints[1]``)
REF_KEYS: tuple[str, ...] = (
    "model.init_from",
    "curve.start",
    "curve.end",
    "plane.start",
    "plane.bend",
    "plane.end",
    "distill.teacher",
    "compare.checkpoints",
)

_NAME = r"[A-Za-z0-9._=+-]+"  # what core.config._safe_name leaves in a run name; a checkpoint stem too
_REF = re.compile(rf"@(?P<run>{_NAME})(?::(?P<ckpt>{_NAME}?))?")


@dataclass(frozen=True)
class Task:
    """What a run's ``task`` means: the module that runs it and the config sections it uses."""

    module: str  # ``python -m MODULE RUN_DIR [--resume]``
    required: tuple[str, ...] = ()  # sections that must be written in the preset
    unused: tuple[str, ...] = ()  # sections the task ignores: setting them is an error
    checkpoints: bool = True  # whether its runs write checkpoints (final.pt, ...) others can reference


TASKS: dict[str, Task] = {
    "train": Task(module="heur.core.train"),
    "curve": Task(module="heur.core.curve", required=("curve",), unused=("probes",)),  # issue 11
    "plane": Task(module="heur.core.plane", required=("plane",), unused=("probes",), checkpoints=False),
    # a compare run needs no [optim]/[train]: it ignores the ones it inherits from the preset's base
    "compare": Task(module="heur.core.compare_task", required=("compare",), unused=("distill",), checkpoints=False),
}


def task_of(cfg: RunConfig) -> Task:
    return TASKS[cfg.task]


def check_task(cfg: RunConfig) -> None:
    """The sections a run's preset wrote fit its task: every required one is there, no unused
    one is set (a ``compare`` run has no ``[optim]`` to tune). ConfigError naming the section."""
    task = task_of(cfg)
    written = cfg.model_fields_set
    for section in task.required:
        if section not in written:
            raise ConfigError(f"task {cfg.task!r} needs a [{section}] section", key=section)
    for section in task.unused:
        if section in written:
            raise ConfigError(f"task {cfg.task!r} does not use [{section}]: remove it", key=section)


@dataclass(frozen=True)
class Ref:
    """``@run[:checkpoint]``: a checkpoint of another run of the same experiment."""

    run: str
    checkpoint: str = "final"  # the file stem under checkpoints/

    @property
    def text(self) -> str:
        return f"@{self.run}" if self.checkpoint == "final" else f"@{self.run}:{self.checkpoint}"

    def path(self, exp_dir: Path | str) -> Path:
        return Path(exp_dir) / self.run / "checkpoints" / f"{self.checkpoint}.pt"


def parse_ref(value: Any, key: str = "") -> Optional[Ref]:
    """The :class:`Ref` a value names, or None for a plain path. A malformed ``@`` value is a
    ConfigError naming ``key``."""
    if not isinstance(value, str) or not value.startswith("@"):
        return None
    m = _REF.fullmatch(value)
    if m is None or m.group("ckpt") == "":
        raise ConfigError(f"expected '@RUN' or '@RUN:CHECKPOINT' (e.g. '@sgdr:restart_2'), got {value!r}", key=key)
    ckpt = m.group("ckpt") or "final"
    return Ref(m.group("run"), ckpt.removesuffix(".pt"))


# dotted keys whose value is a list of checkpoints; an entry may name a glob of a run's
# checkpoints ("@sgdr:step_*"), which waits for the whole run (its final checkpoint)
LIST_REF_KEYS: tuple[str, ...] = ("plane.project",)


def parse_glob_ref(value: Any, key: str = "") -> Optional[Ref]:
    """:func:`parse_ref` for a list entry: ``"@RUN:PATTERN"`` with ``*`` / ``?`` in PATTERN gives
    ``Ref(RUN)`` (the run's final checkpoint: the pattern is matched once the run completed)."""
    if isinstance(value, str) and value.startswith("@") and any(c in value for c in "*?["):
        run, _, pattern = value[1:].partition(":")
        return parse_ref(f"@{run}", key)
    return parse_ref(value, key)


def ref_values(cfg: RunConfig) -> list[tuple[str, str]]:
    """(dotted key, value) of every checkpoint a run's config names in REF_KEYS, in key order; a
    list value gives one entry per item, keyed ``key[i]``."""
    data = cfg.to_dict()
    out = []
    for key in REF_KEYS:
        value = get_dotted(data, key)
        if isinstance(value, list):
            out += [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        elif value is not None:
            out.append((key, value))
    return out


def references(cfg: RunConfig) -> dict[str, Ref]:
    """dotted key -> the run reference it holds (plain paths left out); list keys as ``key[i]``."""
    data = cfg.to_dict()
    out = {}
    for key, value in ref_values(cfg):
        ref = parse_ref(value, key)
        if ref is not None:
            out[key] = ref
    for key in LIST_REF_KEYS:
        for i, value in enumerate(get_dotted(data, key) or []):
            ref = parse_glob_ref(value, f"{key}[{i}]")
            if ref is not None:
                out[f"{key}[{i}]"] = ref
    return out


def dependencies(cfg: RunConfig) -> list[str]:
    """The runs this run waits for, in key order, each once."""
    return list(dict.fromkeys(r.run for r in references(cfg).values()))


def resolve(value: str, exp_dir: Path | str) -> Path:
    """The checkpoint file a reference (within ``exp_dir``) or a path names."""
    ref = parse_ref(value)
    return ref.path(exp_dir) if ref is not None else Path(value)


# --------------------------------------------------------------------------- checks at expansion


def checkpoint_names(cfg: RunConfig) -> set[str]:
    """Every checkpoint stem a run of ``cfg`` writes when it completes: final, step_<n> at each
    ``checkpoint_every``, restart_<k> before each restart when ``checkpoint_before_restart``."""
    from .plan import plan_run
    from .schedules import build_schedule

    if not task_of(cfg).checkpoints:  # plane and compare runs write reports, no checkpoint
        return set()
    names = {"final"}
    plan = plan_run(cfg)
    spe, total = plan.steps_per_epoch, plan.total_steps
    tc = cfg.train
    every = int(round(tc.checkpoint_every * spe)) if tc.checkpoint_every > 0 else 0
    if every:
        names.update(f"step_{s}" for s in range(every, total, every))
    if tc.checkpoint_before_restart:
        restarts = getattr(build_schedule(cfg.schedule, 1.0, spe, total), "restart_steps", None) or []
        names.update(f"restart_{k}" for k in range(1, len(restarts) + 1))
    return names


def _close(name: str, pool: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(pool), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_references(exp: Experiment) -> list[str]:
    """Check every reference of ``exp``; returns the run names in an order that starts each run
    after the runs it references (ties in the preset's order). ConfigError on a bad reference."""
    runs = exp.runs
    deps: dict[str, dict[str, str]] = {}  # run -> {run it needs: the key that names it}
    for name, cfg in runs.items():
        deps[name] = {}
        for key, ref in references(cfg).items():
            deps[name].setdefault(ref.run, key)
            where = f"run '{name}': "
            if ref.run == name:
                raise ConfigError(f"{where}{ref.text} references the run itself", key=key)
            if ref.run not in runs:
                listed = ", ".join(runs)
                raise ConfigError(
                    f"{where}no run named {ref.run!r} in this experiment{_close(ref.run, runs)} (runs: {listed})",
                    key=key,
                )
            names = checkpoint_names(runs[ref.run])
            if ref.checkpoint not in names:
                shown = sorted(names, key=_ckpt_order)
                listed = ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")
                raise ConfigError(
                    f"{where}run {ref.run!r} never writes checkpoints/{ref.checkpoint}.pt"
                    f"{_close(ref.checkpoint, names)} (it writes {listed})",
                    key=key,
                )
    return _topological(deps)


def _ckpt_order(stem: str) -> tuple[int, str, int]:
    kind, _, n = stem.partition("_")
    return (kind == "final", kind, int(n) if n.isdigit() else 0)


def _topological(deps: dict[str, dict[str, str]]) -> list[str]:
    """Depth-first order; a cycle is a ConfigError naming it (``a -> b -> a``)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = path[path.index(n) :] + [n]
            first = cycle[0]
            raise ConfigError(
                f"run '{first}': references form a cycle: {' -> '.join(cycle)}", key=deps[first][cycle[1]]
            )
        state[n] = 1
        for d in deps[n]:
            visit(d, path + [n])
        state[n] = 2
        order.append(n)

    for n in deps:
        visit(n, [])
    return order


def check_paths(cfg: RunConfig) -> None:
    """Plain checkpoint paths exist and hold a heur checkpoint (references are checked against
    their run's config, since their files are written later)."""
    from .checkpoint import load_checkpoint

    for key, value in ref_values(cfg):
        if parse_ref(value, key) is not None:
            continue
        try:
            load_checkpoint(value)
        except ConfigError as e:
            raise ConfigError(f"{value}: {e.message}", key=key) from None


def check_init_from(cfg: RunConfig, exp: Experiment) -> None:
    """``model.init_from`` names weights that fit this run's model: parameter names and shapes
    are compared on the meta device (no memory, no data) against the referenced run's model, or
    against the checkpoint file's weights."""
    value = cfg.model.init_from
    if value is None:
        return
    from .models import meta_model

    mine = meta_model(cfg)
    if mine is None:  # the dataset's shape is known only once loaded: the run checks at its start
        return
    ref = parse_ref(value, "model.init_from")
    if ref is not None:
        theirs = meta_model(exp.runs[ref.run])
        if theirs is None:
            return
        other, what = _shapes(theirs.state_dict()), f"the model of run {ref.run!r}"
    else:
        from .checkpoint import load_checkpoint

        other, what = _shapes(load_checkpoint(value)["model"]), f"the weights in {value}"
    problem = shape_mismatch(_shapes(mine.state_dict()), other)
    if problem:
        raise ConfigError(f"the model does not match {what}: {problem}", key="model.init_from")


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def shape_mismatch(mine: dict[str, tuple[int, ...]], theirs: dict[str, tuple[int, ...]]) -> str:
    """'' when two state dicts have the same names and shapes, else the first difference."""
    missing = [k for k in mine if k not in theirs]
    if missing:
        return f"{len(missing)} tensor(s) missing there, e.g. {missing[0]!r}"
    extra = [k for k in theirs if k not in mine]
    if extra:
        return f"{len(extra)} tensor(s) it has that this model lacks, e.g. {extra[0]!r}"
    for k, s in mine.items():
        if theirs[k] != s:
            return f"{k!r} is {list(theirs[k])} there, {list(s)} here"
    return ""


# --------------------------------------------------------------------------- at run time


def load_init_weights(model: Any, value: str, exp_dir: Path | str) -> Path:
    """Copy the weights (and buffers) of the checkpoint ``value`` names into ``model``; the
    optimizer state is not taken. ConfigError on ``model.init_from`` if they do not fit."""
    from .checkpoint import load_checkpoint

    path = resolve(value, exp_dir)
    try:
        ck = load_checkpoint(path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", key="model.init_from") from None
    problem = shape_mismatch(_shapes(model.state_dict()), _shapes(ck.get("model", {})))
    if problem:
        raise ConfigError(f"the model does not match the weights in {path}: {problem}", key="model.init_from")
    model.load_state_dict(ck["model"])
    return path


def skip_reason(dep: str, state: str, step: int, checkpoint: Optional[Path] = None) -> str:
    """Why a run whose dependency ``dep`` ended in ``state`` is skipped, in words."""
    if state == "completed" and checkpoint is not None:
        return f"needs '{dep}', which completed without writing {checkpoint.parent.name}/{checkpoint.name}"
    verb = {
        "diverged": "diverged",
        "failed": "failed",
        "stopped": "was stopped",
        "lost": "was lost",
        "skipped": "was skipped",
    }.get(state, state)
    return f"needs '{dep}', which {verb}" + ("" if state == "skipped" else f" at step {step}")
