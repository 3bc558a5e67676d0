"""core.measure.curves: Bezier / polychain coefficients, w(t) through functional_call, the
untrained curve as the straight line, gradients only into the bends."""

import math

import pytest
import torch
from torch import nn

from heur.core.measure.connectivity import interpolate_state, linear_path
from heur.core.measure.curves import (
    Curve,
    CurveError,
    bezier_coefficients,
    coefficients,
    curve_length,
    path_rows,
    polychain_coefficients,
)


def mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 7)] + ([nn.BatchNorm1d(7)] if bn else []) + [nn.ReLU(), nn.Linear(7, 3)]
    return nn.Sequential(*layers)


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_bend_bezier_at_half_weighs_quarter_half_quarter():
    assert bezier_coefficients(0.5, 3) == [0.25, 0.5, 0.25]


@pytest.mark.parametrize("n", [2, 3, 4, 6])
@pytest.mark.parametrize("t", [0.0, 0.13, 0.5, 0.77, 1.0])
def test_bezier_is_the_bernstein_basis(n, t):
    # independent oracle: de Casteljau on scalar control points 0, 1, ..., n-1 picks out each weight
    def casteljau(points, t):
        pts = list(points)
        while len(pts) > 1:
            pts = [(1 - t) * a + t * b for a, b in zip(pts, pts[1:])]
        return pts[0]

    c = bezier_coefficients(t, n)
    for k in range(n):
        unit = [1.0 if j == k else 0.0 for j in range(n)]
        assert c[k] == pytest.approx(casteljau(unit, t), abs=1e-12)
    assert sum(c) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_polychain_is_piecewise_linear_through_its_points(n):
    d = n - 1
    for k in range(n):  # at a knot only that point counts
        c = polychain_coefficients(k / d, n)
        assert c == pytest.approx([1.0 if j == k else 0.0 for j in range(n)])
    for k in range(d):  # between knots k and k+1: linear, two nonzero weights
        for u in (0.1, 0.5, 0.9):
            t = (k + u) / d
            c = polychain_coefficients(t, n)
            want = [0.0] * n
            want[k], want[k + 1] = 1 - u, u
            assert c == pytest.approx(want, abs=1e-12)


def test_bad_kind_and_t_are_refused():
    with pytest.raises(CurveError) as e:
        coefficients("spline", 0.5, 3)
    assert e.value.arg == "kind"
    with pytest.raises(CurveError) as e:
        bezier_coefficients(1.5, 3)
    assert e.value.arg == "t"


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("bends", [0, 1, 3])
def test_ends_are_exact_and_the_untrained_curve_is_the_line(kind, bends):
    a, b = mlp(0), mlp(1)
    sa, sb = a.state_dict(), b.state_dict()
    c = Curve.for_model(a, sa, sb, kind=kind, bends=bends)
    for name, w in c.weights(0.0).items():
        assert torch.equal(w, sa[name])
    for name, w in c.weights(1.0).items():
        assert torch.equal(w, sb[name])
    for t in (0.1, 0.25, 0.5, 0.9):
        line = interpolate_state(sa, sb, t)
        for name, w in c.weights(t).items():
            torch.testing.assert_close(w, line[name], rtol=1e-5, atol=1e-6)


def test_forward_is_the_model_at_those_weights():
    a, b = mlp(0), mlp(1)
    c = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=2)
    with torch.no_grad():
        c.bends.add_(torch.randn_like(c.bends))  # a curve off the line
    x = torch.randn(4, 5)
    want = mlp(2)
    want.load_state_dict({**want.state_dict(), **c.weights(0.3)})
    torch.testing.assert_close(c.forward(a, x, 0.3), want(x))
    # a three-point Bezier written out by hand: (1-t)^2 a + 2 t (1-t) bend + t^2 b
    t, pa, pb, pm = 0.3, params(a), params(b), c.point(1)
    c1 = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=1)
    with torch.no_grad():
        c1.bends[0].copy_(torch.cat([pm[n].reshape(-1) for n in c1.names]))
    for n, w in c1.weights(t).items():
        torch.testing.assert_close(w, (1 - t) ** 2 * pa[n] + 2 * t * (1 - t) * pm[n] + t**2 * pb[n])


