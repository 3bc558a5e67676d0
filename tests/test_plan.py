"""One plan per run: what plan_run derives from the config alone is what the loaded data, the
built model and a real Run see."""

import os

import pytest
import torch
from conftest import ROOT

from heur.core import runs as R
from heur.core.config import expand
from heur.core.data import DeviceBatcher, load_data
from heur.core.events import read_events
from heur.core.models import build_model
from heur.core.plan import plan_run
from heur.core.schedules import validate_schedule
from heur.core.train import Run

BASE = {
    "name": "p",
    "device": "cpu",
    "seed": 3,
    "data": {"name": "digits", "subset": 300},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.05},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 1},
}

CASES = {
    "digits": [],
    "digits-drop-last": ["train.drop_last=true"],
    "digits-full": ["data.subset=1000", "train.full_batch=true", "train.epochs=3"],
    "digits-cnn-linear-lr": [
        'model.name="cnn"',
        'optim.lr_scaling="linear"',
        "optim.base_batch_size=32",
        "train.max_steps=7",
    ],
    "synthetic": ['data.name="synthetic"', "data.n_train=333", "data.dim=5", "data.classes=4"],
    "teacher-student": [
        'data.name="teacher_student"',
        "data.n_train=200",
        "data.out_dim=3",
        'train.loss="mse"',
        "train.batch_size=500",
    ],
}


def cfg_of(over):
    return next(iter(expand(BASE, list(over)).runs.values()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_matches_the_loaded_data_and_the_built_model(case):
    cfg = cfg_of(CASES[case])
    plan = plan_run(cfg)
    data = load_data(cfg)
    assert plan.train_size == data.n_train
    assert plan.input_shape == tuple(data.input_shape) and plan.num_outputs == data.num_outputs
    n, tc = data.n_train, cfg.train
    assert plan.batch_size == (n if tc.full_batch else min(tc.batch_size, n))
    # steps per epoch: what torch's own DataLoader makes of that many samples at that batch
    loader = torch.utils.data.DataLoader(range(n), batch_size=plan.batch_size, drop_last=tc.drop_last)
    assert plan.steps_per_epoch == len(loader)
    assert plan.total_steps == (tc.max_steps or round(tc.epochs * len(loader)))
    assert plan.blocks == tuple(build_model(cfg, data.input_shape, data.num_outputs).heur_blocks)
    scale = plan.batch_size / cfg.optim.base_batch_size if cfg.optim.lr_scaling == "linear" else 1.0
    assert plan.base_lr == pytest.approx(cfg.optim.lr * scale, rel=1e-12)
    assert plan.model.heur_blocks == list(plan.blocks) and next(plan.model.parameters()).is_meta


def test_an_ntk_run_has_no_base_lr_until_lambda0_is_measured():
    plan = plan_run(cfg_of(["optim.lr_ntk=2.0"]))
    assert plan.base_lr is None
    sch = validate_schedule(cfg_of(["optim.lr_ntk=2.0"]), plan)
    assert sch.base_lr == 1.0  # in units of lr_ntk / lambda0


@pytest.mark.parametrize("over", [[], ["train.drop_last=true", "data.subset=290"]])
def test_a_real_run_takes_the_planned_steps_and_counts_the_planned_samples(tmp_path, monkeypatch, over):
    monkeypatch.setenv("HEUR_THREADS", "1")
    exp = expand(BASE, over + ["train.epochs=2.5"])
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp_path / "runs"))
    plan = plan_run(next(iter(exp.runs.values())))
    r = Run(rd)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    r.finish(*r.train())
    assert R.read_status(rd).state == "completed"
    evs = read_events(rd / "events.jsonl")
    start = evs[0]
    assert (start["total_steps"], start["steps_per_epoch"], start["batch_size"], start["n_train"]) == (
        plan.total_steps,
        plan.steps_per_epoch,
        plan.batch_size,
        plan.train_size,
    )
    assert start["blocks"] == list(plan.blocks) and start["base_lr"] == plan.base_lr
    train = [e for e in evs if e["kind"] == "train"]
    assert [e["step"] for e in train] == list(range(1, plan.total_steps + 1))
    # samples: counted from the batches the loop's own batcher hands out, step by step
    batcher = DeviceBatcher(r.data, plan.batch_size, plan.steps_per_epoch, r.cfg.seed, drop_last=r.cfg.train.drop_last)
    seen = 0
    for e in train:
        seen += batcher.batch_at(e["step"] - 1)[0].shape[0]
        assert e["samples"] == seen == plan.samples_at(e["step"])


def test_the_loop_refuses_data_that_disagrees_with_its_plan(tmp_path, monkeypatch):
    import heur.core.data as D

    (rd,) = R.run_dirs(R.create_experiment(expand(BASE, ["data.subset=2000"]), tmp_path / "runs"))
    monkeypatch.setattr(D, "_DIGITS_N", 1800)  # a wrong size table: the plan expects 1440, the data has 1437
    with pytest.raises(RuntimeError, match="plan derived"):
        Run(rd).setup()


def test_dry_run_prints_the_plans_steps_batch_and_lr(tiny_preset):
    from typer.testing import CliRunner

    from heur.cli.main import app
    from heur.core.config import load_experiment

    cfg = next(iter(load_experiment(tiny_preset, ["train.batch_size=5000"]).runs.values()))
    plan = plan_run(cfg)
    res = CliRunner().invoke(
        app, ["run", str(tiny_preset), "--dry-run", "--set", "train.batch_size=5000"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert f"{plan.total_steps} ({plan.steps_per_epoch}/ep)" in res.output
    assert plan.batch_size == 256 and " 256 " in res.output  # the effective batch, not the asked 5000


def test_dry_run_at_80_columns_shows_whole_run_names(tmp_path):
    """Grid runs differ at the end of their names: at 80 columns the table folds a name instead of
    cutting every one to the same prefix; lr_ntk runs show their lr in units of 1/λ0."""
    from typer.testing import CliRunner

    from heur.cli.main import app

    res = CliRunner().invoke(
        app, ["run", str(ROOT / "presets/warmup_sharpness.toml"), "--dry-run"], env={"COLUMNS": "80"}
    )
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    assert "…" not in res.output
    plan_table, size_table = res.output.split("size of each run")  # the sizes come in a table of their own
    from heur.core.config import load_experiment

    names = list(load_experiment(ROOT / "presets/warmup_sharpness.toml").runs)
    assert ["".join(row) for row in _run_cells(plan_table)] == names
    assert ["".join(row) for row in _run_cells(size_table)] == names
    assert "/λ0" in res.output


def _run_cells(table: str) -> list[list[str]]:
    """The run column of a rich table, a list of wrapped pieces per row."""
    rows: list[list[str]] = []
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        cell = line.split("│")[1].strip()
        first = line.split("│")[2].strip() != ""  # a row's first line has its model
        if first:
            rows.append([cell])
        elif rows and cell:
            rows[-1].append(cell)
    return rows
