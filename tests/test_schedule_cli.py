"""`heur schedule`: --json matches build_schedule, bad input exits 2 naming the key, presets load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from heur.cli import cmd_schedule
from heur.core.config import load_experiment
from heur.core.data import steps_per_epoch, total_steps
from heur.core.optim import run_base_lr
from heur.core.schedules import build_schedule, validate_schedule

PRESETS = Path(__file__).resolve().parent.parent / "presets"

PRESET = """
name = "tiny"
[data]
name = "digits"
[optim]
lr = 0.1
lr_scaling = "linear"
base_batch_size = 50
[schedule]
name = "sgdr"
t0 = 1
t_mult = 2
min_lr = 0.001
[schedule.warmup]
steps = 5
shape = "cosine"
start_factor = 0.1
[train]
epochs = 7
batch_size = 100

[[variant]]
name = "restarts"

[[variant]]
name = "steps"
set = { "schedule.name" = "multistep", "schedule.milestones" = [2, 4.5] }

[[variant]]
name = "ntk"
set = { "optim.lr_ntk" = 2.0, "schedule.name" = "cosine" }
"""


@pytest.fixture
def app() -> typer.Typer:
    # a second command keeps typer from collapsing a one-command app into its root
    a = typer.Typer(pretty_exceptions_enable=False)
    cmd_schedule.register(a)
    a.command("noop")(lambda: None)
    return a


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(PRESET)
    return p


def _invoke(app, *args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart already
        runner = CliRunner()
    return runner.invoke(app, ["schedule", *map(str, args)])


def test_json_matches_build_schedule(app, preset):
    res = _invoke(app, preset, "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert list(got) == ["runs"]
    exp = load_experiment(preset)
    assert list(got["runs"]) == list(exp.runs) == ["restarts", "steps", "ntk"]
    for name, cfg in exp.runs.items():
        r = got["runs"][name]
        assert set(r) == {"steps_per_epoch", "total_steps", "lr", "unit"}
        assert r["steps_per_epoch"] == steps_per_epoch(cfg) == 15
        assert r["total_steps"] == total_steps(cfg) == 105
        sch = build_schedule(cfg.schedule, run_base_lr(cfg), 15, 105)
        k = cfg.optim.lr_ntk or 1.0  # lr_ntk runs: lr_ntk·f(t) in units of 1/λ0
        assert r["lr"] == pytest.approx([k * v for v in sch.lrs()], rel=1e-12)
        assert r["unit"] == ("1/λ0" if cfg.optim.lr_ntk else None)
    # linear scaling 0.1 * 100/50; the lr_ntk = 2 run peaks at 2 * (100/50) = 4 in units of 1/λ0
    assert max(got["runs"]["restarts"]["lr"]) == pytest.approx(0.2)
    assert max(got["runs"]["ntk"]["lr"]) == pytest.approx(4.0)
    assert res.stderr.count("heur: note:") == 1 and "run 'ntk' set optim.lr_ntk" in res.stderr and "1/λ0" in res.stderr


def test_plot_lines_fit_and_say_things_once(app):
    """warmup_sharpness: 20 lr_ntk runs. One note for all of them, peak lrs in units of 1/λ0, the
    marks' key once, every summary line within 80 columns; --x epoch draws against the epoch."""
    from conftest import ROOT

    path = ROOT / "presets/warmup_sharpness.toml"
    res = _invoke(app, path, "--width", "80")
    assert res.exit_code == 0, res.output
    assert res.stderr.count("heur: note:") == 1 and "20 of 20 runs set optim.lr_ntk" in res.stderr
    out = res.stdout.splitlines()
    assert max(len(line) for line in out) <= 80
    assert "peak lr 768/λ0" in res.stdout and "base lr 1" not in res.stdout
    assert res.stdout.count("the end of a warmup") == 1
    ep = _invoke(app, path, "--width", "80", "--x", "epoch")
    assert ep.exit_code == 0 and "epoch" in ep.stdout
    bad = _invoke(app, path, "--x", "time")
    assert bad.exit_code == 2 and "--x" in bad.stderr


