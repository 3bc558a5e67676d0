"""The CCA probe through real (short) training runs: snapshots on disk hold the model's own
activations, the live and final events parse, cca.json's matrix is right against an independent
CKA formula, the probe leaves the trajectory alone, a stopped + resumed run gives the same
matrix, and bad sections fail before a run starts."""

import json

import numpy as np
import pytest
import torch
from conftest import train_in_process

from heur.core import runs as R
from heur.core.checkpoint import rebuild_from_checkpoint
from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.events import read_events
from heur.core.measure.activations import probe_indices
from heur.core.preflight import check_experiment
from heur.core.probes.cca import snapshot_steps, summary_fields

BASE = {
    "name": "t",
    "device": "cpu",
    "seed": 3,
    "data": {"name": "digits", "subset": 256, "augment": False},
    "model": {"name": "cnn", "channels": [4, 8], "width": 16},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 4, "batch_size": 32, "log_every": 4},
    "probes": {"cca": {"every_epochs": 1, "samples": 120, "method": "cka"}},
}
LAYERS = ["conv1", "conv2", "fc1", "out"]


def make_run(tmp_path, overrides=()):
    exp = expand(BASE, list(overrides))
    check_experiment(exp)
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp_path / "runs"))
    return rd


def train(rd, resume=False, stop_at=None):
    return train_in_process(rd, resume, stop_at)


def cka(x, y):  # linear CKA, straight from the definition, on float64 centred data
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def load(rd, rel):
    with np.load(rd / rel) as z:
        return {str(n): z[f"a{i}"].astype(np.float64) for i, n in enumerate(z["layers"])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rd = make_run(tmp_path_factory.mktemp("cca"))
    r, state = train(rd)
    assert state == "completed"
    return rd, r


def test_events_and_matrix(trained):
    rd, r = trained
    evs = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "cca"]
    live = [e for e in evs if e["against"] == "previous"]
    assert [(e["epoch_a"], e["epoch_b"]) for e in live] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(e["layers"] == LAYERS and e["method"] == "cka" and len(e["values"]) == 4 for e in live)
    assert all(0 <= v <= 1 for e in live for v in e["values"])
    (fin,) = [e for e in evs if e["against"] == "final"]
    doc = json.loads((rd / "cca.json").read_text())
    assert doc["layers"] == LAYERS and doc["epochs"] == [0, 1, 2, 3, 4] and doc["steps"] == [0, 8, 16, 24, 32]
    m = np.array(doc["against_final"], dtype=float)
    assert m.shape == (4, 5) and fin["matrix"] == doc["against_final"]
    assert np.all((m >= 0) & (m <= 1)) and np.allclose(m[:, -1], 1, atol=1e-9)
    # every entry against the closed form, from the stored snapshots
    snaps = [load(rd, f"cca/epoch_{e}.npz") for e in range(5)]
    for i, name in enumerate(LAYERS):
        for j in range(5):
            assert m[i, j] == pytest.approx(cka(snaps[j][name], snaps[-1][name]), abs=1e-6)
        for j in range(1, 5):  # the live values: each epoch against the one before
            assert live[j - 1]["values"][i] == pytest.approx(cka(snaps[j - 1][name], snaps[j][name]), abs=1e-6)
    assert np.all(m[:, :-1] < 1 - 1e-4)  # it did train


def test_snapshot_holds_the_final_models_activations(trained):
    rd, r = trained
    model, cfg, bundle = rebuild_from_checkpoint(rd / "checkpoints" / "final.pt")
    idx = torch.as_tensor(probe_indices(bundle.n_train, 120, cfg.seed))
    x = bundle.x_train[idx]
    model.eval()
    with torch.no_grad():  # the blocks by hand: pooled conv maps, fc1 after its ReLU, logits
        c1 = model.conv1(x)
        c2 = model.conv2(c1)
        f1 = model.fc1(c2.flatten(1))
        out = model.out(f1)
    want = {"conv1": c1.mean((2, 3)), "conv2": c2.mean((2, 3)), "fc1": f1, "out": out}
    got = load(rd, "cca/epoch_4.npz")
    for k, v in want.items():
        assert got[k].shape == (120, v.shape[1])
        np.testing.assert_allclose(got[k], v.half().double().numpy(), rtol=2e-3, atol=2e-3)


