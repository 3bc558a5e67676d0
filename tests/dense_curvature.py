"""Dense oracles for the curvature tests: a model's parameters as one vector, and the full
Hessian of a loss and the full Jacobian of the outputs with respect to it (torch.autograd.functional),
against which the matrix-free solvers are checked."""

from __future__ import annotations

import torch
from torch.func import functional_call


def flat_params(model):
    """(all parameters as one detached vector, w -> {name: view of w}) for functional_call."""
    named = [(n, p.shape) for n, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflatten(w):
        params, i = {}, 0
        for n, s in named:
            k = int(torch.Size(s).numel())
            params[n] = w[i : i + k].view(s)
            i += k
        return params

    return flat, unflatten


def full_hessian(model, loss_fn, x, y):
    flat, unflatten = flat_params(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def f(w):
        return loss_fn(functional_call(model, (unflatten(w), {k: v.clone() for k, v in buffers.items()}), (x,)), y)

    return torch.autograd.functional.hessian(f, flat)


def jacobian(model, x):
    flat, unflatten = flat_params(model)

    def f(w):
        return functional_call(model, unflatten(w), (x,)).reshape(-1)

    return torch.autograd.functional.jacobian(f, flat)  # (m*C, P)
