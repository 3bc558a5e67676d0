"""heur.core.measure.connectivity: interpolation, exact BN recomputation, linear path and barrier."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from heur.core.measure.connectivity import (
    ConnectivityError,
    barrier,
    interpolate_state,
    linear_path,
    recompute_bn_stats,
)


def bn_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Dropout(0.3), nn.Linear(7, 3))


def test_interpolate_state_endpoints_exact_and_midpoint():
    a, b = bn_net(0), bn_net(1)
    a.train()(torch.randn(16, 5))  # stats and num_batches_tracked differ from b's
    sa, sb = a.state_dict(), b.state_dict()
    s0, s1, sh = (interpolate_state(sa, sb, t) for t in (0.0, 1.0, 0.5))
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.equal(s0[k], sa[k]) and torch.equal(s1[k], sb[k])
            torch.testing.assert_close(sh[k], (sa[k] + sb[k]) / 2)
        else:
            assert torch.equal(sh[k], sa[k])  # num_batches_tracked copied from a
    with pytest.raises(ConnectivityError, match="differ in keys: 0.bias"):
        interpolate_state(sa, {k: v for k, v in sb.items() if k != "0.bias"}, 0.5)


def features_before_bn(model, x):
    with torch.no_grad():
        return model[0](x)


def test_recompute_bn_single_batch_is_full_data_statistics():
    m = bn_net(0)
    m[1].momentum = 0.1
    x = torch.randn(300, 5) * 2 + 1
    m.train()
    assert recompute_bn_stats(m, x, batch_size=1000)
    f = features_before_bn(m, x)
    torch.testing.assert_close(m[1].running_mean, f.mean(0))
    torch.testing.assert_close(m[1].running_var, f.var(0, unbiased=True))
    assert m[1].momentum == 0.1 and m.training and m[3].training


def test_recompute_bn_uneven_batches_is_size_weighted_average():
    m = bn_net(0).eval()
    x = torch.randn(250, 5)
    recompute_bn_stats(m, x, batch_size=100)  # batches 100, 100, 50
    f = features_before_bn(m, x)
    parts = [f[:100], f[100:200], f[200:]]
    w = torch.tensor([100.0, 100.0, 50.0]) / 250
    torch.testing.assert_close(m[1].running_mean, f.mean(0))
    torch.testing.assert_close(m[1].running_var, sum(wi * p.var(0, unbiased=True) for wi, p in zip(w, parts)))
    assert not m.training


def test_bn_recompute_at_t0_reproduces_endpoint_stats():
    x = torch.randn(200, 5)
    a, b = bn_net(0), bn_net(1)
    recompute_bn_stats(a, x, 64)  # endpoint a's statistics from its training data
    recompute_bn_stats(b, x, 64)
    m = bn_net(2)
    m.load_state_dict(interpolate_state(a.state_dict(), b.state_dict(), 0.0))
    m[1].reset_running_stats()
    recompute_bn_stats(m, x, 64)
    torch.testing.assert_close(m[1].running_mean, a[1].running_mean, rtol=0, atol=0)
    torch.testing.assert_close(m[1].running_var, a[1].running_var, rtol=0, atol=0)


def linear_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(120, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, 2, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        120, 2, generator=g, dtype=torch.float64
    )
    data = SimpleNamespace(x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:], task="regression")

    def build():
        torch.manual_seed(seed)
        return nn.Linear(4, 2).double()

    return data, build


def test_linear_model_mse_path_matches_closed_form_and_barrier_is_zero():
    data, build = linear_problem()
    a, b = build(), nn.Linear(4, 2).double()
    mse = nn.MSELoss()
    ts = np.linspace(0, 1, 11)
    rows = linear_path(a.state_dict(), b.state_dict(), build, data, ts, mse)
    x, y = data.x_train, data.y_train
    fa, fb = a(x).detach(), b(x).detach()
    for r in rows:
        t = r["t"]
        # closed form: the output is affine in t, so the MSE is a convex quadratic in t
        expected = float((((1 - t) * fa + t * fb - y) ** 2).mean())
        assert r["train_loss"] == pytest.approx(expected, rel=1e-12)
        assert r["train_accuracy"] is None
        chord = (1 - t) * rows[0]["train_loss"] + t * rows[-1]["train_loss"]
        assert r["train_loss"] - chord == pytest.approx(-t * (1 - t) * float(((fb - fa) ** 2).mean()), abs=1e-12)
    assert barrier(ts, [r["train_loss"] for r in rows]) == pytest.approx(0.0, abs=1e-12)
    assert barrier(ts[::-1], [r["train_loss"] for r in rows][::-1]) == pytest.approx(0.0, abs=1e-12)


def test_path_endpoints_reproduce_the_models():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(100, 5, generator=g), torch.randn(40, 5, generator=g)
    y, yt = torch.randint(0, 3, (100,), generator=g), torch.randint(0, 3, (40,), generator=g)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=xt, y_test=yt)
    a, b = bn_net(0), bn_net(1)
    for m in (a, b):
        recompute_bn_stats(m, x, 32)
    ce = nn.CrossEntropyLoss()
    rows = linear_path(a.state_dict(), b.state_dict(), lambda: bn_net(5), data, [0.0, 0.5, 1.0], ce, batch_size=32)
    for m, r in ((a, rows[0]), (b, rows[-1])):
        m.eval()
        with torch.no_grad():
            out = m(xt)
        assert r["test_loss"] == pytest.approx(float(ce(out, yt)), rel=1e-6)  # batched sum vs one batch
        assert r["test_accuracy"] == int((out.argmax(1) == yt).sum()) / len(yt)
    assert rows[1]["test_loss"] != pytest.approx(rows[0]["test_loss"], rel=1e-3)


def test_barrier_values():
    assert barrier([0, 0.5, 1], [1.0, 3.0, 1.0]) == 2.0
    assert barrier([0, 0.25, 1], [0.0, 0.5, 2.0]) == 0.0
    assert barrier([0, 0.5, 1], [1.0, 0.2, 1.0]) == 0.0
    with pytest.raises(ConnectivityError, match="t = 0 and t = 1") as e:
        barrier([0.2, 1], [1.0, 1.0])
    assert e.value.arg == "ts"


def test_bn_modules_are_the_ones_with_running_statistics():
    # heur compare reports bn_recomputed from these: a BN layer without running statistics uses
    # batch statistics in eval mode too, and a recompute changes nothing
    from torch import nn

    from heur.core.measure.connectivity import bn_modules

    keeps, batch_only = nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False)
    assert bn_modules(nn.Sequential(nn.Linear(2, 3), keeps, batch_only)) == [keeps]
    assert bn_modules(nn.Sequential(nn.Linear(2, 3), batch_only)) == []
