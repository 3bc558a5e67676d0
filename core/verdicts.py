"""Verdicts: what an experiment's results say about the theory its preset checks.

``verdicts(summary) -> list[dict]`` takes :func:`core.summary.collect`'s dict and returns rows
``{"run": name or None, "ok": True | False | None, "text": str}`` (``run`` None: a line about the
whole experiment; ``ok`` None: informational). Which theory is checked is the preset's top-level
``check`` (``summary["check"]``), else inferred: runs with a ``phase`` (catapult probe) ->
``"catapult"``.

- ``catapult`` (Lewkowycz et al. 2020): per run, the observed phase against the predicted one
  (lazy below lr_ntk = 2, catapult up to 4 for the uv model / about 12 for ReLU nets, diverged
  above; within a factor 1.5 of "about 12" either catapult or divergence agrees) and, for runs
  that did not diverge, the final sharpness against 2/eta (a catapult ends below it); then the
  largest stable lr_ntk of the grid against the theory's edge.
- ``warmup`` (Kalra & Barkeshli 2024): per target lr, the shortest warmup that did not diverge;
  then the largest stable target lr without warmup against that with the longest warmup, and
  whether the runs that trained beyond the init's edge (lambda0 > 2/eta) end at the edge of
  stability (sharpness <= 1.5 x 2/eta: it hovers around 2/eta there).
- ``distill`` (Gotmare et al. 2018, third finding): per compare run (teacher, independent
  student, distilled student), the distilled-minus-independent closeness to the teacher per
  student layer; then the deeper half's mean gain minus the shallower half's, mean and spread
  over the seeds, against the claim that the knowledge goes primarily to the deeper layers
  (core.distill_verdict).
- ``gi_adam``: Adam without warmup against Adam with warmup and GI-Adam without warmup (final
  training loss): warmup helps Adam, and GI-Adam without warmup recovers (part of) it.

Run configs are read from ``<summary path>/<run>/config.toml`` (or a row's ``config`` dict).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import tomllib

from .config import get_dotted
from .measure.catapult import phase_limits

CHECKS = ("catapult", "warmup", "gi_adam", "distill")
OK, BAD = "\u2713", "\u2717"  # check mark, ballot x
_UV_EDGE, _RELU_EDGE = phase_limits("uv")[1], phase_limits("relu")[1]
RELU_EDGE_FACTOR = 1.5  # ReLU nets: "about 12" -> the measured edge within a factor 1.5 of it
EOS_FACTOR = 1.5  # warmup: at the edge of stability the sharpness hovers around 2/eta, a little above at times


def _fmt_edge(v: Optional[float]) -> str:
    """A stable-lr edge, or "none" where no lr was stable."""
    return "none" if v is None else f"{v:g}"


def _mark(ok: Optional[bool]) -> str:
    return "" if ok is None else (f" {OK}" if ok else f" {BAD}")


def _num(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def _finished(row: dict) -> bool:
    return row.get("state") in ("completed", "diverged")


def _config(summary: dict, row: dict) -> dict:
    if isinstance(row.get("config"), dict):
        return row["config"]
    path = summary.get("path")
    if not path:
        return {}
    try:
        return tomllib.loads((Path(path) / row["run"] / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return {}


def _param(summary: dict, row: dict, key: str) -> Any:
    """A run's value of a dotted config key: its grid coordinate, else its config."""
    params = row.get("params") or {}
    if key in params:
        return params[key]
    return get_dotted(_config(summary, row), key)


def _lr_ntk(summary: dict, row: dict) -> Optional[float]:
    v = _param(summary, row, "optim.lr_ntk")
    if v is None and row.get("base_lr") is not None and row.get("lambda0") is not None:
        v = row["base_lr"] * row["lambda0"]
    return None if v is None else float(v)


def check_of(summary: dict) -> Optional[str]:
    c = summary.get("check")
    if c:
        return c
    if any("phase" in r for r in summary.get("runs", [])):
        return "catapult"
    return None


def verdicts(summary: dict) -> list[dict[str, Any]]:
    """Verdict rows for the experiment (empty when its preset checks no theory)."""
    check = check_of(summary)
    if check == "catapult":
        return catapult_verdicts(summary)
    if check == "warmup":
        return warmup_verdicts(summary)
    if check == "gi_adam":
        return gi_adam_verdicts(summary)
    if check == "distill":
        from .distill_verdict import distill_verdicts

        return distill_verdicts(summary)
    return []


def all_ok(rows: list[dict]) -> Optional[bool]:
    """False if any verdict failed, True if some passed and none failed, None otherwise."""
    oks = [r["ok"] for r in rows if r.get("ok") is not None]
    return None if not oks else all(oks)


# --------------------------------------------------------------------------- catapult


