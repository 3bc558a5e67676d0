"""The dashboard of issue 18 driven by keys (Textual's Pilot) at 80×24 and 120×40, over runs that
really trained (in this process, tiny: digits, a few steps): seeds as mean ± sd bands, a pinned
baseline from another experiment, the legend of 20 runs, resume and launch-again, the system
panel, toasts and dialogs, tick labels."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib
from conftest import TINY, train_in_process

from heur.core import runs as R
from heur.core.config import expand
from heur.core.events import read_events
from heur.figures import groups
from heur.tui.app import HeurApp
from heur.tui.plotting import PlotView, _fit_ticks
from heur.tui.screens import ConfirmScreen, InfoScreen, LaunchScreen
from heur.tui.sidebar import Sidebar
from heur.tui.source import RunSource

LRS = [0.02, 0.05, 0.1, 0.2, 0.3]
SEEDS = [0, 1, 2, 3]


def sync(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return asyncio.run(fn(*a, **k))

    return wrapper


async def until(pilot, cond, timeout=30.0):  # a wait, not a timing claim
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        await pilot.pause(0.05)


def _raw(name: str, **over) -> dict:
    raw = tomllib.loads(TINY)
    raw["name"] = name
    raw["data"]["subset"] = 64
    raw["model"]["width"] = 8
    raw["train"].update(epochs=2, batch_size=32, log_every=1)
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Two experiments trained for real: "many" (5 lr × 4 seeds = 20 runs, 4 steps each) and
    "base" (one run, the baseline to pin), older."""
    root = tmp_path_factory.mktemp("dash") / "runs"
    base = R.create_experiment(expand(_raw("base", seed=7), []), root)
    time.sleep(1.1)  # a later timestamp: "many" is the most recent experiment
    many = R.create_experiment(expand(_raw("many", grid={"optim.lr": LRS, "seed": SEEDS}), []), root)
    for rd in R.run_dirs(base) + R.run_dirs(many):
        _, state = train_in_process(rd)
        assert state == "completed"
    return root


def make_app(runs: Path) -> HeurApp:
    app = HeurApp(runs, runs.parent / "no-presets", source=RunSource(runs))
    app.EVENT_PERIOD = 0.05
    app.STATUS_PERIOD = 0.2
    return app


def exp_named(app: HeurApp, name: str) -> Path:
    return next(p for p, r in app.rows.items() if r.name == name)


async def highlight(pilot, app: HeurApp, path: Path) -> None:
    sb = app.query_one(Sidebar)
    sb.select_path(path)
    await until(pilot, lambda: getattr(sb.cursor_node.data if sb.cursor_node else None, "path", None) == path)


async def loaded(pilot, app: HeurApp, exp: Path) -> None:
    await until(pilot, lambda: app.experiment == exp)
    await until(pilot, lambda: all(len(d["train"]) for d in app.data.values()))


def lines(fig) -> list[str]:
    """The labelled lines of a figure, once each, in order."""
    return list(dict.fromkeys(s.label for s in fig.series if s.label and not s.raw))


