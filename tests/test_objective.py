"""The objective seam: Supervised against torch's own losses, the registry, and an objective
defined only here that plugs into the loop (its loss, its trained tensor, its eval metric, its
checkpointed state) with a stop + resume that stays bit-identical to the uninterrupted run."""

import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from heur.core import objective as O
from heur.core import runs as R
from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.events import read_events
from heur.core.probes import Probe
from heur.core.train import Run

BASE = {
    "name": "t",
    "device": "cpu",
    "seed": 0,
    "description": "tempered",
    "data": {"name": "digits", "subset": 256},
    "model": {"name": "mlp", "width": 32, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 4, "batch_size": 32, "log_every": 1},
}


# --------------------------------------------------------------------------- Supervised


def _bundle(task="classification", outputs=3):
    return SimpleNamespace(task=task, num_outputs=outputs)


def _train_cfg(loss="cross_entropy", red="mean"):
    return SimpleNamespace(train=SimpleNamespace(loss=loss, mse_reduction=red))


def test_supervised_loss_is_torchs_loss_of_the_models_outputs():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    onehot = F.one_hot(y, 3).float()
    ce = O.Supervised.from_config(_train_cfg(), _bundle())
    mse = O.Supervised.from_config(_train_cfg("mse", "mean"), _bundle())
    half = O.Supervised.from_config(_train_cfg("mse", "half_sum"), _bundle())
    assert torch.equal(ce.loss(model, x, y, step=0), F.cross_entropy(model(x), y))
    assert torch.equal(mse.loss(model, x, y, step=5), F.mse_loss(model(x), onehot))
    want_half = F.mse_loss(model(x), onehot, reduction="sum") / (2 * 9)
    assert torch.allclose(half.loss(model, x, y, step=0), want_half, rtol=1e-6, atol=0)


