"""Curvature engine against independent oracles: closed forms, full Hessians/Jacobians from
torch.autograd.functional, and explicit matrices."""

from __future__ import annotations

import math

import pytest
import torch
from dense_curvature import full_hessian, jacobian  # tests/dense_curvature.py
from torch import nn

from heur.core.measure.curvature import (
    adam_sharpness,
    adam_threshold,
    gauss_newton_eigenvalues,
    hessian_eigenvalues,
    hessian_eigenvalues_with_info,
    lanczos,
    ntk_top_eigenvalue,
    power_iteration,
    preconditioned_sharpness,
)

D = torch.float64


class UV(nn.Module):
    """f(x) = vᵀ u x / sqrt(n), u: (n, d), v: (n, k) ~ N(0, 1)."""

    def __init__(self, n: int, d: int = 1, k: int = 1):
        super().__init__()
        self.n = n
        self.u = nn.Parameter(torch.randn(n, d, dtype=D))
        self.v = nn.Parameter(torch.randn(n, k, dtype=D))

    def forward(self, x):
        return (x @ self.u.t()) @ self.v / math.sqrt(self.n)


def mlp(bn: bool = False, din: int = 5, h: int = 6, out: int = 3) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(din, h)]
    if bn:
        layers.append(nn.BatchNorm1d(h))
    layers += [nn.Tanh(), nn.Linear(h, out)]
    return nn.Sequential(*layers).to(D)


def mse_mean(out, y):
    return nn.functional.mse_loss(out, y)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


# --------------------------------------------------------------------------- eigensolvers


def test_lanczos_and_power_on_known_spectrum_with_repeats():
    torch.manual_seed(0)
    n = 40
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D))
    spec = torch.linspace(-3.0, 1.0, n, dtype=D)
    spec[-1], spec[-2], spec[-3] = 10.0, 7.0, 7.0  # a repeated eigenvalue
    A = Q @ torch.diag(spec) @ Q.t()
    like = torch.zeros(1, dtype=D)
    r = lanczos(lambda v: A @ v, n, like, k=4, tol=1e-10, max_iter=n)
    assert r.converged
    assert r.values == pytest.approx(spec.sort(descending=True).values[:4].tolist(), rel=1e-8)
    assert r.values[1] == pytest.approx(7.0) and r.values[2] == pytest.approx(7.0)
    p = power_iteration(lambda v: A @ v, n, like, k=3, tol=1e-12, max_iter=2000)
    assert p.values == pytest.approx([10.0, 7.0, 7.0], rel=1e-5)


def _spectrum(kind, n, g):
    if kind == "gap3":  # top two 3% apart over a bulk
        return torch.cat([torch.tensor([1.0, 0.97], dtype=D), torch.rand(n - 2, generator=g, dtype=D) * 0.6])
    if kind == "cluster3":  # three 3% apart, a bulk just below
        return torch.cat([torch.tensor([1.0, 0.97, 0.94], dtype=D), torch.rand(n - 3, generator=g, dtype=D) * 0.9])
    if kind == "gap1_neg":  # 1% apart, a bulk reaching far below zero
        return torch.cat([torch.tensor([1.0, 0.99], dtype=D), torch.rand(n - 2, generator=g, dtype=D) * 1.2 - 0.9])
    return 1.0 / torch.arange(1, n + 1, dtype=D) ** 0.5  # Hessian-like power law, gaps shrinking


@pytest.mark.parametrize("kind", ["gap3", "cluster3", "gap1_neg", "powerlaw"])
@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_lanczos_tol_bounds_the_error_on_small_gaps(kind, tol):
    """tol is a bound: every returned value within tol (relative) of the true one, from a
    dense eigendecomposition, on spectra whose top eigenvalues are 1-3% apart."""
    n = 200
    worst = 0.0
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
        A = (Q * _spectrum(kind, n, g)) @ Q.t()
        exact = torch.linalg.eigvalsh(A).flip(0)
        like = torch.zeros(1, dtype=D)
        for k in (1, 2):
            r = lanczos(lambda v, A=A: A @ v, n, like, k=k, tol=tol, max_iter=n, seed=seed + 100)
            assert r.converged
            for got, want in zip(r.values, exact[:k].tolist()):
                worst = max(worst, abs(got - want) / abs(want))
    assert worst <= tol