def train_losses(rd: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(rd / "events.jsonl") if e["kind"] == "train"}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@sync
async def test_seeds_drawn_as_mean_and_sd_band_and_the_legend_of_20_runs(runs_dir, size):
    app = make_app(runs_dir)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.rows)
        many = exp_named(app, "many")
        await loaded(pilot, app, many)  # opened on the most recent experiment by itself
        info = app.query_one("#info")
        # 20 runs do not fit three lines: the names alone, then as many as fit and "+N more"
        await until(pilot, lambda: "more (L: all)" in info.render().plain)
        legend = info.render().plain
        shown = legend.count("■")
        assert 1 <= shown < 20 and f"+{20 - shown} more" in legend
        assert len(info.render().wrap(info.size.width)) <= 3
        await pilot.press("L")  # every line, in a scrolling dialog
        assert isinstance(app.screen, InfoScreen)
        body = app.screen.query_one("#info-body").render().plain
        assert body.count("■") == 20 and "lr=0.3_seed=3" in body
        await pilot.press("escape")
        # g: seeds grouped (everything but the seed equal): 5 groups of 4
        await pilot.press("g")
        assert app.group_key == groups.SEED
        plot = app.query_one("#plot-loss", PlotView)
        await until(pilot, lambda: plot.figure is not None and "mean ± sd over seeds" in plot.figure.state)
        fig = plot.figure
        assert lines(fig) == [f"lr={lr:g} (n=4)" for lr in LRS]
        assert ("dotted", "± sd over seeds") in fig.key
        await until(pilot, lambda: "lr=0.05 (4)" in info.render().plain and "more" not in info.render().plain)
        # the oracle: each group's mean and sample sd of the four seeds' logged losses, step by step
        for lr in LRS:
            losses = [train_losses(many / f"lr={lr:g}_seed={s}") for s in SEEDS]
            steps = sorted(losses[0])
            vals = np.array([[ls[st] for st in steps] for ls in losses])
            mean, sd = vals.mean(axis=0), vals.std(axis=0, ddof=1)
            (line,) = [s for s in fig.series if s.label == f"lr={lr:g} (n=4)"]
            np.testing.assert_allclose(line.x, steps)
            np.testing.assert_allclose(line.y, mean, rtol=1e-12)
            edges = [s for s in fig.series if s.label is None and s.marker == "·" and s.color == line.color]
            assert len(edges) == 2
            np.testing.assert_allclose(sorted([edges[0].y[0], edges[1].y[0]]), [mean[0] - sd[0], mean[0] + sd[0]])
        # the title keeps its state when it is shortened at 80 columns
        assert fig.title_for(plot.size.width).endswith("(mean ± sd over seeds)")
        # g again: by the grid key optim.lr (the other grid key is the seed), then lines again
        await pilot.press("g")
        assert app.group_key == "optim.lr"
        await until(pilot, lambda: "mean ± sd over runs of one optim.lr" in plot.figure.state)
        await pilot.press("g")
        assert app.group_key is None


@sync
async def test_a_pinned_baseline_stays_on_the_plots_of_another_experiment(runs_dir):
    app = make_app(runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.rows)
        base, many = exp_named(app, "base"), exp_named(app, "many")
        (base_run,) = [p for p, _ in app.rows[base].runs]
        await highlight(pilot, app, base)
        await pilot.press("enter")
        await highlight(pilot, app, base_run)
        await pilot.press("P")
        assert app.pins == [base_run]
        await until(pilot, lambda: "⊙ " in str(app.query_one(Sidebar).cursor_node.label))
        await highlight(pilot, app, many)
        await loaded(pilot, app, many)
        label = app.pinned_label(base_run)
        assert label.startswith("base ") and label.endswith("/base")
        plot = app.query_one("#plot-loss", PlotView)
        await until(pilot, lambda: plot.figure is not None and label in lines(plot.figure))
        (line,) = [s for s in plot.figure.series if s.label == label]
        assert sorted(line.y.tolist()) == sorted(train_losses(base_run).values())
        assert len({s.color for s in plot.figure.series if s.kind == "line"}) == 8  # the palette's 8 colours
        # focus on one run of the experiment: the baseline stays beside it
        await pilot.press("r")
        await until(pilot, lambda: sorted(lines(plot.figure)) == sorted([app.focus_run.name, label]))
        assert "⊙ " + label in app.query_one("#info").render().plain
        # unpin from the sidebar
        await highlight(pilot, app, base_run)
        await pilot.press("P")
        assert app.pins == []


@pytest.mark.slow
@sync
async def test_resume_and_launch_again_from_the_sidebar(tmp_path):
    """A run stopped after 2 of its 8 steps is resumed with R (its process really runs the other
    6); N launches the experiment's settings again as a new experiment, whose run starts."""
    exp = R.create_experiment(expand(_raw("halt", train={**_raw("x")["train"], "epochs": 4}), []), tmp_path)
    (rd,) = R.run_dirs(exp)
    _, state = train_in_process(rd, stop_at=2)
    assert state == "stopped"
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.rows)
        await loaded(pilot, app, exp)
        await highlight(pilot, app, exp)
        await pilot.press("enter")
        await highlight(pilot, app, rd)
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: getattr(app.statuses.get(rd), "state", None) == "completed", timeout=90)
        steps = [e["step"] for e in read_events(rd / "events.jsonl") if e["kind"] == "train"]
        assert steps[-1] == 8 and R.read_status(rd).step == 8
        # N on the experiment: the launch dialog, checked, then a new experiment of the same run
        await highlight(pilot, app, exp)
        await pilot.press("N")
        assert isinstance(app.screen, LaunchScreen) and "again" in app.screen.title_text
        await until(pilot, lambda: app.screen.valid, timeout=30)
        await pilot.press("enter")
        await until(pilot, lambda: app.experiment not in (None, exp), timeout=30)
        new = app.experiment
        assert (
            new.name.startswith("halt-")
            and (new / "halt" / "config.toml").read_text() == (rd / "config.toml").read_text()
        )
        # it runs (its supervisor started it); stopping it ends the test without waiting for it
        await until(pilot, lambda: R.read_status(new / "halt").state in ("running", "completed"), timeout=60)
        R.stop_experiment(new)
        await until(pilot, lambda: R.read_status(new / "halt").final, timeout=60)


