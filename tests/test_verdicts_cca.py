"""The warmup_cca verdict on hand-made CCA matrices (settle epochs worked out by hand below), the
preset's runs mapped to their roles, and one small end-to-end run from the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from heur.core.config import dumps_toml, load_experiment
from heur.core.preflight import check_experiment
from heur.core.verdicts import verdicts
from heur.core.verdicts_cca import _roles, by_seed, run_stats

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


def row(run, batch, lr, cca, warmup=None, freeze=None, acc=0.9, state="completed", seed=0):
    cfg = {"seed": seed, "train": {"batch_size": batch}, "optim": {"lr": lr}}
    if warmup:
        cfg["schedule"] = {"warmup": {"epochs": warmup}}
    if freeze:
        cfg["train"].update(freeze=freeze, freeze_epochs=10)
    return {"run": f"{run}_seed={seed}", "state": state, "config": cfg, "cca": cca, "test_accuracy": acc}


def seed_runs(seed, nw_cca, fz_acc=0.8, nw_acc=0.6, w_acc=0.9, sb_acc=0.98):
    return [
        row("sb", 32, 0.02, doc(EARLY, EARLY), acc=sb_acc, seed=seed),
        row("lb_warmup", 512, 0.32, doc(EARLY, MID), warmup=10, acc=w_acc, seed=seed),
        row("lb_no_warmup", 512, 0.32, nw_cca, acc=nw_acc, seed=seed),
        row("lb_freeze_fc", 512, 0.32, doc(EARLY, EARLY), freeze=["fc1", "out"], acc=fz_acc, seed=seed),
    ]


def summary(*seeds):
    """seeds: one dict of seed_runs' keyword arguments per seed (nw_cca required)."""
    runs = [r for s, kw in enumerate(seeds) for r in seed_runs(s, **kw)]
    return {"check": "warmup_cca", "path": "", "runs": runs}


def texts(v):
    return [" ".join(r["text"].split()) for r in v]  # the rows are wrapped to 80 columns


def one(v, start):
    (r,) = [r for r in v if " ".join(r["text"].split()).startswith(start)]
    return r, " ".join(r["text"].split())


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


# settle leads of the no-warmup run over the later of warmup (deep MID 0.5, shallow EARLY 0.25) and
# SB (EARLY 0.25 both), worked out by hand:
HOLDS = doc(EARLY, LATE)  # deeper 1.0 - 0.5 = +0.50 >= 0.1, shallower 0.25 - 0.25 = +0.00 < 0.1
WIDE = doc(LATE, LATE)  # deeper +0.50, shallower 1.0 - 0.25 = +0.75: network-wide, fails
FLAT = doc(EARLY, MID)  # deeper 0.5 - 0.5 = +0.00 < 0.1: fails


def final(v):
    return one(v, "Gotmare et al.'s warmup finding")


def test_reproduced_when_it_holds_in_every_seed():
    v = verdicts(summary({"nw_cca": HOLDS}, {"nw_cca": HOLDS}, {"nw_cca": HOLDS}))
    t = texts(v)
    for s in (0, 1, 2):
        _, x = one(v, f"seed {s}:")
        assert "deeper +0.50 >= 0.1 \u2713, shallower +0.00 < 0.1 \u2713: the claim holds" in x
    r, x = final(v)
    assert r["ok"] is True and "holds in 3 of 3 seeds" in x and "reproduces at this size" in x
    assert r["data"]["seeds_held"] == [0, 1, 2] and r["data"]["seeds_cannot_check"] == []
    assert not any("largest weight change" in x for x in t)  # no weight_change in these docs
    # the control on the means: (0.8 - 0.6) / (0.9 - 0.6) = 0.67 of the gap
    r, x = one(v, "freezing the FC stack")
    assert r["ok"] is True and "0.67 of the gap >= 0.5" in x
    assert all(len(line) <= 78 for r in v for line in r["text"].split("\n")), [r["text"] for r in v]


def test_majority_of_the_seeds_decides():
    r, x = final(verdicts(summary({"nw_cca": HOLDS}, {"nw_cca": WIDE}, {"nw_cca": HOLDS})))
    assert r["ok"] is True and "holds in 2 of 3 seeds" in x
    v = verdicts(summary({"nw_cca": HOLDS}, {"nw_cca": WIDE}, {"nw_cca": FLAT}))
    r, x = final(v)
    assert r["ok"] is False and "holds in 1 of 3 seeds" in x and "does not reproduce at this size" in x
    _, x = one(v, "seed 1:")
    assert "shallower +0.75 >= 0.1 \u2717: the claim does not hold" in x
    _, x = one(v, "seed 2:")
    assert "deeper +0.00 < 0.1 \u2717" in x and "does not hold" in x
    assert [r["ok"] for r in v if r["text"].startswith("seed ")] == [None] * 3  # the final row alone judges