def test_result_fields(trained):
    rd, _ = trained
    res = R.read_status(rd).result
    doc = json.loads((rd / "cca.json").read_text())
    m = np.array(doc["against_final"])
    assert res["cca_deep_early"] == pytest.approx(m[2:, 1:3].mean())  # fc1, out over epochs 1, 2
    assert res["cca_shallow_early"] == pytest.approx(m[:2, 1:3].mean())
    assert res["cca_deep_settle"] in doc["epochs"]


def test_probe_leaves_training_alone_and_resume_gives_the_same_matrix(tmp_path, trained):
    rd_ref, _ = trained
    ref = json.loads((rd_ref / "cca.json").read_text())
    w_ref = torch.load(rd_ref / "checkpoints" / "final.pt", weights_only=True)["model"]
    # without the probe: the same weights
    exp = expand({k: v for k, v in BASE.items() if k != "probes"}, [])
    (rd0,) = R.run_dirs(R.create_experiment(exp, tmp_path / "noprobe"))
    train(rd0)
    w0 = torch.load(rd0 / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(w0[k], w_ref[k]) for k in w0)
    # stopped at step 20 (epoch 2.5), resumed: the same snapshots and matrix
    rd = make_run(tmp_path / "resumed")
    _, state = train(rd, stop_at=20)
    assert state == "stopped"
    ck = torch.load(rd / "checkpoints" / "step_20.pt", weights_only=True)  # plain values only
    assert [s["step"] for s in ck["probes"]["cca"]["snapshots"]] == [0, 8, 16]
    _, state = train(rd, resume=True)
    assert state == "completed"
    doc = json.loads((rd / "cca.json").read_text())
    assert doc["steps"] == ref["steps"]
    np.testing.assert_allclose(np.array(doc["against_final"]), np.array(ref["against_final"]), atol=1e-9)
    np.testing.assert_allclose(
        np.array(doc["against_previous"][0][1:]), np.array(ref["against_previous"][0][1:]), atol=1e-9
    )


@pytest.mark.parametrize(
    "over,key",
    [
        (['probes.cca.layers=["conv1", "nope"]'], "probes.cca.layers"),
        (['probes.cca.method="svcca"', "probes.cca.samples=10"], "probes.cca.samples"),  # fc1 has 16 neurons
        (['probes.cca.method="pwcca"', "probes.cca.samples=40", 'probes.cca.conv="flatten"'], None),  # 40*16 rows
    ],
)
def test_preflight(over, key):
    exp = expand(BASE, over)
    if key is None:
        check_experiment(exp)
        return
    with pytest.raises(ConfigError) as e:
        check_experiment(exp)
    assert e.value.key == key
    if key == "probes.cca.layers":
        assert "'nope'" in str(e.value) and "conv1" in str(e.value)


def test_snapshot_steps_and_summary_fields():
    assert snapshot_steps(1, 8, 32) == [0, 8, 16, 24, 32]
    assert snapshot_steps(1.5, 4, 20) == [0, 6, 12, 18, 20]
    assert snapshot_steps(10, 4, 20) == [0, 20]
    m = [
        [0.1, 0.2, 0.3, 0.95, 1.0],  # shallow
        [0.5, 0.6, 0.7, 0.8, 1.0],  # shallow (middle of 5 layers: neither half)
        [0.9, 0.9, 0.9, 0.9, 1.0],
        [0.0, 0.4, 0.92, 0.97, 1.0],  # deep
        [0.2, 0.6, 0.89, 0.91, 1.0],
    ]  # deep
    f = summary_fields(["a", "b", "c", "d", "e"], [0, 1, 2, 3, 4], m)
    assert f["cca_deep_early"] == pytest.approx(np.mean([0.4, 0.92, 0.6, 0.89]))
    assert f["cca_shallow_early"] == pytest.approx(np.mean([0.2, 0.3, 0.6, 0.7]))
    assert f["cca_deep_settle"] == 2  # deep mean: 0.1, 0.5, 0.905, 0.94, 1


def test_similarity_of_non_finite_activations_is_none():
    # a diverged run's activations: the probe records no value rather than failing the run
    from heur.core import config
    from heur.core.probes.cca import CcaProbe

    probe = CcaProbe(config.CcaProbe())
    a = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float16)
    assert probe._sim(a, a) == pytest.approx(1.0)
    for bad in (np.nan, np.inf):
        b = a.copy()
        b[3, 1] = bad
        assert probe._sim(a, b) is None and probe._sim(b, a) is None
