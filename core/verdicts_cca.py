"""The ``warmup_cca`` verdict: Gotmare et al. 2018's warmup finding, read from the CCA probe.

The claim (arXiv 1810.13243, sec. 4): with CCA between each layer during training and the same
layer at the end, small-batch training (SB) and large-batch training with warmup show the deeper
(fully connected) layers stabilising early; large batch without warmup does not, while the
shallower layers look alike in the three. Their reading: warmup keeps the deeper layers from
creating training instability. Their control (as we read it; not checked against the paper's
text here): large batch without warmup but with the fully connected stack frozen early trains
about as well as with warmup.

Roles, from each run's config: ``sb`` the smallest batch; among the larger batches ``lb_warmup``
(a warmup, nothing frozen), ``lb_no_warmup`` (neither) and ``lb_freeze`` (no warmup, a
``train.freeze``). Each run's ``<run>/cca.json`` gives, for the deeper and the shallower layers
(core.probes.cca.layer_groups: the fc stack and ``out`` vs the conv blocks), the settle epoch —
the first snapshot from which the group's mean similarity to the final one stays >= 0.9 — as a
fraction of the run's training. A layer whose similarity is undefined at a snapshot (a dead layer:
constant activations) is left out of its group's mean there.

- deeper layers: LB without warmup settles later than both LB + warmup and SB, by at least
  :data:`SETTLE_MARGIN` of training;
- shallower layers: it does not (its lead over the later of the two is below the margin);
- the finding reproduces when both hold; otherwise the verdict says that it does not at this size;
- the control: the frozen-FC run closes at least :data:`FREEZE_SHARE` of the test-accuracy gap
  between LB without and with warmup.

Each run's line also gives the live units per layer at the end, where a collapse (a layer with
under :data:`COLLAPSE_LIVE` of its units live) shows first, and the snapshot interval in which some
layer's weights moved most relative to their norm, with every layer's relative change there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import tomllib

from .config import get_dotted
from .probes.cca import SETTLE_THRESHOLD, layer_groups, settle_epoch

SETTLE_MARGIN = 0.1  # of the run's training: "stabilises later" means by at least a tenth of it
FREEZE_SHARE = 0.5  # the frozen-FC control "recovers warmup's benefit": half the accuracy gap or more
COLLAPSE_LIVE = 0.5  # a layer with fewer live units than this has collapsed

OK, BAD = "\u2713", "\u2717"


def _mark(ok: Optional[bool]) -> str:
    return "" if ok is None else (f" {OK}" if ok else f" {BAD}")


def _param(summary: dict, row: dict, key: str) -> Any:
    """A run's value of a dotted config key: a row's ``config`` dict (hand-made summaries), else
    ``<summary path>/<run>/config.toml``; None where it is not set."""
    cfg = row.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
        if summary.get("path"):
            try:
                cfg = tomllib.loads((Path(summary["path"]) / row["run"] / "config.toml").read_text())
            except (OSError, tomllib.TOMLDecodeError, KeyError):
                cfg = {}
    return get_dotted(cfg, key)


def _warmup_len(summary: dict, row: dict) -> float:
    for key in ("schedule.warmup.steps", "schedule.warmup.epochs"):
        v = _param(summary, row, key)
        if v is not None:
            return float(v)
    return 0.0


def _load_cca(summary: dict, row: dict) -> Optional[dict]:
    if isinstance(row.get("cca"), dict):  # hand-made summaries
        return row["cca"]
    path = summary.get("path")
    if not path:
        return None
    try:
        doc = json.loads((Path(path) / row["run"] / "cca.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    return doc if doc.get("against_final") else None


def run_stats(doc: dict) -> dict[str, Any]:
    """Settle epochs and fractions of both groups, the group names, live units at the end and the
    first collapse, from a run's cca.json."""
    layers, epochs, m = doc["layers"], [float(e) for e in doc["epochs"]], doc["against_final"]
    shallow, deep = layer_groups(layers)
    last = epochs[-1] or 1.0
    out: dict[str, Any] = {"last": epochs[-1]}
    for name, rows in (("deep", deep), ("shallow", shallow)):
        e = settle_epoch(epochs, m, rows)
        out[name] = {"layers": [layers[i] for i in rows], "settle": e, "frac": e / last}
    live = doc.get("live_units") or []
    out["live_end"] = {k: (row[-1] if row else None) for k, row in zip(layers, live)}
    out["jump"] = None  # the snapshot interval where some layer's weights moved most, relative to their norm
    change = doc.get("weight_change") or []
    best = 0.0
    for j in range(1, len(epochs)):
        col = {k: row[j] for k, row in zip(layers, change) if j < len(row) and row[j] is not None}
        if col and max(col.values()) > best:
            best = max(col.values())
            out["jump"] = (epochs[j - 1], epochs[j], col)
    out["collapse"] = None
    for j, e in enumerate(epochs):
        dead = [k for k, row in zip(layers, live) if j < len(row) and row[j] is not None and row[j] < COLLAPSE_LIVE]
        if dead:
            out["collapse"] = (e, dead)
            break
    return out