def test_a_seed_whose_warmup_run_diverged_cannot_be_checked():
    s = summary({"nw_cca": HOLDS}, {"nw_cca": HOLDS}, {"nw_cca": WIDE})
    s["runs"][1].update(state="diverged", reason="loss 6.0e+09 at step 93", cca=None, test_accuracy=0.089)
    v = verdicts(s)
    _, x = one(v, "seed 0:")
    assert x == "seed 0: cannot check, large batch + warmup diverged: loss 6.0e+09 at step 93"
    _, x = one(v, "lb_warmup_seed=0:")
    assert "diverged (loss 6.0e+09 at step 93; test acc 0.089 where it stopped); no CCA matrix" in x
    r, x = final(v)  # seeds 1 (holds) and 2 (fails): 1 of 2 is no majority
    assert (
        r["ok"] is False
        and "holds in 1 of 2 seeds with CCA matrices; cannot check seed 0 (large batch + warmup diverged: "
        "loss 6.0e+09 at step 93)"
        in x
    )
    assert r["data"]["seeds_cannot_check"] == [0] and r["data"]["seeds_checked"] == [1, 2]
    _, x = one(v, "large batch + warmup (")
    assert "1 diverged, 0 collapsed" in x
    # two of three diverged: one seed left, no verdict
    s["runs"][5].update(state="diverged", reason="loss nan at step 95", cca=None)
    r, x = final(verdicts(s))
    assert (
        r["ok"] is None
        and "cannot check, 1 seed(s) with CCA matrices" in x
        and "seed 1 (large batch + warmup diverged: loss nan at step 95)" in x
    )


def test_accuracy_mean_sd_and_settle_medians_against_numpy():
    w, nw = [0.9, 0.95, 0.5], [0.6, 0.7, 0.086]
    v = verdicts(summary(*({"nw_cca": c, "w_acc": a, "nw_acc": b} for c, a, b in zip((HOLDS, HOLDS, FLAT), w, nw))))
    r, x = one(v, "large batch, no warmup (")
    d = r["data"]
    assert d["test_accuracy"]["mean"] == pytest.approx(np.mean(nw))
    assert d["test_accuracy"]["sd"] == pytest.approx(np.std(nw, ddof=1))
    assert f"{np.mean(nw):.3f} ± {np.std(nw, ddof=1):.3f} (0.600 0.700 0.086)" in x
    assert d["collapsed"] == [2] and "0 diverged, 1 collapsed" in x  # 0.086 < 0.2
    assert d["settle_deep"]["per_seed"] == [1.0, 1.0, 0.5] and d["settle_deep"]["median"] == np.median([1, 1, 0.5])
    assert d["settle_shallow"]["median"] == 0.25 and "deeper 1.00 1.00 0.50 (median 1.00)" in x
    diff = np.subtract(w, nw)  # +0.300 +0.250 +0.414: mean 0.321, sd 0.084
    r, x = one(v, "warmup beats no warmup")
    assert r["data"]["mean"] == pytest.approx(diff.mean()) and r["data"]["sd"] == pytest.approx(diff.std(ddof=1))
    assert r["ok"] is True and f"mean - sd = {diff.mean() - diff.std(ddof=1):+.3f} > 0" in x
    w = [0.9, 0.95, 0.55]  # differences +0.30 +0.25 +0.464 -> fine; make one seed go the other way
    nw = [0.6, 0.7, 0.9]  # +0.30 +0.25 -0.35: mean 0.067 < sd 0.362
    v = verdicts(summary(*({"nw_cca": HOLDS, "w_acc": a, "nw_acc": b} for a, b in zip(w, nw))))
    r, x = one(v, "warmup beats no warmup")
    diff = np.subtract(w, nw)
    assert r["ok"] is False and f"mean difference {diff.mean():+.3f}, sd {diff.std(ddof=1):.3f}" in x
    assert "<= 0 \u2717" in x


