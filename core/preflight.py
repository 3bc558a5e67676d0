"""Checks that need more than the schema (step counts, dataset sizes) and run before anything starts.

Each check raises ConfigError naming the dotted key. ``check_experiment`` runs them all on every
run of an experiment, so an invalid preset never starts a run.
"""

from __future__ import annotations

from typing import Any

from .config import Experiment
from .data import check_available
from .errors import ConfigError


def check_run(cfg: Any) -> None:
    from .models import meta_model
    from .probes_cca import check_cca
    from .probes_curvature import check_probes
    from .schedules import validate_schedule

    if cfg.train.loss == "cross_entropy" and cfg.data.name == "teacher_student":
        raise ConfigError('teacher_student is a regression dataset: expected loss = "mse"', key="train.loss")
    model = meta_model(cfg)  # model against data: what build_model will say at the run's start
    check_available(cfg.data)
    check_probes(cfg)
    check_cca(cfg, model)
    validate_schedule(cfg)


def check_experiment(exp: Experiment) -> None:
    for name, cfg in exp.runs.items():
        try:
            check_run(cfg)
        except ConfigError as e:
            label = f"run '{name}': " if len(exp.runs) > 1 else ""
            raise ConfigError(label + e.message, key=e.key, file=exp.source or None) from None
