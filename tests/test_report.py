"""`heur report` and `heur export` on a real small experiment: two NTK-parametrised MLPs on
digits (lr = 1/lambda0, lazy; 8/lambda0, a catapult) with every probe, trained in-process once
for the module. Oracles: the run directories and their events.jsonl read with json, decoded
images (matplotlib's own PNG reader), and a debiased EMA written out from its definition."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import heur

from heur.core import runs as R
from heur.core.config import expand
from heur.core.preflight import check_experiment
from heur.core.summary import write_summary
from heur.core.train import Run

PRESET = {
    "name": "report",
    "device": "cpu",
    "seed": 0,
    "check": "catapult",
    "data": {"name": "digits", "subset": 128, "augment": False},
    "model": {"name": "mlp", "width": 64, "depth": 2, "parametrization": "ntk", "bias": False},
    "optim": {"name": "sgd", "lr_ntk": 8.0},
    "train": {
        "loss": "mse",
        "mse_reduction": "half_sum",
        "full_batch": True,
        "epochs": 24,
        "log_every": 1,
        "eval_every": 6,
    },
    "probes": {
        "ntk": {"batch": 128},
        "sharpness": {"batch": 128, "every": 8, "max_iter": 8, "tol": 3e-3},
        "catapult": {"factor": 1.2},
        "cca": {"every_epochs": 8, "samples": 100, "method": "cka"},
    },
    "grid": {"optim.lr_ntk": [1.0, 8.0]},
}


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    ex = expand(PRESET, [])
    check_experiment(ex)
    exp_dir = R.create_experiment(ex, tmp_path_factory.mktemp("report") / "runs")
    for rd in R.run_dirs(exp_dir):
        r = Run(rd)
        r.setup()
        state, reason, last = r.train()
        r.finish(state, reason, last)
        assert state == "completed", reason
    write_summary(exp_dir)
    return exp_dir


def cli(*args):
    """The CLI in-process (typer's runner: the command's own parsing and exit path), for the cases
    where a subprocess would only add torch's import time."""
    from typer.testing import CliRunner

    from heur.cli.main import app

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart already
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


