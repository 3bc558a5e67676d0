"""Experiments as pipelines: ``@run`` references, ``model.init_from``, dependency order,
``skipped`` dependents, bad references refused before anything starts."""

import json
import os

import pytest
import torch
from conftest import heur

from heur.core import pipeline as P
from heur.core import runs as R
from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.preflight import check_experiment
from heur.core.supervise import supervise
from heur.core.train import Run

HEAD = """
name = "chain"
seed = 0
device = "cpu"
[data]
name = "digits"
subset = 256
augment = false
[model]
name = "mlp"
width = 16
depth = 1
[optim]
name = "sgd"
lr = 0.1
[train]
epochs = 2
batch_size = 64
log_every = 2
"""

BASE = {
    "name": "chain",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 256, "augment": False},
    "model": {"name": "mlp", "width": 16, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 2},
}


def variants(*vs):
    return {**BASE, "variant": [{"name": n, "set": s} for n, s in vs]}


def write(tmp_path, body, name="chain.toml"):
    p = tmp_path / name
    p.write_text(HEAD + body)
    return p


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    "text, run, ckpt",
    [
        ("@teacher", "teacher", "final"),
        ("@sgdr:restart_2", "sgdr", "restart_2"),
        ("@g:step_300", "g", "step_300"),
        ("@g:step_300.pt", "g", "step_300"),
        ("@large_lr=0.1", "large_lr=0.1", "final"),
    ],
)
def test_parse_ref(text, run, ckpt, tmp_path):
    ref = P.parse_ref(text)
    assert (ref.run, ref.checkpoint) == (run, ckpt)
    assert ref.path(tmp_path) == tmp_path / run / "checkpoints" / f"{ckpt}.pt"
    assert P.resolve(text, tmp_path) == ref.path(tmp_path)


def test_plain_paths_are_not_references():
    assert P.parse_ref("runs/a/checkpoints/final.pt") is None
    assert P.resolve("a.pt", "/x") == P.Path("a.pt")


@pytest.mark.parametrize("text", ["@", "@a:", "@a b", "@a:b:c"])
def test_malformed_reference_names_the_key(text):
    with pytest.raises(ConfigError) as e:
        P.parse_ref(text, "model.init_from")
    assert e.value.key == "model.init_from" and "expected '@RUN'" in e.value.message


def test_checkpoint_names_are_what_a_real_run_writes(tmp_path):
    """The oracle: the files a completed run leaves in checkpoints/ (sgdr with a checkpoint
    before each restart and one every epoch)."""
    raw = {
        **BASE,
        "schedule": {"name": "sgdr", "t0": 1, "t_mult": 2},
        "train": {**BASE["train"], "epochs": 7, "checkpoint_every": 2, "checkpoint_before_restart": True},
    }
    exp = expand(raw, [])
    cfg = exp.runs["chain"]
    rd = R.create_experiment(exp, tmp_path / "runs") / "chain"
    r = Run(rd)
    r.setup()
    r.finish(*r.train())
    written = {p.stem for p in (rd / "checkpoints").glob("*.pt")}
    assert written == P.checkpoint_names(cfg)
    assert {"final", "restart_1", "restart_2", "step_8"} <= written  # restarts after epochs 1 and 3


def test_check_references_orders_dependencies_first():
    exp = expand(variants(("c", {"model.init_from": "@b"}), ("b", {"model.init_from": "@a"}), ("a", {}), ("x", {})), [])
    order = P.check_references(exp)
    assert order.index("a") < order.index("b") < order.index("c") and set(order) == {"a", "b", "c", "x"}


