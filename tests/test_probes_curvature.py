"""Sharpness, NTK and catapult probes driven through a hand-built TrainContext; their events
are read back from events.jsonl and checked against the curvature functions and oracles."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from dense_curvature import full_hessian, jacobian  # tests/dense_curvature.py
from torch import nn

from heur.core.config import RunConfig
from heur.core.data import DataBundle, load_data
from heur.core.errors import ConfigError
from heur.core.events import EventWriter, read_events
from heur.core.measure.curvature import (
    adam_threshold,
    hessian_eigenvalues,
    ntk_top_eigenvalue,
    preconditioned_sharpness,
)
from heur.core.probes import TrainContext, build_probes
from heur.core.probes.catapult import CatapultProbe
from heur.core.probes.curvature import (
    NtkProbe,
    SharpnessProbe,
    measure_lambda0,
    probe_batch,
    stability_threshold,
)


def mse_mean_onehot(out, y):
    if y.dtype == torch.long:
        y = nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
    return nn.functional.mse_loss(out, y)


def half_sum(out, y):
    return 0.5 * (out - y.reshape(out.shape)).pow(2).sum() / out.shape[0]


def make_ctx(tmp_path, cfg, model, loss_fn, data, optimizer):
    return TrainContext(
        cfg=cfg,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        data=data,
        device=torch.device("cpu"),
        run_dir=tmp_path,
        events=EventWriter(tmp_path / "events.jsonl"),
        schedule=lambda step: optimizer.param_groups[0]["lr"],
        steps_per_epoch=1,
        total_steps=100,
    )


def synth_cfg(**probes):
    return RunConfig.model_validate(
        {
            "seed": 3,
            "data": {"name": "synthetic", "n_train": 96, "n_test": 16, "dim": 6, "classes": 3},
            "model": {"name": "mlp"},
            "train": {"loss": "mse", "mse_reduction": "mean"},
            "optim": {"name": "sgd", "lr": 0.05},
            "probes": probes,
        }
    )


def mlp(bn=False):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 10)] + ([nn.BatchNorm1d(10)] if bn else []) + [nn.Tanh(), nn.Linear(10, 3)]
    return nn.Sequential(*layers)


def sgd_steps(ctx, probes, steps, x, y):
    for _ in range(steps):
        ctx.optimizer.zero_grad()
        loss = ctx.loss_fn(ctx.model(x), y)
        loss.backward()
        ctx.optimizer.step()
        ctx.step += 1
        ctx.lr = ctx.optimizer.param_groups[0]["lr"]
        for p in probes:
            p.after_step(ctx)
            p.on_log(ctx, float(loss.detach()))


@pytest.mark.parametrize("bn", [False, True])
def test_sharpness_probe_sgd(tmp_path, bn):
    cfg = synth_cfg(sharpness={"every": 2, "batch": 40, "k": 2, "tol": 1e-6, "max_iter": 60})
    data = load_data(cfg, "cpu")
    model = mlp(bn)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, opt)
    (probe,) = build_probes(cfg.probes)
    assert isinstance(probe, SharpnessProbe)
    probe.on_start(ctx)
    sgd_steps(ctx, [probe], 4, data.x_train[:32], data.y_train[:32])
    ctx.extra["state"] = "completed"
    out = probe.on_end(ctx)
    evs = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "sharpness"]
    assert [e["step"] for e in evs] == [0, 2, 4]
    xb, yb = probe_batch(data, 40, cfg.seed)
    assert len(set(map(tuple, xb.tolist()))) == 40  # 40 distinct samples of the training set
    exact = hessian_eigenvalues(model, mse_mean_onehot, xb, yb, k=2, tol=1e-8, max_iter=200)
    last = evs[-1]
    assert last["top_k"] == pytest.approx(exact, rel=1e-4)
    assert last["lambda_max"] == pytest.approx(exact[0], rel=1e-4)
    assert last["threshold"] == pytest.approx(2 / 0.05) and last["lr"] == pytest.approx(0.05)
    assert last["ratio"] == pytest.approx(last["lambda_max"] / 40.0)
    assert "2/(m*C)" in last["normalisation"] and last["mode"] == "train" and last["hvps"] > 0
    assert ctx.extra["sharpness_history"] == [[e["step"], e["lambda_max"]] for e in evs]
    assert out["sharpness_final"] == last["lambda_max"] and out["sharpness_step"] == 4
    assert model.training  # left in train mode


def test_sharpness_probe_adam_preconditioned(tmp_path):
    cfg = synth_cfg(sharpness={"every": 1, "batch": 32, "tol": 1e-6, "max_iter": 60})
    cfg.optim.name = "adam"
    cfg.optim.betas = (0.9, 0.99)
    data = load_data(cfg, "cpu")
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, opt)
    probe = SharpnessProbe(cfg.probes.sharpness)
    xb, yb = probe_batch(data, 32, cfg.seed)
    fresh = copy.deepcopy(model)
    init = preconditioned_sharpness(
        fresh,
        mse_mean_onehot,
        xb,
        yb,
        torch.optim.Adam(fresh.parameters(), lr=1e-2, betas=(0.9, 0.99)),
        tol=1e-8,
        max_iter=200,
    ).top
    probe.on_start(ctx)
    sgd_steps(ctx, [probe], 2, data.x_train, data.y_train)
    evs = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "sharpness"]
    # at step 0 (no Adam state): the first step's preconditioner, so measurable at init
    assert evs[0]["preconditioned_sharpness"] == pytest.approx(init, rel=1e-4) and evs[0]["adam_step"] == 1
    assert evs[0]["ratio"] == pytest.approx(init / adam_threshold(1e-2, 0.9), rel=1e-4)
    assert [e["adam_step"] for e in evs] == [1, 1, 2]
    ps = preconditioned_sharpness(model, mse_mean_onehot, xb, yb, opt, tol=1e-8, max_iter=200).top
    assert evs[-1]["preconditioned_sharpness"] == pytest.approx(ps, rel=1e-4)
    assert evs[-1]["threshold"] == pytest.approx(adam_threshold(1e-2, 0.9))
    assert evs[-1]["ratio"] == pytest.approx(ps / adam_threshold(1e-2, 0.9), rel=1e-4)


def test_stability_thresholds():
    cfg = synth_cfg()
    assert stability_threshold(cfg.optim, 0.1)[0] == pytest.approx(20.0)
    cfg.optim.momentum = 0.9
    assert stability_threshold(cfg.optim, 0.1)[0] == pytest.approx(38.0)
    cfg.optim.nesterov = True
    assert stability_threshold(cfg.optim, 0.1)[0] == pytest.approx(3.8 / (0.1 * 2.8))


def test_nesterov_threshold_is_the_quadratic_stability_edge():
    # GD with torch's Nesterov SGD on f = lam/2 x²: stable just below the edge, unstable above
    cfg = synth_cfg()
    cfg.optim.momentum, cfg.optim.nesterov = 0.9, True
    lam = 1.0
    edge = stability_threshold(cfg.optim, 1.0)[0]  # lam * lr at the edge for lr = 1
    for lr, grows in ((0.97 * edge, False), (1.03 * edge, True)):
        x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([x], lr=lr / lam, momentum=0.9, nesterov=True)
        for _ in range(2000):
            opt.zero_grad()
            (0.5 * lam * x.pow(2)).sum().backward()
            opt.step()
        assert (abs(x.item()) > 1.0) == grows


def test_ntk_probe_and_measure_lambda0(tmp_path):
    cfg = synth_cfg(ntk={"batch": 48, "every": 2})
    data = load_data(cfg, "cpu")
    model = mlp(bn=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, opt)
    lam_call = measure_lambda0(model, cfg, data)
    xb, _ = probe_batch(data, 48, cfg.seed)
    exact = ntk_top_eigenvalue(model, xb, loss="mse", reduction="mean", tol=1e-8)
    assert lam_call == pytest.approx(exact, rel=1e-4)
    probe = NtkProbe(cfg.probes.ntk)
    probe.on_start(ctx)
    sgd_steps(ctx, [probe], 2, data.x_train, data.y_train)
    evs = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "ntk"]
    assert [e["step"] for e in evs] == [0, 2]
    e0 = evs[0]
    assert e0["lambda0"] == pytest.approx(exact, rel=1e-4) and e0["source"] == "init"
    assert e0["lr_lazy_edge"] == pytest.approx(2 / e0["lambda0"])
    assert e0["lr_uv_max"] == pytest.approx(4 / e0["lambda0"])
    assert e0["lr_relu_max"] == pytest.approx(12 / e0["lambda0"])
    assert "2/(m*C)" in e0["normalisation"]
    assert ctx.lambda0 == pytest.approx(e0["lambda0"])
    now = ntk_top_eigenvalue(model, xb, loss="mse", reduction="mean", tol=1e-8)
    assert evs[1]["lambda_ntk"] == pytest.approx(now, rel=1e-4) and evs[1]["lambda0"] == e0["lambda0"]
    assert probe.on_end(ctx)["lambda0"] == e0["lambda0"]


def test_ntk_probe_reuses_lambda0_from_lr_ntk(tmp_path):
    cfg = synth_cfg(ntk={"batch": 48})
    data = load_data(cfg, "cpu")
    model = mlp()
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, torch.optim.SGD(model.parameters(), lr=0.1))
    ctx.lambda0 = measure_lambda0(model, cfg, data)
    NtkProbe(cfg.probes.ntk).on_start(ctx)
    (ev,) = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "ntk"]
    assert ev["source"] == "lr_ntk" and ev["lambda0"] == ctx.lambda0


def test_preflight_runs_each_probes_own_check():
    from heur.core.preflight import check_run

    check_run(synth_cfg(sharpness={"batch": 96}, ntk={"batch": 96}))
    with pytest.raises(ConfigError) as e:
        check_run(synth_cfg(sharpness={"batch": 97}))
    assert e.value.key == "probes.sharpness.batch" and "96" in str(e.value)
    with pytest.raises(ConfigError) as e:
        check_run(synth_cfg(ntk={"batch": 500}))
    assert e.value.key == "probes.ntk.batch"


# --------------------------------------------------------------------------- catapult probe


def test_catapult_probe_events_and_phases(tmp_path):
    cfg = synth_cfg(catapult={"factor": 2.0})
    data = load_data(cfg, "cpu")
    model = mlp()
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, torch.optim.SGD(model.parameters(), lr=0.1))
    probe = CatapultProbe(cfg.probes.catapult)
    ctx.extra["sharpness_history"] = [[0, 50.0], [4, 60.0], [8, 10.0], [12, 5.0]]
    for step, loss in enumerate([1.0, 0.8, 0.5, 0.6, 2.0, 5.0, 1.0, 0.6, 0.45, 0.3], start=1):
        ctx.step = step
        probe.on_log(ctx, loss)
    (ev,) = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "catapult"]
    assert (ev["start_step"], ev["peak_step"], ev["end_step"]) == (3, 6, 9)
    assert ev["peak_ratio"] == pytest.approx(10.0)
    assert ev["sharpness_before"] == 50.0 and ev["sharpness_after"] == 10.0
    assert probe.on_end(ctx) == {"phase": "catapult", "catapults": 1}
    ctx.extra["state"] = "diverged"
    assert probe.on_end(ctx)["phase"] == "diverged"
    lazy = CatapultProbe(cfg.probes.catapult)
    for loss in [1.0, 0.5, 0.25]:
        lazy.on_log(ctx, loss)
    ctx.extra["state"] = "completed"
    cfg.optim.lr_ntk = 1.5
    assert lazy.on_end(ctx) == {"phase": "lazy", "catapults": 0, "predicted_phase": "lazy", "edge_kind": "relu"}


def test_uv_catapult_end_to_end_through_probes(tmp_path):
    """The uv model at lr = 3/lambda0 (lambda0 from measure_lambda0) catapults: one event, the
    sharpness probe's Hessian top eigenvalue drops below 2/lr, phase as predicted."""
    n = 500
    cfg = RunConfig.model_validate(
        {
            "seed": 0,
            "model": {"name": "uv", "width": n},
            "optim": {"name": "sgd", "lr_ntk": 3.0},
            "train": {"loss": "mse", "mse_reduction": "half_sum", "full_batch": True, "log_every": 1},
            "data": {"name": "teacher_student", "n_train": 1, "dim": 1},
            "probes": {"ntk": {"batch": 1}, "sharpness": {"every": 1, "batch": 1, "max_iter": 20}, "catapult": {}},
        }
    )
    x = torch.ones(1, 1, dtype=torch.float64)
    y = torch.zeros(1, 1, dtype=torch.float64)
    data = DataBundle(
        x_train=x, y_train=y, x_test=x, y_test=y, task="regression", num_outputs=1, input_shape=(1,), name="one"
    )

    class UV(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.u = nn.Parameter(torch.randn(n, 1, dtype=torch.float64))
            self.v = nn.Parameter(torch.randn(n, 1, dtype=torch.float64))

        def forward(self, x):
            return (x @ self.u.t()) @ self.v / math.sqrt(n)

    model = UV()
    lam0 = measure_lambda0(model, cfg, data)
    closed = (model.u.detach().pow(2).sum() + model.v.detach().pow(2).sum()).item() / n
    assert lam0 == pytest.approx(closed, rel=1e-4)
    lr = cfg.optim.lr_ntk / lam0
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    ctx = make_ctx(tmp_path, cfg, model, half_sum, data, opt)
    ctx.lambda0 = lam0
    probes = build_probes(cfg.probes)
    assert [p.name for p in probes] == ["ntk", "sharpness", "catapult"]
    for p in probes:
        p.on_start(ctx)
    sgd_steps(ctx, probes, 40, x, y)
    ctx.extra["state"] = "completed"
    result = {}
    for p in probes:
        result.update(p.on_end(ctx))
    evs = read_events(tmp_path / "events.jsonl")
    cats = [e for e in evs if e["kind"] == "catapult"]
    assert len(cats) == 1 and cats[0]["peak_ratio"] > 10
    assert result["phase"] == "catapult" and result["predicted_phase"] == "catapult"
    sh = [e for e in evs if e["kind"] == "sharpness"]
    # H = GN + f·∇²f, and ∇²f (the u-v coupling I/√n) has norm 1/√n: |H - GN| <= |f0|/√n
    f0 = math.sqrt(2 * sh[0]["batch_loss"])
    assert abs(sh[0]["lambda_max"] - lam0) <= f0 / math.sqrt(n) * 1.0001
    assert sh[-1]["lambda_max"] < 2 / lr < sh[0]["lambda_max"]
    assert cats[0]["sharpness_before"] > 2 / lr > cats[0]["sharpness_after"]


def test_sharpness_probe_at_lr_zero_has_no_edge(tmp_path):
    # a warmup from 0 gives lr 0 at step 0: the probe measures, with no threshold
    cfg = synth_cfg(sharpness={"every": 2, "batch": 40})
    data = load_data(cfg, "cpu")
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, opt)
    (probe,) = build_probes(cfg.probes)
    probe.on_start(ctx)
    (ev,) = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "sharpness"]
    assert ev["lambda_max"] > 0 and ev["threshold"] is None and ev["ratio"] is None


