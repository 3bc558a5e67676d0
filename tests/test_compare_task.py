"""``task = "compare"``: the run's matrices equal core.measure.similarity on activations captured
here independently; same architectures give layer i vs i; bad [compare] sections are refused."""

import json
import os

import numpy as np
import pytest
import torch

from heur.core import compare_task as CT
from heur.core import runs as R
from heur.core.checkpoint import model_from_checkpoint
from heur.core.config import expand
from heur.core.data import load_data
from heur.core.errors import ConfigError
from heur.core.events import read_events
from heur.core.measure.similarity import similarity
from heur.core.preflight import check_experiment
from heur.core.train import Run

BASE = {
    "name": "cmp",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "subset": 400, "augment": False},
    "model": {"name": "cnn", "channels": [4, 8], "width": 16},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1, "batch_size": 64, "log_every": 5},
}


def exp_with(compare, extra=()):
    variants = [
        {"name": "teacher", "set": {"model.channels": [8, 16], "model.width": 32}},
        {"name": "s1", "set": {}},
        {"name": "s2", "set": {"seed": 1}},
        *extra,
        {"name": "cmp", "set": {"task": "compare", "compare": compare}},
    ]
    return {**BASE, "variant": variants}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = {k: v for k, v in BASE.items()}
    exp = expand({**base, "variant": exp_with({"checkpoints": ["@teacher", "@s1"]})["variant"][:3]}, [])
    d = R.create_experiment(exp, tmp_path_factory.mktemp("runs"))
    for n in exp.runs:
        r = Run(d / n)
        r.status.update(state="running", pid=os.getpid(), force=True)
        r.setup()
        r.finish(*r.train())
    return d


def _compare_run(d, compare, name="cmp"):
    """A compare run written into the trained experiment, run in this process."""
    from heur.core.config import dumps_toml

    cfg = expand({"name": name, "seed": 3, "device": "cpu", "task": "compare", "compare": compare}, []).runs[name]
    rd = d / name
    rd.mkdir(exist_ok=True)
    (rd / "config.toml").write_text(dumps_toml(cfg.to_dict()))
    R.write_json_atomic(rd / "status.json", {"state": "queued", "name": name, "task": "compare"})
    assert CT.main([str(rd)]) == 0, (rd / "status.json").read_text()
    return rd


def _acts(d, run, x):
    from heur.core.measure.activations import capture

    model = model_from_checkpoint(d / run / "checkpoints" / "final.pt")[0]
    return capture(model, x, "auto"), model


def _probe(d, samples, seed):
    from heur.core.measure.activations import probe_indices

    cfg = R.read_run_config(d / "teacher")
    data = load_data(cfg)
    idx = probe_indices(int(data.x_test.shape[0]), samples, seed)
    return data.x_test[torch.as_tensor(idx)]


def test_the_matrix_equals_similarity_on_the_captured_activations(trained):
    d = trained
    rd = _compare_run(d, {"checkpoints": ["@teacher", "@s1", "@s2"], "method": "cka", "samples": 200})
    doc = json.loads((rd / "compare.json").read_text())
    x = _probe(d, 200, seed=3)
    acts_t, teacher = _acts(d, "teacher", x)
    assert len(doc["pairs"]) == 2 and doc["samples"] == 200
    for pair, run in zip(doc["pairs"], ("s1", "s2")):
        acts_s, student = _acts(d, run, x)
        m = pair["matrix"]
        assert m["layers_a"] == ["conv1", "conv2", "fc1", "out"] == m["layers_b"]
        want = [
            [similarity(acts_t[p], acts_s[q], "cka", conv="mean", dtype="float64") for q in m["layers_b"]]
            for p in m["layers_a"]
        ]
        np.testing.assert_allclose(np.array(m["cka"], dtype=float), np.array(want), rtol=1e-12, atol=1e-12)
        assert pair["closeness"] == [m["cka"][i][i] for i in range(4)]  # the layer of the same name
        with torch.no_grad():
            agree = (teacher(x).argmax(1) == student(x).argmax(1)).double().mean().item()
        assert pair["agreement"] == pytest.approx(agree)
    res = R.read_status(rd).result
    assert res["closeness"] == [p["closeness"] for p in doc["pairs"]] and res["against"] == ["@s1", "@s2"]
    evs = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "compare"]
    assert [e["b"] for e in evs] == ["@s1", "@s2"] and evs[0]["matrix"] == doc["pairs"][0]["matrix"]["cka"]