def events_of(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def report(exp, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    r = heur("report", str(exp), "--out", str(out), "--smooth", "0.6")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "report.html" in r.stdout
    return out


def decode(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")


def test_every_figure_decodes_and_is_not_blank(exp, report):
    files = sorted((report / "figures").iterdir())
    names = {p.stem for p in files}
    # the panels this experiment has data for (read off the events): loss, accuracy, lr,
    # sharpness, a catapult (lr_ntk=8 catapults), CCA live + final per run, the grid
    kinds = {e["kind"] for rd in R.run_dirs(exp) for e in events_of(rd)}
    assert {"catapult", "cca", "sharpness"} <= kinds
    assert names == {"loss", "accuracy", "lr", "sharpness", "catapult", "grid"} | {f"cca_{i}" for i in range(1, 5)}
    for p in files:
        img = decode(p.read_bytes())
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600, p.name
        # not blank: the pixels vary, and more than an empty frame would (axes and text only)
        assert img[..., :3].std() > 0.05, p.name
        colours = {tuple(c) for c in (img[::4, ::4, :3] * 255).astype(int).reshape(-1, 3)}
        assert len(colours) > 20, p.name


def test_the_html_is_self_contained_and_references_nothing_missing(report):
    html = (report / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", html) + re.findall(r'src="([^"]*)"', html)
    hrefs = re.findall(r"href='([^']*)'", html) + re.findall(r'href="([^"]*)"', html)
    files = sorted((report / "figures").iterdir())
    assert len(srcs) == len(files)
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        img = decode(base64.b64decode(s.split(",", 1)[1]))
        assert img[..., :3].std() > 0.05
    ids = set(re.findall(r"id='([^']*)'", html))
    for h in hrefs:
        if h.startswith("#"):
            assert h[1:] in ids, h
        else:
            assert not re.match(r"^[a-z]+:", h), h  # nothing remote
            assert (report / h).is_file(), h
    # every figure file is linked, and the page has the summary, the verdicts and the configs
    assert {f"figures/{p.name}" for p in files} <= set(hrefs)
    for text in ("Summary", "Verdicts", "Lewkowycz et al. 2020", "observed catapult", "Configs", "lr_ntk = 8.0"):
        assert text in html, text


def _legend(fig):
    (ax,) = fig.axes[:1]
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def _scene(exp, smoothing=0.0):
    from heur.core.summary import collect
    from heur.figures.panels import Shown, View
    from heur.figures.registry import Scene
    from heur.figures.rundata import load_run

    runs = [Shown(p.name, load_run(p), i) for i, p in enumerate(R.run_dirs(exp))]
    return Scene(runs, View(smoothing=smoothing, raw_behind=True), 800, exp, collect(exp))


def test_legends_name_every_run_and_what_the_marks_mean(exp):
    from heur.figures.registry import build
    from heur.report.render import draw

    names = [p.name for p in R.run_dirs(exp)]
    assert names == ["lr_ntk=1", "lr_ntk=8"]
    figs = {p.name: f for p, fs in build(_scene(exp, 0.6)) for f in fs}
    assert _legend(draw(figs["loss"])) == [*names, "train", "test", "catapult peak"]
    assert _legend(draw(figs["accuracy"])) == [*names, "test", "train"]
    assert _legend(draw(figs["lr"])) == names
    assert _legend(draw(figs["sharpness"])) == [*names, "λmax", "2/η"]
    assert _legend(draw(figs["catapult"])) == [*names, "train", "catapult peak"]
    # drawn lines: per run the smoothed loss (a solid line) and its raw line (faint, no legend)
    ax = draw(figs["loss"]).axes[0]
    faint = [ln for ln in ax.get_lines() if (ln.get_alpha() or 1) < 0.5]
    assert len(faint) == len(names)


def test_smoothing_is_a_debiased_ema_with_the_raw_line_behind_and_never_on_the_lr(exp):
    from heur.figures.registry import build

    figs = {p.name: f for p, fs in build(_scene(exp, 0.6)) for f in fs}
    for rd in R.run_dirs(exp):
        train = [e for e in events_of(rd) if e["kind"] == "train"]
        loss = [e["loss"] for e in train]
        ema, acc, out = 0.0, 0.0, []
        for y in loss:  # TensorBoard's debiased EMA, from its definition
            ema = 0.6 * ema + 0.4 * y
            acc = 0.6 * acc + 0.4
            out.append(ema / acc)
        mine = [s for s in figs["loss"].series if s.label == rd.name]
        raw = [s for s in figs["loss"].series if s.raw and s.color == mine[0].color]
        assert np.allclose(mine[0].y, out, rtol=1e-12) and np.array_equal(raw[0].y, loss)
        lr = [s for s in figs["lr"].series if s.label == rd.name]
        assert np.array_equal(lr[0].y, [e["lr"] for e in train])


def _cell(text: str, value):
    """A CSV cell decoded the way its event value is typed (the oracle: events.jsonl)."""
    if value is None:
        return text == ""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, (list, dict)):
        return json.loads(text) == value
    if isinstance(value, (int, float)):
        return float(text) == value
    return text == value


def test_csv_round_trips_to_the_events(exp, tmp_path):
    r = cli("export", exp, "--csv", tmp_path / "csv")
    assert r.exit_code == 0, r.output
    events = {rd.name: events_of(rd) for rd in R.run_dirs(exp)}
    kinds = {e["kind"] for evs in events.values() for e in evs}
    assert {p.stem for p in (tmp_path / "csv").iterdir()} == kinds
    for kind in kinds:
        with open(tmp_path / "csv" / f"{kind}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        expected = [(run, e) for run, evs in events.items() for e in evs if e["kind"] == kind]
        assert len(rows) == len(expected), kind
        for row, (run, e) in zip(rows, expected):
            assert row["run"] == run and row["variant"] == "" and float(row["optim.lr_ntk"]) == float(run.split("=")[1])
            for k, v in e.items():
                assert _cell(row[k], v), (kind, k, row[k], v)
            assert all(row[k] == "" for k in row if k not in e and k not in ("run", "variant", "optim.lr_ntk"))


def test_json_export_is_one_document_of_every_event(exp):
    r = cli("export", exp, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    events = {rd.name: events_of(rd) for rd in R.run_dirs(exp)}
    total = sum(len(v) for v in doc["tables"].values())
    assert total == sum(len(v) for v in events.values())
    for kind, rows in doc["tables"].items():
        expected = [(run, e) for run, evs in events.items() for e in evs if e["kind"] == kind]
        for row, (run, e) in zip(rows, expected):
            assert row["run"] == run and {k: row[k] for k in e} == e
    # heur runs --json is scriptable too: stdout is one strict JSON document
    r = cli("runs", "--runs-dir", exp.parent, "--json")
    listed = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert [x["run"] for x in listed[0]["runs"]] == list(events)


BAD = [
    (["report", "{missing}"], "no experiment or run named"),
    (["report", "{empty}"], "no runs in it"),
    (["report", "{exp}", "--format", "gif"], "--format: expected one of png, svg, pdf, got 'gif'"),
    (["report", "{exp}", "--x", "time"], "--x: expected one of step, samples, epoch"),
    (["report", "{exp}", "--smooth", "1"], "--smooth: expected a weight in [0, 1)"),
    (["export", "{exp}"], "give exactly one of --csv DIR or --json"),
    (["export", "{empty}", "--json"], "no runs in it"),
]


def test_bad_input_is_one_line_and_exit_2(exp, tmp_path):
    """Each case in-process (CliRunner: the CLI's own exit path), the first two also as a user
    runs them, in a subprocess: one line on stderr, exit 2, nothing on stdout."""
    (tmp_path / "empty").mkdir()
    subs = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty"), "exp": str(exp)}
    for i, (args, message) in enumerate(BAD):
        argv = [a.format(**subs) for a in args] + ["--runs-dir", str(tmp_path)]
        res = cli(*argv)
        assert res.exit_code == 2, (argv, res.output)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("heur: error: "), res.stderr
        assert message in res.stderr and res.stdout == "", res.stderr
        if i < 2:
            r = heur(*argv)
            assert r.returncode == 2 and r.stderr == res.stderr and r.stdout == ""


def test_a_running_experiment_reports_what_is_there(exp, tmp_path):
    """One run still going (its process alive, half its events, a torn last line): the report
    draws what is there, says that the run has not ended and holds the verdicts back."""
    live = tmp_path / exp.name
    shutil.copytree(exp, live)
    rd = live / "lr_ntk=8"
    lines = (rd / "events.jsonl").read_text().splitlines(keepends=True)
    half = [ln for ln in lines[: len(lines) // 2] if '"kind":"end"' not in ln]
    (rd / "events.jsonl").write_text("".join(half) + '{"kind":"train","st')
    status = json.loads((rd / "status.json").read_text())
    status.update(state="running", pid=os.getpid(), pid_start=R.process_start_time(os.getpid()))
    (rd / "status.json").write_text(json.dumps(status))
    assert R.read_status(rd).state == "running"
    # an earlier report's figure (a panel that has no data now) goes; a file of the user's stays
    (live / "report" / "figures").mkdir(parents=True, exist_ok=True)
    (live / "report" / "figures" / "cca_9.png").write_bytes(b"old")
    (live / "report" / "figures" / "notes.txt").write_text("mine")
    r = cli("report", live, "--format", "svg", "--x", "epoch", "--log")
    assert r.exit_code == 0, r.output
    html = (live / "report" / "report.html").read_text()
    assert "1 run(s) not ended (lr_ntk=8)" in html and "The verdicts come when every run has ended" in html
    svg = (live / "report" / "figures" / "loss.svg").read_text()
    assert svg.startswith("<?xml") and "data:image/svg+xml;base64," in html
    left = {p.name for p in (live / "report" / "figures").iterdir()}
    assert "cca_9.png" not in left and "notes.txt" in left and all(n.endswith((".svg", ".txt")) for n in left)


def test_the_tui_key_writes_the_experiment_report_and_shows_its_path(exp, tmp_path):
    import asyncio
    import time

    from heur.tui.app import HeurApp

    (tmp_path / "presets").mkdir()
    app = HeurApp(exp.parent, tmp_path / "presets")
    app.STATUS_PERIOD = 0.2

    async def body():
        async with app.run_test(size=(100, 30)) as pilot:
            t0 = time.monotonic()
            while app.experiment != exp:  # the first status poll opens the most recent experiment
                assert time.monotonic() - t0 < 30
                await pilot.pause(0.05)
            await pilot.press("w")
            while app.last_report is None:  # a thread writes it: generous for a loaded machine
                assert time.monotonic() - t0 < 120
                await pilot.pause(0.1)
            return [n.message for n in app._notifications]

    toasts = asyncio.run(body())
    html = exp / "report" / "report.html"
    assert app.last_report == html and html.is_file()
    assert any(str(html) in m for m in toasts), toasts
    assert {p.stem for p in (exp / "report" / "figures").iterdir()} >= {"loss", "accuracy", "lr", "sharpness"}


def test_a_compare_run_gets_the_distillation_bars(tmp_path):
    """A compare run of one distilled and one independent student against their teacher: grouped
    bars of each layer's closeness (one legend entry a student) and the signed difference, whose
    bar heights are distilled − independent per layer (Gotmare et al.'s pane (c))."""
    from fixtures_tui import T0, write_distill_experiment

    from heur.core.schema import make
    from heur.report.render import draw

    layers, indep, dist = ["conv1", "conv2", "fc1", "out"], [0.9, 0.8, 0.5, 0.4], [0.88, 0.82, 0.7, 0.8]
    common = {"a": "@teacher", "method": "cka", "layers_a": layers, "layers_b": layers, "matrix": None}
    events = [
        make("compare", 1, 0.0, T0, b="@indep", values=indep, agreement=0.95, **common),
        make("compare", 2, 0.0, T0, b="@distilled", values=dist, agreement=0.98, **common),
    ]
    exp, _ = write_distill_experiment(tmp_path / "runs", events)
    r = cli("report", exp)
    assert r.exit_code == 0, r.output
    files = {p.stem for p in (exp / "report" / "figures").iterdir()}
    assert files == {"distill_1", "distill_2"}  # nothing else has data: no empty panels
    from heur.figures.distill import distill_bars

    closeness, diff = distill_bars("compare", events[:2], exp)
    ax = draw(closeness).axes[0]
    assert _legend(draw(closeness)) == ["@indep (independent)", "@distilled (distilled)"]
    assert sorted(round(p.get_height(), 9) for p in ax.patches) == sorted(indep + dist)
    heights = [p.get_height() for p in draw(diff).axes[0].patches]
    assert np.allclose(heights, np.subtract(dist, indep))
    gain = np.mean(np.subtract(dist, indep)[2:]) - np.mean(np.subtract(dist, indep)[:2])
    assert diff.note == f"deeper-half gain {gain:+.3f} (the paper: > 0)"
    for p in (exp / "report" / "figures").iterdir():
        assert decode(p.read_bytes())[..., :3].std() > 0.05


def test_export_names_each_runs_variant_and_grid_point(tmp_path):
    """Runs are named <variant>_<grid point> (core.config.expand): the export's variant column is
    the variant the name starts with (the longest, when one variant's name prefixes another's)."""
    from heur.core.export import run_labels

    exp = tmp_path / "e"
    exp.mkdir()
    (exp / "experiment.toml").write_text(
        'name = "e"\n[[variant]]\nname = "lb"\n[[variant]]\nname = "lb_warmup"\n[grid]\n"optim.lr" = [0.1, 0.2]\n'
    )
    for name, lr in (("lb_lr=0.1", 0.1), ("lb_warmup_lr=0.2", 0.2)):
        (exp / name).mkdir()
        (exp / name / "config.toml").write_text(f'name = "e"\n[optim]\nlr = {lr}\n')
    labels = run_labels(exp, ["lb_lr=0.1", "lb_warmup_lr=0.2"])
    assert labels == {
        "lb_lr=0.1": {"variant": "lb", "params": {"optim.lr": 0.1}},
        "lb_warmup_lr=0.2": {"variant": "lb_warmup", "params": {"optim.lr": 0.2}},
    }


def test_the_grid_heatmap_holds_each_runs_final_test_loss(exp):
    from heur.figures.registry import build

    figs = {p.name: f for p, fs in build(_scene(exp)) for f in fs}
    grid = figs["grid"]
    finals = [[e for e in events_of(rd) if e["kind"] == "eval" and e["split"] == "test"][-1] for rd in R.run_dirs(exp)]
    assert grid.cols == ["1", "8"] and grid.xlabel == "optim.lr_ntk"
    assert np.array_equal(grid.values, [[e["loss"] for e in finals]]) and grid.marks == []


def test_heatmap_ticks_keep_the_last_label_apart_from_its_neighbour():
    from heur.report.render import _ticks

    for n in range(2, 120):
        labels = [str(5 * (i + 1)) for i in range(n)]
        idx, shown = _ticks(labels)
        assert idx[0] == 0 and idx[-1] == n - 1 and shown[-1] == labels[-1]
        assert len(idx) <= 25
        gaps = [b - a for a, b in zip(idx, idx[1:])]
        stride = -(-n // 24)
        # every gap is more than half the stride (the last label too), so neighbouring labels never touch
        assert stride == 1 or min(gaps) > stride / 2, (n, idx)