def test_sharpness_probe_measures_at_steps_and_at_the_end_of_warmup(tmp_path):
    from heur.core.config import ScheduleConfig, WarmupConfig
    from heur.core.schedules import build_schedule

    cfg = synth_cfg(sharpness={"every": 50, "batch": 32, "tol": 1e-8, "max_iter": 80, "at_steps": [1, 2]})
    data = load_data(cfg, "cpu")
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, opt)
    ctx.schedule = build_schedule(ScheduleConfig(name="constant", warmup=WarmupConfig(steps=4)), 0.05, 1, 100)
    probe = SharpnessProbe(cfg.probes.sharpness)
    probe.on_start(ctx)
    x, y = data.x_train[:32], data.y_train[:32]
    for _ in range(6):
        for g in opt.param_groups:
            g["lr"] = ctx.schedule(ctx.step)
        sgd_steps(ctx, [probe], 1, x, y)
        if ctx.step == 4:
            xb, yb = probe_batch(data, 32, cfg.seed)
            at_w = hessian_eigenvalues(model, mse_mean_onehot, xb, yb, tol=1e-10, max_iter=200)[0]
    evs = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "sharpness"]
    assert [e["step"] for e in evs] == [0, 1, 2, 4]
    out = probe.on_end(ctx)
    assert out["warmup_end_step"] == 4 and out["sharpness_warmup_end"] == pytest.approx(at_w, rel=1e-6)
    assert out["sharpness_warmup_end_threshold"] == pytest.approx(2 / 0.05)  # the base lr's edge