@pytest.mark.parametrize(
    "sets, expect",
    [
        ([("a", {}), ("b", {"model.init_from": "@teachr"})], "run 'b': no run named 'teachr' in this experiment"),
        ([("a", {"model.init_from": "@a"})], "run 'a': @a references the run itself"),
        ([("a", {"model.init_from": "@b"}), ("b", {"model.init_from": "@a"})], "references form a cycle: a -> b -> a"),
        (
            [("a", {}), ("b", {"model.init_from": "@a:restart_1"})],
            "run 'b': run 'a' never writes checkpoints/restart_1.pt",
        ),
        (
            [("a", {"train.checkpoint_every": 1}), ("b", {"model.init_from": "@a:step_5"})],
            "never writes checkpoints/step_5.pt (did you mean 'step_4'?)",
        ),
        ([("a", {}), ("b", {"model.init_from": "@a:"})], "expected '@RUN' or '@RUN:CHECKPOINT'"),
        (
            [("a", {}), ("b", {"model.init_from": "@a", "model.width": 32})],
            "run 'b': the model does not match the model of run 'a': 'fc1.weight' is [16, 64] there, [32, 64] here",
        ),
    ],
)
def test_bad_references_are_refused_at_expansion(sets, expect):
    exp = expand(variants(*sets), [])
    with pytest.raises(ConfigError) as e:
        check_experiment(exp)
    assert expect in str(e.value) and e.value.key == "model.init_from", str(e.value)


def test_bad_reference_from_the_cli_exits_2_and_starts_nothing(tmp_path):
    p = write(tmp_path, '[[variant]]\nname = "a"\n[[variant]]\nname = "b"\nset = {"model.init_from" = "@c"}\n')
    r = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert str(p) in line and "model.init_from" in line and "run 'b'" in line and "'c'" in line
    assert not (tmp_path / "runs").exists()