def _stable_edge(points: list[tuple[float, bool]]) -> tuple[Optional[float], Optional[float]]:
    """(largest stable x below the first divergence, first diverged x) over sorted (x, diverged)."""
    stable, first_div = None, None
    for x, div in sorted(points):
        if div:
            first_div = x
            break
        stable = x
    return stable, first_div


def catapult_verdicts(summary: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    points: list[tuple[float, bool]] = []
    edge = None
    for row in summary.get("runs", []):
        name = row["run"]
        if not _finished(row) or "phase" not in row:
            out.append({"run": name, "ok": None, "text": f"{name}: {row.get('state')}, no phase to check"})
            continue
        observed, predicted = row["phase"], row.get("predicted_phase")
        row_edge = _edge(summary, row)
        edge = row_edge or edge
        c = _lr_ntk(summary, row)
        parts, oks = [f"observed {observed}"], []
        fuzzy = _near_relu_edge(c, row_edge)
        if fuzzy:  # "about 12": near it, either side of the edge agrees with the paper
            ok = observed in ("catapult", "diverged")
            oks.append(ok)
            parts.append(f"predicted catapult or diverged (near the edge, about {fuzzy:g}){_mark(ok)}")
        elif predicted is not None:
            ok = observed == predicted
            oks.append(ok)
            parts.append(f"predicted {predicted}{_mark(ok)}")
        lam, thr = row.get("sharpness_final"), row.get("sharpness_threshold")
        if observed != "diverged" and lam is not None and thr is not None:
            ok = lam < thr
            oks.append(ok)
            rel = "<" if ok else ">="
            init = f" (lambda0 {_num(row['lambda0'])})" if observed == "catapult" and row.get("lambda0") else ""
            parts.append(f"final sharpness {_num(lam)}{init} {rel} 2/eta {_num(thr)}{_mark(ok)}")
        label = name if c is None or name.endswith(f"={c:g}") else f"{name} (lr_ntk {c:g})"
        out.append({"run": name, "ok": all(oks) if oks else None, "text": f"{label}: " + ", ".join(parts)})
        if c is not None:
            points.append((c, observed == "diverged"))
    if len(points) >= 2:
        out.append(_edge_verdict(points, edge))
    return out


def _edge(summary: dict, row: dict) -> Optional[float]:
    """The theory's divergence edge in lr_ntk for this run's model: 4 (uv) or 12 (ReLU nets);
    a row's own ``lr_ntk_max`` wins (hand-made summaries)."""
    if row.get("lr_ntk_max") is not None:
        return float(row["lr_ntk_max"])
    model = _param(summary, row, "model.name")
    return None if model is None else phase_limits(model)[1]


def _near_relu_edge(c: Optional[float], edge: Any) -> Optional[float]:
    """The ReLU nets' edge (about 12) when lr_ntk ``c`` lies within a factor 1.5 of it, else None."""
    if c is None or edge is None or float(edge) <= _UV_EDGE:
        return None
    edge = float(edge)
    return edge if edge / RELU_EDGE_FACTOR <= c <= edge * RELU_EDGE_FACTOR else None


def _edge_verdict(points: list[tuple[float, bool]], edge: Optional[float]) -> dict[str, Any]:
    stable, first_div = _stable_edge(points)
    edge = _RELU_EDGE if edge is None else float(edge)
    uv = edge <= _UV_EDGE
    where = f"first divergence at {first_div:g}" if first_div is not None else "none diverged"
    if stable is None:
        return {"run": None, "ok": False, "text": f"largest stable lr_ntk: none ({where})"}
    if uv:
        ok = stable <= edge + 1e-9 and (first_div is None or first_div > edge - 1e-9)
        ok = ok and first_div is not None
        theory = "theory: 4 for the uv model"
    else:
        lo, hi = edge / RELU_EDGE_FACTOR, edge * RELU_EDGE_FACTOR
        ok = first_div is not None and first_div >= lo and stable <= hi
        theory = f"paper: about {edge:g} for ReLU nets"
    return {"run": None, "ok": ok, "text": f"largest stable lr_ntk = {stable:g} ({where}; {theory}){_mark(ok)}"}


# --------------------------------------------------------------------------- warmup


def _warmup_len(summary: dict, row: dict) -> float:
    for key in ("schedule.warmup.steps", "schedule.warmup.epochs"):
        v = _param(summary, row, key)
        if v is not None:
            return float(v)
    return 0.0


def _target_lr(summary: dict, row: dict) -> tuple[str, Optional[float]]:
    c = _param(summary, row, "optim.lr_ntk")
    if c is not None:
        return "lr_ntk", float(c)
    lr = _param(summary, row, "optim.lr")
    return "lr", None if lr is None else float(lr)


def warmup_verdicts(summary: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    table: dict[float, dict[float, bool]] = {}
    unit = "lr"
    sharp_ok, sharp_n, drop = 0, 0, 1.0
    for row in summary.get("runs", []):
        if not _finished(row):
            continue
        unit, lr = _target_lr(summary, row)
        if lr is None:
            continue
        div = row["state"] == "diverged"
        table.setdefault(lr, {})[_warmup_len(summary, row)] = div
        lam, thr, lam0 = row.get("sharpness_final"), row.get("sharpness_threshold"), row.get("lambda0")
        # runs that trained at a target lr the init could not take (lambda0 > 2/eta): their
        # sharpness had to fall to the edge of stability
        if not div and lam is not None and thr is not None and (lam0 is None or lam0 > thr):
            sharp_n += 1
            sharp_ok += lam <= EOS_FACTOR * thr
            if lam0 and lam > 0:
                drop = max(drop, lam0 / lam)
    if not table:
        return out
    warmups = sorted({w for cells in table.values() for w in cells})
    for lr in sorted(table):
        cells = table[lr]
        stable = [w for w in sorted(cells) if not cells[w]]
        if not stable:
            text = f"target {unit} {lr:g}: diverged with every warmup (up to {max(cells):g})"
        elif min(cells) in stable:
            text = (
                f"target {unit} {lr:g}: stable without warmup"
                if min(cells) == 0
                else f"target {unit} {lr:g}: stable with the shortest warmup ({min(cells):g})"
            )
        else:
            text = f"target {unit} {lr:g}: diverged without warmup, stable with warmup >= {stable[0]:g}"
        out.append({"run": None, "ok": None, "text": text})
    w0, w1 = warmups[0], warmups[-1]
    s0, _ = _stable_edge([(lr, table[lr].get(w0, True)) for lr in table])
    s1, _ = _stable_edge([(lr, table[lr].get(w1, True)) for lr in table])
    if len(warmups) >= 2:
        ok = s1 is not None and (s0 is None or s1 > s0)
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"largest stable target {unit}: {_fmt_edge(s0)} with warmup {w0:g}, "
                f"{_fmt_edge(s1)} with warmup {w1:g} (warmup lets a larger lr train){_mark(ok)}",
            }
        )
    if sharp_n:
        ok = sharp_ok == sharp_n
        fell = f"; sharpness fell from lambda0 by up to {drop:.3g}x" if drop > 1 else ""
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"stable runs beyond the init's edge (lambda0 > 2/eta) ending at the edge of stability "
                f"(sharpness <= {EOS_FACTOR:g} x 2/eta): {sharp_ok}/{sharp_n}{fell}{_mark(ok)}",
            }
        )
    return out