def test_set_override_reaches_schedule(app, preset):
    res = _invoke(
        app,
        preset,
        "--json",
        "--set",
        "schedule.t0_steps=7",
        "--set",
        "train.epochs=2",
        "--set",
        "schedule.milestones=[1]",
    )
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)["runs"]
    assert runs["restarts"]["total_steps"] == 30
    lr = runs["restarts"]["lr"]
    assert lr[5 + 7] > lr[5 + 6]  # first restart 7 steps after the 5 warmup steps


def test_plot_mentions_runs_and_restarts(app, preset):
    res = _invoke(app, preset, "--width", "90", "--height", "20")
    assert res.exit_code == 0, res.output
    assert "restarts" in res.stdout and "steps" in res.stdout
    assert "restarts at steps 20, 50" in " ".join(res.stdout.split())  # 5 warmup + cycles of 15 and 30 steps


@pytest.mark.parametrize(
    "args, key",
    [
        (["--set", "schedule.warmup.steps=500"], "schedule.warmup.steps"),
        (["--set", "schedule.milestones=[5, 3]"], "schedule.milestones"),
        (["--set", "schedule.t_mult=0.5"], "schedule.t_mult"),
        (["--set", "schedule.step_size=0"], "schedule.step_size"),
        (["--set", "schedule.nope=1"], "schedule.nope"),
        (["--set", "schedule.min_lr=0.5"], "schedule.min_lr"),  # above the base lr 0.2
    ],
)
def test_bad_input_exits_2_naming_key(app, preset, args, key):
    res = _invoke(app, preset, "--json", *args)
    assert res.exit_code == 2
    assert key in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stdout == ""


def test_missing_preset_exits_2(app, tmp_path):
    res = _invoke(app, tmp_path / "none.toml")
    assert res.exit_code == 2 and "no such preset" in res.stderr


def test_decimate_keeps_extremes():
    """The schedule plot decimates with the TUI's min/max buckets."""
    from heur.figures.downsample import minmax

    def decimate(xs, ys, buckets):
        dx, dy = minmax(xs, ys, buckets)
        return dx.tolist(), dy.tolist()

    ys = [0.0] * 1000
    ys[333] = 5.0
    ys[777] = -3.0
    xs = list(range(1000))
    dx, dy = decimate(xs, ys, 50)
    assert len(dx) <= 100 and 5.0 in dy and -3.0 in dy
    assert dx == sorted(dx) and (333 in dx) and (777 in dx)
    assert decimate(xs[:80], ys[:80], 50) == (xs[:80], ys[:80])


@pytest.mark.parametrize("path", sorted(PRESETS.rglob("*.toml")), ids=lambda p: str(p.relative_to(PRESETS)))
def test_every_preset_loads_and_its_schedules_validate(path):
    exp = load_experiment(path)
    assert exp.runs
    for cfg in exp.runs.values():
        validate_schedule(cfg)


def test_sgdr_presets_restart_where_described():
    exp = load_experiment(PRESETS / "sgdr.toml")
    cfg = exp.runs["sgdr"]
    assert cfg.train.checkpoint_before_restart
    spe = steps_per_epoch(cfg)
    sch = build_schedule(cfg.schedule, cfg.optim.lr, spe, total_steps(cfg))
    assert [r / spe for r in sch.restart_steps] == [2, 6, 14]
    assert exp.runs["sgd"].schedule.name == "step"
    paper = load_experiment(PRESETS / "paper" / "sgdr_cifar10.toml").runs["sgdr"]
    spe = steps_per_epoch(paper)
    sch = build_schedule(paper.schedule, paper.optim.lr, spe, total_steps(paper))
    assert [r / spe for r in sch.restart_steps] == [10, 30, 70]
