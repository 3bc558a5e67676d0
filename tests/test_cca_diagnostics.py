"""The CCA probe's collapse diagnostics: per-layer relative weight change between snapshots and
the fraction of live units, against hand computation (the checkpoints' weights, a forward pass
with plain hooks), with a frozen block (no change over the window), and across a resume."""

import json

import numpy as np
import pytest
import torch
from conftest import train_in_process

from heur.core import runs as R
from heur.core.checkpoint import rebuild_from_checkpoint
from heur.core.config import expand
from heur.core.events import read_events
from heur.core.measure.activations import probe_indices
from heur.core.preflight import check_experiment
from heur.core.probes.cca import live_fraction, relative_change

BASE = {
    "name": "d",
    "device": "cpu",
    "seed": 2,
    "data": {"name": "digits", "subset": 256, "augment": False},
    "model": {"name": "cnn", "channels": [4, 8], "fc": [16, 16]},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 3, "batch_size": 32, "log_every": 4, "checkpoint_every": 1, "freeze": ["fc2"]},
    "probes": {"cca": {"every_epochs": 1, "samples": 100, "method": "cka"}},
}
LAYERS = ["conv1", "conv2", "fc1", "fc2", "out"]


def test_live_fraction_by_hand():
    a = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, -1.0]])  # units 1 and 2 live
    assert live_fraction(a) == pytest.approx(2 / 3)
    maps = torch.zeros(5, 4, 3, 3)
    maps[2, 1, 0, 2] = 0.5  # one position of one sample keeps channel 1 alive
    maps[:, 3] = 1.0
    assert live_fraction(maps) == pytest.approx(0.5)
    assert live_fraction(torch.zeros(3, 0)) is None


def test_relative_change_by_hand():
    w0, w1 = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 7.0])
    assert relative_change(w0, w1) == pytest.approx(3.0 / 5.0)
    assert relative_change(w0, w0) == 0.0
    assert relative_change(torch.zeros(2), w1) is None and relative_change(None, w1) is None


def make_run(tmp_path, overrides=()):
    exp = expand(BASE, list(overrides))
    check_experiment(exp)
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp_path / "runs"))
    return rd


def train(rd, resume=False, stop_at=None):
    return train_in_process(rd, resume, stop_at)[1]


def block_vector(sd, name):
    return torch.cat([v.reshape(-1) for k, v in sd.items() if k.startswith(name + ".")]).float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diag")
    rd = make_run(tmp, ["train.freeze_epochs=1"])
    assert train(rd) == "completed"
    return rd


def test_weight_change_and_live_units_match_hand_computation(trained):
    rd = trained
    doc = json.loads((rd / "cca.json").read_text())
    assert doc["layers"] == LAYERS and doc["steps"] == [0, 8, 16, 24]
    wc, live = np.array(doc["weight_change"], dtype=float), np.array(doc["live_units"], dtype=float)
    assert np.isnan(wc[:, 0]).all()  # no snapshot before the first
    ck = {
        s: torch.load(rd / "checkpoints" / f, weights_only=True)["model"]
        for s, f in ((8, "step_8.pt"), (16, "step_16.pt"))
    }
    ck[24] = torch.load(rd / "checkpoints" / "final.pt", weights_only=True)["model"]
    for i, name in enumerate(LAYERS):
        a, b = block_vector(ck[8], name), block_vector(ck[16], name)
        assert wc[i, 2] == pytest.approx(float((b - a).norm() / a.norm()), rel=1e-5), name
        c = block_vector(ck[24], name)
        assert wc[i, 3] == pytest.approx(float((c - b).norm() / b.norm()), rel=1e-5), name
    assert wc[LAYERS.index("fc2"), 1] == 0.0  # frozen for the first epoch
    assert wc[LAYERS.index("fc1"), 1] > 0 and wc[LAYERS.index("fc2"), 2] > 0
    # live units at the end: a forward pass with plain hooks on the probe set
    model, cfg, bundle = rebuild_from_checkpoint(rd / "checkpoints" / "final.pt")
    idx = probe_indices(bundle.n_train, 100, cfg.seed)
    x = bundle.x_train[torch.as_tensor(idx)]
    outs = {}
    mods = dict(model.named_modules())
    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o)) for n in LAYERS]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    for i, name in enumerate(LAYERS):
        o = outs[name]
        alive = (o != 0).reshape(o.shape[0], o.shape[1], -1).any(dim=2).any(dim=0)
        assert live[i, -1] == pytest.approx(float(alive.float().mean())), name
    assert live[LAYERS.index("out"), -1] == 1.0
    evs = [e for e in read_events(rd / "events.jsonl") if e["kind"] == "cca" and e["against"] == "previous"]
    assert [e["weight_change"] for e in evs] == [list(r) for r in wc[:, 1:].T.tolist()]
    assert [e["live_units"] for e in evs] == [list(r) for r in live[:, 1:].T.tolist()]


def test_diagnostics_survive_a_resume(tmp_path, trained):
    ref = json.loads((trained / "cca.json").read_text())
    rd = make_run(tmp_path, ["train.freeze_epochs=1"])
    assert train(rd, stop_at=12) == "stopped"
    assert train(rd, resume=True) == "completed"
    doc = json.loads((rd / "cca.json").read_text())
    for key in ("weight_change", "live_units"):
        np.testing.assert_allclose(np.array(doc[key], dtype=float), np.array(ref[key], dtype=float), rtol=1e-12)