def test_supervised_evaluate_is_the_whole_split_mean_in_eval_mode():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 4))
    x, y = torch.randn(23, 5), torch.randint(0, 4, (23,))
    ce = O.Supervised(F.cross_entropy, "classification")
    model.train()
    got = ce.evaluate(model, x, y, batch=7)  # 7 + 7 + 7 + 2: an uneven last batch
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert got["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert got["accuracy"] == (out.argmax(1) == y).sum().item() / 23
    head = ce.evaluate(model, x, y, batch=4, limit=10)
    assert head["loss"] == pytest.approx(F.cross_entropy(out[:10], y[:10]).item(), rel=1e-6)
    reg = O.Supervised(F.mse_loss, "regression").evaluate(model, x, torch.randn(23, 4), batch=7)
    assert reg["accuracy"] is None


def test_cross_entropy_on_regression_data_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        O.Supervised.from_config(_train_cfg(), _bundle("regression", 1))
    assert e.value.key == "train.loss"


# --------------------------------------------------------------------------- registry


def test_registry_picks_the_claiming_objective_and_refuses_two(monkeypatch):
    cfg = SimpleNamespace(description="x", train=SimpleNamespace(loss="cross_entropy", mse_reduction="mean"))
    assert O.objective_name(cfg) == "supervised"
    assert isinstance(O.build_objective(cfg, _bundle()), O.Supervised)
    # a lazily imported builder ("module:attr"): nothing is imported until a run asks for it
    monkeypatch.setitem(
        O.REGISTRY, "lazy", O.Registered(lambda c: c.description == "x", "heur.core.objective:Supervised.from_config")
    )
    assert O.objective_name(cfg) == "lazy"
    assert isinstance(O.build_objective(cfg, _bundle()), O.Supervised)
    monkeypatch.setitem(O.REGISTRY, "other", O.Registered(lambda c: True, O.Supervised.from_config))
    with pytest.raises(ConfigError, match="two objectives"):
        O.objective_name(cfg)


# --------------------------------------------------------------------------- a plug-in objective


class Tempered(O.Objective):
    """Cross-entropy of logits / T with a learned temperature T = exp(log_t) (a tensor the
    objective owns and the optimizer trains) and a weight that cycles with the number of batches
    seen (a plain counter that only a checkpoint can carry across a resume). It evaluates at its
    temperature too."""

    name = "tempered"

    def __init__(self, device):
        super().__init__(lambda out, y: F.cross_entropy(out / self.log_t.exp(), y), "classification")
        self.log_t = torch.zeros((), device=device, requires_grad=True)
        self.calls = 0
        self.steps: list[int] = []

    def loss(self, model, x, y, step):
        self.steps.append(step)
        self.calls += 1
        weight = 1.0 + 0.25 * (self.calls % 3)  # a Python float: no host sync
        return weight * F.cross_entropy(model(x) / self.log_t.exp(), y)

    def parameters(self):
        return [self.log_t]

    def state_dict(self):
        return {"calls": self.calls, "log_t": self.log_t.detach().clone()}

    def load_state_dict(self, state):
        self.calls = int(state["calls"])
        with torch.no_grad():
            self.log_t.copy_(state["log_t"])


@pytest.fixture
def tempered(monkeypatch):
    built: list[Tempered] = []

    def build(cfg, data, device):
        built.append(Tempered(device))
        return built[-1]

    monkeypatch.setitem(O.REGISTRY, "tempered", O.Registered(lambda cfg: cfg.description == "tempered", build))
    monkeypatch.setenv("HEUR_THREADS", "1")
    return built


class StopAfter(Probe):
    """Asks the run to stop (as SIGTERM does) once ``step`` optimizer steps are done."""

    name = "stop_after"

    def __init__(self, run, step):
        super().__init__(None)
        self.run, self.step = run, step

    def after_step(self, ctx):
        if ctx.step == self.step:
            self.run.stop_requested = True


def _new_run(tmp_path, sub):
    exp_dir = R.create_experiment(expand(BASE, []), tmp_path / sub)
    (rd,) = R.run_dirs(exp_dir)
    return rd


def _run(rd, resume=False, stop_at=None):
    r = Run(rd, resume=resume)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    if stop_at is not None:
        r.probes.append(StopAfter(r, stop_at))
    state, reason, last = r.train()
    r.finish(state, reason, last)
    return r, state


def _final(rd):
    return torch.load(rd / "checkpoints" / "final.pt", weights_only=True)


def test_a_test_only_objective_drives_the_loop_and_resumes_bit_exactly(tmp_path, tempered):
    full_dir = _new_run(tmp_path, "full")
    r, state = _run(full_dir)
    assert state == "completed" and isinstance(r.objective, Tempered)
    assert tempered[-1].steps == list(range(32))  # the loop asked it for every step's loss, with the step
    ck = _final(full_dir)
    assert ck["objective"]["name"] == "tempered" and ck["objective"]["state"]["calls"] == 32
    assert ck["objective"]["state"]["log_t"].item() != 0.0  # its own tensor was trained by the optimizer
    # evaluation went through the objective: the last test eval is the tempered loss of the final model
    last_test = [e for e in read_events(full_dir / "events.jsonl") if e["kind"] == "eval" and e["split"] == "test"][-1]
    model, data = r.model, r.data
    model.load_state_dict(ck["model"])  # the weights saved in final.pt
    with torch.no_grad():
        logits = model.eval()(data.x_test)
    t = ck["objective"]["state"]["log_t"].exp()
    assert last_test["loss"] == pytest.approx(F.cross_entropy(logits / t, data.y_test).item(), rel=1e-5)
    assert last_test["loss"] != pytest.approx(F.cross_entropy(logits, data.y_test).item(), rel=1e-3)

    # stopped mid-epoch at step 13, then resumed in a fresh Run: the same weights, bit for bit
    cut_dir = _new_run(tmp_path, "cut")
    _, state = _run(cut_dir, stop_at=13)
    assert state == "stopped"
    R.queue_resume(cut_dir)
    r2, state = _run(cut_dir, resume=True)
    assert state == "completed"
    assert tempered[-1].steps == list(range(13, 32))
    got = _final(cut_dir)
    assert got["objective"]["state"]["calls"] == 32
    assert torch.equal(got["objective"]["state"]["log_t"], ck["objective"]["state"]["log_t"])
    for k, w in ck["model"].items():
        assert torch.equal(got["model"][k], w), k


def test_resume_without_the_objectives_state_would_not_be_exact(tmp_path, tempered, monkeypatch):
    """The control: if the objective's state were not restored the trajectory would differ, so
    the bit-exact test above does check the restore."""
    full_dir = _new_run(tmp_path, "full")
    _run(full_dir)
    cut_dir = _new_run(tmp_path, "cut")
    _run(cut_dir, stop_at=13)
    monkeypatch.setattr(Tempered, "load_state_dict", lambda self, state: None)
    R.queue_resume(cut_dir)
    _run(cut_dir, resume=True)
    want, got = _final(full_dir)["model"], _final(cut_dir)["model"]
    assert any(not torch.equal(got[k], want[k]) for k in want)
