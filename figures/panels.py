"""Panels as data: build a :class:`~heur.figures.figure.Figure` from the runs shown.

Pure functions of (runs, view options, plot width): no widgets, no plotting library, so they
are tested directly. Every series is decimated to about two points per column (min/max
buckets over a shared x range, so spikes stay and runs line up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from heur.core.schema import columns

from .downsample import envelope, minmax, smooth
from .figure import GREY, Figure, Heatmap, HLine, Series, color
from .rundata import RunData, Table

XAXES = ("step", "samples", "epoch")
# the fields the panels read from the events kept whole (checked against core/schema.py)
columns("catapult", "start_step", "peak_step", "end_step", "peak_loss", "peak_ratio")
columns("cca", "layers", "values", "method", "against", "epoch_b", "epochs", "matrix")


@dataclass
class View:
    """What the user toggled: shared by every panel."""

    xaxis: str = "step"
    ylog: bool = False
    smoothing: float = 0.0
    raw_behind: bool = False  # smoothed lines get their raw line, faint (Series.raw), behind them


@dataclass
class Shown:
    """One run on screen, with its stable colour index (``rgb``: a colour of its own instead)."""

    name: str
    data: RunData
    index: int
    rgb: tuple[int, int, int] | None = None

    @property
    def color(self):
        return self.rgb if self.rgb is not None else color(self.index)


def x_of(run: RunData, table: Table, xaxis: str) -> np.ndarray:
    """The x column of ``table`` for the chosen axis (samples interpolated from train events)."""
    if xaxis == "epoch":
        return table["epoch"]
    if xaxis == "samples":
        if "samples" in table.names:
            return table["samples"]
        tr = run["train"]
        if len(tr) == 0:
            return np.full(len(table), np.nan)
        return np.interp(table["step"], tr["step"], tr["samples"])
    return table["step"]


def _xrange(runs: list[Shown], kinds: tuple[str, ...], view: View) -> tuple[float, float] | None:
    lo, hi = np.inf, -np.inf
    for r in runs:
        for k in kinds:
            t = r.data[k]
            if len(t):
                x = x_of(r.data, t, view.xaxis)
                x = x[np.isfinite(x)]
                if x.size:
                    lo, hi = min(lo, x[0], x.min()), max(hi, x[-1], x.max())
    return (float(lo), float(hi)) if np.isfinite(lo) else None


def _series(
    run: Shown,
    kind: str,
    col: str,
    view: View,
    width: int,
    rng,
    *,
    label: str | None,
    kind_: str = "line",
    marker: str | None = None,
    smoothing: float = 0.0,
) -> list[Series]:
    """A column of a run as series decimated to ``width`` buckets over the shared x range.

    Lines longer than two points a column are drawn as their min/max envelope (two series);
    scatter series keep min/max points.
    """
    t = run.data[kind]
    if len(t) == 0:
        return []
    x = x_of(run.data, t, view.xaxis)
    y = t[col]
    if smoothing > 0:
        y = smooth(y, smoothing)
    lo, hi = rng if rng else (None, None)
    buckets = max(8, width)
    if kind_ == "line":
        env = envelope(x, y, buckets, lo, hi)
        if env is not None and _noisy(env[1], env[2]):
            xm, ylo, yhi = env
            return [
                Series(xm, yhi, label=label, color=run.color, marker=marker),
                Series(xm, ylo, label=None, color=run.color, marker=marker),
            ]
    x, y = minmax(x, y, buckets, lo, hi)
    return [Series(x, y, label=label, color=run.color, kind=kind_, marker=marker)]


def _noisy(ylo: np.ndarray, yhi: np.ndarray, share: float = 0.03) -> bool:
    """Is the typical bucket's min-max spread a visible share of the plot's height?

    Then two edge lines draw far fewer points than a zig-zag through every bucket's min and
    max; for a smooth curve the zig-zag is a single line and cheaper.
    """
    span = float(np.nanmax(yhi) - np.nanmin(ylo)) if yhi.size else 0.0
    return span > 0 and float(np.nanmedian(yhi - ylo)) > share * span


def _xlabel(view: View) -> str:
    return {"step": "step", "samples": "examples seen", "epoch": "epoch"}[view.xaxis]


def loss_figure(runs: list[Shown], view: View, width: int, test: bool = True) -> Figure:
    """Train loss lines, test loss dots (unless ``test`` is False) and catapult peaks."""
    fig = Figure(
        title="loss: train ─  test •  catapult ▲",
        state=(["log"] if view.ylog else []) + ([f"smooth {view.smoothing:g}"] if view.smoothing else []),
        xlabel=_xlabel(view),
        ylog=view.ylog,
        empty="no train events yet",
    )
    rng = _xrange(runs, ("train", "eval_test"), view)
    single = len(runs) == 1
    if view.smoothing and view.raw_behind:
        for r in runs:
            raw = _series(r, "train", "loss", view, width, rng, label=None)
            for s in raw:
                s.raw = True
            fig.series.extend(raw)
    for r in runs:
        ss = _series(
            r, "train", "loss", view, width, rng, label=r.name + (" train" if single else ""), smoothing=view.smoothing
        )
        fig.series.extend(ss)
        if test:
            fig.series.extend(
                _series(
                    r,
                    "eval_test",
                    "loss",
                    view,
                    width,
                    rng,
                    label=(r.name + " test") if single else None,
                    kind_="scatter",
                    marker="•",
                )
            )
        m = catapult_marks(r, view)
        if m is not None:
            fig.series.append(m)
    if not single:
        fig.key = [("line", "train")] + ([("dots", "test")] if test else [])
    if any(s.marker == "▲" for s in fig.series):
        fig.key.append(("triangles", "catapult peak"))
    _cut_implausible(fig, runs)
    _auto_log(fig, view)  # a diverged run's loss would flatten every other curve to the floor
    return fig


LOSS_CAP = 1e3  # loss points above this many times the largest initial loss are cut (a diverging run)


def loss_cap(runs: list[Shown]) -> float:
    """LOSS_CAP times the largest first (positive, finite) train loss of ``runs``; inf without one."""
    first = []
    for r in runs:
        y = r.data["train"]["loss"] if len(r.data["train"]) else np.empty(0)
        y = y[np.isfinite(y) & (y > 0)]
        if y.size:
            first.append(float(y[0]))
    return LOSS_CAP * max(first) if first else math.inf


def _cut_implausible(fig: Figure, runs: list[Shown]) -> None:
    """Drop the loss points above LOSS_CAP times the largest first loss of the runs shown, and say
    so in the title with the runs cut: a diverging run's 1e21 would otherwise squash every other
    curve, even on a log axis. Catapult spikes (tens of times their base) stay whole."""
    cap = loss_cap(runs)
    if not math.isfinite(cap):
        return
    names = {r.color: r.name for r in runs}
    cut = []
    for s in fig.series:
        y = np.asarray(s.y, dtype=float)
        keep = ~(y > cap)
        if not keep.all():
            s.x, s.y = np.asarray(s.x)[keep], y[keep]
            cut.append(names.get(s.color, "?"))
    if cut:
        who = ", ".join(dict.fromkeys(cut))
        fig.state.append(f"cut > {cap:.3g}: {who}")


def _auto_log(fig: Figure, view: View) -> None:
    """A log y axis, said in the title, when the view is linear but the figure's positive values
    span more than four decades (on a linear axis all but the largest would lie on the floor)."""
    if not view.ylog and spans_decades(fig.series):
        fig.ylog = True
        fig.state.insert(0, "log: auto")


def spans_decades(series: list[Series], decades: float = 4.0) -> bool:
    """True when the positive finite values span more than ``decades`` powers of ten."""
    lo, hi = math.inf, 0.0
    for s in series:
        y = np.asarray(s.y, dtype=float)
        y = y[np.isfinite(y) & (y > 0)]
        if y.size:
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
    return hi > 0 and lo < math.inf and hi / lo > 10.0**decades


def catapult_marks(run: Shown, view: View) -> Series | None:
    """Points at each catapult's peak on the train loss curve."""
    cats = run.data.items["catapult"]
    tr = run.data["train"]
    if not cats or len(tr) == 0:
        return None
    steps = tr["step"]
    xs, ys = [], []
    xcol = x_of(run.data, tr, view.xaxis)
    for c in cats:
        peak = c.get("peak_step", c.get("step"))
        if peak is None:
            continue
        i = int(np.clip(np.searchsorted(steps, peak), 0, len(steps) - 1))
        xs.append(xcol[i])
        peak_loss = c.get("peak_loss")
        ys.append(float(peak_loss) if isinstance(peak_loss, (int, float)) else tr["loss"][i])
    if not xs:
        return None
    return Series(np.array(xs), np.array(ys), label=None, color=run.color, kind="scatter", marker="▲")


