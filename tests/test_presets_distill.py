"""presets/distill.toml: what it sets up (per seed a wider teacher, two students of one
architecture and seed, a compare run), and the whole pipeline through the CLI."""

import json
from pathlib import Path

import pytest
from conftest import heur

from heur.core.launch import prepare
from heur.core.models import meta_model

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "presets" / "distill.toml"


def _params(cfg):
    return sum(p.numel() for p in meta_model(cfg).parameters())


def test_the_preset_pairs_students_by_seed_under_a_wider_teacher():
    exp = prepare(PRESET)
    seeds = sorted({cfg.seed for cfg in exp.runs.values()})
    assert len(seeds) >= 3
    for s in seeds:
        t, i, d, c = (exp.runs[f"{k}_s{s}"] for k in ("teacher", "indep", "distilled", "compare"))
        assert t.seed == i.seed == d.seed == s
        assert i.model == d.model and _params(t) > 2 * _params(i)
        assert i.distill is None and d.distill.teacher == f"@teacher_s{s}"
        assert c.task == "compare" and c.compare.checkpoints == [f"@teacher_s{s}", f"@indep_s{s}", f"@distilled_s{s}"]
        assert c.compare.method == "cka"  # the teacher's layers have more neurons than the CCA family can use here
    assert {cfg.check for cfg in exp.runs.values()} == {"distill"}


@pytest.mark.slow
def test_the_distill_pipeline_runs_end_to_end_and_prints_its_verdict(tmp_path):
    """One seed of the preset (its four runs), one epoch: the pipeline, not the finding (the full
    preset's numbers are in the README)."""
    text = PRESET.read_text()
    head, _, body = text.partition("[[variant]]")
    seed0 = [v for v in body.split("[[variant]]") if "_s0" in v]
    preset = tmp_path / "distill_s0.toml"
    preset.write_text(head + "".join("[[variant]]" + v for v in seed0))
    runs = tmp_path / "runs"
    r = heur("run", str(preset), "--runs-dir", str(runs), "--set", "train.epochs=1", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = " ".join(r.stdout.split())  # verdict lines wrap at 80 columns
    assert "verdict" in out and "compare_s0: cka distilled - independent: conv1" in out
    assert "1 seed(s), no spread to judge by" in out
    (exp_dir,) = runs.iterdir()
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert summary["verdicts"][-1]["ok"] is None
    doc = json.loads((exp_dir / "compare_s0" / "compare.json").read_text())
    assert [p["against"] for p in doc["pairs"]] == ["@indep_s0", "@distilled_s0"]
    assert doc["method"] == "cka" and doc["samples"] == 359


def test_the_paper_twin_expands_and_its_references_and_sections_check():
    from heur.core.config import load_experiment
    from heur.core.pipeline import check_references, check_task
    from heur.core.preflight import check_task_sections

    exp = load_experiment(ROOT / "presets" / "paper" / "distill_cifar10.toml")  # CIFAR-10 is not here
    order = check_references(exp)
    assert order.index("teacher_s0") < order.index("distilled_s0") < order.index("compare_s0")
    for cfg in exp.runs.values():
        check_task(cfg)
        check_task_sections(cfg, exp)
    t, s = exp.runs["teacher_s1"], exp.runs["distilled_s1"]
    assert (t.model.name, s.model.name, s.distill.teacher) == ("vgg16", "vgg11", "@teacher_s1")
    assert exp.runs["compare_s1"].compare.method == "svcca" and {c.check for c in exp.runs.values()} == {"distill"}
