"""The CLI as a user runs it: a subprocess per command."""

import json
import subprocess
import sys
import time

import pytest
from conftest import heur


def test_help_does_not_import_torch():
    code = "import sys, heur.cli.main; assert 'torch' not in sys.modules, 'torch imported at start-up'"
    subprocess.run([sys.executable, "-c", code], check=True)
    r = heur("--help")
    assert r.returncode == 0 and "run" in r.stdout and "schedule" in r.stdout


def test_run_tiny_preset_end_to_end(tiny_preset, tmp_path):
    r = heur("run", str(tiny_preset), "--runs-dir", str(tmp_path / "runs"), "--set", "train.epochs=2")
    assert r.returncode == 0, r.stderr
    (exp_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((exp_dir / "summary.json").read_text())
    (row,) = summary["runs"]
    assert row["state"] == "completed" and row["test_accuracy"] > 0.3
    assert "completed" in r.stdout and "summary" in r.stdout
    assert (exp_dir / "experiment.toml").is_file() and (exp_dir / "tiny" / "config.toml").is_file()
    r = heur("runs", "--runs-dir", str(tmp_path / "runs"), "--json")
    listed = json.loads(r.stdout)
    (run,) = listed[0]["runs"]
    assert run["state"] == "completed"
    # one meaning for each column, in the table and the JSON: loss = the last logged training loss,
    # test acc = the last evaluation's (status.json carries it while the run goes on)
    events = [json.loads(line) for line in (exp_dir / "tiny" / "events.jsonl").read_text().splitlines()]
    last_train = [e for e in events if e["kind"] == "train"][-1]
    last_test = [e for e in events if e["kind"] == "eval" and e["split"] == "test"][-1]
    assert run["loss"] == last_train["loss"]
    assert run["test_accuracy"] == last_test["accuracy"] == row["test_accuracy"]
    status = json.loads((exp_dir / "tiny" / "status.json").read_text())
    assert status["test_accuracy"] == last_test["accuracy"]
    # the table names the experiment in full (what `heur stop` takes) and fits 80 columns
    r = heur("runs", "--runs-dir", str(tmp_path / "runs"), env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert exp_dir.name in r.stdout and "completed" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    (line,) = [ln for ln in r.stdout.splitlines() if "completed" in ln]
    assert f"{last_train['loss']:.4g}" in line and f"{last_test['accuracy']:.4g}" in line


@pytest.mark.parametrize(
    "text, expect",
    [
        ('name = "x"\n[optim]\nlr = -1\n', "optim.lr: expected a number > 0"),
        ('name = "x"\n[optim]\nlrate = 1\n', "optim.lrate: unknown key (did you mean 'optim.lr'?)"),
        ('name = "x"\n[optim\n', ":2: malformed TOML"),
        (
            'name = "x"\n[train]\nepochs = 2\n[schedule]\nname = "cosine"\n[schedule.warmup]\nepochs = 5\n',
            "schedule.warmup",
        ),
        ('name = "x"\n[probes.sharpness]\nbatch = 100000\n', "probes.sharpness.batch"),
        # model against data, checked on the meta device before anything starts
        ('name = "x"\n[data]\nname = "synthetic"\n[model]\nname = "cnn"\n', "model.name: model cnn needs image data"),
        ('name = "x"\n[model]\nname = "tv:resnet18"\n', "model.name: torchvision models expect 3 input channels"),
        ('name = "x"\n[model]\nname = "tv:resnet_18"\n', "did you mean 'tv:resnet18'?"),
    ],
)
def test_bad_presets_exit_2_with_one_line_and_start_nothing(tmp_path, text, expect):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and str(p) in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists()


def test_bad_override_and_missing_file(tiny_preset, tmp_path):
    r = heur("run", str(tiny_preset), "--set", "optim.nam=adam", "--runs-dir", str(tmp_path))
    assert r.returncode == 2 and "optim.nam: unknown key (did you mean 'optim.name'?)" in r.stderr
    r = heur("run", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "no such preset file" in r.stderr


def test_detach_then_stop_then_resume(tiny_preset, tmp_path):
    runs = tmp_path / "runs"
    r = heur("run", str(tiny_preset), "--runs-dir", str(runs), "--detach", "--set", "train.epochs=2000")
    assert r.returncode == 0 and "started" in r.stdout
    (exp_dir,) = runs.iterdir()
    status = exp_dir / "tiny" / "status.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if status.exists() and json.loads(status.read_text()).get("step", 0) > 0:
            break
        time.sleep(0.1)
    r = heur("stop", str(exp_dir))
    assert r.returncode == 0 and "stopped 1 run" in r.stdout
    deadline = time.time() + 60
    while json.loads(status.read_text()).get("state") != "stopped" and time.time() < deadline:
        time.sleep(0.1)
    st = json.loads(status.read_text())
    assert st["state"] == "stopped"
    assert any(p.name.startswith("step_") for p in (exp_dir / "tiny" / "checkpoints").iterdir())
    r = heur("run", "--resume", str(exp_dir), "--detach")
    assert r.returncode == 0
    deadline = time.time() + 60
    while time.time() < deadline:
        evs = [json.loads(x) for x in (exp_dir / "tiny" / "events.jsonl").read_text().splitlines()]
        if any(e["kind"] == "resume" for e in evs):
            break
        time.sleep(0.1)
    assert any(e["kind"] == "resume" and e["from_step"] == st["step"] + 1 for e in evs)
    heur("stop", str(exp_dir))


def test_two_axis_grid_summary_draws_a_heatmap_with_diverged_cells(tmp_path):
    from rich.console import Console

    from heur.cli.cmd_run import print_summary
    from heur.core import runs as R
    from heur.core.config import expand
    from heur.core.summary import write_summary

    raw = {"name": "g", "grid": {"optim.lr": [0.1, 1.0], "schedule.warmup.epochs": [0, 2]}}
    exp_dir = R.create_experiment(expand(raw, []), tmp_path)
    for rd in R.run_dirs(exp_dir):
        cfg = R.read_run_config(rd)
        diverged = cfg.optim.lr == 1.0 and not (cfg.schedule.warmup and cfg.schedule.warmup.epochs)
        st = {
            "state": "diverged" if diverged else "completed",
            "name": rd.name,
            "result": {"test_loss": cfg.optim.lr + 0.01},
        }
        (rd / "status.json").write_text(json.dumps(st))
    summary = write_summary(exp_dir)
    assert {r["run"]: r["params"]["optim.lr"] for r in summary["runs"]}["lr=1_epochs=2"] == 1.0
    console = Console(record=True, width=100)
    print_summary(summary, console)
    text = console.export_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("│ 1 ")]
    assert len(lines) == 1 and "DIV" in lines[0] and "1.01" in lines[0]


def test_cifar10_preset_runs_from_a_local_folder(tiny_preset, tmp_path):
    from test_data_models import _fake_cifar10

    _fake_cifar10(tmp_path / "data")
    r = heur(
        "run",
        str(tiny_preset),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        "data.name=cifar10",
        "--set",
        f'data.root="{tmp_path / "data"}"',
        "--set",
        "data.checksums=false",
        "--set",
        "model.name=resnet20",
        "--set",
        "train.epochs=1",
        "--set",
        "data.subset=64",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (exp_dir,) = (tmp_path / "runs").iterdir()
    (row,) = json.loads((exp_dir / "summary.json").read_text())["runs"]
    assert row["state"] == "completed" and row["test_loss"] is not None


@pytest.mark.parametrize(
    "text, flags, expect",
    [
        (
            'name = "x"\n[[variant]]\nname = ".."\n[[variant]]\nname = "summary.json"\n',
            [],
            "variant[0].name: run name '..' is a path part",
        ),
        ('name = "x"\nseed = 99999999999999999999\n', ["--dry-run"], "seed: expected a number <= 4294967295"),
        ('name = "x"\n[optim]\nlr = 1e999\n', [], "optim.lr: expected a finite number"),
        ('name = "x"\n[train]\nbatch_size = true\n', ["--dry-run"], "train.batch_size: expected an integer, not a"),
        pytest.param(
            'name = "x"\ndevice = "cuda"\n',
            [],
            "device: device 'cuda' asked for, but CUDA is not available here",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bad_values_and_names_exit_2_before_anything_starts(tmp_path, text, flags, expect):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"), *flags)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and str(p) in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists()