def test_lanczos_tol_on_a_small_cnn_hessian():
    """The case of issue 13 (tol 1e-2 gave 7.5% on a small CNN's Hessian): against the dense
    Hessian of a small conv net."""
    torch.manual_seed(14)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4), nn.Tanh(), nn.Linear(4, 3)
    ).to(D)
    x = torch.randn(32, 1, 6, 6, dtype=D)
    y = torch.randn(32, 3, dtype=D)
    exact = torch.linalg.eigvalsh(full_hessian(model, mse_mean, x, y)).flip(0)[:2].tolist()
    for tol in (1e-2, 1e-3):
        for seed in range(3):
            r = hessian_eigenvalues_with_info(model, mse_mean, x, y, k=2, tol=tol, max_iter=300, seed=seed)
            assert r.converged
            assert max(abs(a - b) / abs(b) for a, b in zip(r.values, exact)) <= tol


def test_warm_start_and_returned_eigenvector():
    torch.manual_seed(12)
    n = 60
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D))
    spec = torch.linspace(0.0, 1.0, n, dtype=D) ** 3 * 5  # clustered top: slow from a random start
    A = Q @ torch.diag(spec) @ Q.t()
    like = torch.zeros(1, dtype=D)
    cold = lanczos(lambda v: A @ v, n, like, k=1, tol=1e-8, max_iter=n)
    vec = cold.vector
    assert torch.linalg.norm(A @ vec - cold.top * vec) < 1e-3 * cold.top  # a true eigenvector
    assert abs(abs(float(vec @ Q[:, -1])) - 1) < 1e-6
    warm = lanczos(lambda v: A @ v, n, like, k=1, tol=1e-8, max_iter=n, v0=vec)
    assert warm.top == pytest.approx(5.0, rel=1e-8) and warm.hvps < cold.hvps
    pw_warm = power_iteration(lambda v: A @ v, n, like, k=1, tol=1e-14, max_iter=20, v0=vec)
    pw_cold = power_iteration(lambda v: A @ v, n, like, k=1, tol=1e-14, max_iter=20)
    assert abs(pw_warm.top - 5.0) < 1e-5 < abs(pw_cold.top - 5.0)


def test_power_shift_returns_largest_algebraic_not_magnitude():
    torch.manual_seed(1)
    n = 20
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D))
    spec = torch.linspace(-1.0, 2.0, n, dtype=D)
    spec[0] = -10.0  # dominates in magnitude
    A = Q @ torch.diag(spec) @ Q.t()
    like = torch.zeros(1, dtype=D)
    p = power_iteration(lambda v: A @ v, n, like, k=1, tol=1e-12, max_iter=5000)
    assert p.values[0] == pytest.approx(2.0, rel=1e-5)
    assert lanczos(lambda v: A @ v, n, like, k=1, tol=1e-10).values[0] == pytest.approx(2.0, rel=1e-8)


def test_quadratic_linear_model_hessian_is_known_matrix():
    # L(w) = 1/(2m) ||X w - y||²  ->  H = XᵀX / m exactly
    torch.manual_seed(2)
    m, d = 50, 12
    X = torch.randn(m, d, dtype=D) * torch.linspace(0.2, 3.0, d, dtype=D)
    y = torch.randn(m, 1, dtype=D)
    model = nn.Linear(d, 1, bias=False).to(D)

    def loss(out, t):
        return 0.5 * (out - t).pow(2).sum() / out.shape[0]

    exact = torch.linalg.eigvalsh(X.t() @ X / m).flip(0)[:3].tolist()
    for method, tol in (("lanczos", 1e-10), ("power", 1e-12)):
        got = hessian_eigenvalues(model, loss, X, y, k=3, method=method, tol=tol, max_iter=5000)
        assert got == pytest.approx(exact, rel=1e-5 if method == "power" else 1e-9)


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_mlp_hessian_matches_full_hessian(bn, k):
    torch.manual_seed(3)
    model = mlp(bn=bn)
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    model.train()
    H = full_hessian(model, mse_mean, x, y)
    exact = torch.linalg.eigvalsh(H).flip(0)[:k].tolist()
    r = hessian_eigenvalues_with_info(model, mse_mean, x, y, k=k, tol=1e-8, max_iter=200)
    assert r.converged and r.hvps <= H.shape[0]
    for a, b in zip(r.values, exact):
        assert rel(a, b) < 1e-4