# --------------------------------------------------------------------------- GI-Adam


def _final_loss(row: dict) -> float:
    if row.get("state") == "diverged":
        return math.inf
    for k in ("train_loss", "train_loss_running"):
        if row.get(k) is not None:
            return float(row[k])
    return math.nan


def gi_adam_verdicts(summary: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    groups: dict[str, list[dict]] = {"adam": [], "adam_warmup": [], "gi_adam": []}
    for row in summary.get("runs", []):
        if not _finished(row):
            continue
        opt = _param(summary, row, "optim.name")
        warm = _warmup_len(summary, row) > 0
        if opt in ("adam", "adamw"):
            groups["adam_warmup" if warm else "adam"].append(row)
        elif opt == "gi_adam" and not warm:
            groups["gi_adam"].append(row)
    best = {k: min((_final_loss(r) for r in rows), default=None) for k, rows in groups.items()}
    labels = {"adam": "Adam, no warmup", "adam_warmup": "Adam + warmup", "gi_adam": "GI-Adam, no warmup"}
    for k, rows in groups.items():
        for r in rows:
            acc = r.get("test_accuracy")
            extra = f", test acc {acc:.3f}" if isinstance(acc, (int, float)) else ""
            loss = _final_loss(r)
            state = "diverged" if math.isinf(loss) else f"final train loss {_num(loss)}"
            out.append({"run": r["run"], "ok": None, "text": f"{r['run']} ({labels[k]}): {state}{extra}"})
    a, w, g = best["adam"], best["adam_warmup"], best["gi_adam"]
    if a is not None and w is not None:
        ok = w < a
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"warmup helps Adam: {_num(w)} < {_num(a)}{_mark(ok)}"
                if ok
                else f"warmup helps Adam: {_num(w)} >= {_num(a)}{_mark(ok)}",
            }
        )
    if a is not None and g is not None:
        ok = g < a
        rel = "<" if ok else ">="
        tail = ""
        if w is not None and math.isfinite(w) and math.isfinite(g):
            tail = f" (Adam + warmup: {_num(w)})"
        text = f"GI-Adam without warmup beats Adam without warmup: {_num(g)} {rel} {_num(a)}{tail}"
        out.append({"run": None, "ok": ok, "text": text + _mark(ok)})
    return out