def test_one_seed_is_not_a_verdict_and_the_control_on_means():
    v = verdicts(summary({"nw_cca": HOLDS}))
    r, x = final(v)
    assert r["ok"] is None and "need >= 2" in x
    r, x = one(v, "warmup beats no warmup")
    assert r["ok"] is None and "no spread to judge by" in x
    v = verdicts(summary({"nw_cca": WIDE, "fz_acc": 0.6}, {"nw_cca": WIDE, "fz_acc": 0.7}))
    r, x = one(v, "freezing the FC stack")  # (0.65 - 0.6) / (0.9 - 0.6) = 0.17
    assert r["ok"] is False and "mean test acc 0.650 vs 0.600 without warmup and 0.900 with, 0.17 of the gap < 0.5" in x
    s = summary({"nw_cca": HOLDS, "nw_acc": 0.95}, {"nw_cca": HOLDS, "nw_acc": 0.95})
    s["runs"][3].update(state="diverged", reason="loss 3.5e+06 at step 96", cca=None, test_accuracy=0.1)
    r, x = one(verdicts(s), "frozen-FC control")
    assert r["ok"] is None and "warmup did not help here" in x and "1 of its 2 runs diverged" in x


def test_missing_matrix():
    v = verdicts(summary({"nw_cca": None}, {"nw_cca": HOLDS}))
    _, x = one(v, "seed 0:")
    assert x == "seed 0: cannot check, no CCA matrix for large batch, no warmup"


def test_preset_runs_have_one_role_each_per_seed_and_pass_preflight():
    exp = load_experiment(ROOT / "presets" / "warmup_lb.toml")
    check_experiment(exp)
    assert exp.raw["check"] == "warmup_cca" and exp.raw["grid"] == {"seed": [0, 1, 2]}
    rows = [{"run": n, "config": c.to_dict()} for n, c in exp.runs.items()]
    groups = by_seed({"path": ""}, rows)
    assert list(groups) == [0, 1, 2]
    for s, roles in groups.items():
        got = {k: r["run"] for k, r in roles.items()}
        assert got == {k: f"{n}_seed={s}" for k, n in NAMES.items()}
    cfg = exp.runs["lb_freeze_fc_seed=0"]
    assert cfg.train.freeze == ["fc1", "fc2", "out"]
    assert cfg.train.freeze_epochs == exp.runs["lb_warmup_seed=0"].schedule.warmup.epochs  # frozen as long as warmed up
    assert (cfg.train.batch_size, cfg.optim.lr, cfg.train.epochs) == (512, 0.32, 150)
    assert (exp.runs["sb_seed=1"].train.batch_size, exp.runs["sb_seed=1"].optim.lr) == (32, 0.02)
    paper = load_experiment(ROOT / "presets" / "paper" / "warmup_lb_cifar10.toml")
    assert paper.raw["check"] == "warmup_cca"
    assert {
        k: r["run"]
        for k, r in _roles({"path": ""}, [{"run": n, "config": c.to_dict()} for n, c in paper.runs.items()]).items()
    } == NAMES
    lb = paper.runs["lb_warmup"]
    assert (lb.train.batch_size, lb.optim.lr, lb.schedule.warmup.steps) == (5000, 2.5, 200)
    assert (paper.runs["sb"].train.batch_size, paper.runs["sb"].optim.lr) == (100, 0.05)
    assert paper.runs["lb_freeze_fc"].train.freeze_steps == 200


NAMES = {"sb": "sb", "lb_warmup": "lb_warmup", "lb_no_warmup": "lb_no_warmup", "lb_freeze": "lb_freeze_fc"}


@pytest.mark.slow
def test_cli_prints_the_verdict(tmp_path):
    """The preset shrunk (4 epochs on 400 images, 1-epoch warmup and freeze, 2 seeds), through `heur run`."""
    raw = tomllib.loads((ROOT / "presets" / "warmup_lb.toml").read_text())
    raw["train"].update(epochs=4, eval_every=4)
    raw["data"]["subset"] = 400
    raw["probes"]["cca"].update(every_epochs=1, samples=200)
    raw["grid"]["seed"] = [0, 1]
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
    rows = summ["verdicts"]
    # 8 runs, 2 seed rows, 4 conditions, the finding, the accuracy comparison, the control (if warmup helped or not)
    assert len(rows) == 17, [r["text"] for r in rows]
    conds = [r["data"] for r in rows if "role" in r.get("data", {})]
    assert [c["role"] for c in conds] == ["sb", "lb_warmup", "lb_no_warmup", "lb_freeze"]
    accs = [r["test_accuracy"] for r in summ["runs"] if r["run"].startswith("sb_seed=")]
    assert len(accs) == 2
    assert conds[0]["test_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert conds[0]["test_accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert "warmup finding" in out.stdout and "seed 1:" in out.stdout
    section = out.stdout.split("\nverdict\n")[1].split("summary.json:")[0].splitlines()
    assert len(section) > 17 and max(len(line) for line in section) <= 80  # wrapped, not cut
