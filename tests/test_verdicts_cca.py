"""The warmup_cca verdict on hand-made CCA matrices (settle epochs worked out by hand below), the
preset's runs mapped to their roles, and one small end-to-end run from the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from heur.core.config import dumps_toml, load_experiment
from heur.core.preflight import check_experiment
from heur.core.verdicts import verdicts
from heur.core.verdicts_cca import _roles, run_stats

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["conv1", "conv2", "fc1", "out"]
EPOCHS = [0, 10, 20, 30, 40]
EARLY = [0.5, 0.95, 0.95, 0.95, 1.0]  # settles at epoch 10 (0.25 of training)
MID = [0.5, 0.6, 0.92, 0.95, 1.0]  # settles at 20 (0.5)
LATE = [0.5, 0.6, 0.7, 0.8, 1.0]  # only at the end: 40 (1.0)


def doc(shallow, deep, live=None):
    return {
        "layers": LAYERS,
        "epochs": EPOCHS,
        "against_final": [shallow, shallow, deep, deep],
        "live_units": live or [[1.0] * 5] * 4,
    }


def row(run, batch, lr, cca, warmup=None, freeze=None, acc=0.9, state="completed"):
    cfg = {"train": {"batch_size": batch}, "optim": {"lr": lr}}
    if warmup:
        cfg["schedule"] = {"warmup": {"epochs": warmup}}
    if freeze:
        cfg["train"].update(freeze=freeze, freeze_epochs=10)
    return {"run": run, "state": state, "config": cfg, "cca": cca, "test_accuracy": acc}


def summary(nw_cca, fz_acc=0.8, nw_acc=0.6):
    return {
        "check": "warmup_cca",
        "path": "",
        "runs": [
            row("sb", 32, 0.02, doc(EARLY, EARLY), acc=0.98),
            row("lb_warmup", 512, 0.32, doc(EARLY, MID), warmup=10, acc=0.9),
            row("lb_no_warmup", 512, 0.32, nw_cca, acc=nw_acc),
            row("lb_freeze_fc", 512, 0.32, doc(EARLY, EARLY), freeze=["fc1", "out"], acc=fz_acc),
        ],
    }


def texts(v):
    return [r["text"] for r in v]


def test_settle_and_collapse_by_hand():
    live = [[1.0] * 5, [1.0, 1.0, 0.4, 0.3, 0.3], [1.0, 1.0, 1.0, 0.45, 0.5], [1.0] * 5]
    s = run_stats(doc(EARLY, LATE, live))
    assert s["deep"]["layers"] == ["fc1", "out"] and s["shallow"]["layers"] == ["conv1", "conv2"]
    assert (s["deep"]["settle"], s["deep"]["frac"]) == (40, 1.0)
    assert (s["shallow"]["settle"], s["shallow"]["frac"]) == (10, 0.25)
    assert s["collapse"] == (20.0, ["conv2"])  # conv2 falls below half its units live at epoch 20
    assert s["live_end"] == {"conv1": 1.0, "conv2": 0.3, "fc1": 0.5, "out": 1.0}
    change = [
        [None, 0.1, 0.2, 0.1, 0.1],
        [None, 0.1, 3.0, 0.1, 0.1],
        [None, 0.1, 2.0, 0.1, 0.1],
        [None, 0.1, 9.0, 0, 0],
    ]
    s = run_stats({**doc(EARLY, LATE), "weight_change": change})
    assert s["jump"] == (10.0, 20.0, {"conv1": 0.2, "conv2": 3.0, "fc1": 2.0, "out": 9.0})  # out moves 9x its norm
    # a group mean: conv1 at 0.95 and conv2 at 0.8 from epoch 10 on -> 0.875 < 0.9 until the end
    s = run_stats({**doc(EARLY, EARLY), "against_final": [EARLY, [0.5, 0.8, 0.8, 0.8, 1.0], EARLY, EARLY]})
    assert s["shallow"]["settle"] == 40


def test_reproduced_when_only_the_deeper_layers_settle_late():
    v = verdicts(summary(doc(EARLY, LATE)))
    t = texts(v)
    # deep: 1.0 vs max(0.5, 0.25) -> lead +0.50; shallow: 0.25 vs max(0.25, 0.25) -> +0.00
    assert any("deeper layers settle later" in x and "lead +0.50 >= 0.1" in x and x.endswith("\u2713") for x in t)
    assert any("shallower layers do not" in x and "lead +0.00 < 0.1" in x and x.endswith("\u2713") for x in t)
    assert any("finding reproduces at this size" in x for x in t)
    assert not any("largest weight change" in x for x in t)  # no weight_change in these docs
    final = [r for r in v if "finding" in r["text"]][0]
    assert final["ok"] is True
    # the control: (0.8 - 0.6) / (0.9 - 0.6) = 0.67 of the gap
    ctl = [r for r in v if "freezing the FC stack" in r["text"]][0]
    assert ctl["ok"] is True and "0.67 of the gap >= 0.5" in ctl["text"]


def test_not_reproduced_when_the_instability_is_network_wide():
    v = verdicts(summary(doc(LATE, LATE), fz_acc=0.65))
    final = [r for r in v if "finding" in r["text"]][0]
    assert final["ok"] is False and "does not reproduce at this size" in final["text"]
    assert "shallower layers of the no-warmup run settle late as well" in final["text"]
    sh = [r for r in v if "shallower layers do not" in r["text"]][0]
    assert sh["ok"] is False and "lead +0.75 >= 0.1" in sh["text"]
    ctl = [r for r in v if "freezing the FC stack" in r["text"]][0]
    assert ctl["ok"] is False and "0.17 of the gap < 0.5" in ctl["text"]


def test_not_reproduced_when_the_deeper_layers_do_not_settle_later():
    v = verdicts(summary(doc(EARLY, MID)))  # like warmup: lead 0.5 - 0.5 = 0
    final = [r for r in v if "finding" in r["text"]][0]
    assert final["ok"] is False and "deeper layers of the no-warmup run do not settle later" in final["text"]


def test_missing_matrix_and_no_warmup_benefit():
    s = summary(None, nw_acc=0.95)
    v = verdicts(s)
    assert any("cannot check" in x and "large batch, no warmup" in x for x in texts(v))
    s = summary(doc(EARLY, LATE))
    s["runs"][3].update(state="diverged", reason="loss 3.5e+06 at step 96", cca=None)  # its last eval: 0.8
    v = verdicts(s)
    fz = [r for r in v if r["run"] == "lb_freeze_fc"][0]
    assert "diverged (loss 3.5e+06 at step 96)" in fz["text"] and "test acc" not in fz["text"]
    ctl = [r for r in v if "freezing the FC stack" in r["text"]][0]
    assert ctl["ok"] is False and "the control diverged" in ctl["text"]
    s = summary(doc(EARLY, LATE), nw_acc=0.95)
    ctl = [r for r in verdicts(s) if "frozen-FC control" in r["text"]][0]
    assert ctl["ok"] is None and "warmup did not help here" in ctl["text"]


def test_preset_runs_have_one_role_each_and_pass_preflight():
    exp = load_experiment(ROOT / "presets" / "warmup_lb.toml")
    check_experiment(exp)
    assert exp.raw["check"] == "warmup_cca"
    rows = [{"run": n, "config": c.to_dict()} for n, c in exp.runs.items()]
    roles = {k: r["run"] for k, r in _roles({"path": ""}, rows).items()}
    assert roles == {"sb": "sb", "lb_warmup": "lb_warmup", "lb_no_warmup": "lb_no_warmup", "lb_freeze": "lb_freeze_fc"}
    cfg = exp.runs["lb_freeze_fc"]
    assert cfg.train.freeze == ["fc1", "fc2", "out"]
    assert cfg.train.freeze_epochs == exp.runs["lb_warmup"].schedule.warmup.epochs  # frozen as long as warmed up
    paper = load_experiment(ROOT / "presets" / "paper" / "warmup_lb_cifar10.toml")
    assert paper.raw["check"] == "warmup_cca" and set(paper.runs) == set(exp.runs)
    lb = paper.runs["lb_warmup"]
    assert (lb.train.batch_size, lb.optim.lr, lb.schedule.warmup.steps) == (5000, 2.5, 200)
    assert (paper.runs["sb"].train.batch_size, paper.runs["sb"].optim.lr) == (100, 0.05)
    assert paper.runs["lb_freeze_fc"].train.freeze_steps == 200


@pytest.mark.slow
def test_cli_prints_the_verdict(tmp_path):
    """The preset shrunk (4 epochs on 400 images, 1-epoch warmup and freeze), through `heur run`."""
    raw = tomllib.loads((ROOT / "presets" / "warmup_lb.toml").read_text())
    raw["train"].update(epochs=4, eval_every=4)
    raw["data"]["subset"] = 400
    raw["probes"]["cca"].update(every_epochs=1, samples=200)
    for v in raw["variant"]:
        for k in ("schedule.warmup.epochs", "train.freeze_epochs"):
            if k in v["set"]:
                v["set"][k] = 1
    preset = tmp_path / "mini.toml"
    preset.write_text(dumps_toml(raw))
    cmd = [sys.executable, "-m", "heur.cli.main", "run", str(preset), "--runs-dir", str(tmp_path / "runs"), "-j", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (exp_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    summ = json.loads((exp_dir / "summary.json").read_text())
    lines = [r["text"] for r in summ["verdicts"]]
    assert len(lines) == 8 and any("warmup finding" in x for x in lines), lines
    assert "warmup finding" in out.stdout