def accuracy_figure(runs: list[Shown], view: View, width: int) -> Figure:
    fig = Figure(
        title="accuracy: test ─  train •",
        xlabel=_xlabel(view),
        empty="no eval events yet",
        key=[("line", "test"), ("dots", "train")],
    )
    rng = _xrange(runs, ("eval_test", "eval_train"), view)
    for r in runs:
        ss = _series(r, "eval_test", "accuracy", view, width, rng, label=r.name)
        fig.series.extend(ss)
        ss = _series(r, "eval_train", "accuracy", view, width, rng, label=None, kind_="scatter", marker="•")
        fig.series.extend(ss)
    return fig


def lr_figure(runs: list[Shown], view: View, width: int) -> Figure:
    fig = Figure(
        title="learning rate" + (": dashed NTK thresholds" if len(runs) == 1 and _ntk(runs[0]) else ""),
        state=["log"] if view.ylog else [],
        xlabel=_xlabel(view),
        ylog=view.ylog,
        empty="no learning-rate values yet",
    )
    rng = _xrange(runs, ("train", "lr"), view)
    for r in runs:
        kind = "lr" if len(r.data["lr"]) > len(r.data["train"]) else "train"
        ss = _series(r, kind, "lr", view, width, rng, label=r.name)
        fig.series.extend(ss)
    ntk = _ntk(runs[0]) if len(runs) == 1 else None
    if ntk is not None:
        for key, lab in (("lr_lazy_edge", "2/λ0"), ("lr_uv_max", "4/λ0"), ("lr_relu_max", "12/λ0")):
            v = ntk.get(key)
            if v is not None:
                fig.hlines.append(HLine(float(v), lab, GREY))
    return fig