def test_same_architecture_is_layer_i_vs_i_with_svcca_on_flattened_maps(trained):
    d = trained
    rd = _compare_run(d, {"checkpoints": ["@s1", "@s2"], "method": "svcca", "conv": "flatten", "samples": 100})
    (pair,) = json.loads((rd / "compare.json").read_text())["pairs"]
    assert pair["matrix"] is None and [r["layer"] for r in pair["layers"]] == ["conv1", "conv2", "fc1", "out"]
    x = _probe(d, 100, seed=3)
    (a, _), (b, _) = _acts(d, "s1", x), _acts(d, "s2", x)
    for row in pair["layers"]:
        want = similarity(a[row["layer"]], b[row["layer"]], "svcca", conv="flatten", dtype="float64")
        assert row["svcca"] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert "pwcca" not in pair["layers"][0]  # only the measure asked for


def test_closeness_is_the_diagonal_for_one_layer_list_else_the_most_similar_reference_layer():
    same = {
        "layers": None,
        "matrix": {"layers_a": ["c1", "fc"], "layers_b": ["c1", "fc"], "cka": [[0.2, 0.9], [0.5, 0.4]]},
    }
    assert CT.closeness(same, "cka") == (["c1", "fc"], [0.2, 0.4])
    # another depth: names shared (conv1, fc) do not mean the same place
    deep = {"layers_a": ["conv1", "conv2", "conv3", "fc"], "layers_b": ["conv1", "conv2", "fc"]}
    deep["cka"] = [[0.9, 0.3, 0.1], [0.6, 0.7, None], [0.2, 0.8, 0.5], [0.1, 0.2, 0.6]]
    assert CT.closeness({"layers": None, "matrix": deep}, "cka") == (["conv1", "conv2", "fc"], [0.9, 0.8, 0.6])


@pytest.mark.parametrize(
    "compare, key, text",
    [
        ({"checkpoints": ["@teacher"]}, "compare.checkpoints", "at least 2"),
        ({"checkpoints": ["@teacher", "@nobody"]}, "compare.checkpoints[1]", "no run named 'nobody'"),
        ({"checkpoints": ["@teacher", "no/such.pt"]}, "compare.checkpoints[1]", "no such checkpoint file"),
        ({"checkpoints": ["@teacher", "@s1"], "method": "cca"}, "compare.method", "svcca"),
        ({"checkpoints": ["@teacher", "@s1"], "layers": ["fc9"]}, "compare.layers", "unknown layer"),
        ({"checkpoints": ["@teacher", "@cmp2"]}, "compare.checkpoints[1]", "never writes"),
    ],
)
def test_bad_compare_sections_are_refused_with_the_key(compare, key, text):
    extra = [{"name": "cmp2", "set": {"task": "compare", "compare": {"checkpoints": ["@s1", "@s2"]}}}]
    raw = exp_with(compare, extra)
    with pytest.raises(ConfigError) as e:
        check_experiment(expand(raw, []))
    assert e.value.key == key and text in str(e.value), str(e.value)


def test_a_compare_run_needs_only_its_compare_section(tmp_path):
    # no [optim] or [train] needed; those a preset's base writes for its train runs are ignored
    ok = {"name": "c", "task": "compare", "compare": {"checkpoints": ["a.pt", "b.pt"]}}
    with pytest.raises(ConfigError) as e:  # the paths are checked, not the missing sections
        check_experiment(expand(ok, []))
    assert e.value.key == "compare.checkpoints[0]" and "no such checkpoint file" in e.value.message
    with pytest.raises(ConfigError) as e:
        check_experiment(expand({**ok, "distill": {"teacher": "a.pt"}}, []))
    assert e.value.key == "distill" and "does not use [distill]" in e.value.message
    with pytest.raises(ConfigError) as e:
        check_experiment(expand({"name": "c", "task": "compare"}, []))
    assert e.value.key == "compare" and "needs a [compare] section" in e.value.message


def test_a_missing_checkpoint_at_run_time_fails_the_run_with_exit_2_and_the_key(tmp_path, capsys):
    rd = tmp_path / "exp" / "cmp"
    rd.mkdir(parents=True)
    (rd / "config.toml").write_text(
        'name = "cmp"\ntask = "compare"\n[compare]\ncheckpoints = ["@a", "@b"]\n'  # a and b never ran
    )
    assert CT.main([str(rd)]) == 2
    st = R.read_status(rd)
    assert st.state == "failed" and "compare.checkpoints[0]: no such checkpoint file" in st.reason
    assert "heur: error:" in capsys.readouterr().err
    assert read_events(rd / "events.jsonl")[-1]["state"] == "failed"


def test_sigterm_ends_a_compare_run_stopped(tmp_path, monkeypatch):
    import signal

    rd = tmp_path / "exp" / "cmp"
    rd.mkdir(parents=True)
    (rd / "config.toml").write_text('name = "cmp"\ntask = "compare"\n[compare]\ncheckpoints = ["x.pt", "y.pt"]\n')

    def stopped(*a, **k):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(CT, "run_compare", stopped)
    try:
        assert CT.main([str(rd)]) == 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert R.read_status(rd).state == "stopped"