@sync
async def test_system_panel_on_a_cpu_box_and_toasts_wait_for_dialogs(tmp_path, monkeypatch):
    import sys
    import types

    # NVML present but no driver (a CPU box with nvidia-ml-py installed): a note, no error
    fake = types.ModuleType("pynvml")

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("9")
        box = app.query_one("#sys-text")
        await until(pilot, lambda: "mem" in box.render().plain)
        text = box.render().plain
        assert "CPU" in text and "GPUs: none (NVML: NVML Shared Library Not Found)" in text
        total = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split()[1]) * 1024
        assert f"/ {total / 2**30:.1f} GiB" in text
        await until(pilot, lambda: app.system_sample is not None and app.system_sample.cpu is not None, timeout=20)
        assert 0.0 <= app.system_sample.cpu <= 100.0
        # a toast raised while a dialog is open waits until it closes
        await pilot.press("question_mark")
        app.notify("hello from a worker")
        await pilot.pause(0.2)
        assert not app.screen.query("Toast")
        await pilot.press("escape")
        await until(pilot, lambda: any("hello" in str(t.render()) for t in app.screen.query("Toast")))
        # ... and a dialog opening clears the toasts on screen
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert not app._main_screen.query("Toast")
    # without nvidia-ml-py at all
    monkeypatch.setitem(sys.modules, "pynvml", None)
    from heur.core.system import Sampler

    assert Sampler().sample().gpu_note.startswith("GPUs: nvidia-ml-py is not installed")


def test_tick_labels_fit_and_never_collide():
    """Round ticks whose labels, two spaces apart at least, fit the plot's width (the collision
    was plotext's "0.00015.0")."""
    for lo, hi in [(0, 5990), (0.0001, 0.00015), (0, 149_500), (2, 16), (1.37, 2.71), (0, 2.5e6)]:
        for room in (20, 40, 70, 110):
            ticks, labels = _fit_ticks(lo, hi, room, gap=3)
            assert ticks and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
            assert sum(len(lb) + 3 for lb in labels) <= room or len(ticks) <= 2
            assert len(set(labels)) == len(labels)  # distinct: no two ticks read the same
            steps = np.diff(ticks)
            assert np.allclose(steps, steps[0]) if len(ticks) > 2 else True
    assert _fit_ticks(0, 149_500, 60, gap=3)[1] == ["0", "25k", "50k", "75k", "100k", "125k"]


def test_the_cca_panel_says_never_as_the_summary_does(tmp_path):
    """The CCA panel's settle line and `heur run`'s summary agree, on a real run's CCA: "never"
    exactly when the settle epoch is the last snapshot's."""
    from heur.cli.cmd_run import summary_cell
    from heur.figures.panels import cca_final
    from heur.figures.rundata import load_run
    from heur.tui.app import settle_text

    raw = _raw("ccarun", probes={"cca": {"every_epochs": 1, "samples": 32, "method": "cka"}})
    raw["model"].update(width=16, depth=2)
    raw["train"].update(epochs=3)
    exp = R.create_experiment(expand(raw, []), tmp_path)
    (rd,) = R.run_dirs(exp)
    _, state = train_in_process(rd)
    assert state == "completed"
    result = R.read_status(rd).result
    layers, epochs, mat, _ = cca_final(load_run(rd))
    text = settle_text(layers, epochs, mat)
    for group, key in (("deeper", "cca_deep_settle"), ("shallower", "cca_shallow_settle")):
        cell = summary_cell(result, key)
        assert f"{group} layers settle: " + ("never" if cell == "never" else f"epoch {result[key]:g}") in text