def _ntk(run: Shown) -> dict | None:
    t = run.data["ntk"]
    if len(t) == 0:
        return None
    return {c: float(t[c][0]) for c in t.names}


def _edge_label(t: Table) -> str:
    """The stability edge as a multiple of 1/η, read off the run's own events (threshold · lr):
    "2/η" for plain SGD, "3.8/η" for heavy-ball μ = 0.9, "38/η" for Adam with β1 = 0.9."""
    r = t["threshold"] * t["lr"]
    r = r[np.isfinite(r) & (r > 0)]
    if not len(r):
        return "edge"
    v = float(np.median(r))
    return "2/η" if abs(v - 2.0) < 1e-6 else f"{v:.3g}/η"


EDGE_CAP = 3.0  # threshold points above this many times the largest sharpness are cut (and said so)


def sharpness_figure(runs: list[Shown], view: View, width: int) -> Figure:
    """λmax (λmax(P⁻¹H) for Adam-family runs, whose edge applies to the preconditioned
    sharpness) with the optimizer's stability edge as a dotted series over steps. Edge points far
    above the sharpness (lr → 0 at the end of a cosine schedule sends it to ~1e7) are cut, so they
    do not flatten the curves; the title says where."""
    fig = Figure(xlabel=_xlabel(view), ylog=view.ylog, empty="no sharpness events yet — enable [probes.sharpness]")
    rng = _xrange(runs, ("sharpness",), view)
    single = len(runs) == 1
    tables = [r.data["sharpness"] for r in runs]

    def measured(t: Table) -> str:
        pre = len(t) and np.isfinite(t["preconditioned_sharpness"]).any()
        return "preconditioned_sharpness" if pre else "lambda_max"

    cols = [measured(t) for t in tables]
    peaks = [np.nanmax(t[c]) for t, c in zip(tables, cols) if len(t) and np.isfinite(t[c]).any()]
    cap = EDGE_CAP * max(peaks) if peaks and max(peaks) > 0 else math.inf
    cut = False
    for r, t, col in zip(runs, tables, cols):
        ss = _series(r, "sharpness", col, view, width, rng, label=r.name + (" λmax" if single else ""))
        fig.series.extend(ss)
        edge = _series(r, "sharpness", "threshold", view, width, rng, label=None, marker="dot")
        for s in edge:
            keep = ~(s.y > cap)
            cut |= bool((~keep).any())
            s.x, s.y = s.x[keep], s.y[keep]
            if single:
                s.label = _edge_label(t)
        fig.series.extend(s for s in edge if len(s.x))
        ntk = _ntk(r)
        if ntk is not None and single and np.isfinite(ntk.get("lambda0", np.nan)):
            fig.hlines.append(HLine(ntk["lambda0"], "λ0 (NTK)", GREY))
    labels = {_edge_label(t) for t in tables if len(t)}
    edge_name = labels.pop() if len(labels) == 1 else "edge"
    lam = "λmax(P⁻¹H)" if "preconditioned_sharpness" in cols else "λmax"
    fig.title = f"sharpness: {lam} ─  {edge_name} •"
    if not single:
        fig.key = [("line", lam), ("dotted", edge_name)]
    fig.state = (["log"] if view.ylog else []) + ([f"edge cut > {cap:.3g}"] if cut else [])
    _auto_log(fig, view)  # Adam's preconditioned sharpness falls by 1e6-1e8 over its first steps
    return fig