def test_sharpness_probe_adam_preconditioned_only(tmp_path):
    """probes.sharpness.plain = false: the Adam-family probe measures P^-1 H alone (the value its
    edge applies to) with the products of that operator only; lambda_max is left empty."""
    runs = {}
    for plain in (True, False):
        cfg = synth_cfg(sharpness={"every": 1, "batch": 32, "tol": 1e-6, "max_iter": 60, "plain": plain})
        cfg.optim.name = "adam"
        data = load_data(cfg, "cpu")
        model = mlp()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        (tmp_path / str(plain)).mkdir(exist_ok=True)
        ctx = make_ctx(tmp_path / str(plain), cfg, model, mse_mean_onehot, data, opt)
        probe = SharpnessProbe(cfg.probes.sharpness)
        probe.on_start(ctx)
        sgd_steps(ctx, [probe], 2, data.x_train, data.y_train)
        ctx.extra["state"] = "completed"
        out = probe.on_end(ctx)
        evs = [e for e in read_events(tmp_path / str(plain) / "events.jsonl") if e["kind"] == "sharpness"]
        runs[plain] = (evs, out, ctx, model, opt)
    (both, out_b, _, _, _), (pre, out_p, ctx, model, opt) = runs[True], runs[False]
    xb, yb = probe_batch(ctx.data, 32, ctx.cfg.seed)
    exact = preconditioned_sharpness(model, mse_mean_onehot, xb, yb, opt, tol=1e-8, max_iter=200).top
    assert [e["lambda_max"] for e in pre] == [None, None, None] and all(e["top_k"] is None for e in pre)
    assert pre[-1]["preconditioned_sharpness"] == pytest.approx(exact, rel=1e-4)
    for a, b in zip(both, pre):  # the same trajectory (the probe does not touch the model)
        assert b["preconditioned_sharpness"] == pytest.approx(a["preconditioned_sharpness"], rel=1e-4)
        assert b["hvps"] < a["hvps"]
    assert (
        out_p["sharpness_final"] is None
        and out_p["preconditioned_sharpness_final"] == pre[-1]["preconditioned_sharpness"]
    )
    assert "sharpness_history" not in ctx.extra or ctx.extra["sharpness_history"] == []
    assert out_b["sharpness_final"] == both[-1]["lambda_max"] is not None