def test_init_from_a_plain_path_must_exist_and_fit(tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        check_experiment(expand({**BASE, "model": {**BASE["model"], "init_from": str(tmp_path / "no.pt")}}, []))
    # a real checkpoint of another width
    exp = expand({**BASE, "model": {**BASE["model"], "width": 8}}, [])
    rd = R.create_experiment(exp, tmp_path / "runs") / "chain"
    r = Run(rd)
    r.setup()
    r.finish(*r.train())
    ck = rd / "checkpoints" / "final.pt"
    with pytest.raises(ConfigError, match=r"does not match .*\[8, 64\] there, \[16, 64\] here"):
        check_experiment(expand({**BASE, "model": {**BASE["model"], "init_from": str(ck)}}, []))
    check_experiment(expand({**BASE, "model": {**BASE["model"], "width": 8, "init_from": str(ck)}}, []))


def test_a_task_decides_which_sections_it_needs_and_uses(monkeypatch):
    assert expand(BASE, []).runs["chain"].task == "train"
    monkeypatch.setitem(P.TASKS, "train", P.Task(module="x", required=("data",), unused=("optim",)))
    with pytest.raises(ConfigError) as e:  # [optim] written, the task does not use it
        check_experiment(expand(BASE, []))
    assert e.value.key == "optim" and "task 'train' does not use [optim]" in e.value.message
    no_data = {k: v for k, v in BASE.items() if k not in ("optim", "data")}
    with pytest.raises(ConfigError) as e:
        check_experiment(expand(no_data, []))
    assert e.value.key == "data" and "needs a [data] section" in e.value.message
    without_optim = {k: v for k, v in BASE.items() if k != "optim"}
    check_experiment(expand(without_optim, []))


# --------------------------------------------------------------------------- running


def _train(rd, resume=False):
    r = Run(rd, resume=resume)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    r.finish(*r.train())
    return r


def test_init_from_loads_the_referenced_weights_and_a_fresh_optimizer(tmp_path):
    exp = expand(
        variants(("a", {"train.checkpoint_every": 1}), ("b", {"model.init_from": "@a:step_4", "optim.momentum": 0.9})),
        [],
    )
    exp_dir = R.create_experiment(exp, tmp_path / "runs")
    _train(exp_dir / "a")
    b = Run(exp_dir / "b")
    b.setup()
    src = torch.load(exp_dir / "a" / "checkpoints" / "step_4.pt", weights_only=True)["model"]
    final = torch.load(exp_dir / "a" / "checkpoints" / "final.pt", weights_only=True)["model"]
    mine = b.model.state_dict()
    assert all(torch.equal(mine[k], src[k]) for k in src)
    assert not all(torch.equal(mine[k], final[k]) for k in final)  # step_4, not the final weights
    assert b.optimizer.state_dict()["state"] == {}  # no momentum buffers carried over


def test_init_from_mismatch_at_start_fails_the_run_with_the_key(tmp_path):
    """A dataset whose shape preflight cannot know: the run itself refuses the weights."""
    exp = expand(variants(("a", {}), ("b", {"model.init_from": "@a"})), [])
    exp_dir = R.create_experiment(exp, tmp_path / "runs")
    _train(exp_dir / "a")
    (exp_dir / "b" / "config.toml").write_text(
        (exp_dir / "b" / "config.toml").read_text().replace("width = 16", "width = 12")
    )
    with pytest.raises(ConfigError, match=r"model.init_from: the model does not match .*final.pt"):
        Run(exp_dir / "b").setup()


@pytest.mark.slow
def test_dependency_order_skipped_dependents_and_independent_runs(tmp_path):
    """a → b chain, a diverging run d with a dependent e (skipped, and so is its dependent f),
    and an independent run g: all through the real supervisor and subprocesses."""
    body = """
[[variant]]
name = "a"
set = {"train.checkpoint_every" = 1}
[[variant]]
name = "b"
set = {"model.init_from" = "@a:step_4"}
[[variant]]
name = "d"
set = {"optim.lr" = 1e6, "train.diverge_loss" = 100}
[[variant]]
name = "e"
set = {"model.init_from" = "@d"}
[[variant]]
name = "f"
set = {"model.init_from" = "@e"}
[[variant]]
name = "g"
"""
    p = write(tmp_path, body)
    r = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert r.returncode == 0, r.stderr
    tree = r.stdout[r.stdout.index("start order") :]
    # b under a, c under b (deeper), f under e under d
    lines = tree.splitlines()
    depth = {ln.split("── ")[1].split()[0]: ln.index("── ") for ln in lines if "── " in ln}
    assert depth["a"] < depth["b"] and depth["d"] < depth["e"] < depth["f"]
    assert depth["a"] == depth["d"] == depth["g"]

    r = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"), "--jobs", "2")
    assert r.returncode == 1, r.stdout + r.stderr  # skipped runs: the pipeline did not finish
    (exp_dir,) = (tmp_path / "runs").iterdir()
    st = {rd.name: R.read_status(rd) for rd in R.run_dirs(exp_dir)}
    assert {n: s.state for n, s in st.items()} == {
        "a": "completed",
        "b": "completed",
        "d": "diverged",
        "e": "skipped",
        "f": "skipped",
        "g": "completed",
    }
    assert st["e"].reason.startswith("needs 'd', which diverged at step ")
    assert st["f"].reason == "needs 'e', which was skipped"

    # each dependent started after what it needs had ended
    def t(name, kind):
        return next(
            ev["time"]
            for ev in map(json.loads, (exp_dir / name / "events.jsonl").read_text().splitlines())
            if ev["kind"] == kind
        )

    assert t("b", "start") > t("a", "end")
    # a skipped run reads like any ended run
    assert (exp_dir / "e" / "stdout.log").read_text().startswith("skipped: needs 'd'")
    summary = json.loads((exp_dir / "summary.json").read_text())
    rows = {row["run"]: row for row in summary["runs"]}
    assert rows["e"]["state"] == "skipped" and "diverged" in rows["e"]["reason"]
    assert rows["b"]["init_from"] == "@a:step_4"
    assert "skipped" in r.stdout and "needs 'd', which diverged" in r.stdout
    r = heur("runs", "--runs-dir", str(tmp_path / "runs"), env={"COLUMNS": "100"})
    assert "skipped" in r.stdout and "needs 'e', which was skipped" in r.stdout


def test_resume_runs_in_dependency_order(tmp_path):
    """An experiment stopped before anything ran: --resume starts the chain in order (the
    dependent waits for the run it needs), and `heur runs` shows what a queued run waits for."""
    exp = expand(variants(("b", {"model.init_from": "@a"}), ("a", {})), [])
    exp_dir = R.create_experiment(exp, tmp_path / "runs")
    r = heur("runs", "--runs-dir", str(tmp_path / "runs"), env={"COLUMNS": "100"})
    assert "waits for a" in r.stdout
    for rd in R.run_dirs(exp_dir):
        R.stop_run(rd)  # queued -> stopped
    _, queued = R.queue_resume(exp_dir)
    assert [q.name for q in queued] == ["b", "a"]
    supervise(exp_dir, jobs=2, resume=True, poll=0.05)
    st = {rd.name: R.read_status(rd).state for rd in R.run_dirs(exp_dir)}
    assert st == {"a": "completed", "b": "completed"}