def catapult_rows(runs: list[Shown]) -> list[tuple[str, ...]]:
    """Rows for the catapult table: run, start, peak, end, peak ratio."""
    rows = []
    for r in runs:
        for c in r.data.items["catapult"]:
            ratio = c.get("peak_ratio")
            rows.append(
                (
                    r.name,
                    _fmt(c.get("start_step")),
                    _fmt(c.get("peak_step")),
                    _fmt(c.get("end_step")),
                    "—" if ratio is None else f"{ratio:.3g}",
                )
            )
    return rows


def regime_lines(runs: list[Shown]) -> list[str]:
    """One line per run with an NTK measurement: eta·lambda0 and the phase it predicts."""
    out = []
    for r in runs:
        ntk = _ntk(r)
        tr = r.data["train"]
        if ntk is None:
            continue
        lam = ntk.get("lambda0", np.nan)
        lr = float(tr["lr"][0]) if len(tr) and np.isfinite(tr["lr"][0]) else np.nan
        if not np.isfinite(lam):
            out.append(f"{r.name}: λ0 not finite")
            continue
        c = lr * lam
        if not np.isfinite(c):
            out.append(f"{r.name}: λ0 = {lam:.4g}, 2/λ0 = {2 / lam:.4g}")
            continue
        phase = (
            "lazy (η < 2/λ0)"
            if c < 2
            else "catapult (2/λ0 < η; max ~4/λ0 for uv, ~12/λ0 for ReLU)"
            if c < 12
            else "beyond 12/λ0: expect divergence"
        )
        out.append(f"{r.name}: λ0 = {lam:.4g}, η·λ0 = {c:.3g} → {phase}")
    return out


def _fmt(v) -> str:
    return "—" if v is None else str(int(v)) if isinstance(v, (int, float)) else str(v)


def _cca_layers(evs: list[dict]) -> tuple[list[str], np.ndarray] | None:
    """(layers of the latest event, values[layer, event]); a layer missing from an event is NaN."""
    layers = list(evs[-1].get("layers") or [])
    if not layers:
        return None
    pos = {n: i for i, n in enumerate(layers)}
    mat = np.full((len(layers), len(evs)), np.nan)
    for j, e in enumerate(evs):
        for name, v in zip(e.get("layers") or [], e.get("values") or []):
            i = pos.get(name)
            if i is not None and isinstance(v, (int, float)):
                mat[i, j] = float(v)
    return layers, mat


def cca_matrix(run: RunData) -> tuple[list[str], list[float], np.ndarray, dict] | None:
    """(layers, epochs, values[layer, epoch], last event) of the live CCA heatmap, or None.

    One column per snapshot after the first: the ``against="previous"`` event of each, every
    layer against the snapshot before, labelled with the newer snapshot's epoch (``epoch_b``).
    The ``against="final"`` event a completed run adds is another figure (:func:`cca_final`).
    """
    evs = [e for e in run.items["cca"] if e.get("against") != "final"]
    if not evs:
        return None
    m = _cca_layers(evs)
    if m is None:
        return None
    epochs = [float(e.get("epoch_b", e.get("epoch")) or 0.0) for e in evs]
    return m[0], epochs, m[1], evs[-1]


