"""The distillation panel: bars of a compare run's per-layer closeness and the distilled −
independent difference, as text that fits 80 columns; shown in the CCA tab for a compare run."""

from __future__ import annotations

from fixtures_tui import T0, make_presets, write_distill_experiment
from test_tui_app import RecordingSource, goto, sync, until

from heur.core.schema import make
from heur.tui import distill
from heur.tui.app import HeurApp
from heur.tui.sidebar import RunNode

LAYERS = ["conv1", "conv2", "fc1", "out"]
INDEP = [0.9, 0.8, 0.5, 0.4]
DIST = [0.88, 0.82, 0.7, 0.8]


def _events():
    common = {"a": "@teacher", "method": "cka", "layers_a": LAYERS, "layers_b": LAYERS, "matrix": None}
    return [
        make("compare", 1, 0.0, T0, b="@indep", values=INDEP, agreement=0.95, **common),
        make("compare", 2, 0.0, T0, b="@distilled", values=DIST, agreement=0.98, **common),
    ]


def test_bars_and_difference_fit_80_columns_and_follow_the_values():
    text = distill.render(_events(), [False, True], 78, "compare: each layer's closeness to @teacher")
    lines = text.plain.splitlines()
    assert all(len(ln) <= 80 for ln in lines), max(map(len, lines))
    assert "@teacher vs @indep (independent): cka per layer, top-1 agreement 0.950" in text.plain
    assert "@teacher vs @distilled (distilled)" in text.plain
    rows = [ln for ln in lines if ln.strip().startswith(tuple(LAYERS))]
    bars = [ln.count("█") for ln in rows[:4]]
    assert bars == sorted(bars, reverse=True) and bars[0] > 1.5 * bars[3]  # 0.9 > 0.8 > 0.5 > 0.4
    diff = [d - i for d, i in zip(DIST, INDEP)]
    tail = rows[8:]
    assert [float(ln.split()[-1]) for ln in tail] == [round(x, 3) for x in diff]
    # signed bars around the axis: conv1 (-0.02) to the left, out (+0.4, the largest) fills the right half
    assert tail[0].index("█") < tail[0].index("│") and tail[3].index("█") > tail[3].index("│")
    gain = (diff[2] + diff[3]) / 2 - (diff[0] + diff[1]) / 2
    assert f"deeper-half gain {gain:+.3f}" in text.plain


def test_without_one_distilled_and_one_independent_student_there_is_no_difference():
    text = distill.render(_events(), [None, None], 100)
    assert "distilled − independent" not in text.plain and "conv1" in text.plain


def test_is_distilled_reads_the_run_config(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.toml").write_text('[distill]\nteacher = "@t"\n')
    (tmp_path / "i").mkdir()
    (tmp_path / "i" / "config.toml").write_text('name = "i"\n')
    assert distill.is_distilled(tmp_path, "@d") is True and distill.is_distilled(tmp_path, "@i:final") is False
    assert distill.is_distilled(tmp_path, "some/path.pt") is None and distill.is_distilled(tmp_path, "@gone") is None


@sync
async def test_the_cca_tab_shows_a_compare_runs_distillation_panel(tmp_path):
    exp, rd = write_distill_experiment(tmp_path / "runs", _events())
    make_presets(tmp_path / "presets")
    app = HeurApp(tmp_path / "runs", tmp_path / "presets", source=RecordingSource(tmp_path / "runs"))
    app.EVENT_PERIOD, app.STATUS_PERIOD = 0.05, 0.2
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.rows)
        await goto(pilot, app, lambda d: getattr(d, "path", None) == exp)
        await pilot.press("enter")
        await goto(pilot, app, lambda d: isinstance(d, RunNode) and d.path == rd)
        await until(pilot, lambda: app.focus_run == rd and app.data[rd].events > 0)
        await pilot.press("6")
        await until(pilot, lambda: "distilled − independent" in str(app.query_one("#cca-text").render()))
        assert "deeper-half gain" in str(app.query_one("#cca-text").render())