def test_with_fixed_ends_only_the_bends_get_gradients_and_change():
    a, b = mlp(0), mlp(1)
    c = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=1, fix_ends=True)
    ends0, bends0 = c.ends.detach().clone(), c.bends.detach().clone()
    model_before = params(a)
    opt = torch.optim.SGD(c.parameters(), lr=0.1)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(3):
        loss = nn.functional.cross_entropy(c.forward(a, x, 0.4), y)
        opt.zero_grad()
        loss.backward()
        assert c.ends.grad is None
        assert c.bends.grad is not None and c.bends.grad.abs().sum() > 0
        assert all(p.grad is None for p in a.parameters())  # the model's own weights are not on the tape
        opt.step()
    assert torch.equal(c.ends, ends0)
    assert not torch.equal(c.bends, bends0)
    assert all(torch.equal(p, model_before[n]) for n, p in a.named_parameters())


def test_free_ends_train_too():
    a, b = mlp(0), mlp(1)
    c = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=1, fix_ends=False)
    assert len(c.parameters()) == 2
    loss = c.forward(a, torch.randn(3, 5), 0.2).sum()
    loss.backward()
    assert c.ends.grad is not None and c.ends.grad[0].abs().sum() > 0


def test_mismatched_weights_are_refused():
    a = mlp(0)
    other = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CurveError) as e:
        Curve.for_model(a, a.state_dict(), other.state_dict())
    assert e.value.arg == "end" and "0.weight" in str(e.value)
    with pytest.raises(CurveError) as e:
        Curve.for_model(a, {}, a.state_dict())
    assert e.value.arg == "start"


def test_state_dict_round_trip_and_refusal():
    a, b = mlp(0), mlp(1)
    c = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=2)
    with torch.no_grad():
        c.bends.add_(1.0)
    d = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=2)
    held = d.bends
    d.load_state_dict(c.state_dict())
    assert d.bends is held and torch.equal(d.bends, c.bends)
    with pytest.raises(CurveError):
        Curve.for_model(a, a.state_dict(), b.state_dict(), bends=1).load_state_dict(c.state_dict())


def test_length_of_the_untrained_curve_is_the_distance_between_the_ends():
    a, b = mlp(0), mlp(1)
    c = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=1)
    dist = math.sqrt(sum(float((p - q).pow(2).sum()) for p, q in zip(params(a).values(), params(b).values())))
    assert curve_length(c, [i / 20 for i in range(21)]) == pytest.approx(dist, rel=1e-5)
    with torch.no_grad():
        c.bends.add_(0.5)  # a detour is longer
    assert curve_length(c, [i / 20 for i in range(21)]) > dist * 1.01


class Data:
    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x_train, self.y_train = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
        self.x_test, self.y_test = torch.randn(32, 5, generator=g), torch.randint(0, 3, (32,), generator=g)
        self.task = "classification"


def test_untrained_path_rows_match_the_linear_path_with_bn_recomputed():
    a, b = mlp(0, bn=True), mlp(1, bn=True)
    data = Data()
    ts = [0.0, 0.3, 0.7, 1.0]
    line = linear_path(a.state_dict(), b.state_dict(), lambda: mlp(2, bn=True), data, ts, nn.functional.cross_entropy)
    c = Curve.for_model(a, a.state_dict(), b.state_dict(), bends=1)
    rows = path_rows(c, mlp(3, bn=True), data, ts, nn.functional.cross_entropy)
    for r, q in zip(rows, line):
        for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            assert r[k] == pytest.approx(q[k], rel=1e-4, abs=1e-6)


def test_bn_recomputed_at_t0_reproduces_the_endpoint_with_exact_statistics():
    a = mlp(0, bn=True)
    data = Data()
    # give the endpoint exact full-pass statistics (its "checkpoint"), then evaluate it plainly
    a.train()
    a[1].momentum = None
    with torch.no_grad():
        a(data.x_train)
    a.eval()
    want = nn.functional.cross_entropy(a(data.x_test), data.y_test).item()
    c = Curve.for_model(a, a.state_dict(), mlp(1, bn=True).state_dict(), bends=1)
    row = path_rows(c, mlp(5, bn=True), data, [0.0], nn.functional.cross_entropy)[0]
    assert row["test_loss"] == pytest.approx(want, rel=1e-5)


def test_a_model_that_shares_a_weight_between_modules_uses_it_everywhere():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(4, 4, bias=False)
            self.dec = nn.Linear(4, 4, bias=False)
            self.dec.weight = self.enc.weight  # one tensor, two modules

        def forward(self, x):
            return self.dec(self.enc(x))

    torch.manual_seed(0)
    a, b = Tied(), Tied()
    c = Curve.for_model(a, dict(a.named_parameters()), dict(b.named_parameters()), bends=1)
    assert c.names == ["enc.weight"]
    x = torch.randn(3, 4)
    w = c.weights(0.3)["enc.weight"]
    torch.testing.assert_close(c.forward(a, x, 0.3), x @ w.T @ w.T)