def cca_final(run: RunData) -> tuple[list[str], list[float], np.ndarray, dict] | None:
    """(layers, epochs, values[layer, snapshot], event) of a completed run's CCA probe: every
    snapshot against the last one (the ``against="final"`` event's ``matrix``), or None."""
    evs = [e for e in run.items["cca"] if e.get("against") == "final"]
    if not evs:
        return None
    e = evs[-1]
    layers, epochs, rows = list(e.get("layers") or []), list(e.get("epochs") or []), e.get("matrix") or []
    if not layers or not epochs or len(rows) != len(layers) or any(len(r) != len(epochs) for r in rows):
        return None
    mat = np.array([[float(v) if isinstance(v, (int, float)) else np.nan for v in r] for r in rows])
    return layers, [float(x) for x in epochs], mat, e


def cca_heatmaps(run: Shown) -> list[Heatmap]:
    """The run's CCA heatmaps (layer × epoch): each layer against the previous snapshot (the live
    one) and, once the run has completed, every snapshot against the final one."""
    out = []
    for m, vs in ((cca_matrix(run.data), "the previous snapshot"), (cca_final(run.data), "the final epoch")):
        if m is None:
            continue
        layers, epochs, mat, last = m
        out.append(
            Heatmap(
                title=f"{run.name}: {last.get('method', 'cca')} of each layer vs {vs}",
                rows=layers,
                cols=[f"{e:g}" for e in epochs],
                values=mat,
                xlabel="epoch",
                ylabel="layer",
                vmin=0.0,
                vmax=1.0,
                cbar=str(last.get("method", "cca")),
            )
        )
    return out


def _grid_label(v) -> str:
    """A grid value as the preset writes it (1024, not 1.02e+03)."""
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def grid_metric(rows: list[dict]) -> str:
    """The final loss a grid's heatmap shows: the test loss, else the train loss."""
    for k in ("test_loss", "train_loss", "train_loss_running"):
        if any(r.get(k) is not None for r in rows):
            return k
    return "train_loss"


def grid_heatmap(summary: dict) -> Heatmap | None:
    """A one- or two-key ``[grid]`` as a heatmap of the final loss (log colour), diverged cells
    marked DIV and runs without a value by their state; rows the first key, columns the second.
    ``summary``: core.summary.collect's dict. None without a grid."""
    grid = summary.get("grid") or {}
    if len(grid) not in (1, 2):
        return None
    items = list(grid.items())
    (ka, va), (kb, vb) = items if len(items) == 2 else (("", [None]), items[0])
    rows = summary.get("runs") or []
    metric = grid_metric(rows)

    def index(values: list, v) -> int:  # a grid value as written (1 == 1.0)
        return next((i for i, x in enumerate(values) if x == v), -1)

    mat = np.full((len(va), len(vb)), np.nan)
    marks = []
    for r in rows:
        p = r.get("params") or {}
        i, j = (index(va, p.get(ka)) if ka else 0), index(vb, p.get(kb))
        if i < 0 or j < 0:
            continue
        v = r.get(metric)
        if r.get("state") == "diverged":
            marks.append((i, j, "DIV"))
        elif isinstance(v, (int, float)) and math.isfinite(v):
            mat[i, j] = float(v)
        else:
            marks.append((i, j, str(r.get("state", ""))))
    finite = mat[np.isfinite(mat)]
    return Heatmap(
        title=f"grid: final {metric.replace('_', ' ')}" + (f" ({len(marks)} without a value)" if marks else ""),
        rows=[_grid_label(a) for a in va] if ka else [""],
        cols=[_grid_label(b) for b in vb],
        values=mat,
        xlabel=kb,
        ylabel=ka,
        cbar=metric.replace("_", " "),
        log=bool(finite.size) and bool((finite > 0).all()),
        annotate=mat.size <= 100,
        marks=marks,
        empty="no grid point has finished yet",
    )