def test_first_sharpness_measurement_starts_from_lambda0s_vector(tmp_path):
    """The NTK probe hands its eigenvector on (ctx.lambda0_vector: unit, the dense Gauss-Newton
    matrix's top eigenvector); the sharpness probe's first measurement starts from it, so a start
    at the dense Hessian's top eigenvector converges in fewer products than a cold start."""
    cfg = synth_cfg(ntk={"batch": 48}, sharpness={"every": 100, "batch": 48, "tol": 1e-4, "max_iter": 60})
    data = load_data(cfg, "cpu")
    model = mlp()
    ctx = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, torch.optim.SGD(model.parameters(), lr=0.1))
    NtkProbe(cfg.probes.ntk).on_start(ctx)
    v = ctx.lambda0_vector
    xb, yb = probe_batch(data, 48, cfg.seed)
    J = jacobian(model, xb)  # (m*C, n)
    G = 2.0 / (48 * 3) * (J.T @ J)  # torch's mse mean over m*C = 48*3 outputs: 2/(m*C) J^T J
    lam, vecs = torch.linalg.eigh(G.double())
    assert v.norm().item() == pytest.approx(1.0, abs=1e-5) and ctx.lambda0 == pytest.approx(lam[-1].item(), rel=1e-3)
    assert abs(torch.dot(v.double(), vecs[:, -1])).item() > 0.99
    hl, hv = torch.linalg.eigh(full_hessian(model, mse_mean_onehot, xb, yb).double())
    counts = {}
    for name, warm in (("cold", None), ("exact", hv[:, -1].float())):
        c2 = make_ctx(tmp_path, cfg, model, mse_mean_onehot, data, ctx.optimizer)
        c2.events = EventWriter(tmp_path / f"{name}.jsonl")
        c2.lambda0_vector = warm
        SharpnessProbe(cfg.probes.sharpness).on_start(c2)
        (ev,) = [e for e in read_events(tmp_path / f"{name}.jsonl") if e["kind"] == "sharpness"]
        assert ev["lambda_max"] == pytest.approx(hl[-1].item(), rel=1e-3)
        counts[name] = ev["hvps"]
    assert counts["exact"] < counts["cold"]
