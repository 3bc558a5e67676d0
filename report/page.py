"""``heur report``: an experiment as figure files and one self-contained HTML page.

The page holds every panel of ``heur.figures.registry`` that has data for the experiment's runs
(all runs overlaid, one colour each, with a legend), the summary table, the verdicts beside the
claims of the papers they check, and each run's resolved config. Images are embedded as data
URIs, so ``report.html`` can be mailed alone; the figures are also written as files
(``figures/<panel>.<png|svg|pdf>``) for a paper. On a running experiment it reports what the
runs have written so far (the verdicts wait until every run has ended).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from heur.core import runs as R
from heur.core.errors import ConfigError
from heur.core.export import experiment_runs
from heur.figures.panels import XAXES, Shown, View
from heur.figures.registry import Scene, build
from heur.figures.rundata import load_run

from . import render

# the claim each check tests, as the papers state it (our words)
CLAIMS = {
    "catapult": "Lewkowycz et al. 2020 (arXiv 2003.02218): below η = 2/λ0 the loss falls monotonically "
    "(lazy phase); between 2/λ0 and η_max (about 4/λ0 for the two-layer linear uv model, about 12/λ0 for "
    "ReLU networks) the loss first grows, the curvature drops below 2/η and the run ends in a flatter "
    "minimum (catapult phase); above η_max it diverges.",
    "warmup": "Kalra & Barkeshli 2024 (arXiv 2406.09405): warmup lets the network move into regions whose "
    "sharpness is below 2/η as η rises, so that a larger target learning rate trains; warmed-up runs sit "
    "at the edge of stability.",
    "gi_adam": "Kalra & Barkeshli 2024 (arXiv 2406.09405): Adam's preconditioned sharpness starts far above "
    "its stability threshold; initialising Adam's second moment with the first squared gradient (GI-Adam) "
    "gives much of warmup's benefit.",
    "warmup_cca": "Gotmare et al. 2018 (arXiv 1810.13243): with CCA of each layer against the end of "
    "training, small batch and large batch with warmup show the deeper (fully connected) layers settling "
    "early, large batch without warmup does not: warmup keeps the deeper layers from creating training "
    "instability.",
    "connectivity": "Garipov et al. 2018 (arXiv 1802.10026): two independently trained modes are joined by "
    "a simple curve of low train loss and test error, while the straight line between them has a barrier.",
    "sgdr": "Gotmare et al. 2018 (arXiv 1810.13243): the iterates just before SGDR's restarts sit in "
    "different minima (a barrier on the straight line between them), SGD's do not; points on the "
    "connecting curve reach a lower train loss but generalize worse.",
    "resilience": "Gotmare et al. 2018 (arXiv 1810.13243): a reference mode and variants of it (larger "
    "batch, Adam, linear decay, smaller weight decay, larger init variance, no augmentation) are each "
    "connected to it by a low-loss curve within a few epochs.",
    "distill": "Gotmare et al. 2018 (arXiv 1810.13243): per-layer CCA of (teacher, distilled student) minus "
    "(teacher, independent student) is larger in the deeper layers: the teacher's knowledge goes primarily "
    "to the deeper layers.",
}
_HIDDEN = {"run", "state", "reason", "step", "total_steps", "params"}


@dataclass
class Options:
    """What the report draws: image format, x axis, log y, smoothing weight (0: off), plot width
    in pixels that series are decimated to (two points each)."""

    fmt: str = "png"
    xaxis: str = "step"
    ylog: bool = False
    smoothing: float = 0.0
    width: int = 800

    def check(self) -> None:
        if self.fmt not in render.FORMATS:
            raise ConfigError(f"expected one of {', '.join(render.FORMATS)}, got {self.fmt!r}", key="--format")
        if self.xaxis not in XAXES:
            raise ConfigError(f"expected one of {', '.join(XAXES)}, got {self.xaxis!r}", key="--x")
        if not (0.0 <= self.smoothing < 1.0) or math.isnan(self.smoothing):
            raise ConfigError(f"expected a weight in [0, 1), got {self.smoothing:g}", key="--smooth")


@dataclass
class Written:
    html: Path
    figures: list[Path]
    seconds: float


def write_report(exp_dir: Path | str, out: Path | str | None = None, opts: Options | None = None) -> Written:
    """Write ``report.html`` and ``figures/`` under ``out`` (default ``<exp_dir>/report``)."""
    t0 = time.perf_counter()
    opts = opts or Options()
    opts.check()
    exp_dir = Path(exp_dir)
    run_paths = experiment_runs(exp_dir)
    single = run_paths == [exp_dir]
    out = Path(out) if out else exp_dir / "report"
    figdir = out / "figures"
    try:
        figdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the report directory: {e.strerror}", file=str(out)) from None
    shown = [Shown(p.name, load_run(p), i) for i, p in enumerate(run_paths)]
    statuses = {p.name: R.read_status(p) for p in run_paths}
    summary = _summary(exp_dir, single, statuses)
    view = View(xaxis=opts.xaxis, ylog=opts.ylog, smoothing=opts.smoothing, raw_behind=True)
    scene = Scene(shown, view, opts.width, None if single else exp_dir, summary)
    sections = []
    files = []
    for panel, figs in build(scene):
        items = []
        for k, f in enumerate(figs):
            name = panel.name + (f"_{k + 1}" if len(figs) > 1 else "")
            path = figdir / f"{name}.{opts.fmt}"
            data = render.to_bytes(f, opts.fmt)
            path.write_bytes(data)
            files.append(path)
            embed = data if opts.fmt != "pdf" else render.to_bytes(f, "png")
            mime = "image/svg+xml" if opts.fmt == "svg" else "image/png"
            items.append(
                (f, path.relative_to(out).as_posix(), f"data:{mime};base64," + base64.b64encode(embed).decode())
            )
        sections.append((panel, items))
    page = _html(exp_dir, shown, statuses, summary, sections, opts)
    (out / "report.html").write_text(page, encoding="utf-8")
    return Written(out / "report.html", files, time.perf_counter() - t0)


def _summary(exp_dir: Path, single: bool, statuses: dict) -> dict:
    """core.summary's rows (and the verdicts once every run has ended)."""
    from heur.core.summary import collect

    if single:
        st = next(iter(statuses.values()))
        row = {"run": st.name, "state": st.state, "reason": st.reason, "step": st.step, "total_steps": st.total_steps}
        row.update(st.result)
        return {"experiment": exp_dir.name, "path": str(exp_dir.parent), "grid": {}, "check": None, "runs": [row]}
    summary = collect(exp_dir)
    if all(s.state in R.FINAL_STATES for s in statuses.values()):
        from heur.core.verdicts import verdicts

        summary["verdicts"] = verdicts(summary)
    return summary


