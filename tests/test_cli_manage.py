"""Managing runs from the CLI (issue 18): ``heur run --only``, the ``--dry-run`` sizes,
``heur runs --state``, ``heur rm``, the CCA "never" and lines that fit 80 columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY
from typer.testing import CliRunner

from heur.cli.main import app
from heur.core import runs as R
from heur.core.config import expand, load_experiment
from heur.core.errors import ConfigError


def heur(*args: str, env: dict | None = None):
    """The CLI in this process (torch is imported once for the whole file); stdin is not a
    terminal, as under CI. Returns an object with returncode, stdout and stderr."""
    r = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

    class Done:
        returncode = r.exit_code
        stdout = r.stdout
        stderr = r.stderr

    return Done


GRID = TINY.replace("epochs = 3", "epochs = 1") + '\n[grid]\n"optim.lr" = [0.05, 0.1]\n'


PIPE = (
    TINY
    + """
[[variant]]
name = "sgdr"
[[variant]]
name = "anneal_a"
set = {"model.init_from" = "@sgdr"}
[[variant]]
name = "anneal_b"
set = {"model.init_from" = "@sgdr"}
[[variant]]
name = "other"
"""
)


def test_only_on_a_pipeline_refuses_a_selection_without_its_dependency_and_names_it(tmp_path):
    pre = tmp_path / "pipe.toml"
    pre.write_text(PIPE)
    r = heur("run", str(pre), "--dry-run", "--only", "anneal*")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'anneal_a' starts from run 'sgdr'" in r.stderr and "--only sgdr" in r.stderr
    r = heur("run", str(pre), "--dry-run", "--only", "nothing*")
    assert r.returncode == 2 and "no run matches 'nothing*'" in r.stderr
    r = heur("run", str(pre), "--dry-run", "--only", "sgdr", "--only", "anneal*")
    assert r.returncode == 0, r.stderr
    assert "tiny: 3 run(s)" in r.stdout and "anneal_b" in r.stdout and "other" not in r.stdout


def test_resume_only_accepts_a_completed_dependency_and_refuses_a_queued_one(tmp_path):
    raw = {
        "name": "pipe",
        "device": "cpu",
        "data": {"name": "digits", "subset": 64},
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "optim": {"name": "sgd", "lr": 0.1},
        "train": {"epochs": 1, "batch_size": 32},
        "variant": [{"name": "a"}, {"name": "b", "set": {"model.init_from": "@a"}}],
    }
    exp_dir = R.create_experiment(expand(raw, []), tmp_path)
    with pytest.raises(ConfigError, match="'b' starts from run 'a', which is not selected and has not completed"):
        R.resume_plan(exp_dir, only=["b"])
    assert R.read_status(exp_dir / "b").raw.get("pid") is None  # nothing was re-queued by the refusal
    st = json.loads((exp_dir / "a" / "status.json").read_text())
    st["state"] = "completed"
    (exp_dir / "a" / "status.json").write_text(json.dumps(st))
    plan = R.resume_plan(exp_dir, only=["b"])
    assert [p.name for p in plan.queued] == ["b"]


@pytest.mark.slow
def test_only_runs_one_grid_point_then_state_filter_and_rm(tmp_path):
    pre = tmp_path / "grid.toml"
    pre.write_text(GRID)
    runs = tmp_path / "runs"
    names = list(expand(__import__("tomllib").loads(GRID), []).runs)
    assert len(names) == 2
    r = heur("run", str(pre), "--runs-dir", str(runs), "--only", names[1])
    assert r.returncode == 0, r.stderr
    (exp_dir,) = [e.path for e in R.list_experiments(runs)]
    assert [rd.name for rd in R.run_dirs(exp_dir)] == [names[1]]
    assert R.read_status(exp_dir / names[1]).state == "completed"
    # --state filters runs; an experiment with none in that state is left out
    r = heur("runs", "--runs-dir", str(runs), "--state", "completed", "--json")
    assert [row["run"] for e in json.loads(r.stdout) for row in e["runs"]] == [names[1]]
    r = heur("runs", "--runs-dir", str(runs), "--state", "failed", "--json")
    assert json.loads(r.stdout) == []
    r = heur("runs", "--runs-dir", str(runs), "--state", "finished")
    assert r.returncode == 2 and "--state" in r.stderr
    # rm: no terminal and no --yes -> refused, nothing removed; --yes removes
    r = heur("rm", str(exp_dir))
    assert r.returncode == 2 and "--yes" in r.stderr and exp_dir.is_dir()
    r = heur("rm", str(exp_dir), "--yes")
    assert r.returncode == 0, r.stderr
    assert not exp_dir.exists()


def test_rm_refuses_a_live_run_and_a_directory_heur_did_not_make(tmp_path):
    import subprocess
    import sys

    exp_dir = R.create_experiment(load_experiment_tiny(tmp_path), tmp_path / "runs")
    (rd,) = R.run_dirs(exp_dir)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # the run's status names a live process: rm refuses, and says how to stop it
        st = json.loads((rd / "status.json").read_text())
        st.update(state="running", pid=proc.pid, pid_start=R.process_start_time(proc.pid))
        (rd / "status.json").write_text(json.dumps(st))
        r = heur("rm", str(exp_dir), "--yes")
        assert r.returncode == 2 and "is running" in r.stderr and "heur stop" in r.stderr
        assert rd.is_dir()
    finally:
        proc.kill()
        proc.wait()
    other = tmp_path / "notes"
    other.mkdir()
    r = heur("rm", str(other), "--yes")
    assert r.returncode == 2 and "not a run or experiment directory" in r.stderr and other.is_dir()
    # a run of an experiment leaves its experiment's list of runs too
    r = heur("rm", str(rd), "--yes")
    assert r.returncode == 0 and not rd.exists() and R.run_dirs(exp_dir) == []


def load_experiment_tiny(tmp_path: Path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return load_experiment(p)


def test_dry_run_sizes_match_a_closed_form_and_torch_count(tmp_path):
    """An MLP on digits: parameters and activations by hand; a VGG-16 on CIFAR-10: the parameter
    count of the model torch builds (15,245,130, as the README says)."""
    import torch

    from heur.core.models import build_model
    from heur.core.plan import memory_estimate, plan_run

    w, depth, batch, n = 32, 2, 32, 256
    cfg = expand({**_tiny_raw(), "model": {"name": "mlp", "width": w, "depth": depth}}, []).runs["tiny"]
    e = memory_estimate(cfg)
    params = 64 * w + w + (depth - 1) * (w * w + w) + w * 10 + 10
    assert e.params == params
    assert e.weights == e.grads == e.optimizer == 4 * params  # SGD with momentum: one buffer
    # per example: the flattened input, each hidden layer's output and its activation, the logits
    assert e.activations == 4 * batch * (64 + 2 * w * depth + 10)
    assert e.data == 4 * n * 64
    assert e.total == 3 * 4 * params + e.activations + e.data
    adam = expand({**_tiny_raw(), "optim": {"name": "adam", "lr": 1e-3}}, []).runs["tiny"]
    assert memory_estimate(adam).optimizer == 2 * memory_estimate(adam).weights
    vgg = expand(
        {**_tiny_raw(), "data": {"name": "cifar10", "root": str(tmp_path)}, "model": {"name": "vgg16"}}, []
    ).runs["tiny"]
    ev = memory_estimate(vgg)
    real = build_model(vgg, (3, 32, 32), 10)
    assert ev.params == sum(p.numel() for p in real.parameters()) == 15_245_130
    assert ev.weights == 4 * (ev.params + sum(b.numel() for b in real.buffers()))
    assert next(plan_run(vgg).model.parameters()).device == torch.device("meta")
    r = heur("run", str(ROOT / "presets" / "warmup_lb.toml"), "--dry-run", env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert "size of each run" in r.stdout and "17.9k" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def _tiny_raw() -> dict:
    import tomllib

    return tomllib.loads(TINY)


def test_settle_at_the_last_snapshot_prints_never():
    """A settle epoch equal to the last snapshot's means the group never settled: the summary
    prints "never"; an earlier one prints the epoch."""
    from rich.console import Console

    from heur.cli.cmd_run import print_summary
    from heur.core.probes.cca import summary_fields

    never = summary_fields(["conv1", "fc1"], [0, 10, 20, 30], [[0.2, 0.95, 0.97, 1.0], [0.1, 0.5, 0.7, 1.0]])
    assert never["cca_deep_settle"] == never["cca_last_epoch"] == 30  # only equal to itself at the end
    assert never["cca_shallow_settle"] == 10
    rows = [{"run": "lb", "state": "completed", **never}]
    con = Console(width=80, record=True)
    print_summary({"experiment": "e", "path": "/tmp/e", "runs": rows}, con)
    text = con.export_text()
    assert "never" in text and "30" not in text.split("summary.json")[0].split("settle")[-1]
    assert "cca last epoch" not in text


def test_verdict_lines_wrap_with_a_hanging_indent_at_80_columns():
    from rich.console import Console

    from heur.cli.cmd_run import print_verdicts

    long = "deeper layers settle later without warmup (paper: yes): " + "0.97 vs 0.50 and 0.13; " * 8
    con = Console(width=80, record=True)
    print_verdicts([{"text": long, "ok": False}], con)
    lines = con.export_text().splitlines()
    assert lines[0] == "verdict"
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("  deeper") and all(line.startswith("    ") for line in lines[2:])
    assert " ".join(line.strip() for line in lines[1:]) == long.strip()


def test_compare_notes_fold_one_message_over_layer_pairs():
    from heur.core.compare import fold_notes

    notes = [f"{a}~{b} {m}: few samples" for m in ("svcca", "pwcca") for a in ("c1", "c2") for b in ("f1", "f2")]
    notes += ["different architectures: no interpolation"]
    assert fold_notes(notes) == [
        "svcca, pwcca: few samples (4 layer pairs: c1~f1, c1~f2, c2~f1, c2~f2)",
        "different architectures: no interpolation",
    ]


def test_rm_asks_on_a_terminal_and_keeps_on_no(tmp_path, monkeypatch):
    import heur.cli.cmd_runs as cmd

    exp_dir = R.create_experiment(load_experiment_tiny(tmp_path), tmp_path / "runs")
    monkeypatch.setattr(cmd, "interactive", lambda: True)  # as on a terminal
    r = CliRunner().invoke(app, ["rm", str(exp_dir)], input="n\n")
    assert r.exit_code == 1 and "remove it?" in r.stdout and "left as it is" in r.stdout
    assert exp_dir.is_dir()
    r = CliRunner().invoke(app, ["rm", str(exp_dir)], input="y\n")
    assert r.exit_code == 0 and f"removed {exp_dir}" in r.stdout
    assert not exp_dir.exists()