def _roles(summary: dict, rows: list[dict]) -> dict[str, dict]:
    batches = {r["run"]: _param(summary, r, "train.batch_size") for r in rows}
    known = [b for b in batches.values() if b is not None]
    if not known:
        return {}
    small = min(known)
    roles: dict[str, dict] = {}
    for r in rows:
        b = batches[r["run"]]
        if b is None:
            continue
        warm = _warmup_len(summary, r) > 0
        frozen = bool(_param(summary, r, "train.freeze"))
        if b == small:
            role = "sb" if not warm and not frozen else None
        elif frozen:
            role = "lb_freeze" if not warm else None
        else:
            role = "lb_warmup" if warm else "lb_no_warmup"
        if role is not None:
            roles.setdefault(role, r)
    return roles


def _f(v: Optional[float], nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def warmup_cca_verdicts(summary: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rows = [r for r in summary.get("runs", []) if r.get("state") in ("completed", "diverged")]
    roles = _roles(summary, rows)
    stats: dict[str, dict] = {}
    labels = {
        "sb": "small batch",
        "lb_warmup": "large batch + warmup",
        "lb_no_warmup": "large batch, no warmup",
        "lb_freeze": "large batch, no warmup, FC frozen",
    }
    for role in ("sb", "lb_warmup", "lb_no_warmup", "lb_freeze"):
        r = roles.get(role)
        if r is None:
            continue
        doc = _load_cca(summary, r)
        setting = f"batch {_param(summary, r, 'train.batch_size')}, lr {_param(summary, r, 'optim.lr')}"
        w = _warmup_len(summary, r)
        if w:
            setting += f", warmup {w:g}"
        fr = _param(summary, r, "train.freeze")
        if fr:
            n = _param(summary, r, "train.freeze_epochs")
            n = f"{n:g} epochs" if n is not None else f"{_param(summary, r, 'train.freeze_steps')} steps"
            setting += f", {'+'.join(fr)} frozen {n}"
        acc = r.get("test_accuracy")
        if r.get("state") == "diverged":
            head = f"{r['run']} ({labels[role]}; {setting}): diverged ({r.get('reason') or 'no reason given'})"
        else:
            head = f"{r['run']} ({labels[role]}; {setting}): test acc {_f(acc, 3)}"
        if doc is None:
            out.append({"run": r["run"], "ok": None, "text": f"{head}; no CCA matrix"})
            continue
        s = run_stats(doc)
        stats[role] = s
        live = ", ".join(f"{k} {_f(v)}" for k, v in s["live_end"].items())
        col = s["collapse"]
        where = (
            f"; collapse (< {COLLAPSE_LIVE:g} live) first at epoch {col[0]:g} in {', '.join(col[1])}"
            if col
            else "; no layer collapsed"
        )
        jump = s["jump"]
        if jump:
            vals = ", ".join(f"{k} {v:.2f}" for k, v in jump[2].items())
            where += f"; largest weight change ||dW||/||W|| (epochs {jump[0]:g}-{jump[1]:g}): {vals}"
        d, sh = s["deep"], s["shallow"]
        text = (
            f"{head}; deeper ({', '.join(d['layers'])}) settle at epoch {d['settle']:g} ({d['frac']:.2f} of training), "
            f"shallower ({', '.join(sh['layers'])}) at {sh['settle']:g} ({sh['frac']:.2f}); live units at the end: "
            f"{live}{where}"
        )
        out.append({"run": r["run"], "ok": None, "text": text})
    need = ("sb", "lb_warmup", "lb_no_warmup")
    missing = [k for k in need if k not in stats]
    if missing:
        out.append(
            {
                "run": None,
                "ok": None,
                "text": f"warmup/CCA finding: cannot check, no CCA matrix for {', '.join(labels[k] for k in missing)}",
            }
        )
        return out
    nw, wu, sb = stats["lb_no_warmup"], stats["lb_warmup"], stats["sb"]
    claim = f"(settle: similarity to final >= {SETTLE_THRESHOLD:g} from then on; margin {SETTLE_MARGIN:g} of training)"
    gaps = {}
    for group in ("deep", "shallow"):
        gaps[group] = nw[group]["frac"] - max(wu[group]["frac"], sb[group]["frac"])
    ok_deep = gaps["deep"] >= SETTLE_MARGIN
    out.append(
        {
            "run": None,
            "ok": ok_deep,
            "text": f"deeper layers settle later without warmup (paper: yes): {nw['deep']['frac']:.2f} vs "
            f"warmup {wu['deep']['frac']:.2f} and small batch {sb['deep']['frac']:.2f} of training, "
            f"lead {gaps['deep']:+.2f} {'>=' if ok_deep else '<'} {SETTLE_MARGIN:g}{_mark(ok_deep)}",
        }
    )
    ok_sh = gaps["shallow"] < SETTLE_MARGIN
    out.append(
        {
            "run": None,
            "ok": ok_sh,
            "text": f"shallower layers do not (paper: they look alike): {nw['shallow']['frac']:.2f} vs "
            f"warmup {wu['shallow']['frac']:.2f} and small batch {sb['shallow']['frac']:.2f}, "
            f"lead {gaps['shallow']:+.2f} {'<' if ok_sh else '>='} {SETTLE_MARGIN:g}{_mark(ok_sh)}",
        }
    )
    if ok_deep and ok_sh:
        text = f"Gotmare et al.'s warmup finding reproduces at this size {claim}"
    elif not ok_deep:
        text = (
            "Gotmare et al.'s warmup finding does not reproduce at this size: the deeper layers of the "
            f"no-warmup run do not settle later {claim}"
        )
    else:
        text = (
            f"Gotmare et al.'s warmup finding does not reproduce at this size: the shallower layers of the no-warmup "
            f"run settle late as well, the instability is not confined to the deeper layers {claim}"
        )
    out.append({"run": None, "ok": ok_deep and ok_sh, "text": text})
    fz = roles.get("lb_freeze")
    a_nw, a_w = roles["lb_no_warmup"].get("test_accuracy"), roles["lb_warmup"].get("test_accuracy")
    if fz is not None and None not in (a_nw, a_w):
        a_f = fz.get("test_accuracy") if fz.get("state") == "completed" else None
        gap = a_w - a_nw
        if a_f is None:
            out.append(
                {
                    "run": None,
                    "ok": False,
                    "text": f"freezing the FC stack early recovers warmup's benefit (paper: about as good as warmup): "
                    f"the control {fz.get('state')} ({fz.get('reason') or 'no reason given'}){_mark(False)}",
                }
            )
        elif gap <= 0:
            out.append(
                {
                    "run": None,
                    "ok": None,
                    "text": f"frozen-FC control: test acc {a_f:.3f}; warmup did not help here ({a_w:.3f} vs "
                    f"{a_nw:.3f} without), nothing to recover",
                }
            )
        else:
            share = (a_f - a_nw) / gap
            ok = share >= FREEZE_SHARE
            out.append(
                {
                    "run": None,
                    "ok": ok,
                    "text": f"freezing the FC stack early recovers warmup's benefit (paper: about as good as warmup): "
                    f"test acc {a_f:.3f} vs {a_nw:.3f} without warmup and {a_w:.3f} with, {share:.2f} of the gap "
                    f"{'>=' if ok else '<'} {FREEZE_SHARE:g}{_mark(ok)}",
                }
            )
    return out
