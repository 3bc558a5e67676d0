"""The TUI's data path without a screen: decimation, smoothing, event decoding, tailing, figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fixtures_tui import RecordingSource, ev, make_presets, make_runs, write_run

from heur.core.events import apply_resumes, read_events
from heur.figures import panels as figures
from heur.figures.downsample import envelope, minmax, smooth
from heur.figures.rundata import RunData, Table, decode
from heur.tui import heatmap
from heur.tui.feed import Feed
from heur.tui.presets import scan_presets

# --------------------------------------------------------------------------- decimation


def brute_minmax(x, y, buckets, lo, hi):
    """Oracle: per bucket (equal slices of [lo, hi]) the set of min and max values."""
    out = []
    for k in range(buckets):
        a = lo + (hi - lo) * k / buckets
        b = lo + (hi - lo) * (k + 1) / buckets
        sel = [
            (xi, yi) for xi, yi in zip(x, y) if (a <= xi < b or (k == buckets - 1 and xi == hi)) and math.isfinite(yi)
        ]
        if sel:
            ys = [s[1] for s in sel]
            out.append((min(ys), max(ys)))
    return out


@pytest.mark.parametrize("n,buckets", [(10_000, 50), (997, 13), (5000, 1)])
def test_minmax_matches_bucket_oracle_and_keeps_spikes(n, buckets):
    rng = np.random.default_rng(n)
    x = np.cumsum(rng.integers(1, 4, n)).astype(float)
    y = rng.normal(size=n)
    y[n // 3] = 40.0  # a one-point spike
    y[n // 2] = np.nan
    xs, ys = minmax(x, y, buckets)
    assert xs.size <= 2 * buckets
    assert ys.max() == 40.0
    # each bucket contributes exactly its min and max
    oracle = brute_minmax(x.tolist(), y.tolist(), buckets, x[0], x[-1])
    got = brute_minmax(xs.tolist(), ys.tolist(), buckets, x[0], x[-1])
    assert got == oracle
    # points come back in x order, and are real points of the series
    assert np.all(np.diff(xs) >= 0)
    pairs = set(zip(x.tolist(), y.tolist()))
    assert all((a, b) in pairs for a, b in zip(xs.tolist(), ys.tolist()))


def test_minmax_short_series_unchanged_and_range_clip():
    x = np.arange(10.0)
    y = x**2
    xs, ys = minmax(x, y, 100)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)
    xs, ys = minmax(x, y, 100, lo=2, hi=5)
    assert xs.tolist() == [2, 3, 4, 5]


def test_minmax_stride_sampling_would_lose_the_spike():
    # the reason for min/max buckets: a stride of n/200 misses a single-step spike
    x = np.arange(1_000_000.0)
    y = np.zeros_like(x)
    y[123_457] = 9.0
    assert y[:: len(y) // 200].max() == 0.0
    assert minmax(x, y, 100)[1].max() == 9.0


def test_envelope_matches_bucket_oracle():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 100, 5000))
    y = rng.normal(size=5000)
    y[1234] = 50.0
    xm, lo, hi = envelope(x, y, 40, 0.0, 100.0)
    oracle = brute_minmax(x.tolist(), y.tolist(), 40, 0.0, 100.0)
    assert list(zip(lo.tolist(), hi.tolist())) == oracle
    assert hi.max() == 50.0 and np.all(np.diff(xm) > 0)
    assert envelope(x[:50], y[:50], 40) is None  # short: drawn as is


def test_noisy_series_drawn_as_two_edges(tmp_path):
    d = RunData("n")
    rng = np.random.default_rng(0)
    n = 5000
    steps = np.arange(1.0, n + 1)
    d["train"].extend(
        {
            "step": steps,
            "epoch": steps,
            "samples": steps,
            "lr": np.ones(n),
            "grad_norm": np.ones(n),
            "loss": rng.random(n),
        }
    )
    fig = figures.loss_figure([figures.Shown("n", d, 0)], figures.View(), 50)
    lines = [s for s in fig.series if s.kind == "line"]
    assert len(lines) == 2 and all(len(s.x) == 50 for s in lines)
    upper, lower = lines
    assert np.all(upper.y >= lower.y) and upper.y.max() == d["train"]["loss"].max()


def test_smooth_matches_loop_ema():
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    y[[0, 7, 8, 300]] = np.nan
    w = 0.9
    ref, acc, norm, last = [], 0.0, 0.0, None
    for v in y:
        if np.isfinite(v):
            last = v
        if last is None:
            ref.append(np.nan)
            continue
        acc = w * acc + (1 - w) * last
        norm = w * norm + (1 - w)
        ref.append(acc / norm)
    np.testing.assert_allclose(smooth(y, w), ref, rtol=1e-10, equal_nan=True)
    assert smooth(y, 0.0) is not None and np.array_equal(smooth(y, 0.0), y, equal_nan=True)


# --------------------------------------------------------------------------- model


def _events_with_resume():
    lines = [ev("start", 0, 0.0, 0.0)]
    for s in range(1, 41):
        lines.append(ev("train", s, s / 10, s, samples=s * 8, loss=1.0 / s, lr=0.1, grad_norm=None))
        if s % 10 == 0:
            lines.append(ev("eval", s, s / 10, s, split="test", loss=2.0 / s, accuracy=0.5))
        if s == 25:
            lines.append(ev("catapult", s, 2.5, s, start_step=20, peak_step=22, end_step=25, peak_ratio=3.0))
    # the process died after step 40 and restarts from the step-20 checkpoint
    lines.append(ev("resume", 20, 2.0, 50.0, from_step=20))
    for s in range(20, 31):
        lines.append(ev("train", s, s / 10, 60 + s, samples=s * 8, loss=10.0 + s, lr=0.05, grad_norm=1.0))
    lines.append(ev("end", 30, 3.0, 100.0, state="completed", reason=""))
    return [json.loads(x) for x in lines]


@pytest.mark.parametrize("chunks", [1, 3, 17])
def test_rundata_matches_apply_resumes_in_any_chunking(chunks):
    events = _events_with_resume()
    oracle = [e for e in apply_resumes(events) if e["kind"] == "train"]
    d = RunData("r")
    for part in np.array_split(np.arange(len(events)), chunks):
        d.apply(decode([events[i] for i in part]))
    t = d["train"]
    assert t["step"].tolist() == [e["step"] for e in oracle]
    assert t["loss"].tolist() == [e["loss"] for e in oracle]
    assert np.isnan(t["grad_norm"][0])  # null -> NaN
    # the eval at steps 20 and 30 and 40 were written by the interrupted process; 10 survives
    assert d["eval_test"]["step"].tolist() == [10.0]
    assert d.items["catapult"] == []  # step 25 >= 20: dropped
    assert len(d.items["end"]) == 1


def test_table_growth_equals_concatenation():
    rng = np.random.default_rng(0)
    t = Table(("step", "v"))
    parts = []
    step = 0
    for _ in range(50):
        k = int(rng.integers(0, 300))
        steps = np.arange(step, step + k, dtype=float)
        step += k
        v = rng.normal(size=k)
        parts.append(v)
        t.extend({"step": steps, "v": v})
    np.testing.assert_array_equal(t["v"], np.concatenate(parts))
    t.cut(100)
    assert len(t) == 100 and t["step"][-1] == 99


def test_decode_ignores_unknown_kinds_and_bad_fields():
    segs = decode(
        [
            {"kind": "mystery", "step": 1},
            {"kind": "train", "step": 2, "loss": "x"},
            {"kind": "train", "step": 3, "loss": True},
        ]
    )
    d = RunData("r")
    d.apply(segs)
    assert d["train"]["step"].tolist() == [2.0, 3.0]
    assert np.isnan(d["train"]["loss"]).all()


# --------------------------------------------------------------------------- feed


def test_feed_tails_incrementally_skips_torn_lines_and_unchanged_files(tmp_path):
    runs = make_runs(tmp_path / "runs")
    run = runs["lb"]  # ends with a torn line
    feed = Feed(RecordingSource(tmp_path / "runs"))
    gen = feed.follow([run])
    b = feed.poll_events()
    assert b is not None and b.generation == gen
    n_first = b.events
    assert n_first == len(read_events(run / "events.jsonl"))
    assert run in b.logs and "step 150" in b.logs[run]
    assert feed.poll_events() is None  # nothing changed: stat only
    # finish the torn line and add one more
    with open(run / "events.jsonl", "a") as f:
        f.write(',"epoch":3.02,"time":1,"loss":0.5}\n')
        f.write(ev("train", 152, 3.04, 2, loss=0.4) + "\n")
    b = feed.poll_events()
    assert b.events == 2
    d = RunData("lb")
    d.apply(decode(read_events(run / "events.jsonl")))
    assert d["train"]["step"][-2:].tolist() == [151.0, 152.0]


def test_feed_skips_malformed_lines_and_survives_deleted_runs(tmp_path):
    runs = make_runs(tmp_path / "runs")
    feed = Feed(RecordingSource(tmp_path / "runs"))
    feed.follow([runs["cat"]])
    b = feed.poll_events()
    d = RunData("cat")
    d.apply(b.segments[runs["cat"]])
    assert len(d["train"]) == 400  # the two malformed lines are skipped
    import shutil

    shutil.rmtree(runs["catapult"])
    assert feed.poll_events() is None
    rows = feed.poll_status()
    assert [r.path for r in rows] == [runs["warmup"]]


def test_feed_status_rows(tmp_path):
    runs = make_runs(tmp_path / "runs")
    rows = {r.path: r for r in Feed(RecordingSource(tmp_path / "runs")).poll_status()}
    states = {p.name: s.state for p, s in rows[runs["warmup"]].runs}
    assert states == {"large_batch": "running", "small_batch": "completed"}


# --------------------------------------------------------------------------- figures


def _run_data(run_dir):
    d = RunData(run_dir.name)
    d.apply(decode(read_events(run_dir / "events.jsonl")))
    return d


def test_loss_figure_decimates_and_marks_catapult(tmp_path):
    runs = make_runs(tmp_path / "runs")
    shown = [figures.Shown("lazy", _run_data(runs["lazy"]), 0), figures.Shown("cat", _run_data(runs["cat"]), 1)]
    fig = figures.loss_figure(shown, figures.View(), width=40)
    lines = [s for s in fig.series if s.kind == "line"]
    # a smooth curve: one min/max line a run, at most two points a column
    assert len(lines) == 2 and all(len(s.x) <= 80 for s in lines)
    assert len({s.color for s in lines}) == 2
    marks = [s for s in fig.series if s.marker == "▲"]
    assert len(marks) == 1 and marks[0].x.tolist() == [33.0]
    # the peak of the spike survives decimation in the cat run's line
    raw = shown[1].data["train"]["loss"]
    assert max(s.y.max() for s in lines if s.color == shown[1].color) == raw.max()
    assert figures.catapult_rows(shown) == [("cat", "30", "33", "36", "8.9")]
    assert "catapult" in figures.regime_lines(shown[1:])[0]
    assert "lazy" in figures.regime_lines(shown[:1])[0]


def test_xaxis_samples_interpolates_eval_points(tmp_path):
    runs = make_runs(tmp_path / "runs")
    d = _run_data(runs["sb"])
    x = figures.x_of(d, d["eval_test"], "samples")
    np.testing.assert_allclose(x, d["eval_test"]["step"] * 32)


def test_empty_panels_say_what_to_enable(tmp_path):
    runs = make_runs(tmp_path / "runs")
    shown = [figures.Shown("sb", _run_data(runs["sb"]), 0)]
    fig = figures.sharpness_figure(shown, figures.View(), 40)
    assert not fig.has_data() and "[probes.sharpness]" in fig.empty
    assert figures.cca_matrix(shown[0].data) is None


def test_cca_matrix_layers_by_epoch(tmp_path):
    runs = make_runs(tmp_path / "runs")
    events = read_events(runs["lazy"] / "events.jsonl")
    live = [e for e in events if e["kind"] == "cca" and e["against"] == "previous"]
    (fin,) = [e for e in events if e["kind"] == "cca" and e["against"] == "final"]
    d = _run_data(runs["lazy"])
    # the completed run's final event is not one more column of the live heatmap
    layers, epochs, mat, last = figures.cca_matrix(d)
    assert layers == ["fc1", "fc2", "fc3"]
    assert epochs == [float(e) for e in range(1, 9)] == [e["epoch_b"] for e in live]
    assert mat.shape == (3, 8)
    assert mat.T.tolist() == [e["values"] for e in live] and last == live[-1]
    text = heatmap.render(layers, epochs, mat, 60, "t").plain
    assert "fc2" in text and f"{last['values'][1]:5.3f}" in text
    # it is a figure of its own: every snapshot (epochs 0..8) against the last
    layers, epochs, mat, last = figures.cca_final(d)
    assert layers == fin["layers"] and epochs == fin["epochs"] == [float(e) for e in range(9)]
    assert mat.tolist() == fin["matrix"] and last == fin


def test_cca_live_run_has_no_final_figure_yet(tmp_path):
    r = write_run(tmp_path / "r", steps=100, steps_per_epoch=50, state="running")
    d = _run_data(r)
    assert figures.cca_final(d) is None
    assert figures.cca_matrix(d)[1] == [1.0, 2.0]


def test_fixture_events_are_schema_checked():
    from heur.core.schema import SchemaError

    with pytest.raises(SchemaError, match="thr_2"):
        ev("ntk", 0, 0.0, 0.0, lambda0=1.0, thr_2=2.0)
    with pytest.raises(SchemaError, match="matrix"):  # only the final cca event has a matrix
        ev("cca", 5, 1.0, 0.0, layers=["a"], values=[1.0], against="previous", matrix=[[1.0]])
    with pytest.raises(SchemaError, match="mystery"):
        ev("mystery", 0, 0.0, 0.0)


def test_skipped_runs_get_a_dim_grey_badge():
    from types import SimpleNamespace

    from heur.tui.sidebar import STATE_STYLE, badge, experiment_badge

    b = badge(SimpleNamespace(state="skipped"))
    assert b.plain == "skipped" and str(b.spans[0].style) == STATE_STYLE["skipped"]
    assert "dim" in STATE_STYLE["skipped"] and "128,128,128" in STATE_STYLE["skipped"]
    e = experiment_badge([SimpleNamespace(state="completed"), SimpleNamespace(state="skipped")])
    assert e.plain == "1 skipped" and str(e.spans[0].style) == STATE_STYLE["skipped"]
    # a failed dependency is the worse news: it names the failure, not the skipped dependents
    assert experiment_badge([SimpleNamespace(state="failed"), SimpleNamespace(state="skipped")]).plain == "1 failed"


def test_heatmap_ramp_ends():
    assert heatmap.ramp(0.0) == "rgb(68,1,84)"
    assert heatmap.ramp(1.0) == "rgb(253,231,37)"
    assert heatmap.ramp(float("nan")) == heatmap.ramp(None)


def test_presets_recursive_with_descriptions(tmp_path):
    make_presets(tmp_path)
    (tmp_path / "broken.toml").write_text("name = [")
    got = {p.rel: p for p in scan_presets(tmp_path)}
    assert set(got) == {"tiny.toml", "broken.toml", "paper/big.toml"}
    assert got["tiny.toml"].description.startswith("a tiny MLP")
    assert got["broken.toml"].error and got["paper/big.toml"].name == "big"
    assert scan_presets(tmp_path / "nope") == []


def test_write_run_fixture_is_readable_by_core_reader(tmp_path):
    r = write_run(tmp_path / "r", steps=20, steps_per_epoch=10)
    kinds = {e["kind"] for e in read_events(r / "events.jsonl")}
    assert {"start", "train", "eval", "sharpness", "ntk", "cca", "end"} <= kinds


def test_engine_field_names_for_ntk_and_adam_sharpness():
    """core.probes_curvature writes lr_lazy_edge/lr_uv_max/lr_relu_max and, for Adam,
    preconditioned_sharpness: the panels use them."""
    lam0 = 4.0
    evs = [
        {
            "kind": "ntk",
            "step": 0,
            "epoch": 0.0,
            "lambda_ntk": lam0,
            "lambda0": lam0,
            "lr_lazy_edge": 2 / lam0,
            "lr_uv_max": 4 / lam0,
            "lr_relu_max": 12 / lam0,
            "lr": 0.75,
        },
        {"kind": "ntk", "step": 10, "epoch": 0.1, "lambda_ntk": 2.0, "lambda0": None},
        {"kind": "train", "step": 1, "epoch": 0.0, "loss": 1.0, "lr": 0.75, "samples": 8},
        {
            "kind": "sharpness",
            "step": 5,
            "epoch": 0.05,
            "lambda_max": 9.0,
            "lr": 0.75,
            "threshold": 38.0,
            "preconditioned_sharpness": 12.0,
        },
    ]
    d = RunData("r")
    d.apply(decode(evs))
    ntk = d["ntk"]
    assert ntk["lr_lazy_edge"][0] == 0.5 and ntk["lr_uv_max"][0] == 1.0 and ntk["lr_relu_max"][0] == 3.0
    assert ntk["lambda_ntk"].tolist() == [4.0, 2.0]
    assert ntk["lambda0"][0] == 4.0 and np.isnan(ntk["lambda0"][1])  # null: not measured there
    shown = [figures.Shown("r", d, 0)]
    fig = figures.sharpness_figure(shown, figures.View(), 40)
    assert fig.series[0].y.tolist() == [12.0] and "P⁻¹H" in fig.title
    assert "28.5/η" in fig.title  # the edge read off the events: threshold · lr = 38 · 0.75
    two = [figures.Shown("a", d, 0), figures.Shown("b", d, 1)]
    assert figures.sharpness_figure(two, figures.View(), 40).title.count("P⁻¹H") == 1  # once, not per run
    assert [h.y for h in figures.lr_figure(shown, figures.View(), 40).hlines] == [0.5, 1.0, 3.0]
    assert "η·λ0 = 3" in figures.regime_lines(shown)[0]


def test_sharpness_axis_goes_log_by_itself_for_an_adam_run_measured_preconditioned_only():
    """probes.sharpness.plain = false: lambda_max is null, the panel draws lambda_max(P^-1 H),
    which here falls from 1e9 to 50 (as gi_adam's does): a log axis, said in the title."""

    evs = [
        {
            "kind": "sharpness",
            "step": s,
            "epoch": s / 20,
            "lambda_max": None,
            "top_k": None,
            "lr": 0.1,
            "threshold": 380.0,
            "preconditioned_sharpness": v,
        }
        for s, v in ((0, 1e9), (1, 3e7), (20, 400.0), (50, 50.0))
    ]
    d = RunData("r")
    d.apply(decode(evs))
    fig = figures.sharpness_figure([figures.Shown("r", d, 0)], figures.View(), 40)
    assert fig.series[0].y.tolist() == [1e9, 3e7, 400.0, 50.0] and "P⁻¹H" in fig.title
    assert fig.ylog and fig.state[0] == "log: auto"
    calm = [dict(e, preconditioned_sharpness=100.0 + e["step"]) for e in evs]
    d2 = RunData("c")
    d2.apply(decode(calm))
    assert not figures.sharpness_figure([figures.Shown("c", d2, 0)], figures.View(), 40).ylog


def test_loss_axis_goes_log_by_itself_when_values_span_decades():
    import numpy as np

    from heur.figures.figure import Series
    from heur.figures.panels import spans_decades

    calm = Series(np.arange(3.0), np.array([2.3, 1.0, 0.1]))
    exploded = Series(np.arange(3.0), np.array([2.3, 1e6, float("nan")]))
    assert not spans_decades([calm])
    assert spans_decades([calm, exploded])  # 0.1 .. 1e6
    assert not spans_decades([Series(np.arange(2.0), np.array([0.0, -1.0]))])


def test_decade_ticks_cover_the_range_with_few_labels():
    from heur.figures.figure import decade_ticks

    t = decade_ticks(3e-14, 2.5e8)
    assert len(t) <= 5 and t[0] <= 3e-14 and t[-1] * 10**6 >= 2.5e8
    assert decade_ticks(0.5, 2.0) == [0.1, 1.0, 10.0]
    assert decade_ticks(0.0, 1.0) == []


def test_a_queued_pipeline_run_shows_what_it_waits_for(tmp_path):
    """From a real experiment directory: the run status core writes, read by the sidebar."""
    from heur.core import runs as R
    from heur.core.config import expand
    from heur.tui.sidebar import badge

    base = {
        "name": "p",
        "device": "cpu",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "width": 8},
        "variant": [{"name": "a"}, {"name": "b", "set": {"model.init_from": "@a"}}],
    }
    exp_dir = R.create_experiment(expand(base, []), tmp_path)
    assert badge(R.read_status(exp_dir / "a")).plain == "queued"
    assert badge(R.read_status(exp_dir / "b")).plain == "waits a"


def test_a_title_that_does_not_fit_is_shortened_never_its_state():
    from heur.figures.figure import Figure

    fig = Figure(title="loss: train ─  test •  catapult ▲", state=["log: auto", "cut > 2.3e+03: wild"])
    whole = "loss: train ─  test •  catapult ▲ (log: auto; cut > 2.3e+03: wild)"
    assert fig.title_for(200) == whole
    assert fig.title_for(len(whole)) == whole
    assert fig.title_for(len(whole) - 1) == "loss (log: auto; cut > 2.3e+03: wild)"  # the legend part goes first
    assert fig.title_for(20) == "loss (log: auto; cu…" and len(fig.title_for(20)) == 20
    assert Figure(title="accuracy: test ─  train •").title_for(10) == "accuracy"
