"""Optimizers built from configs against torch's own, and GI-Adam against plain tensor math."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from heur.core.config import OptimConfig, RunConfig
from heur.core.optim import GIAdam, build_optimizer, effective_lr, param_groups, run_base_lr


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.ln = nn.LayerNorm(5)
        self.head = nn.Linear(5, 2, bias=False)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.head(self.ln(self.fc(h)))


def _model(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return Small().to(dtype)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 1, 4, 4, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 2, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "kw, ref",
    [
        (dict(name="sgd", momentum=0.0), lambda ps: torch.optim.SGD(ps, lr=0.05)),
        (
            dict(name="sgd", momentum=0.9, weight_decay=5e-4),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-4),
        ),
        (
            dict(name="sgd", momentum=0.8, nesterov=True, weight_decay=1e-3),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
        ),
        (
            dict(name="adam", betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
            lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
        ),
        (
            dict(name="adamw", betas=(0.9, 0.95), weight_decay=0.1),
            lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.95), weight_decay=0.1),
        ),
    ],
)
def test_builtin_optimizers_equal_torch(kw, ref):
    cfg = OptimConfig(lr=0.05, **kw)
    m1 = _model()
    m2 = copy.deepcopy(m1)
    ours = _train(m1, build_optimizer(m1, cfg, 0.05))
    theirs = _train(m2, ref(m2.parameters()))
    start = [p.detach() for p in _model().parameters()]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any(not torch.equal(a, s) for a, s in zip(ours, start))  # it did train
    assert type(build_optimizer(m1, cfg, 0.05)).__name__ == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[kw["name"]]


def test_weight_decay_norm_bias_false_groups():
    m = _model()
    cfg = OptimConfig(name="sgd", weight_decay=1e-3, weight_decay_norm_bias=False)
    opt = build_optimizer(m, cfg, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    by_wd = {g["weight_decay"]: sorted(names[id(p)] for p in g["params"]) for g in opt.param_groups}
    assert by_wd == {
        1e-3: ["conv.weight", "fc.weight", "head.weight"],
        0.0: ["bn.bias", "bn.weight", "conv.bias", "fc.bias", "ln.bias", "ln.weight"],
    }
    # default: one group, everything decayed
    opt = build_optimizer(m, OptimConfig(name="sgd", weight_decay=1e-3), 0.1)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-3
    assert len(opt.param_groups[0]["params"]) == len(list(m.parameters()))


def test_no_decay_group_really_skips_decay():
    """With zero gradients, only decayed params move under SGD."""
    m = _model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = build_optimizer(m, OptimConfig(name="sgd", weight_decay=0.5, weight_decay_norm_bias=False), 0.1)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in m.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        assert moved == (n.endswith(".weight") and not n.startswith(("bn", "ln"))), n


def test_shared_parameter_listed_once():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    groups = param_groups(m, OptimConfig(weight_decay=0.1, weight_decay_norm_bias=False))
    assert sum(len(g["params"]) for g in groups) == 2


def test_linear_scaling():
    cfg = OptimConfig(lr=0.1, lr_scaling="linear", base_batch_size=256)
    assert effective_lr(cfg, 0.1, 1024) == pytest.approx(0.4)
    assert effective_lr(cfg, 0.1, 64) == pytest.approx(0.025)
    assert effective_lr(OptimConfig(lr=0.1), 0.1, 1024) == 0.1
    run = RunConfig.model_validate(
        {"train": {"batch_size": 100}, "optim": {"lr": 0.2, "lr_scaling": "linear", "base_batch_size": 50}}
    )
    assert run_base_lr(run) == pytest.approx(0.4)
    ntk = RunConfig.model_validate({"train": {"batch_size": 100}, "optim": {"lr_ntk": 2.0}})
    assert run_base_lr(ntk) == 1.0
    assert run_base_lr(ntk, lambda0=8.0) == pytest.approx(0.25)


# ------------------------------------------------------------------------ GI-Adam


def gi_adam_reference(params, grads_seq, lr, b1, b2, eps, wd):
    """Element-wise GI-Adam written out with plain tensor arithmetic."""
    theta = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = None
    for t, grads in enumerate(grads_seq, start=1):
        gs = [g + wd * th for g, th in zip(grads, theta)]
        if v is None:
            v = [g * g for g in gs]
        for i, g in enumerate(gs):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat = m[i] / (1 - b1**t)
            vhat = v[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * mhat / (torch.sqrt(vhat) + eps)
    return theta


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_gi_adam_matches_reference(wd, betas):
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
    grads_seq = [[torch.randn_like(p) for p in params] for _ in range(7)]
    ps = [p.clone().requires_grad_(True) for p in params]
    opt = GIAdam(ps, lr=0.01, betas=betas, eps=1e-8, weight_decay=wd)
    for grads in grads_seq:
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
    ref = gi_adam_reference(params, grads_seq, 0.01, *betas, 1e-8, wd)
    for a, b in zip(ps, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)


def test_gi_adam_constant_gradient_closed_form():
    lr, b2 = 0.1, 0.999
    g = torch.tensor([2.0, -0.5, 3e-3], dtype=torch.float64)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = GIAdam([p], lr=lr, betas=(0.9, b2), eps=0.0)
    prev = p.detach().clone()
    for t in range(1, 6):
        p.grad = g.clone()
        opt.step()
        step = p.detach() - prev
        prev = p.detach().clone()
        expect = -lr * math.sqrt(1 - b2**t) * torch.sign(g)
        torch.testing.assert_close(step, expect, rtol=1e-12, atol=0)
        if t == 1:  # lr / sqrt(1000) for beta2 = 0.999
            torch.testing.assert_close(
                step.abs(), torch.full((3,), lr / math.sqrt(1000), dtype=torch.float64), rtol=1e-12, atol=0
            )


def test_gi_adam_differs_from_adam_and_state_roundtrips(tmp_path):
    m1 = _model()
    m2 = copy.deepcopy(m1)
    a = _train(m1, GIAdam(m1.parameters(), lr=0.01), steps=2)
    b = _train(m2, torch.optim.Adam(m2.parameters(), lr=0.01), steps=2)
    assert any(not torch.allclose(x, y) for x, y in zip(a, b))
    opt = build_optimizer(m1, OptimConfig(name="gi_adam", lr=0.01), 0.01)
    assert isinstance(opt, GIAdam)
    _train(m1, opt, steps=2)
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    sd = torch.load(tmp_path / "o.pt", weights_only=True)
    opt2 = GIAdam(m1.parameters(), lr=0.01)
    opt2.load_state_dict(sd)
    assert opt2.state[next(m1.parameters())]["step"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gi_adam_on_cuda_matches_cpu():
    p_cpu = torch.randn(10, dtype=torch.float64, requires_grad=True)
    p_gpu = p_cpu.detach().cuda().requires_grad_(True)
    o1, o2 = GIAdam([p_cpu], lr=0.01, weight_decay=0.1), GIAdam([p_gpu], lr=0.01, weight_decay=0.1)
    for k in range(4):
        g = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        p_cpu.grad, p_gpu.grad = g.clone(), g.cuda()
        o1.step()
        o2.step()
    torch.testing.assert_close(p_gpu.detach().cpu(), p_cpu.detach(), rtol=1e-12, atol=1e-14)


def test_adam_bias_warmup_is_gi_adams_builtin_warmup():
    """Oracle: the optimizers themselves. With a constant gradient and eps = 0, Adam's step is
    its lr and GI-Adam's is lr sqrt(1 - b2^t); Adam under the ``adam_bias`` warmup (scaled by
    sqrt(1 - b2^W), the shape's normalisation) takes GI-Adam's steps during the warmup."""
    from heur.core.config import ScheduleConfig, WarmupConfig
    from heur.core.schedules import build_schedule

    b2, w, lr = 0.99, 40, 0.1
    sch = build_schedule(
        ScheduleConfig(name="constant", warmup=WarmupConfig(steps=w, shape="adam_bias", beta2=b2)), lr, 10, 60
    )
    pa = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    pg = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    adam = torch.optim.Adam([pa], lr=lr, betas=(0.9, b2), eps=0.0)
    gi = GIAdam([pg], lr=lr, betas=(0.9, b2), eps=0.0)
    for s in range(w):
        for g in adam.param_groups:
            g["lr"] = sch(s)
        before = (pa.item(), pg.item())
        for p, o in ((pa, adam), (pg, gi)):
            p.grad = torch.ones_like(p)
            o.step()
        da, dg = before[0] - pa.item(), before[1] - pg.item()
        assert da * math.sqrt(1 - b2**w) == pytest.approx(dg, rel=1e-9)
    assert sch(w) == lr and sch(0) < 0.2 * lr
