"""Curvature of the training loss, matrix-free: Hessian, Gauss–Newton (NTK) and Adam-preconditioned
eigenvalues by Lanczos (full reorthogonalisation) or power iteration over operator-vector products.

Public API
----------
``hessian_eigenvalues(model, loss_fn, inputs, targets, k=1, ...) -> list[float]``
    the k largest (algebraic) eigenvalues of the Hessian of ``loss_fn(model(inputs), targets)``
    with respect to the parameters that require grad, descending.
``hessian_eigenvalues_with_info(...) -> EigResult``
    the same with the number of Hessian-vector products, iterations and convergence.
``gauss_newton_eigenvalues(model, inputs, loss="mse", reduction="mean", k=1, ...) -> EigResult``
    top eigenvalues of the Gauss–Newton matrix ``G = Jᵀ H_out J`` of the loss on that batch,
    where ``H_out`` is the Hessian of the (batch-averaged) loss with respect to the outputs:
    ``"mse"/"half_sum"`` (L = 1/(2m) Σ||f-y||²): G = JᵀJ/m; ``"mse"/"mean"`` (torch MSELoss,
    L = 1/(mC) Σ (f-y)²): G = 2/(mC) JᵀJ; ``"cross_entropy"`` (mean): G = Jᵀ(diag p - p pᵀ)J/m.
    The nonzero spectrum of G is that of the NTK ``H_out^{1/2} J Jᵀ H_out^{1/2}``, so
    ``2/lambda0`` is the stability edge of the linearised model under the loss actually used.
``ntk_top_eigenvalue(model, inputs, loss=..., reduction=...) -> float``  (lambda0)
``preconditioned_sharpness(model, loss_fn, inputs, targets, optimizer, ...) -> EigResult``
    top eigenvalue of P⁻¹H (computed as the symmetric P^{-1/2} H P^{-1/2}) with Adam's
    preconditioner after t steps P_t = (1 - beta1^t) (sqrt(v_t / (1 - beta2^t)) + eps), the same t
    in both corrections (Cohen et al. 2022); before the first step, the first step's P_1 from
    the batch's gradient (Adam: v_0 = 0; GI-Adam: v_0 = g^2), so it is measurable at init.
``adam_sharpness(...) -> (EigResult, EigResult)``
    both of the above from one forward pass and gradient graph (the Adam-family probe's pair).
``adam_threshold(lr, beta1)`` = (2 + 2 beta1) / ((1 - beta1) lr), its stability threshold.

Which loss is measured: by default the model is put in **train mode** for the measurement, so
batch norm uses batch statistics — the loss the optimizer sees (PyHessian uses eval mode, which
is a different function). ``eval_mode=True`` measures the eval-mode loss instead. Either way the
model's parameters, buffers (batch-norm running statistics, ``num_batches_tracked``) and every
module's ``training`` flag are restored exactly afterwards; ``.grad`` fields are not touched.

How products are formed: one forward pass and one gradient with ``create_graph=True``; every
Hessian-vector product is then a backward pass through that retained gradient graph
(``torch.autograd.grad(grads, params, v)``). This was faster than ``torch.func`` jvp-of-grad on
CPU for a small CNN (it re-runs the forward for every product; see bench/curvature.py), keeps
one dropout mask fixed for all products, and works with any module. Gauss–Newton products use
the double-backward trick: ``Jv = d/du (Jᵀu · v)`` through the same single forward graph.

Inputs that give no measurement (k above the operator's dimension, an unknown method or loss,
an optimizer that does not hold the model's parameters) raise :class:`CurvatureError`, a
MeasurementError (so a ValueError) whose ``arg`` names the argument at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import scipy.linalg as sla
import torch

from .errors import MeasurementError

__all__ = [
    "CurvatureError",
    "EigResult",
    "hessian_eigenvalues",
    "hessian_eigenvalues_with_info",
    "gauss_newton_eigenvalues",
    "ntk_top_eigenvalue",
    "preconditioned_sharpness",
    "adam_sharpness",
    "adam_threshold",
    "loss_normalisation",
    "lanczos",
    "power_iteration",
]


class CurvatureError(MeasurementError):
    """Inputs no eigenvalue can be computed from; ``arg``: "k", "method", "loss", "v0",
    "model" or "optimizer"."""


@dataclass
class EigResult:
    """Eigenvalues (descending) and what it took to get them."""

    values: list[float]
    hvps: int  # operator-vector products used (Hessian-, GN- or preconditioned-vector)
    iterations: int
    converged: bool
    method: str
    info: dict[str, Any] = field(default_factory=dict)
    vector: Optional[torch.Tensor] = None  # unit eigenvector estimate of the top value (flat)

    @property
    def top(self) -> float:
        return self.values[0]


# --------------------------------------------------------------------------- model state guard


class _Guard:
    """Put the model in the measured mode; restore buffers and training flags afterwards."""

    def __init__(self, model: torch.nn.Module, eval_mode: bool):
        self.model = model
        self.eval_mode = eval_mode

    def __enter__(self) -> "_Guard":
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        self.model.train(not self.eval_mode)
        return self

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        for m, flag in self.flags:
            m.training = flag


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    ps = [p for p in model.parameters() if p.requires_grad]
    if not ps:
        raise CurvatureError("the model has no parameters that require grad", arg="model")
    return ps


def _flat(ts: Sequence[Optional[torch.Tensor]], like: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [(t if t is not None else torch.zeros_like(p)).reshape(-1).to(like[0].dtype) for t, p in zip(ts, like)]
    )


def _unflat(v: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for p in like:
        n = p.numel()
        out.append(v[i : i + n].view_as(p).to(p.dtype))
        i += n
    return out


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # drawn on the CPU so a seed gives the same start vector on every device; float32 unless the
    # operator is float64 (4x faster to draw: this is a fixed cost of every warm-started probe)
    dt = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.randn(n, generator=gen, dtype=dt).to(device=like.device, dtype=like.dtype)


WARM_NOISE = 0.05  # share of random direction mixed into a warm start (keeps every component > 0)

# the last seeded start vector, reused: a probe measuring every few hundred steps asks for the same
# vector each time (same seed, same size), and drawing it costs ~4 ms at 1M parameters
_FIRST: dict[tuple, torch.Tensor] = {}


def _first_randn(n: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """The first ``_randn(n, _gen(seed), like)`` draw, unit norm (cached on the host, one entry,
    so no accelerator memory is held between measurements)."""
    key = (n, int(seed), like.dtype)
    r = _FIRST.get(key)
    if r is None:
        r = _randn(n, _gen(seed), like.new_empty(0, device="cpu"))
        r = r / r.norm()
        _FIRST.clear()
        _FIRST[key] = r
    return r.to(like.device)


def _start(
    n: int, gen: Optional[torch.Generator], like: torch.Tensor, v0: Optional[torch.Tensor], seed: int = 0
) -> torch.Tensor:
    """A unit start vector: the seeded random one (``gen``'s next draw, or with ``gen`` None the
    first draw of ``seed``'s generator, cached), or ``v0`` with a little of it mixed in."""
    if gen is None:
        r = _first_randn(n, seed, like)
    else:
        r = _randn(n, gen, like)
        r = r / r.norm()
    if v0 is None:
        return r
    if v0.numel() != n:
        raise CurvatureError(f"v0 has {v0.numel()} entries, the operator {n}", arg="v0")
    w = v0.reshape(-1).to(device=like.device, dtype=like.dtype)
    w = w / w.norm() + WARM_NOISE * r
    return w / w.norm()


# --------------------------------------------------------------------------- eigensolvers


def lanczos(
    op: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    like: torch.Tensor,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    v0: Optional[torch.Tensor] = None,
) -> EigResult:
    """The k largest eigenvalues of the symmetric operator ``op`` on R^n by Lanczos.

    Full reorthogonalisation (classical Gram–Schmidt, twice) against every stored Lanczos
    vector, so no ghost copies of converged eigenvalues appear. On breakdown (an invariant
    subspace was found) it continues from a fresh random vector orthogonal to the basis, so
    repeated eigenvalues are found with their multiplicity. Stops when each of the top-k Ritz
    pairs has a residual ``r = ||A y - theta y|| = beta·|last component of its Ritz vector|``
    of at most ``tol·|theta|``: an eigenvalue of A lies within ``r`` of theta, so the values
    returned are within ``tol`` (relative) of eigenvalues of A. (The estimate ``r²/gap`` with
    the gap to the next Ritz value stopped too early where the top eigenvalues are close: the
    next Ritz value overstates the gap until the close eigenvalue is resolved; 3% apart, tol
    1e-3 gave errors of 2-24e-3.) Or it stops after ``max_iter`` products (capped at n), with
    ``converged`` False. A non-finite product (a diverging model) ends it with NaN values,
    ``converged`` False and ``info["non_finite"]``. The bound is to *an* eigenvalue: a Krylov method cannot see an
    eigenvalue its start vector is nearly orthogonal to, so with ``tol`` above the relative gap
    of two top eigenvalues the value found first may be the second (bench/lanczos_tol.py: 3%
    apart, tol 1e-2, one start in three); keep ``tol`` below the gaps that matter. ``v0`` warm-starts from a previous
    eigenvector estimate (e.g. ``EigResult.vector`` of the last measurement), mixed with a
    little of the seeded random vector; the stopping rule is the same.
    """
    if k < 1:
        raise CurvatureError("k must be >= 1", arg="k")
    if k > n:
        raise CurvatureError(f"k={k} eigenvalues asked of an operator of dimension {n}", arg="k")
    m = max(min(max_iter, n), k)
    gen: Optional[torch.Generator] = None  # made (past the cached first draw) only on a breakdown
    # the basis, uninitialised (only rows 0..j, all written, are ever read), grown by doubling: on
    # the host up to 256 MB at once (untouched pages cost nothing; growing copies the basis), on an
    # accelerator 8 rows, so a large max_iter does not reserve (max_iter x n) of its memory up front
    rows = min(m + 1, max(8, (1 << 26) // n) if like.device.type == "cpu" else 8)
    Q = torch.empty(rows, n, dtype=like.dtype, device=like.device)
    Q[0] = _start(n, None, like, v0, seed)
    alphas: list[float] = []
    betas: list[float] = []
    theta = np.zeros(0)
    converged = False
    j = 0
    for j in range(m):
        w = op(Q[j])
        B = Q[: j + 1]
        # the three-term recurrence first, w - alpha q_j - beta q_{j-1} (a new tensor: op's result
        # may be anyone's), then one classical Gram-Schmidt pass against the whole basis for the
        # orthogonality the recurrence loses, and a second pass only where that one removed more
        # than what it left (Daniel-Gragg-Kaufman-Stewart, eta = 1/sqrt 2). Each pass reads the
        # basis twice: at a million parameters the basis outgrows the cache and these passes, not
        # the arithmetic, are the solver's cost (two always-on passes took 10 ms a product)
        a_t = torch.dot(Q[j], w)
        if j:
            w = torch.addmv(w, Q[j - 1 : j + 1].t(), torch.stack([w.new_tensor(betas[-1]), a_t]), alpha=-1.0)
        else:
            w = w - a_t * Q[0]
        c = B @ w
        w.addmv_(B.t(), c, alpha=-1.0)
        # one host sync per product: alpha, the pass's correction and beta together
        alpha, corr, beta = torch.stack([a_t, torch.linalg.vector_norm(c), torch.linalg.vector_norm(w)]).tolist()
        if corr > beta:
            w.addmv_(B.t(), B @ w, alpha=-1.0)
            beta = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            # a non-finite operator (a diverging run's curvature): no eigenvalue, not an error
            nan = float("nan")
            return EigResult(
                values=[nan] * k,
                hvps=j + 1,
                iterations=j + 1,
                converged=False,
                method="lanczos",
                info={"non_finite": True},
            )
        alphas.append(alpha)
        # the small tridiagonal eigenproblem on the host, in float64, by LAPACK's tridiagonal solver
        # (numpy's dense eigh woke OpenBLAS's threads, which then spun on the other core through the
        # next products: 1.6x the solver's wall time in CPU time, taken from whatever else runs
        # there, such as the other run of a two-run experiment)
        theta, S = sla.eigh_tridiagonal(np.asarray(alphas), np.asarray(betas), check_finite=False)
        scale = max(float(np.abs(theta).max()), 1e-30)
        exhausted = j + 1 >= n
        breakdown = beta <= 1e-10 * scale
        if j + 1 >= k:
            # the residual norm of each top-k Ritz pair, ||A y - theta y|| = beta |last component|:
            # some eigenvalue lies within it of theta (no gap estimate, which Ritz values
            # overstate while a close eigenvalue is still unresolved)
            res = (beta * np.abs(S[-1, -k:])).tolist()
            th = theta[-k:].tolist()
            ok = all(r <= tol * max(abs(t), 1e-30) for r, t in zip(res, th))
            if ok or exhausted:
                converged = ok or exhausted
                break
        if j + 1 >= m:
            break
        if breakdown:
            # restart in the orthogonal complement of the basis built so far
            if gen is None:
                gen = _gen(seed)
                _randn(n, gen, like)  # the start vector's draw
            w = _randn(n, gen, like)
            for _ in range(2):
                w = w - B.t() @ (B @ w)
            beta_next = 0.0
        else:
            beta_next = beta
        betas.append(beta_next)
        if j + 1 >= Q.shape[0]:
            grown = torch.empty(min(m + 1, 2 * Q.shape[0]), n, dtype=Q.dtype, device=Q.device)
            grown[: Q.shape[0]] = Q
            Q = grown
        torch.div(w, w.norm() if breakdown else beta, out=Q[j + 1])  # normalised straight into the basis
    vals = sorted(theta.tolist(), reverse=True)[:k]
    top = Q[: S.shape[0]].t() @ torch.from_numpy(np.ascontiguousarray(S[:, -1])).to(device=Q.device, dtype=Q.dtype)
    return EigResult(
        values=vals, hvps=j + 1, iterations=j + 1, converged=converged, method="lanczos", vector=top / top.norm()
    )


def power_iteration(
    op: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    like: torch.Tensor,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    shift_negative: bool = True,
    v0: Optional[torch.Tensor] = None,
) -> EigResult:
    """Top-k eigenvalues by power iteration with deflation (orthogonalising against the
    eigenvectors found before), stopping on a relative change of the Rayleigh quotient below
    ``tol`` (``max_iter`` products per eigenvalue at most).

    Power iteration finds the largest *magnitude*; with ``shift_negative`` a first value that
    comes out negative (an operator whose most negative eigenvalue dominates) is used as a
    shift s, the iteration is rerun on ``op - s·I`` (whose spectrum is >= 0) and s is added back,
    so the values returned are the largest algebraic ones. ``v0`` warm-starts the first one.
    """
    if k < 1:
        raise CurvatureError("k must be >= 1", arg="k")
    if k > n:
        raise CurvatureError(f"k={k} eigenvalues asked of an operator of dimension {n}", arg="k")
    gen = _gen(seed)
    total = 0
    iters = 0

    def run(shift: float, kk: int) -> tuple[list[float], bool, list[torch.Tensor]]:
        nonlocal total, iters
        vecs: list[torch.Tensor] = []
        vals: list[float] = []
        all_conv = True
        for i in range(kk):
            v = _start(n, gen, like, v0 if i == 0 and not shift else None)
            theta: Optional[float] = None
            conv = False
            for _it in range(max_iter):
                for u in vecs:
                    v = v - torch.dot(u, v) * u
                v = v / v.norm()
                w = op(v)
                if shift:
                    w = w - shift * v
                total += 1
                iters += 1
                t = float(torch.dot(w, v))
                nw = float(w.norm())
                if nw == 0.0:
                    theta, conv = 0.0, True
                    break
                v = w / nw
                if theta is not None and abs(t - theta) <= tol * max(abs(theta), 1e-30):
                    theta, conv = t, True
                    break
                theta = t
            all_conv = all_conv and conv
            vecs.append(v)
            vals.append(float(theta) + shift)
        return vals, all_conv, vecs

    vals, conv, vecs = run(0.0, k)
    if shift_negative and vals[0] < 0:
        vals, conv, vecs = run(vals[0], k)
    order = sorted(range(len(vals)), key=lambda i: -vals[i])
    return EigResult(
        values=[vals[i] for i in order],
        hvps=total,
        iterations=iters,
        converged=conv,
        method="power",
        vector=vecs[order[0]],
    )


def _solve(op, n, like, k, method, tol, max_iter, seed, v0=None) -> EigResult:
    if method == "lanczos":
        return lanczos(op, n, like, k=k, tol=tol, max_iter=max_iter, seed=seed, v0=v0)
    if method == "power":
        return power_iteration(op, n, like, k=k, tol=tol, max_iter=max_iter, seed=seed, v0=v0)
    raise CurvatureError(f"method must be 'lanczos' or 'power', got {method!r}", arg="method")


# --------------------------------------------------------------------------- operators


def _hessian_operator(model, loss_fn, inputs, targets, params):
    """Hv through the retained graph of one gradient; returns (op, loss value, gradient)."""
    loss = loss_fn(model(inputs), targets)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    gl = [grads[i] for i in live]

    def op(v: torch.Tensor) -> torch.Tensor:
        if not gl:
            return torch.zeros_like(v)
        vs = _unflat(v, params)
        hv = torch.autograd.grad(gl, params, grad_outputs=[vs[i] for i in live], retain_graph=True, allow_unused=True)
        return _flat(hv, params)

    return op, float(loss.detach()), [None if g is None else g.detach() for g in grads]


def loss_normalisation(loss: str, reduction: str = "mean") -> str:
    """How the loss (and so every curvature value) is normalised, as recorded in events."""
    if loss == "cross_entropy":
        return "cross_entropy mean over m samples; GN = J^T (diag p - p p^T) J / m"
    if loss == "mse" and reduction == "mean":
        return "mse mean: L = 1/(m*C) sum (f-y)^2; GN = 2/(m*C) J^T J"
    if loss == "mse" and reduction == "half_sum":
        return "mse half_sum: L = 1/(2m) sum ||f-y||^2; GN = J^T J / m"
    raise CurvatureError(f"unknown loss {loss!r} / reduction {reduction!r}", arg="loss")


def hessian_eigenvalues_with_info(
    model: torch.nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: Any,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    eval_mode: bool = False,
    v0: Optional[torch.Tensor] = None,
) -> EigResult:
    """Top-k Hessian eigenvalues of ``loss_fn(model(inputs), targets)`` with statistics.

    ``max_iter``: Lanczos steps (= Hessian-vector products) for "lanczos", products per
    eigenvalue for "power". ``seed`` fixes the start vector; ``v0`` (flat, e.g. the ``vector``
    of an earlier result) warm-starts it. Train-mode loss unless
    ``eval_mode``; model state restored exactly (see the module docstring).
    """
    params = _params(model)
    with _Guard(model, eval_mode):
        op, loss_value, _ = _hessian_operator(model, loss_fn, inputs, targets, params)
        n = sum(p.numel() for p in params)
        res = _solve(op, n, params[0].detach(), k, method, tol, max_iter, seed, v0)
    res.info.update(loss=loss_value, mode="eval" if eval_mode else "train", params=n, samples=int(inputs.shape[0]))
    return res


def hessian_eigenvalues(
    model: torch.nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: Any,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    eval_mode: bool = False,
) -> list[float]:
    """The k largest Hessian eigenvalues (descending floats); see
    :func:`hessian_eigenvalues_with_info`."""
    return hessian_eigenvalues_with_info(
        model, loss_fn, inputs, targets, k=k, method=method, tol=tol, max_iter=max_iter, seed=seed, eval_mode=eval_mode
    ).values


# --------------------------------------------------------------------------- Gauss–Newton / NTK


def _gn_operator(model, inputs, params, loss: str, reduction: str):
    out = model(inputs)
    m = out.shape[0]
    flat_out = out.reshape(m, -1)
    C = flat_out.shape[1]
    u = torch.zeros_like(out, requires_grad=True)
    jtu = torch.autograd.grad(out, params, grad_outputs=u, create_graph=True, allow_unused=True)
    live = [i for i, g in enumerate(jtu) if g is not None and g.requires_grad]
    if loss == "cross_entropy":
        if out.dim() != 2:
            raise CurvatureError("cross_entropy Gauss–Newton expects (m, classes) outputs", arg="model")
        p = torch.softmax(out.detach().double(), dim=1).to(out.dtype)

        def h_out(z: torch.Tensor) -> torch.Tensor:  # (diag p - p p^T) z / m, per sample
            return (p * z - p * (p * z).sum(1, keepdim=True)) / m
    elif loss == "mse":
        scale = 1.0 / m if reduction == "half_sum" else 2.0 / (m * C)

        def h_out(z: torch.Tensor) -> torch.Tensor:
            return scale * z
    else:
        raise CurvatureError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}", arg="loss")

    def op(v: torch.Tensor) -> torch.Tensor:
        vs = _unflat(v, params)
        jv = torch.autograd.grad([jtu[i] for i in live], u, grad_outputs=[vs[i] for i in live], retain_graph=True)[0]
        w = h_out(jv.detach())
        jtw = torch.autograd.grad(out, params, grad_outputs=w, retain_graph=True, allow_unused=True)
        return _flat(jtw, params)

    return op, m, C


def gauss_newton_eigenvalues(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    loss: str = "mse",
    reduction: str = "mean",
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    eval_mode: bool = False,
    v0: Optional[torch.Tensor] = None,
) -> EigResult:
    """Top-k eigenvalues of the Gauss–Newton matrix of the loss on ``inputs`` (targets are not
    needed: G depends on the outputs only). ``info["normalisation"]`` records the scaling."""
    loss_normalisation(loss, reduction)  # validates
    params = _params(model)
    with _Guard(model, eval_mode):
        op, m, C = _gn_operator(model, inputs, params, loss, reduction)
        n = sum(p.numel() for p in params)
        res = _solve(op, n, params[0].detach(), k, method, tol, max_iter, seed, v0)
    res.info.update(
        normalisation=loss_normalisation(loss, reduction),
        loss=loss,
        reduction=reduction if loss == "mse" else "mean",
        samples=m,
        outputs=C,
        params=n,
        mode="eval" if eval_mode else "train",
    )
    return res


def ntk_top_eigenvalue(
    model: torch.nn.Module, inputs: torch.Tensor, loss: str = "mse", reduction: str = "mean", **kw: Any
) -> float:
    """lambda0: the top Gauss–Newton (NTK) eigenvalue; 2/lambda0 is the linearised stability
    edge under that loss. Keywords as :func:`gauss_newton_eigenvalues`."""
    return gauss_newton_eigenvalues(model, inputs, loss=loss, reduction=reduction, k=1, **kw).top


# --------------------------------------------------------------------------- Adam preconditioning


def adam_threshold(lr: float, beta1: float) -> float:
    """Stability threshold of Adam's preconditioned sharpness: (2 + 2 beta1) / ((1 - beta1) lr)."""
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    grads: Optional[Sequence[Optional[torch.Tensor]]] = None,
) -> tuple[torch.Tensor, int]:
    """(flat P, t): Adam's diagonal preconditioner and the step count it belongs to.

    Adam's update (torch's count: ``state["step"] = t`` after t steps, ``exp_avg`` = m_t and
    ``exp_avg_sq`` = v_t without bias correction) is ``theta_t = theta_{t-1} - lr P_t^{-1} m_t``
    with ``P_t = (1 - beta1^t) (sqrt(v_t / (1 - beta2^t)) + eps)``: the same t in both bias
    corrections (Cohen et al. 2022; Kalra & Barkeshli 2024). After t >= 1 steps this is read
    from ``optimizer.state``.

    Before the first step (no state: the preconditioned sharpness at initialisation) it is the
    preconditioner P_1 of the first step, predicted from ``grads`` (the gradient at the current
    weights, standing in for the first step's): ``v_1 = beta2 v_0 + (1 - beta2) g^2`` with
    ``v_0 = 0`` for Adam and ``v_0 = g^2`` for an optimizer whose ``second_moment_init`` is
    ``"grad_sq"`` (GI-Adam), so ``P_1 = (1 - beta1)(|g| + eps)`` for Adam and
    ``(1 - beta1)(|g| / sqrt(1 - beta2) + eps)`` for GI-Adam. A group's L2 ``weight_decay`` is
    added to g (Adam, GI-Adam; not AdamW, whose decay is decoupled). Returns t = 1 then.
    Raises CurvatureError if some parameters have state and others not, or no ``grads`` are given
    for a stateless optimizer."""
    group_of = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            group_of[id(p)] = g
    states = [optimizer.state.get(p, {}) for p in params]
    have = ["exp_avg_sq" in st for st in states]
    if any(id(p) not in group_of for p in params):
        raise CurvatureError("the optimizer does not hold every parameter of the model", arg="optimizer")
    parts = []
    if all(have):
        steps = {int(float(st["step"])) for st in states}
        if len(steps) != 1:
            raise CurvatureError(f"the parameters' Adam step counts differ: {sorted(steps)}", arg="optimizer")
        t = steps.pop()
        for p, st in zip(params, states):
            g = group_of[id(p)]
            b1, b2 = g["betas"]
            v = st["exp_avg_sq"].detach()
            parts.append(((1.0 - b1**t) * ((v / (1.0 - b2**t)).sqrt() + g["eps"])).reshape(-1))
        return torch.cat(parts).to(params[0].dtype), t
    if any(have):
        raise CurvatureError("the optimizer has Adam state for some parameters only", arg="optimizer")
    if grads is None:
        raise CurvatureError(
            "the optimizer has no Adam state (exp_avg_sq) yet and no gradient was given", arg="optimizer"
        )
    gi = getattr(optimizer, "second_moment_init", "zeros") == "grad_sq"
    for p, gr in zip(params, grads):
        g = group_of[id(p)]
        decoupled = isinstance(optimizer, torch.optim.AdamW) or g.get("decoupled_weight_decay", False)
        b1, b2 = g["betas"]
        gr = torch.zeros_like(p) if gr is None else gr.detach()
        if g.get("weight_decay", 0) and not decoupled:
            gr = gr + g["weight_decay"] * p.detach()
        sq = gr * gr
        v1 = (b2 * sq if gi else 0.0) + (1.0 - b2) * sq
        parts.append(((1.0 - b1) * ((v1 / (1.0 - b2)).sqrt() + g["eps"])).reshape(-1))
    return torch.cat(parts).to(params[0].dtype), 1


def preconditioned_sharpness(
    model: torch.nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: Any,
    optimizer: torch.optim.Optimizer,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    eval_mode: bool = False,
    v0: Optional[torch.Tensor] = None,
) -> EigResult:
    """Top-k eigenvalues of P⁻¹H for Adam's preconditioner P (:func:`adam_preconditioner`:
    after t >= 1 steps the P_t of the last step; before the first step the P_1 of the first,
    from this batch's gradient), computed as the eigenvalues of the symmetric
    ``P^{-1/2} H P^{-1/2}`` (same spectrum). Compare the top one with :func:`adam_threshold`.
    ``info["adam_step"]`` is that t, ``info["at_init"]`` whether P was predicted."""
    kw = dict(k=k, method=method, tol=tol, max_iter=max_iter, seed=seed, eval_mode=eval_mode)
    return adam_sharpness(model, loss_fn, inputs, targets, optimizer, plain=False, pv0=v0, **kw)[1]


def adam_sharpness(
    model: torch.nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: Any,
    optimizer: torch.optim.Optimizer,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    eval_mode: bool = False,
    v0: Optional[torch.Tensor] = None,
    pv0: Optional[torch.Tensor] = None,
    plain: bool = True,
) -> tuple[Optional[EigResult], EigResult]:
    """(the Hessian's top-k, as :func:`hessian_eigenvalues_with_info`, or None without ``plain``;
    the preconditioned top-k, as :func:`preconditioned_sharpness`) from one forward pass and one
    gradient graph: what the sharpness probe measures for the Adam family, at the fixed cost of
    one measurement. ``v0`` and ``pv0`` warm-start each."""
    params = _params(model)
    n = sum(p.numel() for p in params)
    with _Guard(model, eval_mode):
        hop, loss_value, grads = _hessian_operator(model, loss_fn, inputs, targets, params)
        like = params[0].detach()
        res = None
        if plain:
            res = _solve(hop, n, like, k, method, tol, max_iter, seed, v0)
            res.info.update(
                loss=loss_value, mode="eval" if eval_mode else "train", params=n, samples=int(inputs.shape[0])
            )
        P, t = adam_preconditioner(optimizer, params, grads)
        d = P.rsqrt()
        pres = _solve(lambda v: d * hop(d * v), n, like, k, method, tol, max_iter, seed, pv0)
    pres.info.update(
        loss=loss_value,
        mode="eval" if eval_mode else "train",
        preconditioner="(1-beta1^t)(sqrt(v_t/(1-beta2^t))+eps)",
        adam_step=t,
        at_init=not any("exp_avg_sq" in optimizer.state.get(p, {}) for p in params),
    )
    return res, pres
