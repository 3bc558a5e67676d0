"""Schedules against torch's own lr schedulers, stepped once per optimizer step."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heur.core.config import RunConfig, ScheduleConfig, WarmupConfig
from heur.core.data import steps_per_epoch, total_steps
from heur.core.errors import ConfigError
from heur.core.schedules import EXP_WARMUP_FLOOR, build_schedule, epochs_to_steps, validate_schedule

L = torch.optim.lr_scheduler
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def torch_lrs(make_main, base_lr: float, n: int, warmup: tuple[int, float] | None = None) -> list[float]:
    """The lr torch's schedulers give each optimizer step 0..n-1 (float64 parameter)."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if warmup:
            w, f0 = warmup
            first = L.LinearLR(opt, start_factor=f0, end_factor=1.0, total_iters=w)
            sched = L.SequentialLR(opt, [first, make_main(opt)], milestones=[w])
        else:
            sched = make_main(opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def assert_close(ours: list[float], theirs: list[float], rel: float = 1e-9) -> None:
    assert len(ours) == len(theirs)
    for s, (a, b) in enumerate(zip(ours, theirs)):
        assert a == pytest.approx(b, rel=rel, abs=0.0), f"step {s}: ours {a!r} torch {b!r}"


spe_st = st.integers(1, 12)
lr_st = st.floats(1e-3, 2.0)
warm_st = st.one_of(st.none(), st.tuples(st.integers(1, 15), st.floats(0.01, 1.0)))


def _cfg(name: str, warmup: tuple[int, float] | None, **kw) -> ScheduleConfig:
    wu = WarmupConfig(steps=warmup[0], start_factor=warmup[1]) if warmup else None
    return ScheduleConfig(name=name, warmup=wu, **kw)


def _main_len(n: int, warmup) -> int:
    return n - (warmup[0] if warmup else 0)


@SETTINGS
@given(spe=spe_st, lr=lr_st, warm=warm_st, extra=st.integers(2, 120))
def test_constant_and_linear_warmup(spe, lr, warm, extra):
    n = (warm[0] if warm else 0) + extra
    sch = build_schedule(_cfg("constant", warm), lr, spe, n)
    ref = torch_lrs(lambda o: L.ConstantLR(o, factor=1.0, total_iters=0), lr, n, warm)
    assert_close(sch.lrs(), ref)


@SETTINGS
@given(
    spe=spe_st,
    lr=lr_st,
    warm=warm_st,
    extra=st.integers(2, 120),
    size=st.floats(0.05, 5.0),
    gamma=st.floats(0.05, 0.99),
)
def test_step(spe, lr, warm, extra, size, gamma):
    n = (warm[0] if warm else 0) + extra
    sch = build_schedule(_cfg("step", warm, step_size=size, gamma=gamma), lr, spe, n)
    k = epochs_to_steps(size, spe)
    assert sch.step_size == k
    assert_close(sch.lrs(), torch_lrs(lambda o: L.StepLR(o, step_size=k, gamma=gamma), lr, n, warm))


@SETTINGS
@given(
    spe=spe_st,
    lr=lr_st,
    warm=warm_st,
    extra=st.integers(5, 120),
    ms=st.lists(st.integers(1, 200), min_size=1, max_size=4, unique=True),
    gamma=st.floats(0.05, 0.99),
)
def test_multistep_in_steps(spe, lr, warm, extra, ms, gamma):
    n = (warm[0] if warm else 0) + extra
    ms = sorted(m for m in ms if m < extra) or [1]
    sch = build_schedule(_cfg("multistep", warm, milestones_steps=ms, gamma=gamma), lr, spe, n)
    assert_close(sch.lrs(), torch_lrs(lambda o: L.MultiStepLR(o, milestones=ms, gamma=gamma), lr, n, warm))


def test_multistep_epochs_convert_to_steps():
    sch = build_schedule(ScheduleConfig(name="multistep", milestones=[1.5, 3], gamma=0.5), 1.0, 10, 50)
    assert sch.milestones == [15, 30]
    assert sch(14) == 1.0 and sch(15) == 0.5 and sch(29) == 0.5 and sch(30) == 0.25


@SETTINGS
@given(spe=spe_st, lr=lr_st, warm=warm_st, extra=st.integers(2, 120), end=st.floats(0.0, 1.0))
def test_linear(spe, lr, warm, extra, end):
    n = (warm[0] if warm else 0) + extra
    sch = build_schedule(_cfg("linear", warm, end_factor=end), lr, spe, n)
    m = _main_len(n, warm)
    ref = torch_lrs(lambda o: L.LinearLR(o, start_factor=1.0, end_factor=end, total_iters=m), lr, n, warm)
    assert_close(sch.lrs(), ref)


@SETTINGS
@given(spe=spe_st, lr=lr_st, warm=warm_st, extra=st.integers(2, 120), floor=st.floats(0.0, 0.9))
def test_cosine(spe, lr, warm, extra, floor):
    n = (warm[0] if warm else 0) + extra
    min_lr = floor * lr
    sch = build_schedule(_cfg("cosine", warm, min_lr=min_lr), lr, spe, n)
    m = _main_len(n, warm)
    ref = torch_lrs(lambda o: L.CosineAnnealingLR(o, T_max=m, eta_min=min_lr), lr, n, warm)
    assert_close(sch.lrs(), ref)


@SETTINGS
@given(
    spe=spe_st,
    lr=lr_st,
    warm=warm_st,
    extra=st.integers(2, 150),
    t0=st.floats(0.1, 3.0),
    t_mult=st.integers(1, 3),
    floor=st.floats(0.0, 0.9),
)
def test_sgdr(spe, lr, warm, extra, t0, t_mult, floor):
    n = (warm[0] if warm else 0) + extra
    min_lr = floor * lr
    sch = build_schedule(_cfg("sgdr", warm, t0=t0, t_mult=t_mult, min_lr=min_lr), lr, spe, n)
    k = epochs_to_steps(t0, spe)
    ref = torch_lrs(lambda o: L.CosineAnnealingWarmRestarts(o, T_0=k, T_mult=t_mult, eta_min=min_lr), lr, n, warm)
    ours = sch.lrs()
    assert_close(ours, ref)
    # restarts: exactly the steps where the lr jumps up after the warmup
    w = sch.warmup_steps
    jumps = [s for s in range(w + 1, n) if ours[s] > ours[s - 1] * (1 + 1e-12)]
    expect = []
    c, length = 0, k
    while True:
        c += length
        length *= t_mult
        if w + c >= n:
            break
        expect.append(w + c)
    assert sch.restart_steps == expect
    assert jumps == [r for r in expect if ours[r - 1] < lr * (1 - 1e-12)]


@SETTINGS
@given(spe=spe_st, lr=lr_st, warm=warm_st, extra=st.integers(2, 120), gamma=st.floats(0.05, 1.0))
def test_exponential_per_epoch(spe, lr, warm, extra, gamma):
    n = (warm[0] if warm else 0) + extra
    sch = build_schedule(_cfg("exponential", warm, gamma=gamma), lr, spe, n)
    g = gamma ** (1.0 / spe)
    assert_close(sch.lrs(), torch_lrs(lambda o: L.ExponentialLR(o, gamma=g), lr, n, warm))
    w = sch.warmup_steps
    if n > w + spe:
        assert sch(w + spe) == pytest.approx(lr * gamma, rel=1e-12)  # gamma per epoch


@SETTINGS
@given(spe=spe_st, lr=lr_st, warm=warm_st, extra=st.integers(2, 120), power=st.floats(0.3, 3.0))
def test_polynomial_min_lr_zero(spe, lr, warm, extra, power):
    n = (warm[0] if warm else 0) + extra
    sch = build_schedule(_cfg("polynomial", warm, power=power), lr, spe, n)
    m = _main_len(n, warm)
    ref = torch_lrs(lambda o: L.PolynomialLR(o, total_iters=m, power=power), lr, n, warm)
    assert_close(sch.lrs(), ref)


def test_polynomial_min_lr_is_an_affine_floor():
    base, lo, n = 1.0, 0.1, 40
    zero = build_schedule(ScheduleConfig(name="polynomial", power=2.0), base, 5, n).lrs()
    floored = build_schedule(ScheduleConfig(name="polynomial", power=2.0, min_lr=lo), base, 5, n).lrs()
    for a, b in zip(zero, floored):
        assert b == pytest.approx(lo + (base - lo) * a / base, rel=1e-12)


@pytest.mark.parametrize("shape", ["cosine", "exponential"])
@pytest.mark.parametrize("f0", [0.0, 0.05, 0.5])
def test_warmup_shapes_closed_form(shape, f0):
    base, w, n = 0.4, 10, 30
    cfg = ScheduleConfig(name="constant", warmup=WarmupConfig(steps=w, shape=shape, start_factor=f0))
    lrs = build_schedule(cfg, base, 7, n).lrs()
    start = f0 if (shape == "cosine" or f0 > 0) else EXP_WARMUP_FLOOR
    assert lrs[0] == pytest.approx(base * start, rel=1e-12)
    assert all(x == pytest.approx(base, rel=1e-12) for x in lrs[w:])
    assert all(b > a for a, b in zip(lrs[:w], lrs[1 : w + 1])) or f0 == 1.0
    if shape == "exponential":  # geometric: one ratio, reaching base at step w
        ratios = [b / a for a, b in zip(lrs[:w], lrs[1 : w + 1])]
        assert all(r == pytest.approx((1 / start) ** (1 / w), rel=1e-10) for r in ratios)
    else:
        mid = lrs[w // 2]
        assert mid == pytest.approx(base * (start + (1 - start) * 0.5), rel=1e-12)


def test_linear_warmup_from_zero():
    cfg = ScheduleConfig(name="constant", warmup=WarmupConfig(epochs=2, start_factor=0.0))
    sch = build_schedule(cfg, 1.0, 5, 20)
    assert sch.warmup_steps == 10
    assert sch.lrs()[:11] == pytest.approx([i / 10 for i in range(10)] + [1.0], rel=1e-12, abs=0)


def test_call_matches_lrs_and_epoch_rounding():
    cfg = ScheduleConfig(
        name="sgdr", t0=0.25, t_mult=1.5, min_lr=0.01, warmup=WarmupConfig(epochs=0.5, shape="cosine", start_factor=0.1)
    )
    sch = build_schedule(cfg, 0.3, 7, 100)
    assert sch.warmup_steps == 4  # 3.5 rounds half up
    assert sch.t0 == 2  # 1.75 -> 2
    assert [sch(s) for s in range(100)] == sch.lrs()
    assert sch.restart_steps[0] == 4 + 2


def test_steps_keys_win_over_epochs():
    cfg = ScheduleConfig(name="step", step_size=3.0, step_size_steps=4)
    assert build_schedule(cfg, 1.0, 10, 50).step_size == 4
    assert epochs_to_steps(0.01, 10) == 1


# ------------------------------------------------------------------------ validation


def _run(**sched) -> RunConfig:
    # digits: 1438 train samples, batch 100 -> 15 steps/epoch, 10 epochs -> 150 steps
    return RunConfig.model_validate({"train": {"epochs": 10, "batch_size": 100}, "schedule": sched})


def test_run_step_counts():
    cfg = _run()
    assert (steps_per_epoch(cfg), total_steps(cfg)) == (15, 150)
    validate_schedule(cfg)


@pytest.mark.parametrize(
    "sched, key",
    [
        ({"name": "step"}, "schedule.step_size"),
        ({"name": "sgdr"}, "schedule.t0"),
        ({"name": "multistep"}, "schedule.milestones"),
        ({"name": "multistep", "milestones": []}, "schedule.milestones"),
        ({"name": "multistep", "milestones": [4, 2]}, "schedule.milestones"),
        ({"name": "multistep", "milestones": [2, 2]}, "schedule.milestones"),
        ({"name": "multistep", "milestones": [0, 2]}, "schedule.milestones"),
        ({"name": "multistep", "milestones": [-1, 2]}, "schedule.milestones"),
        ({"name": "multistep", "milestones": [1.0, 1.02]}, "schedule.milestones"),  # same step
        ({"name": "multistep", "milestones_steps": [10, 5]}, "schedule.milestones_steps"),
        ({"name": "multistep", "milestones": [3, 12]}, "schedule.milestones"),  # past the end
        ({"name": "multistep", "milestones": [3, 10]}, "schedule.milestones"),  # at the end
        (
            {"name": "multistep", "milestones": [3, 9], "warmup": {"epochs": 2}},
            "schedule.milestones",
        ),  # past the main phase (milestones count from the end of warmup)
        ({"name": "constant", "warmup": {"epochs": 10}}, "schedule.warmup.epochs"),
        ({"name": "constant", "warmup": {"epochs": 12}}, "schedule.warmup.epochs"),
        ({"name": "constant", "warmup": {"steps": 150}}, "schedule.warmup.steps"),
        ({"name": "constant", "warmup": {}}, "schedule.warmup"),
        ({"name": "cosine", "min_lr": 5.0}, "schedule.min_lr"),  # above the base lr
    ],
)
def test_validate_rejects(sched, key):
    with pytest.raises(ConfigError) as e:
        validate_schedule(_run(**sched))
    assert e.value.key == key
    assert "expected" in e.value.message or "needs" in e.value.message or "give" in e.value.message


@pytest.mark.parametrize(
    "sched, key",
    [
        ({"name": "step", "step_size": 0}, "schedule.step_size"),
        ({"name": "step", "step_size": -1}, "schedule.step_size"),
        ({"name": "sgdr", "t0": 1, "t_mult": 0.5}, "schedule.t_mult"),
        ({"name": "sgdr", "t0_steps": 0}, "schedule.t0_steps"),
        ({"name": "constant", "warmup": {"epochs": -1}}, "schedule.warmup.epochs"),
    ],
)
def test_schema_rejects_nonpositive(sched, key):
    from heur.core.config import validate_run

    with pytest.raises(ConfigError) as e:
        validate_run({"schedule": sched})
    assert e.value.key == key


def test_t_mult_below_one_rejected_by_build():
    cfg = ScheduleConfig.model_construct(
        **{**ScheduleConfig().model_dump(), "name": "sgdr", "t0": 1.0, "t_mult": 0.5, "warmup": None}
    )
    with pytest.raises(ConfigError) as e:
        build_schedule(cfg, 1.0, 10, 100)
    assert e.value.key == "schedule.t_mult"


def test_validate_accepts_zero_warmup_and_fine_schedules():
    """Edge cases that are valid: each returns the schedule the run will follow (15 steps an
    epoch, 150 steps, base lr 0.1), checked against its closed form."""
    lr = RunConfig().optim.lr
    assert validate_schedule(_run(name="constant", warmup={"epochs": 0})).lrs() == [lr] * 150
    multi = validate_schedule(_run(name="multistep", milestones=[3, 9.6])).lrs()  # steps 45 and 144
    assert (
        multi[44] == lr
        and multi[45] == pytest.approx(lr * 0.1) == multi[143]
        and multi[144] == pytest.approx(lr * 0.01)
    )
    sgdr = validate_schedule(_run(name="sgdr", t0=1, t_mult=2, warmup={"steps": 10}))
    assert sgdr(0) == 0.0 and sgdr(10) == pytest.approx(lr)  # linear warmup from 0 over 10 steps
    assert sgdr.restart_steps == [10 + 15, 10 + 45, 10 + 105]  # cycles of 1, 2, 4 epochs after warmup
    floor = validate_schedule(_run(name="cosine", min_lr=lr))  # a floor equal to the base lr is allowed
    assert floor.lrs() == pytest.approx([lr] * 150)


def test_lrs_long_run():
    cfg = ScheduleConfig(name="sgdr", t0=1, t_mult=1, warmup=WarmupConfig(epochs=5))
    lrs = build_schedule(cfg, 0.1, 391, 391 * 200).lrs()
    assert len(lrs) == 391 * 200
    assert math.isfinite(sum(lrs))


@SETTINGS
@given(t0=st.integers(1, 9), t_mult=st.floats(1.0, 2.5), n=st.integers(2, 150), w=st.integers(0, 10))
def test_sgdr_fractional_t_mult_brute_force(t0, t_mult, n, w):
    """Non-integer t_mult: cycle i lasts round(t0 * t_mult**i) steps (torch needs an int)."""
    n = n + w
    cfg = ScheduleConfig(
        name="sgdr", t0_steps=t0, t_mult=t_mult, min_lr=0.01, warmup=WarmupConfig(steps=w) if w else None
    )
    sch = build_schedule(cfg, 1.0, 5, n)
    expect, restarts = [], []
    cycle, pos, length = 0, 0, t0
    for s in range(w, n):
        if pos == length:
            cycle, pos = cycle + 1, 0
            length = max(1, math.floor(t0 * t_mult**cycle + 0.5))
            restarts.append(s)
        expect.append(0.01 + 0.99 * (1 + math.cos(math.pi * pos / length)) / 2)
        pos += 1
    assert sch.restart_steps == restarts
    assert_close(sch.lrs()[w:], expect, rel=1e-12)


@pytest.mark.parametrize("name", ["constant", "step", "multistep", "sgdr", "exponential"])
def test_call_beyond_total_steps_continues_the_schedule(name):
    """Steps past total_steps take the one-step path; it agrees with the vectorised table."""
    cfg = ScheduleConfig(
        name=name,
        t0_steps=4,
        t_mult=1.5,
        step_size_steps=3,
        milestones_steps=[2, 7],
        gamma=0.7,
        warmup=WarmupConfig(steps=3, shape="exponential"),
    )
    short = build_schedule(cfg, 1.0, 4, 11)
    long = build_schedule(cfg, 1.0, 4, 40)
    assert [short(s) for s in range(40)] == pytest.approx(long.lrs(), rel=1e-14, abs=0)
    with pytest.raises(ValueError):
        short(-1)