def _e(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3e}" if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3) else f"{v:.4g}"
    return str(v)


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; } table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 7px; text-align: right; } th { background: #f4f4f4; }
td.l, th.l { text-align: left; } .ok { color: #1a7f37; } .bad { color: #c4302b; } .info { color: #555; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #666; font-size: 12px; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 12px; }
.running { background: #fff6d6; padding: 0.4em 0.7em; border-left: 4px solid #e0b000; }
.claim { background: #f2f6fb; padding: 0.5em 0.8em; border-left: 4px solid #5b8bd0; }
.wide { overflow-x: auto; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em; }
"""


def _html(exp_dir: Path, shown: list[Shown], statuses: dict, summary: dict, sections: list, opts: Options) -> str:
    try:
        preset = tomllib.loads((exp_dir / "experiment.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        preset = {}
    title = f"heur report: {exp_dir.name}"
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"]
    out.append(f"<style>{CSS}</style></head><body>")
    out.append(f"<h1>{_e(exp_dir.name)}</h1>")
    if preset.get("description"):
        out.append(f"<p>{_e(preset['description'])}</p>")
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    view = (
        [f"x: {opts.xaxis}"]
        + (["log y"] if opts.ylog else [])
        + ([f"smoothing {opts.smoothing:g}"] if opts.smoothing else [])
    )
    out.append(
        f"<p class='meta'>{_e(exp_dir.resolve())} · {len(shown)} run(s) · written {when} · {_e(', '.join(view))}</p>"
    )
    live = [n for n, s in statuses.items() if s.state not in R.FINAL_STATES]
    if live:
        out.append(
            f"<p class='running'>{len(live)} run(s) not ended ({_e(', '.join(live))}): this report shows what "
            "they had written when it was made.</p>"
        )
    toc = ["summary"] + (["verdicts"] if summary.get("check") or summary.get("verdicts") else [])
    toc += [p.name for p, _ in sections] + ["configs"]
    out.append("<p>" + " · ".join(f"<a href='#{t}'>{t}</a>" for t in toc) + "</p>")
    out.append(_runs_legend(shown))
    out.append(_summary_table(summary))
    out.append(_verdicts(summary, live))
    for panel, items in sections:
        out.append(f"<h2 id='{_e(panel.name)}'>{_e(panel.title)}</h2>")
        for f, rel, uri in items:
            alt = getattr(f, "title", panel.title)
            out.append(f"<figure><img src='{uri}' alt='{_e(alt)}'>")
            out.append(f"<figcaption>{_e(alt)} · <a href='{_e(rel)}'>{_e(rel)}</a></figcaption></figure>")
    out.append("<h2 id='configs'>Configs</h2>")
    for r in shown:
        path = (exp_dir / r.name / "config.toml") if (exp_dir / r.name).is_dir() else exp_dir / "config.toml"
        try:
            text = path.read_text()
        except OSError as e:
            text = f"(unreadable: {e.strerror})"
        out.append(f"<details><summary>{_e(r.name)}</summary><pre>{_e(text)}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)


def _runs_legend(shown: list[Shown]) -> str:
    cells = []
    for r in shown:
        c = "rgb({},{},{})".format(*r.color)
        cells.append(f"<span><span class='swatch' style='background:{c}'></span>{_e(r.name)}</span>")
    return "<p>" + " &nbsp; ".join(cells) + "</p>"


def _summary_table(summary: dict) -> str:
    rows = summary.get("runs") or []
    cols: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in _HIDDEN and k not in cols and not isinstance(v, (dict, list)) and v is not None:
                cols.append(k)
    grid = list((summary.get("grid") or {}).keys())
    out = [
        "<h2 id='summary'>Summary</h2><div class='wide'><table>",
        "<tr><th class='l'>run</th><th class='l'>state</th><th>progress</th>",
    ]
    out += [f"<th>{_e(g)}</th>" for g in grid] + [f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols] + ["</tr>"]
    for r in rows:
        prog = f"{r.get('step', 0)}/{r.get('total_steps') or '?'}"
        cells = [f"<td class='l'>{_e(r['run'])}</td><td class='l'>{_e(r['state'])}</td><td>{_e(prog)}</td>"]
        cells += [f"<td>{_e(_fmt((r.get('params') or {}).get(g)))}</td>" for g in grid]
        cells += [f"<td>{_e(_fmt(r.get(c)))}</td>" for c in cols]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    for r in rows:
        if r.get("reason") and r["state"] != "completed":
            out.append(f"<p class='info'>{_e(r['run'])}: {_e(r['state'])}: {_e(r['reason'])}</p>")
    return "\n".join(out)


def _verdicts(summary: dict, live: list[str]) -> str:
    from heur.core.verdicts import check_of

    check = check_of(summary) if summary.get("runs") else None
    if not check:
        return ""
    out = ["<h2 id='verdicts'>Verdicts</h2>"]
    if check in CLAIMS:
        out.append(f"<p class='claim'><b>The claim ({_e(check)}).</b> {_e(CLAIMS[check])}</p>")
    rows = summary.get("verdicts")
    if rows is None:
        out.append(f"<p class='info'>The verdicts come when every run has ended ({len(live)} still going).</p>")
        return "\n".join(out)
    if not rows:
        out.append("<p class='info'>No verdict rows (nothing to judge).</p>")
        return "\n".join(out)
    out.append(
        "<table><tr><th class='l'></th><th class='l'>run</th><th class='l'>measured, against the claim</th></tr>"
    )
    for v in rows:
        ok = v.get("ok")
        mark, cls = {True: ("✓", "ok"), False: ("✗", "bad")}.get(ok, ("·", "info"))
        out.append(
            f"<tr><td class='l {cls}'>{mark}</td><td class='l'>{_e(v.get('run') or '(all)')}</td>"
            f"<td class='l {cls}'>{_e(v.get('text', ''))}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)