def test_eval_mode_measures_the_eval_loss():
    torch.manual_seed(4)
    model = mlp(bn=True)
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    with torch.no_grad():  # give the running stats something other than the batch stats
        model[1].running_mean.copy_(torch.randn(6, dtype=D))
        model[1].running_var.copy_(torch.rand(6, dtype=D) + 0.5)
    model.eval()
    H_eval = full_hessian(model, mse_mean, x, y)
    model.train()
    H_train = full_hessian(model, mse_mean, x, y)
    top_eval = torch.linalg.eigvalsh(H_eval)[-1].item()
    top_train = torch.linalg.eigvalsh(H_train)[-1].item()
    assert rel(top_eval, top_train) > 1e-3  # the two losses really differ
    got_eval = hessian_eigenvalues(model, mse_mean, x, y, tol=1e-9, eval_mode=True)[0]
    got_train = hessian_eigenvalues(model, mse_mean, x, y, tol=1e-9)[0]
    assert rel(got_eval, top_eval) < 1e-6 and rel(got_train, top_train) < 1e-6


@pytest.mark.parametrize("fn", ["hessian", "gn", "precond"])
def test_model_state_restored_exactly(fn):
    torch.manual_seed(5)
    model = mlp(bn=True)
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        mse_mean(model(x), y).backward()
        opt.step()
    model.train()
    model[2].eval()  # a mixed pattern of flags must come back as it was
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    if fn == "hessian":
        hessian_eigenvalues(model, mse_mean, x, y, k=2)
    elif fn == "gn":
        gauss_newton_eigenvalues(model, x, loss="mse", reduction="mean", k=2)
    else:
        preconditioned_sharpness(model, mse_mean, x, y, opt)
    assert [m.training for m in model.modules()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # running_mean/var and num_batches_tracked too
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)


# --------------------------------------------------------------------------- Gauss–Newton / NTK


def test_uv_lambda0_closed_form():
    torch.manual_seed(6)
    n = 300
    model = UV(n)
    x = torch.ones(1, 1, dtype=D)
    exact = (model.u.detach().pow(2).sum() + model.v.detach().pow(2).sum()).item() / n
    got = ntk_top_eigenvalue(model, x, loss="mse", reduction="half_sum", tol=1e-10)
    assert rel(got, exact) < 1e-8
    # torch's MSELoss mean with C = 1, m = 1 doubles it: L = (f - y)²
    got_mean = ntk_top_eigenvalue(model, x, loss="mse", reduction="mean", tol=1e-10)
    assert rel(got_mean, 2 * exact) < 1e-8


@pytest.mark.parametrize("reduction,scale", [("half_sum", lambda m, C: 1 / m), ("mean", lambda m, C: 2 / (m * C))])
def test_gauss_newton_mse_matches_explicitjacobian(reduction, scale):
    torch.manual_seed(7)
    model = mlp(h=8, out=3)
    x = torch.randn(10, 5, dtype=D)
    J = jacobian(model, x)
    G = scale(10, 3) * J.t() @ J
    exact = torch.linalg.eigvalsh(G).flip(0)[:3].tolist()
    r = gauss_newton_eigenvalues(model, x, loss="mse", reduction=reduction, k=3, tol=1e-10, max_iter=200)
    assert r.values == pytest.approx(exact, rel=1e-6)
    assert ("2/(m*C)" if reduction == "mean" else "J^T J / m") in r.info["normalisation"]
    # GN of a half_sum MSE loss is also the Hessian minus the residual term: at a zero-residual
    # point (targets = outputs) it equals the Hessian
    with torch.no_grad():
        y = model(x)
    loss = (lambda o, t: 0.5 * (o - t).pow(2).sum() / o.shape[0]) if reduction == "half_sum" else mse_mean
    h = hessian_eigenvalues(model, loss, x, y, k=3, tol=1e-10, max_iter=200)
    assert h == pytest.approx(exact, rel=1e-6)


def test_gauss_newton_cross_entropy_matches_explicit():
    torch.manual_seed(8)
    model = mlp(h=8, out=4)
    x = torch.randn(12, 5, dtype=D)
    J = jacobian(model, x).reshape(12, 4, -1)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    G = sum(J[i].t() @ (torch.diag(p[i]) - torch.outer(p[i], p[i])) @ J[i] for i in range(12)) / 12
    exact = torch.linalg.eigvalsh(G).flip(0)[:2].tolist()
    r = gauss_newton_eigenvalues(model, x, loss="cross_entropy", k=2, tol=1e-10, max_iter=200)
    assert r.values == pytest.approx(exact, rel=1e-6)


