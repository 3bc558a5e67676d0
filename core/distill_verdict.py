"""``check = "distill"``: where distillation moves a student towards its teacher (Gotmare et al. 2018).

The paper's third finding: per-layer CCA of (teacher, distilled student) minus (teacher,
independently trained student) — its panes (a), (b), (c) — is larger in the deeper layers: "the
latent knowledge shared by the teacher is primarily disbursed to the deeper layers".

Read from the summary: every ``compare`` run (core.compare_task) whose ``against`` holds one
distilled student (a run or checkpoint with a ``[distill]`` section) and one independent one. Per
such run (one seed), ``diff[j]`` = closeness of the distilled student's layer j to the teacher
minus the independent student's (pane (c), per student layer); ``gain`` = mean of ``diff`` over
the deeper half of the layers minus its mean over the shallower half (with an odd count the middle
layer is in neither). Over the seeds: the mean gain and its standard deviation (ddof = 1). The
claim holds when the mean gain exceeds its spread (mean - sd > 0); it fails otherwise, and says so;
with fewer than two seeds there is no spread and no verdict. Informational rows give each seed's
per-layer differences, the per-layer means with their spread, and the students' top-1 agreement
with the teacher.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Optional

import tomllib

OK, BAD = "\u2713", "\u2717"  # as core.verdicts marks them (which imports this module)

CLAIM = "Gotmare et al. 2018: the teacher's knowledge goes primarily to the deeper layers (gain > 0)"


def _is_distilled(summary: dict, value: str) -> Optional[bool]:
    """Does the checkpoint a compare run names come from a distillation run (None: unknown)."""
    from .pipeline import parse_ref

    try:
        ref = parse_ref(value)
    except Exception:
        return None
    if ref is not None:
        cfg = _config(summary, ref.run)
        return None if not cfg else "distill" in cfg
    try:
        from .checkpoint import load_checkpoint

        return "distill" in (load_checkpoint(value).get("config") or {})
    except Exception:
        return None


def _num(v: Any) -> str:
    v = float(v)
    return f"{v:.3g}" if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3) else f"{v:.4g}"


def _mark(ok: Optional[bool]) -> str:
    return "" if ok is None else (f" {OK}" if ok else f" {BAD}")


def _config(summary: dict, run: str) -> dict:
    """A run's config.toml beside the summary ({} when it cannot be read)."""
    path = summary.get("path")
    if not path:
        return {}
    try:
        return tomllib.loads((Path(path) / run / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _signed(v: float) -> str:
    return ("+" if v >= 0 else "") + _num(v)


def _halves(n: int) -> tuple[list[int], list[int]]:
    h = n // 2
    return list(range(h)), list(range(n - h, n))


def seed_rows(summary: dict) -> list[dict[str, Any]]:
    """One dict per usable compare run: run, layers, diff, gain, close_indep, close_distilled, agreement."""
    out = []
    for row in summary.get("runs", []):
        if row.get("state") != "completed" or not isinstance(row.get("closeness"), list):
            continue
        against = row.get("against") or []
        kinds = [_is_distilled(summary, a) for a in against]
        if kinds.count(True) != 1 or kinds.count(False) != 1:
            continue
        i_d, i_i = kinds.index(True), kinds.index(False)
        close_d, close_i = row["closeness"][i_d], row["closeness"][i_i]
        layers = row["layers"][i_d]
        usable = row["layers"][i_i] == layers and len(layers) >= 2
        diff = [None if (a is None or b is None) else a - b for a, b in zip(close_d, close_i)]
        shallow, deep = _halves(len(layers))
        gain = None
        if usable and all(diff[j] is not None for j in shallow + deep):
            gain = statistics.fmean(diff[j] for j in deep) - statistics.fmean(diff[j] for j in shallow)
        agree = row.get("agreement") or [None] * len(against)
        out.append(
            {
                "run": row["run"],
                "layers": layers,
                "diff": diff,
                "gain": gain,
                "close_indep": close_i,
                "close_distilled": close_d,
                "agree_indep": agree[i_i],
                "agree_distilled": agree[i_d],
                "method": row.get("method", "similarity"),
            }
        )
    return out


def distill_verdicts(summary: dict) -> list[dict[str, Any]]:
    rows = seed_rows(summary)
    if not rows:
        return [
            {
                "run": None,
                "ok": None,
                "text": "distill: no completed compare run of (teacher, independent student, distilled student)",
            }
        ]
    out: list[dict[str, Any]] = []
    for r in rows:
        per = ", ".join(f"{n} {_signed(d) if d is not None else '-'}" for n, d in zip(r["layers"], r["diff"]))
        gain = "-" if r["gain"] is None else _signed(r["gain"])
        agree = ""
        if r["agree_indep"] is not None and r["agree_distilled"] is not None:
            agree = f"; top-1 agreement with the teacher {_num(r['agree_distilled'])} vs {_num(r['agree_indep'])}"
        out.append(
            {
                "run": r["run"],
                "ok": None,
                "text": f"{r['run']}: {r['method']} distilled - independent: {per}; deeper-half gain {gain}{agree}",
            }
        )
    layers = rows[0]["layers"]
    same = [r for r in rows if r["layers"] == layers]
    if len(same) >= 2:
        cells = []
        for j, name in enumerate(layers):
            vals = [r["diff"][j] for r in same if r["diff"][j] is not None]
            if len(vals) >= 2:
                cells.append(f"{name} {_signed(statistics.fmean(vals))} ± {_num(statistics.stdev(vals))}")
        out.append({"run": None, "ok": None, "text": f"per layer over {len(same)} seeds: {', '.join(cells)}"})
    gains = [r["gain"] for r in rows if r["gain"] is not None and math.isfinite(r["gain"])]
    shallow, deep = _halves(len(layers))
    halves = f"deeper {'+'.join(layers[j] for j in deep)} vs shallower {'+'.join(layers[j] for j in shallow)}"
    if len(gains) < 2:
        text = f"distillation gain, {halves}: {len(gains)} seed(s), no spread to judge by (need >= 2); {CLAIM}"
        out.append({"run": None, "ok": None, "text": text})
        return out
    mean, sd = statistics.fmean(gains), statistics.stdev(gains)
    ok = mean - sd > 0
    rel = ">" if ok else "<="
    text = (
        f"distillation gain, {halves}: {_signed(mean)} ± {_num(sd)} (mean ± sd over {len(gains)} seeds; "
        f"mean - sd = {_signed(mean - sd)} {rel} 0); {CLAIM}" + ("" if ok else " — not reproduced here") + _mark(ok)
    )
    out.append({"run": None, "ok": ok, "text": text})
    return out
