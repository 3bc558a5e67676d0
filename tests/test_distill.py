"""Knowledge distillation: the loss against Hinton's formula computed by hand, alpha = 0 is the
cross-entropy, the teacher stays frozen, bad [distill] sections exit 2 with the key, resume is
exact, and on digits the distilled student agrees with its teacher more than an independent one."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import heur

from heur.core import runs as R
from heur.core.checkpoint import model_from_checkpoint
from heur.core.config import expand
from heur.core.data import load_data
from heur.core.distill import Distill
from heur.core.errors import ConfigError
from heur.core.events import apply_resumes, read_events
from heur.core.objective import build_objective, objective_name
from heur.core.preflight import check_experiment
from heur.core.train import Run

BASE = {
    "name": "kd",
    "device": "cpu",
    "seed": 0,
    "data": {"name": "digits", "augment": False},
    "model": {"name": "mlp", "width": 12, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 3, "batch_size": 64, "log_every": 5},
}
TEACHER = {"model.width": 128, "train.epochs": 6}


def pipeline(*students, base=BASE, seed=0):
    return {
        **base,
        "seed": seed,
        "variant": [{"name": "teacher", "set": TEACHER}] + [{"name": n, "set": s} for n, s in students],
    }


def train(rd, resume=False):
    r = Run(rd, resume=resume)
    r.status.update(state="running", pid=os.getpid(), force=True)
    r.setup()
    r.finish(*r.train())
    return r


def _hand_loss(s, t, y, temp, alpha):
    """Hinton et al. 2015 in float64 numpy, written out from the definitions."""
    s, t = s.astype(np.float64), t.astype(np.float64)

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    lt, ls = log_softmax(t / temp), log_softmax(s / temp)
    kl = (np.exp(lt) * (lt - ls)).sum(1).mean()  # KL(teacher || student), a batch mean
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    return alpha * temp**2 * kl + (1 - alpha) * ce, temp**2 * kl, ce


class Fixed(torch.nn.Module):
    """A 'model' whose logits are its parameter, the input a row index: fixed logits per example."""

    def __init__(self, logits):
        super().__init__()
        self.z = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32).clone())

    def forward(self, x):
        return self.z[x[:, 0].long()] * 1.0


LOGITS_S = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 0.0], [1.0, 1.0, 1.0]])
LOGITS_T = np.array([[3.0, 0.0, -1.0], [0.0, 1.0, 2.0], [-1.0, 4.0, 1.0], [2.0, -1.0, 0.5]])
Y = np.array([0, 2, 1, 2])


@pytest.mark.parametrize("temp, alpha", [(4.0, 0.9), (1.0, 0.5), (2.5, 1.0), (10.0, 0.3)])
def test_loss_is_hintons_formula_with_the_t_squared_scaling(temp, alpha):
    obj = Distill(Fixed(LOGITS_T), temp, alpha)
    x, y = torch.arange(4.0)[:, None], torch.as_tensor(Y)
    got = obj.loss(Fixed(LOGITS_S), x, y, 0).item()
    want, soft, ce = _hand_loss(LOGITS_S, LOGITS_T, Y, temp, alpha)
    assert got == pytest.approx(want, rel=1e-5)
    # the T^2 is really there: without it the soft term would be T^2 times smaller
    if alpha == 1.0 and temp != 1.0:
        assert got != pytest.approx(soft / temp**2, rel=1e-2)
    m = obj.evaluate(Fixed(LOGITS_S), x, y, batch=3)  # two batches: sums weighted by batch size
    assert m["soft_loss"] == pytest.approx(soft, rel=1e-5) and m["hard_loss"] == pytest.approx(ce, rel=1e-5)
    assert m["loss"] == m["hard_loss"]
    assert m["agreement"] == pytest.approx(np.mean(LOGITS_S.argmax(1) == LOGITS_T.argmax(1)))
    assert m["accuracy"] == pytest.approx(np.mean(LOGITS_S.argmax(1) == Y))
    assert m["teacher_kl"] == pytest.approx(_hand_loss(LOGITS_S, LOGITS_T, Y, 1.0, 1.0)[1], rel=1e-5)


def test_alpha_zero_is_exactly_the_cross_entropy():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    got = Distill(teacher, 4.0, 0.0).loss(student, x, y, 0)
    assert torch.equal(got, F.cross_entropy(student(x), y))


def test_the_teacher_never_changes_and_never_gets_a_gradient():
    torch.manual_seed(1)
    student = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    teacher = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    teacher.requires_grad_(False)
    teacher.train()  # even if someone leaves it in train mode, the objective evaluates it
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # BN running stats included
    obj = Distill(teacher, 4.0, 0.9)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for step in range(5):
        x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
        loss = obj.loss(student, x, y, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training


def test_distill_run_keeps_its_teacher_frozen_and_logs_the_terms(tmp_path):
    exp = expand(pipeline(("student", {"distill": {"teacher": "@teacher"}, "train.epochs": 1})), [])
    check_experiment(exp)
    d = R.create_experiment(exp, tmp_path / "runs")
    train(d / "teacher")
    r = train(d / "student")
    assert objective_name(r.cfg) == "distill" and r.objective.temperature == 4.0 and r.objective.alpha == 0.9
    saved = torch.load(d / "teacher" / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v.cpu()) for k, v in r.objective.teacher.state_dict().items())
    assert all(not p.requires_grad and p.grad is None for p in r.objective.teacher.parameters())
    evals = [e for e in read_events(d / "student" / "events.jsonl") if e["kind"] == "eval"]
    assert evals and all({"soft_loss", "hard_loss", "agreement", "teacher_kl"} <= set(e) for e in evals)
    res = R.read_status(d / "student").result
    assert 0 <= res["test_agreement"] <= 1 and res["test_hard_loss"] == res["test_loss"]
    # the logged agreement is the students' top-1 against the teacher's on the test split
    t, _, _ = model_from_checkpoint(d / "teacher" / "checkpoints" / "final.pt")
    s, cfg, _ = model_from_checkpoint(d / "student" / "checkpoints" / "final.pt")
    data = load_data(cfg)
    with torch.no_grad():
        agree = (s(data.x_test).argmax(1) == t(data.x_test).argmax(1)).double().mean().item()
    assert res["test_agreement"] == pytest.approx(agree)


def test_resume_of_a_distill_run_is_exact(tmp_path):
    student = {"distill": {"teacher": "@teacher", "temperature": 2.0}, "train.checkpoint_every": 1}
    exp = expand(pipeline(("a", student), ("b", student)), [])
    d = R.create_experiment(exp, tmp_path / "runs")
    train(d / "teacher")
    train(d / "a")
    # b: stopped after its first epoch's checkpoint, then resumed in a fresh Run
    r = Run(d / "b")
    r.setup()
    r.total = r.spe  # train one epoch only, then "crash" without the final checkpoint
    r.train()
    (d / "b" / "checkpoints" / "final.pt").unlink()
    train(d / "b", resume=True)
    wa = torch.load(d / "a" / "checkpoints" / "final.pt", weights_only=True)["model"]
    wb = torch.load(d / "b" / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def evals(run):  # (step, split) -> the logged terms (the cut-short process also evaluated at its end)
        evs = apply_resumes(read_events(d / run / "events.jsonl"))
        return {(e["step"], e["split"]): (e["soft_loss"], e["agreement"]) for e in evs if e["kind"] == "eval"}

    assert evals("a") == evals("b") and len(evals("a")) == 2 * 3


@pytest.mark.parametrize(
    "sets, key, text",
    [
        ({"distill": {"teacher": "@teacher", "temperature": 0}}, "distill.temperature", "> 0"),
        ({"distill": {"teacher": "@teacher", "temperature": -1.0}}, "distill.temperature", "> 0"),
        ({"distill": {"teacher": "@teacher", "alpha": 1.5}}, "distill.alpha", "<= 1"),
        ({"distill": {"teacher": "@teacher", "alpha": -0.1}}, "distill.alpha", ">= 0"),
        ({"distill": {"temperature": 2.0}}, "distill.teacher", "missing"),
        ({"distill": {"teacher": "@nobody"}}, "distill.teacher", "no run named 'nobody'"),
        ({"distill": {"teacher": "no/such.pt"}}, "distill.teacher", "no such checkpoint file"),
        ({"distill": {"teacher": "@teacher"}, "train.loss": "mse"}, "train.loss", "cross_entropy"),
    ],
)
def test_bad_distill_sections_are_refused_with_the_key(sets, key, text):
    with pytest.raises(ConfigError) as e:
        check_experiment(expand(pipeline(("s", sets)), []))
    assert e.value.key == key and text in str(e.value), str(e.value)


def test_a_teacher_with_other_outputs_is_refused(tmp_path):
    synth = {**BASE, "data": {"name": "synthetic", "dim": 64, "classes": 4}}
    exp = expand(synth, [])
    d = R.create_experiment(exp, tmp_path / "runs")
    train(d / "kd")
    ck = d / "kd" / "checkpoints" / "final.pt"
    bad = {**BASE, "data": {"name": "synthetic", "dim": 64, "classes": 10}, "distill": {"teacher": str(ck)}}
    with pytest.raises(ConfigError) as e:
        check_experiment(expand(bad, []))
    assert e.value.key == "distill.teacher" and "4 outputs" in e.value.message and "10" in e.value.message
    # a reference to a run with another number of classes: refused before it is trained
    ref = pipeline(("s", {"distill": {"teacher": "@teacher"}, "data.name": "synthetic", "data.dim": 64}))
    ref["variant"][0]["set"] = {**TEACHER, "data.name": "synthetic", "data.dim": 64, "data.classes": 4}
    with pytest.raises(ConfigError) as e:
        check_experiment(expand(ref, []))
    assert e.value.key == "distill.teacher" and "run 'teacher'" in e.value.message
    # the run itself checks too (a config written by hand, after preflight): exit 2 naming the key
    good = expand({**bad, "data": {"name": "synthetic", "dim": 64, "classes": 4}}, [])
    d2 = R.create_experiment(good, tmp_path / "runs2")
    cfg_path = d2 / "kd" / "config.toml"
    cfg_path.write_text(cfg_path.read_text().replace("classes = 4", "classes = 10"))
    with pytest.raises(ConfigError, match="distill.teacher: .*4 outputs"):
        build_objective(R.read_run_config(d2 / "kd"), load_data(R.read_run_config(d2 / "kd")), "cpu", d2 / "kd")


def test_bad_distill_from_the_cli_exits_2_and_starts_nothing(tmp_path):
    p = tmp_path / "kd.toml"
    p.write_text('name = "kd"\n[distill]\nteacher = "@teacher"\ntemperature = 0\n')
    r = heur("run", str(p), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert str(p) in line and "distill.temperature" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_on_digits_the_distilled_student_agrees_with_its_teacher_more_than_an_independent_one(tmp_path):
    """Same student architecture, same init seed, same data split; only the objective differs."""
    gains = []
    for seed in (0, 1):
        exp = expand(pipeline(("indep", {}), ("distilled", {"distill": {"teacher": "@teacher"}}), seed=seed), [])
        d = R.create_experiment(exp, tmp_path / f"runs{seed}")
        for n in ("teacher", "indep", "distilled"):
            train(d / n)
        models = {n: model_from_checkpoint(d / n / "checkpoints" / "final.pt")[0] for n in exp.runs}
        data = load_data(exp.runs["teacher"])
        with torch.no_grad():
            t = models["teacher"](data.x_test).argmax(1)
            agree = {n: (models[n](data.x_test).argmax(1) == t).double().mean().item() for n in ("indep", "distilled")}
        assert agree["distilled"] > agree["indep"], (seed, agree)
        gains.append(agree["distilled"] - agree["indep"])
    assert math.isfinite(sum(gains))
