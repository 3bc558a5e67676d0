"""``check = "distill"``: the deeper-half gain with its seed spread, and a verdict that can fail."""

import numpy as np
import pytest

from heur.core.verdicts import CHECKS, verdicts

LAYERS = ["conv1", "conv2", "fc1", "out"]


def _summary(tmp_path, per_seed):
    """per_seed: [(closeness of the independent student, of the distilled one)] -> a summary
    whose compare rows name runs with and without [distill] (their config.toml on disk)."""
    rows = []
    for s, (indep, dist) in enumerate(per_seed):
        for name, body in ((f"indep_s{s}", ""), (f"distilled_s{s}", f'[distill]\nteacher = "@teacher_s{s}"\n')):
            (tmp_path / name).mkdir()
            (tmp_path / name / "config.toml").write_text(f'name = "{name}"\n' + body)
        rows.append(
            {
                "run": f"compare_s{s}",
                "state": "completed",
                "method": "cka",
                "against": [f"@indep_s{s}", f"@distilled_s{s}"],
                "layers": [LAYERS, LAYERS],
                "closeness": [indep, dist],
                "agreement": [0.9, 0.95],
            }
        )
    return {"check": "distill", "path": str(tmp_path), "runs": rows}


def _gain(indep, dist):
    d = np.array(dist) - np.array(indep)
    return d[2:].mean() - d[:2].mean()


def test_distill_is_a_check():
    assert "distill" in CHECKS


def test_a_deeper_gain_beyond_its_spread_holds(tmp_path):
    seeds = [
        ([0.9, 0.8, 0.5, 0.6], [0.9, 0.82, 0.7, 0.75]),
        ([0.92, 0.78, 0.55, 0.6], [0.91, 0.8, 0.72, 0.8]),
        ([0.88, 0.8, 0.5, 0.5], [0.9, 0.79, 0.66, 0.7]),
    ]
    rows = verdicts(_summary(tmp_path, seeds))
    final = rows[-1]
    gains = [_gain(i, d) for i, d in seeds]
    mean, sd = np.mean(gains), np.std(gains, ddof=1)
    assert final["ok"] is True and f"+{mean:.4g} ± {sd:.4g}" in final["text"] and "3 seeds" in final["text"]
    assert "Gotmare" in final["text"] and "deeper fc1+out vs shallower conv1+conv2" in final["text"]
    assert [r["run"] for r in rows[:3]] == ["compare_s0", "compare_s1", "compare_s2"]
    assert "agreement with the teacher 0.95 vs 0.9" in rows[0]["text"]
    assert "per layer over 3 seeds" in rows[3]["text"]


@pytest.mark.parametrize(
    "seeds",
    [
        # the distilled student is closer in the shallow layers: the claim fails
        [([0.5, 0.5, 0.5, 0.5], [0.7, 0.7, 0.5, 0.5]), ([0.5, 0.5, 0.5, 0.5], [0.6, 0.7, 0.55, 0.5])] * 2,
        # a positive mean inside its spread: not enough
        [([0.5] * 4, [0.5, 0.5, 0.9, 0.9]), ([0.5] * 4, [0.5, 0.5, 0.3, 0.3]), ([0.5] * 4, [0.5, 0.5, 0.55, 0.55])],
    ],
)
def test_the_verdict_can_fail_and_says_so(tmp_path, seeds):
    final = verdicts(_summary(tmp_path, seeds))[-1]
    gains = [_gain(i, d) for i, d in seeds]
    assert np.mean(gains) - np.std(gains, ddof=1) <= 0
    assert final["ok"] is False and "not reproduced" in final["text"]


def test_one_seed_gives_no_verdict(tmp_path):
    final = verdicts(_summary(tmp_path, [([0.5] * 4, [0.5, 0.5, 0.9, 0.9])]))[-1]
    assert final["ok"] is None and "no spread" in final["text"]


def test_no_compare_run_is_said(tmp_path):
    (row,) = verdicts({"check": "distill", "path": str(tmp_path), "runs": [{"run": "x", "state": "completed"}]})
    assert row["ok"] is None and "no completed compare run" in row["text"]
