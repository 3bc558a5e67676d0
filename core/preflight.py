"""Checks that need more than the schema (step counts, dataset sizes) and run before anything starts.

Each check raises ConfigError naming the dotted key. ``check_experiment`` runs them all on every
run of an experiment, so an invalid preset never starts a run.
"""

from __future__ import annotations

from typing import Any

from .config import Experiment
from .data import check_available
from .device import resolve_device
from .errors import ConfigError
from .plan import RunPlan, plan_run


def check_run(cfg: Any) -> RunPlan:
    """Every check of one run; returns its plan (derived once, read by each check)."""
    from .probes import configured, probe_class
    from .schedules import validate_schedule

    if cfg.train.loss == "cross_entropy" and cfg.data.name == "teacher_student":
        raise ConfigError('teacher_student is a regression dataset: expected loss = "mse"', key="train.loss")
    plan = plan_run(cfg)  # builds the model on the meta device: what build_model will say at the run's start
    if cfg.launch is None or cfg.launch.launcher != "slurm":  # a SLURM job's device is its node's
        resolve_device(cfg.device)  # device = "cuda" on a machine without one: refused here, not in every run
    check_available(cfg.data)
    for name, section in configured(cfg.probes):  # each probe declares its own check
        probe_class(name).check(section, cfg, plan)
    validate_schedule(cfg, plan)
    from .freeze import check_freeze

    check_freeze(cfg, plan)
    from .launcher import check_launch

    check_launch(cfg, plan)
    return plan


def check_task_sections(cfg: Any, exp: Experiment) -> None:
    """The checks of the sections a run's task owns ([distill] on a train run, [compare])."""
    if cfg.distill is not None:
        from .distill import check_distill

        check_distill(cfg, exp)
    if cfg.task == "compare":
        from .compare import check_compare

        check_compare(cfg, exp)


def check_experiment(exp: Experiment) -> None:
    from .pipeline import check_init_from, check_paths, check_references, check_task

    try:  # references first: cheap, and a dangling one would make the later checks misleading
        check_references(exp)
    except ConfigError as e:
        raise ConfigError(e.message, key=e.key, file=exp.source or None) from None
    for name, cfg in exp.runs.items():
        try:
            check_task(cfg)
            check_run(cfg)
            check_paths(cfg)
            check_init_from(cfg, exp)
            if cfg.task in ("curve", "plane"):
                from .connect_checks import check_curve, check_plane

                (check_curve if cfg.task == "curve" else check_plane)(cfg, exp)
            check_task_sections(cfg, exp)
        except ConfigError as e:
            label = f"run '{name}': " if len(exp.runs) > 1 else ""
            raise ConfigError(label + e.message, key=e.key, file=exp.source or None) from None
