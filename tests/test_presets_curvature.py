"""The theory-checking presets end to end through the CLI, and core.verdicts on hand-made
summaries (including ones where the theory must be reported as failing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heur.core.config import load_experiment
from heur.core.verdicts import all_ok, verdicts

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("catapult_uv", "catapult_mlp", "warmup_sharpness", "gi_adam")


# --------------------------------------------------------------------------- hand-made summaries


def _row(lr_ntk, state, phase, predicted, lam=None, thr=None, edge=4.0):
    r = {
        "run": f"lr_ntk={lr_ntk:g}",
        "state": state,
        "params": {"optim.lr_ntk": lr_ntk},
        "phase": phase,
        "predicted_phase": predicted,
        "lr_ntk_max": edge,
        "lambda0": 2.0,
    }
    if lam is not None:
        r.update(sharpness_final=lam, sharpness_threshold=thr)
    return r


def _catapult_summary(rows):
    return {
        "experiment": "x",
        "path": "",
        "grid": {"optim.lr_ntk": [r["params"]["optim.lr_ntk"] for r in rows]},
        "check": "catapult",
        "runs": rows,
    }


def test_catapult_verdicts_all_hold():
    rows = [
        _row(1.0, "completed", "lazy", "lazy", 2.0, 4.0),
        _row(3.0, "completed", "catapult", "catapult", 0.5, 4 / 3),
        _row(5.0, "diverged", "diverged", "diverged", 2.0, 0.8),
    ]
    v = verdicts(_catapult_summary(rows))
    assert [x["ok"] for x in v] == [True, True, True, True]
    assert "observed catapult, predicted catapult (between 2 and the edge's band 3.81-4.2) \u2713" in v[1]["text"]
    assert "final sharpness 0.5 (lambda0 2) < 2/eta 1.333 \u2713" in v[1]["text"]
    assert "sharpness" not in v[2]["text"]  # a diverged run's last sharpness means nothing
    assert v[-1]["run"] is None and v[-1]["text"].startswith(
        "divergence edge between lr_ntk 3 (largest stable) and 5 (first diverged); theory: 4 for the uv model"
    )
    assert "predicted catapult (between 2 and the edge's band 3.81-4.2)" in v[1]["text"]
    assert all_ok(v) is True


def test_catapult_verdicts_fail_on_wrong_phase_and_on_sharpness_above_the_edge():
    rows = [
        _row(1.0, "completed", "catapult", "lazy", 1.0, 4.0),  # phase wrong
        _row(3.0, "completed", "catapult", "catapult", 2.0, 4 / 3),
    ]  # ended above 2/eta
    v = verdicts(_catapult_summary(rows))
    assert v[0]["ok"] is False and "predicted lazy (below 2) \u2717" in v[0]["text"]
    assert v[1]["ok"] is False and "final sharpness 2 (lambda0 2) >= 2/eta 1.333 \u2717" in v[1]["text"]
    # nothing diverged: the edge 4 is not bracketed
    assert v[-1]["ok"] is False and "none diverged up to lr_ntk 3" in v[-1]["text"]
    assert all_ok(v) is False


def test_catapult_edge_uv_exact_and_relu_about_12():
    uv = [
        _row(c, "diverged" if c > 3.5 else "completed", "diverged" if c > 3.5 else "lazy", None)
        for c in (1.0, 3.5, 4.5)
    ]
    assert verdicts(_catapult_summary(uv))[-1]["ok"] is True
    early = [
        _row(c, "diverged" if c > 2 else "completed", "diverged" if c > 2 else "lazy", None) for c in (1.0, 2.0, 3.0)
    ]  # diverges at 3 < 4: the theory fails
    assert verdicts(_catapult_summary(early))[-1]["ok"] is False
    relu = [
        _row(c, "diverged" if c > 10 else "completed", "diverged" if c > 10 else "catapult", None, edge=12.0)
        for c in (4.0, 10.0, 11.0)
    ]
    last = verdicts(_catapult_summary(relu))[-1]
    assert last["ok"] is True
    assert "between lr_ntk 10 (largest stable) and 11 (first diverged); paper: about 12" in last["text"]
    relu_bad = [
        _row(c, "diverged" if c > 2 else "completed", "diverged" if c > 2 else "lazy", None, edge=12.0)
        for c in (1.0, 2.0, 4.0)
    ]
    assert verdicts(_catapult_summary(relu_bad))[-1]["ok"] is False


def test_check_is_inferred_from_phases_and_absent_otherwise():
    s = _catapult_summary([_row(1.0, "completed", "lazy", "lazy")])
    s["check"] = None
    assert verdicts(s)[0]["ok"] is True
    assert verdicts({"runs": [{"run": "a", "state": "completed", "train_loss": 1.0}]}) == []


def _warm_row(lr, w, diverged, lam=None, thr=None):
    r = {
        "run": f"lr_ntk={lr:g}_steps={w:g}",
        "state": "diverged" if diverged else "completed",
        "params": {"optim.lr_ntk": lr, "schedule.warmup.steps": w},
    }
    if lam is not None:
        r.update(sharpness_final=lam, sharpness_threshold=thr)
    return r


def test_warmup_verdicts():
    rows = [
        _warm_row(4, 0, False, 1.8, 2.0),
        _warm_row(4, 100, False, 2.5, 2.0),
        _warm_row(16, 0, True),
        _warm_row(16, 100, False, 0.4, 0.5),
        _warm_row(64, 0, True),
        _warm_row(64, 100, True),
    ]
    v = verdicts({"check": "warmup", "path": "", "runs": rows})
    texts = [x["text"] for x in v]
    assert "target lr_ntk 16: diverged without warmup, stable with warmup >= 100" in texts
    assert "target lr_ntk 64: diverged with every warmup (up to 100)" in texts
    assert v[-2]["ok"] is True and "4 with warmup 0, 16 with warmup 100" in v[-2]["text"]
    assert v[-1]["ok"] is True and "3/3" in v[-1]["text"]  # no lambda0 in the rows: every stable run counts
    assert "within 0.667-1.5 x 2/eta" in v[-1]["text"] and "measured 0.8-1.25 x 2/eta" in v[-1]["text"]
    # the lower bound: a sharpness far below 2/eta is a flat region, not the edge of stability
    rows[3] = _warm_row(16, 100, False, 0.1, 0.5)
    v = verdicts({"check": "warmup", "path": "", "runs": rows})
    assert v[-1]["ok"] is False and "2/3" in v[-1]["text"]
    # the end of warmup: checked against the target lr's edge, with its own line
    rows[3] = _warm_row(16, 100, False, 0.4, 0.5)
    rows[3].update(sharpness_warmup_end=0.55, sharpness_warmup_end_threshold=0.5)
    rows[1].update(sharpness_warmup_end=5.0, sharpness_warmup_end_threshold=2.0)
    v = verdicts({"check": "warmup", "path": "", "runs": rows})
    assert v[-2]["ok"] is False and "at the end of warmup" in v[-2]["text"] and "1/2" in v[-2]["text"]
    rows[1]["sharpness_warmup_end"] = 2.2
    assert verdicts({"check": "warmup", "path": "", "runs": rows})[-2]["ok"] is True
    # warmup that does not help, and a stable run far above its edge: both fail
    rows = [
        _warm_row(4, 0, False),
        _warm_row(4, 100, False, 3.5, 2.0),
        _warm_row(16, 0, True),
        _warm_row(16, 100, True),
    ]
    v = verdicts({"check": "warmup", "path": "", "runs": rows})
    assert v[-2]["ok"] is False and v[-1]["ok"] is False
    # with lambda0: only runs the init could not take count, and the drop is reported
    rows = [_warm_row(4, 0, False, 1.0, 2.0), _warm_row(16, 100, False, 0.6, 0.5)]
    for r in rows:
        r["lambda0"] = 1.2
    v = verdicts({"check": "warmup", "path": "", "runs": rows})
    assert v[-1]["ok"] is True and "1/1" in v[-1]["text"] and "up to 2x" in v[-1]["text"]


def _adam_row(name, opt, warm, loss, state="completed", shape="linear", hist=None):
    cfg = {
        "optim": {"name": opt, "betas": [0.9, 0.99]},
        "schedule": {"warmup": {"steps": warm, "shape": shape}} if warm else {},
    }
    row = {"run": name, "state": state, "config": cfg, "train_loss": loss, "test_accuracy": 0.9, "base_lr": 0.1}
    if hist is not None:
        row["preconditioned_history"] = hist
    return row


def _gi_rows(adam=(1.5, 1.2, 1.8), warm=(0.1, 0.12, 0.09), matched=(0.05, 0.06, 0.04), gi=(0.2, 0.3, 0.25)):
    thr = 3.8 / (0.1 * 0.1)  # Adam's edge at lr 0.1, beta1 0.9: 380
    rows = []
    for i in range(3):
        rows += [
            _adam_row(f"adam_{i}", "adam", 0, adam[i], hist=[[0, 3800.0, thr], [5, 1900.0, thr], [50, 100.0, thr]]),
            _adam_row(f"adam_warmup_{i}", "adam", 50, warm[i], hist=[[0, 3800.0, None], [5, 1900.0, 10 * thr]]),
            _adam_row(f"adam_gi_warmup_{i}", "adam", 300, matched[i], shape="adam_bias"),
            _adam_row(f"gi_adam_{i}", "gi_adam", 0, gi[i], hist=[[0, 380.0, thr], [5, 190.0, thr]]),
        ]
    return rows


def test_gi_adam_verdicts_over_seeds_with_margin_and_mechanism():
    v = verdicts({"check": "gi_adam", "path": "", "runs": _gi_rows()})
    texts = [x["text"] for x in v]
    assert texts[0].startswith("Adam, no warmup (3 seeds): final train loss 1.5 / 1.2 / 1.8 (median 1.5)")
    assert "at init 10x, max over steps 1-20 5x" in texts[0]  # 3800 / 380, 1900 / 380
    assert "at init 10x, max over steps 1-20 0.5x" in texts[1]  # warmup: lr 0 at step 0 -> base lr's edge
    by = {t.split(" (")[0]: x for t, x in zip(texts, v)}
    assert by["warmup helps Adam"]["ok"] is True and "0.1 vs 1.5" in by["warmup helps Adam"]["text"]
    assert by["GI-Adam without warmup beats Adam without warmup"]["ok"] is True
    gi_vs = [x for x in v if x["text"].startswith("GI-Adam vs Adam + GI-Adam's warmup")][0]
    assert gi_vs["ok"] is None and "Adam with GI-Adam's warmup does better" in gi_vs["text"]
    mech = [x for x in v if x["text"].startswith("mechanism")]
    assert (
        [x["ok"] for x in mech] == [True, True]
        and "10x for Adam" in mech[0]["text"]
        and "1x for GI-Adam" in mech[0]["text"]
    )
    # overlapping seeds: no margin, the claim fails even though the medians differ
    v = verdicts({"check": "gi_adam", "path": "", "runs": _gi_rows(gi=(0.2, 1.3, 0.25))})
    assert [x for x in v if x["text"].startswith("GI-Adam without warmup beats")][0]["ok"] is False
    # medians less than 2x apart: fails too
    v = verdicts({"check": "gi_adam", "path": "", "runs": _gi_rows(gi=(1.0, 1.1, 1.0))})
    assert [x for x in v if x["text"].startswith("GI-Adam without warmup beats")][0]["ok"] is False
    # a diverged GI-Adam seed
    rows = _gi_rows()
    rows[3] = _adam_row("gi_adam_0", "gi_adam", 0, None, state="diverged")
    v = verdicts({"check": "gi_adam", "path": "", "runs": rows})
    assert [x for x in v if x["text"].startswith("GI-Adam without warmup beats")][0]["ok"] is False
    assert "1 diverged" in [x for x in v if x["text"].startswith("GI-Adam, no warmup")][0]["text"]


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    exp = load_experiment(ROOT / "presets" / f"{name}.toml")
    assert len(exp.runs) >= 3
    assert all(cfg.check is not None for cfg in exp.runs.values())


def test_catapult_uv_end_to_end(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "heur.cli.main",
        "run",
        str(ROOT / "presets" / "catapult_uv.toml"),
        "--runs-dir",
        str(tmp_path),
        "--set",
        "train.epochs=150",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stdout + p.stderr
    (exp_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    summary = json.loads((exp_dir / "summary.json").read_text())
    by_lr = {r["params"]["optim.lr_ntk"]: r for r in summary["runs"]}
    for c in (0.5, 1.0):
        assert by_lr[c]["phase"] == "lazy" and by_lr[c]["state"] == "completed"
    assert by_lr[3.0]["phase"] == "catapult" and by_lr[3.0]["catapults"] == 1
    # 2/eta with eta = 3 / lambda0; after the catapult the sharpness ends below it
    assert by_lr[3.0]["sharpness_threshold"] == pytest.approx(2 * by_lr[3.0]["lambda0"] / 3, rel=1e-6)
    assert by_lr[3.0]["sharpness_final"] < by_lr[3.0]["sharpness_threshold"]
    assert by_lr[6.0]["state"] == "diverged" and by_lr[6.0]["phase"] == "diverged"
    v = summary["verdicts"]
    assert len(v) == len(summary["runs"]) + 1 and all(x["ok"] for x in v)
    assert "verdict" in p.stdout
    assert "lr_ntk=3: observed catapult, predicted catapult (between 2 and the edge's band 3.81-4.2) \u2713" in p.stdout
    assert (
        "divergence edge between lr_ntk 3.5 (largest stable) and 4.5 (first diverged); theory: 4 for the uv model"
        in (p.stdout)
    )


def test_relu_edge_is_fuzzy_near_12_only():
    rows = [
        _row(11.0, "diverged", "diverged", "catapult", edge=12.0),
        _row(5.0, "diverged", "diverged", "catapult", edge=12.0),
    ]
    v = verdicts(_catapult_summary(rows))
    assert (
        v[0]["ok"] is True and "predicted catapult or diverged (within the edge's band 8-18 around 12)" in v[0]["text"]
    )
    assert v[1]["ok"] is False and "predicted catapult (between 2 and the edge's band 8-18) \u2717" in v[1]["text"]


def test_catapult_edge_comes_from_the_run_config():
    rows = []
    for c in (3.0, 4.5):
        r = _row(c, "diverged" if c > 4 else "completed", "diverged" if c > 4 else "catapult", None)
        del r["lr_ntk_max"]
        r["config"] = {"model": {"name": "uv"}, "optim": {"lr_ntk": c}}
        rows.append(r)
    assert "theory: 4 for the uv model" in verdicts(_catapult_summary(rows))[-1]["text"]
    for r in rows:
        r["config"]["model"]["name"] = "mlp"
    assert "paper: about 12" in verdicts(_catapult_summary(rows))[-1]["text"]
    # the edge follows the activation, not the model's name: a linear MLP stable at 4.5 and
    # diverged at 6 agrees with 4, and would fail against "about 12"
    rows = []
    for c in (1.0, 3.0, 4.5, 6.0):
        div = c > 5
        r = _row(c, "diverged" if div else "completed", "diverged" if div else ("lazy" if c < 2 else "catapult"), None)
        del r["lr_ntk_max"]
        r["config"] = {"model": {"name": "mlp", "activation": "linear"}, "optim": {"lr_ntk": c}}
        rows.append(r)
    v = verdicts(_catapult_summary(rows))
    assert all(x["ok"] for x in v), v
    assert "theory: 4 for linear networks" in v[-1]["text"] and "band 2.67-6" in v[-1]["text"]
    for r in rows:
        r["config"]["model"]["activation"] = "relu"
    v = verdicts(_catapult_summary(rows))
    assert v[-1]["ok"] is False and v[3]["ok"] is False  # 6 is below the ReLU band 8-18
    # no theory for tanh: no prediction above 2, and the edge line says so without a mark
    for r in rows:
        r["config"]["model"]["activation"] = "tanh"
    v = verdicts(_catapult_summary(rows))
    assert v[0]["ok"] is True and v[2]["ok"] is None and "no theory of the divergence edge for tanh" in v[2]["text"]
    assert v[-1]["ok"] is None and "no theory predicts it for tanh" in v[-1]["text"]


def test_check_key_is_validated():
    from heur.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_experiment(ROOT / "presets" / "catapult_uv.toml", ["check=catapults"])
    assert e.value.key == "check" and "catapult" in e.value.message