# --------------------------------------------------------------------------- Adam preconditioning


def _adam_kinds():
    from heur.core.optim import GIAdam

    return {
        "adam": lambda ps, **kw: torch.optim.Adam(ps, **kw),
        "adam_l2": lambda ps, **kw: torch.optim.Adam(ps, weight_decay=0.05, **kw),
        "adamw": lambda ps, **kw: torch.optim.AdamW(ps, weight_decay=0.05, **kw),
        "gi_adam": lambda ps, **kw: GIAdam(ps, **kw),
    }


def _step_preconditioner(model, opt, x, y, lr, wd_decoupled):
    """Take one optimizer step on (x, y) and read off the diagonal P it applied: every Adam
    variant moves theta by -lr P^-1 m (m = exp_avg after the step, uncorrected), AdamW also by
    -lr wd theta; so P = -lr m / (delta + lr wd theta) element-wise."""
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    opt.zero_grad()
    mse_mean(model(x), y).backward()
    opt.step()
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in model.parameters()])
    return -lr * m / (after - before + lr * wd_decoupled * before)


def _dense_top(model, x, y, P, k=2):
    H = full_hessian(model, mse_mean, x, y)
    M = torch.diag(P.rsqrt()) @ H @ torch.diag(P.rsqrt())
    return torch.linalg.eigvalsh(M).flip(0)[:k].tolist(), H