def test_system_sampler_reads_each_gpu_through_nvml(monkeypatch):
    """No GPU on this machine: NVML's calls answered by a stand-in with one device; the sampler
    and the panel report its name, utilisation, memory and temperature."""
    import sys
    import types

    from heur.core.system import Sampler
    from heur.tui.system import render

    nv = types.ModuleType("pynvml")
    nv.NVML_TEMPERATURE_GPU = 0
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=20 * 2**30, total=80 * 2**30, free=60 * 2**30)
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    nv.nvmlDeviceGetTemperature = lambda h, kind: 61
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    s = Sampler().sample()
    (g,) = s.gpus
    assert (g.index, g.name, g.util, g.mem_used, g.mem_total, g.temperature) == (
        0,
        "NVIDIA H100 80GB HBM3",
        87.0,
        20 * 2**30,
        80 * 2**30,
        61,
    )
    assert s.gpu_note == ""
    text = render(s, 78).plain
    assert "GPU 0 NVIDIA H100 80GB HBM3  61°C" in text and " 87%" in text and "20.0 / 80.0 GiB" in text
    assert max(len(line) for line in text.splitlines()) <= 78


def test_a_diverging_seed_is_left_out_of_its_groups_band_as_the_line_panels_cut_it():
    """Three seeds of one setting, one diverging to 1e9 and then NaN: the group's mean and sd from
    that step on are numpy's over the two others (the band no longer reaches -1e9), and the
    figure's state names the run left out."""
    from heur.figures.panels import Shown, View, loss_figure
    from heur.figures.rundata import RunData, decode

    steps = np.arange(0, 100, 10)
    rng = np.random.default_rng(0)
    losses = [2.3 * np.exp(-steps / 50) + 0.01 * rng.random(steps.size) for _ in range(3)]
    losses[2] = losses[2].copy()
    losses[2][6:8] = [5e3, 1e9]
    losses[2][8:] = np.nan
    members = []
    for i, y in enumerate(losses):
        d = RunData(f"s{i}")
        evs = [{"kind": "start", "step": 0, "epoch": 0.0, "time": 0.0}]
        evs += [
            {"kind": "train", "step": int(s), "epoch": float(s), "time": 0.0, "loss": None if np.isnan(v) else float(v)}
            for s, v in zip(steps, y)
        ]
        d.apply(decode(evs))
        members.append(Shown(d.name, d, i))
    cut: set[str] = set()
    mean, hi, lo, n = groups.stats(members, cut)
    assert n == 3 and cut == {"s2"}
    m = mean["train"]["loss"]
    np.testing.assert_allclose(m[:6], np.mean(losses, axis=0)[:6], rtol=1e-12)
    np.testing.assert_allclose(m[6:], np.mean(losses[:2], axis=0)[6:], rtol=1e-12)
    sd = np.std(losses[:2], axis=0, ddof=1)[6:]
    np.testing.assert_allclose(hi["train"]["loss"][6:] - m[6:], sd, rtol=1e-9)
    assert np.nanmin(lo["train"]["loss"]) > -1.0
    g = groups.group_runs(members, {r.name: {"seed": i, "optim.lr": 0.1} for i, r in enumerate(members)}, groups.SEED)
    fig = groups.grouped_figure(loss_figure, g, View(), 80)
    assert any("left out: s2" in s for s in fig.state) and ("dotted", "± sd over seeds") in fig.key


def test_seed_groups_are_named_by_the_run_name_without_its_seed():
    from heur.figures.panels import Shown
    from heur.figures.rundata import RunData

    names = ["lb_warmup_seed=0_lr=0.16", "lb_warmup_seed=1_lr=0.16", "sb_seed=0", "sb_seed=1"]
    runs = [Shown(n, RunData(n), i) for i, n in enumerate(names)]
    warm = {"schedule.warmup.epochs": 30, "schedule.warmup.shape": "linear", "optim.lr": 0.16}
    configs = {
        n: ({**warm, "seed": i % 2} if n.startswith("lb") else {"optim.lr": 0.02, "seed": i % 2})
        for i, n in enumerate(names)
    }
    labels = [g.label for g in groups.group_runs(runs, configs, groups.SEED)]
    assert labels == ["lb_warmup_lr=0.16", "sb"]