@pytest.mark.parametrize("kind", ["adam", "adam_l2", "adamw", "gi_adam"])
@pytest.mark.parametrize("t", [1, 2, 5])
def test_preconditioned_sharpness_after_t_steps_matches_the_applied_preconditioner(kind, t):
    """Oracle: P read off the t-th step the optimizer actually took (not the formula), then the
    top eigenvalues of P^-1/2 H P^-1/2 from a dense Hessian."""
    torch.manual_seed(9)
    model = mlp()
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    b1, b2, eps, lr = 0.8, 0.99, 1e-6, 1e-2
    opt = _adam_kinds()[kind](model.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    for _ in range(t - 1):
        opt.zero_grad()
        mse_mean(model(x), y).backward()
        opt.step()
    P = _step_preconditioner(model, opt, x, y, lr, 0.05 if kind == "adamw" else 0.0)
    # the same P by hand from the state, one t in both corrections (torch's count: step = t)
    v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
    assert torch.allclose(P, (1 - b1**t) * ((v / (1 - b2**t)).sqrt() + eps), rtol=1e-7)
    exact, H = _dense_top(model, x, y, P)
    r = preconditioned_sharpness(model, mse_mean, x, y, opt, k=2, tol=1e-10, max_iter=300)
    assert r.values == pytest.approx(exact, rel=1e-6)
    assert r.info["adam_step"] == t and r.info["at_init"] is False
    # also the top eigenvalue of the non-symmetric P⁻¹H
    ev = torch.linalg.eigvals(torch.diag(1 / P) @ H).real.max().item()
    assert rel(r.values[0], ev) < 1e-6


def test_adam_sharpness_pair_from_one_graph_matches_dense_oracles():
    """Both eigenproblems the Adam-family probe measures, from one forward pass and gradient graph,
    against the dense Hessian and P^-1/2 H P^-1/2 (batch norm in train mode: the shared forward
    must leave the buffers as they were, and both values must be of the same loss)."""
    torch.manual_seed(4)
    model = mlp(bn=True)
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(2):
        opt.zero_grad()
        mse_mean(model(x), y).backward()
        opt.step()
    before = [b.clone() for b in model.buffers()]
    P = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
    P = (1 - 0.8**2) * ((P / (1 - 0.99**2)).sqrt() + 1e-6)
    exact_p, H = _dense_top(model, x, y, P)
    exact_h = torch.linalg.eigvalsh(H).flip(0)[:2].tolist()
    h, p = adam_sharpness(model, mse_mean, x, y, opt, k=2, tol=1e-10, max_iter=300)
    assert h.values == pytest.approx(exact_h, rel=1e-6) and p.values == pytest.approx(exact_p, rel=1e-6)
    assert p.info["adam_step"] == 2 and h.info["loss"] == p.info["loss"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
    none, p2 = adam_sharpness(model, mse_mean, x, y, opt, k=2, tol=1e-10, max_iter=300, plain=False)
    assert none is None and p2.values == pytest.approx(exact_p, rel=1e-6)


@pytest.mark.parametrize("kind", ["adam", "adam_l2", "adamw", "gi_adam"])
def test_preconditioned_sharpness_at_init_is_the_first_steps(kind):
    """Before any step: the preconditioner the first step (on the same batch) will apply, read
    off that step taken on a copy, against the dense Hessian at the initial weights."""
    import copy

    torch.manual_seed(10)
    model = mlp()
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-2
    make = _adam_kinds()[kind]
    opt = make(model.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    twin = copy.deepcopy(model)
    P = _step_preconditioner(
        twin, make(twin.parameters(), lr=lr, betas=(b1, b2), eps=eps), x, y, lr, 0.05 * (kind == "adamw")
    )
    exact, _ = _dense_top(model, x, y, P)
    r = preconditioned_sharpness(model, mse_mean, x, y, opt, k=2, tol=1e-10, max_iter=300)
    assert r.values == pytest.approx(exact, rel=1e-6)
    assert r.info["at_init"] is True and r.info["adam_step"] == 1
    assert not opt.state  # measuring did not step or initialise the optimizer


def test_gi_adam_preconditioned_sharpness_at_init_is_sqrt_1_minus_beta2_of_adams():
    """GI-Adam's v_0 = g^2 makes its first P 1/sqrt(1 - beta2) times Adam's (eps = 0): the
    preconditioned sharpness at init shrinks by sqrt(1 - beta2) (Kalra & Barkeshli 2024)."""
    from heur.core.optim import GIAdam

    torch.manual_seed(11)
    model = mlp()
    x = torch.randn(16, 5, dtype=D)
    y = torch.randn(16, 3, dtype=D)
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=0.0)
    a = preconditioned_sharpness(model, mse_mean, x, y, torch.optim.Adam(model.parameters(), **kw), tol=1e-10)
    g = preconditioned_sharpness(model, mse_mean, x, y, GIAdam(model.parameters(), **kw), tol=1e-10)
    assert g.top / a.top == pytest.approx(math.sqrt(1 - 0.999), rel=1e-6)


def test_preconditioned_needs_a_full_state_and_threshold_formula():
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(4, 5, dtype=D), torch.randn(4, 3, dtype=D)
    first = next(model.parameters())
    opt.state[first]["exp_avg_sq"] = torch.zeros_like(first)
    opt.state[first]["step"] = torch.tensor(1.0)
    with pytest.raises(ValueError, match="some parameters only"):
        preconditioned_sharpness(model, mse_mean, x, y, opt)
    with pytest.raises(ValueError, match="does not hold"):
        preconditioned_sharpness(model, mse_mean, x, y, torch.optim.Adam([first]))
    assert adam_threshold(0.1, 0.9) == pytest.approx(3.8 / (0.1 * 0.1))
    assert adam_threshold(1.0, 0.0) == pytest.approx(2.0)  # beta1 = 0: plain 2/lr


def test_bad_method_and_k():
    model = mlp()
    x, y = torch.randn(4, 5, dtype=D), torch.randn(4, 3, dtype=D)
    with pytest.raises(ValueError):
        hessian_eigenvalues(model, mse_mean, x, y, method="arnoldi")
    with pytest.raises(ValueError):
        hessian_eigenvalues(model, mse_mean, x, y, k=10_000)


def test_float32_cnn_lanczos_agrees_with_power():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    ce = nn.functional.cross_entropy
    lz = hessian_eigenvalues_with_info(model, ce, x, y, k=1, tol=1e-6, max_iter=100)
    pw = hessian_eigenvalues_with_info(model, ce, x, y, k=1, method="power", tol=1e-7, max_iter=3000)
    assert rel(lz.values[0], pw.values[0]) < 1e-3
    assert lz.hvps < pw.hvps


def test_lanczos_on_a_non_finite_operator_returns_nan_not_an_error():
    n = 10
    like = torch.zeros(1, dtype=D)
    r = lanczos(lambda v: v * float("inf"), n, like, k=2)
    assert all(math.isnan(x) for x in r.values) and r.converged is False and r.info["non_finite"]
