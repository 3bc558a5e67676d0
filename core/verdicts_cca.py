"""The ``warmup_cca`` verdict: Gotmare et al. 2018's warmup finding, read from the CCA probe.

The claim (arXiv 1810.13243, sec. 4): with CCA between each layer during training and the same
layer at the end, small-batch training (SB) and large-batch training with warmup show the deeper
(fully connected) layers stabilising early; large batch without warmup does not, while the
shallower layers look alike in the three. Their reading: warmup keeps the deeper layers from
creating training instability. Their control (as we read it; not checked against the paper's
text here): large batch without warmup but with the fully connected stack frozen early trains
about as well as with warmup.

Runs are grouped by seed (a ``[grid]`` over ``seed``, or each run's own ``seed``); within a seed,
roles from each run's config: ``sb`` the smallest batch (when there is a larger one); among the
larger batches ``lb_warmup`` (a warmup, nothing frozen), ``lb_no_warmup`` (neither) and
``lb_freeze`` (no warmup, a ``train.freeze``). Each run's ``<run>/cca.json`` gives, for the deeper
and the shallower layers (core.probes.cca.layer_groups: the fc stack and ``out`` vs the conv
blocks), the settle epoch — the first snapshot from which the group's mean similarity to the final
one stays >= 0.9 — as a fraction of the run's training. A layer whose similarity is undefined at a
snapshot (a dead layer: constant activations) is left out of its group's mean there.

Per seed, the claim:

- deeper layers: LB without warmup settles later than both LB + warmup and SB, by at least
  :data:`SETTLE_MARGIN` of training;
- shallower layers: it does not (its lead over the later of the two is below the margin);
- it holds on that seed when both do; a seed where one of the three runs has no CCA matrix (a
  diverged run has none) cannot be checked, and its line says why.

Over the seeds (one seed decides nothing at this size: at lr 0.32 a single LB run diverges or not
by seed and by the CPU's floating-point order):

- the finding reproduces when it holds in a strict majority of the seeds that could be checked,
  at least :data:`MIN_SEEDS` of them; with fewer there is no verdict;
- per condition: test accuracy mean ± sd (ddof = 1) over the seeds (a diverged run counts with its
  accuracy where it stopped), how many diverged and how many collapsed (completed below
  :data:`COLLAPSE_ACC`), and the settle fractions per seed with their median;
- warmup beats no warmup in test accuracy: the per-seed differences' mean exceeds their sd;
- the control: the frozen-FC runs' mean closes at least :data:`FREEZE_SHARE` of the gap between
  the means of LB without and with warmup.

Each run's line also gives the live units per layer at the end, where a collapse (a layer with
under :data:`COLLAPSE_LIVE` of its units live) shows first, and the snapshot interval in which some
layer's weights moved most relative to their norm, with every layer's relative change there.
Lines are wrapped to 76 columns; the seed, condition and overall rows carry their figures under
``data`` (in summary.json).
"""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path
from typing import Any, Optional

import tomllib

from .config import get_dotted
from .probes.cca import SETTLE_THRESHOLD, layer_groups, settle_epoch

SETTLE_MARGIN = 0.1  # of the run's training: "stabilises later" means by at least a tenth of it
FREEZE_SHARE = 0.5  # the frozen-FC control "recovers warmup's benefit": half the accuracy gap or more
COLLAPSE_LIVE = 0.5  # a layer with fewer live units than this has collapsed
COLLAPSE_ACC = 0.2  # a completed run below this test accuracy has collapsed (twice chance, 10 classes)
MIN_SEEDS = 2  # the CCA claim is judged over at least this many seeds with CCA matrices

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
    small = min(known) if min(known) < max(known) else None  # one batch size: no small-batch run
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


LABELS = {
    "sb": "small batch",
    "lb_warmup": "large batch + warmup",
    "lb_no_warmup": "large batch, no warmup",
    "lb_freeze": "large batch, no warmup, FC frozen",
}
ROLES = tuple(LABELS)
NEED = ("sb", "lb_warmup", "lb_no_warmup")  # the CCA claim compares these three
WIDTH = 76  # verdict lines are wrapped to this (printed after a 2-space indent: 80 columns)
CLAIM = (
    f"without warmup the deeper layers settle later than with it and than small batch, by >= "
    f"{SETTLE_MARGIN:g} of training, the shallower ones do not; settle: similarity to final >= "
    f"{SETTLE_THRESHOLD:g} from then on"
)


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, subsequent_indent="    ", break_on_hyphens=False)


def _row(text: str, ok: Optional[bool] = None, run: Optional[str] = None, data: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"run": run, "ok": ok, "text": _wrap(text)}
    if data is not None:
        out["data"] = data
    return out


def _seed(summary: dict, row: dict) -> Any:
    params = row.get("params") or {}
    return params["seed"] if "seed" in params else _param(summary, row, "seed")


def by_seed(summary: dict, rows: list[dict]) -> dict[Any, dict[str, dict]]:
    """{seed: {role: row}}, seeds in the order their first run appears (runs without a seed: None)."""
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(_seed(summary, r), []).append(r)
    return {s: _roles(summary, g) for s, g in groups.items()}


def _setting(summary: dict, r: dict) -> str:
    setting = f"batch {_param(summary, r, 'train.batch_size')}, lr {_param(summary, r, 'optim.lr')}"
    w = _warmup_len(summary, r)
    if w:
        setting += f", warmup {w:g}"
    fr = _param(summary, r, "train.freeze")
    if fr:
        n = _param(summary, r, "train.freeze_epochs")
        n = f"{n:g} epochs" if n is not None else f"{_param(summary, r, 'train.freeze_steps')} steps"
        setting += f", {'+'.join(fr)} frozen {n}"
    return setting


def _collapsed(r: dict) -> bool:
    acc = r.get("test_accuracy")
    return r.get("state") == "completed" and acc is not None and acc < COLLAPSE_ACC


def _mean_sd(xs: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) >= 2 else None)


def _pm(mean: Optional[float], sd: Optional[float], nd: int = 3) -> str:
    return "-" if mean is None else f"{mean:.{nd}f}" + ("" if sd is None else f" ± {sd:.{nd}f}")


def _run_line(r: dict, s: Optional[dict]) -> str:
    acc = r.get("test_accuracy")
    if r.get("state") == "diverged":
        head = f"{r['run']}: diverged ({r.get('reason') or 'no reason given'}; test acc {_f(acc, 3)} where it stopped)"
    else:
        head = f"{r['run']}: test acc {_f(acc, 3)}" + (" (collapsed)" if _collapsed(r) else "")
    if s is None:
        return f"{head}; no CCA matrix"
    d, sh = s["deep"], s["shallow"]
    text = (
        f"{head}; settle: deeper {d['frac']:.2f} of training (epoch {d['settle']:g}), shallower "
        f"{sh['frac']:.2f} ({sh['settle']:g}); live units at the end: "
        + ", ".join(f"{k} {_f(v)}" for k, v in s["live_end"].items())
    )
    col = s["collapse"]
    if col:
        text += f"; collapse (< {COLLAPSE_LIVE:g} live) first at epoch {col[0]:g} in {', '.join(col[1])}"
    else:
        text += "; no layer collapsed"
    jump = s["jump"]
    if jump:
        vals = ", ".join(f"{k} {v:.2f}" for k, v in jump[2].items())
        text += f"; largest weight change ||dW||/||W|| (epochs {jump[0]:g}-{jump[1]:g}): {vals}"
    return text


def seed_claim(stats: dict[str, Optional[dict]], roles: dict[str, dict]) -> dict[str, Any]:
    """The CCA claim on one seed: ``holds`` True/False, or None (cannot check, ``why``), with the
    no-warmup run's lead in settle fraction over the later of warmup and SB, per group."""
    missing = [k for k in NEED if stats.get(k) is None]
    if missing:
        why = []
        for k in missing:
            r = roles.get(k)
            if r is None:
                why.append(f"no {LABELS[k]} run")
            elif r.get("state") == "diverged":
                why.append(f"{LABELS[k]} diverged: {r.get('reason') or 'no reason given'}")
            else:
                why.append(f"no CCA matrix for {LABELS[k]}")
        return {"holds": None, "why": "; ".join(why)}
    nw, wu, sb = stats["lb_no_warmup"], stats["lb_warmup"], stats["sb"]
    lead = {g: nw[g]["frac"] - max(wu[g]["frac"], sb[g]["frac"]) for g in ("deep", "shallow")}
    ok_deep, ok_sh = lead["deep"] >= SETTLE_MARGIN, lead["shallow"] < SETTLE_MARGIN
    return {"holds": ok_deep and ok_sh, "deep_ok": ok_deep, "shallow_ok": ok_sh, "lead": lead}


def warmup_cca_verdicts(summary: dict) -> list[dict[str, Any]]:
    """Verdict rows over the seeds: one per run, one per seed (the claim on that seed), one per
    condition (test accuracy mean ± sd, diverged/collapsed counts, settle fractions and their
    median), the claim over the seeds (a majority of the seeds with CCA matrices, at least
    :data:`MIN_SEEDS` of them), warmup against no warmup in accuracy (mean paired difference
    against its sd) and the frozen-FC control. Rows carry their figures under ``data``."""
    out: list[dict[str, Any]] = []
    rows = [r for r in summary.get("runs", []) if r.get("state") in ("completed", "diverged")]
    seeds = by_seed(summary, rows)
    stats: dict[Any, dict[str, Optional[dict]]] = {}
    claims: dict[Any, dict] = {}
    for seed, roles in seeds.items():
        stats[seed] = {}
        for role in ROLES:
            r = roles.get(role)
            if r is None:
                continue
            doc = _load_cca(summary, r)
            stats[seed][role] = run_stats(doc) if doc is not None else None
            out.append(_row(_run_line(r, stats[seed][role]), run=r["run"]))
        c = claims[seed] = seed_claim(stats[seed], roles)
        name = "runs without a seed" if seed is None else f"seed {seed}"
        if c["holds"] is None:
            text = f"{name}: cannot check, {c['why']}"
        else:
            ld, ls = c["lead"]["deep"], c["lead"]["shallow"]
            text = (
                f"{name}: no-warmup lead in settle over the later of warmup and SB: deeper {ld:+.2f} "
                f"{'>=' if c['deep_ok'] else '<'} {SETTLE_MARGIN:g}{_mark(c['deep_ok'])}, shallower {ls:+.2f} "
                f"{'<' if c['shallow_ok'] else '>='} {SETTLE_MARGIN:g}{_mark(c['shallow_ok'])}: the claim "
                + ("holds" if c["holds"] else "does not hold")
            )
            col = (stats[seed]["lb_no_warmup"] or {}).get("collapse")
            if col:
                text += (
                    f" (the no-warmup run collapsed: < {COLLAPSE_LIVE:g} live units in {', '.join(col[1])} from "
                    f"epoch {col[0]:g}; a dead layer is left out of its group's mean)"
                )
        out.append(_row(text, data={"seed": seed, **c}))
    # per condition, over the seeds
    cond: dict[str, dict] = {}
    for role in ROLES:
        runs = [(seed, roles[role]) for seed, roles in seeds.items() if role in roles]
        if not runs:
            continue
        accs = [r["test_accuracy"] for _, r in runs if r.get("test_accuracy") is not None]
        mean, sd = _mean_sd(accs)
        fr = {g: [(stats[s].get(role) or {}).get(g, {}).get("frac") for s, _ in runs] for g in ("deep", "shallow")}
        med = {g: [x for x in fr[g] if x is not None] for g in fr}
        diverged = [s for s, r in runs if r.get("state") == "diverged"]
        collapsed = [s for s, r in runs if _collapsed(r)]
        cond[role] = d = {
            "runs": [r["run"] for _, r in runs],
            "seeds": [s for s, _ in runs],
            "test_accuracy": {"per_seed": [r.get("test_accuracy") for _, r in runs], "mean": mean, "sd": sd},
            "diverged": diverged,
            "collapsed": collapsed,
            "settle_deep": {"per_seed": fr["deep"], "median": statistics.median(med["deep"]) if med["deep"] else None},
            "settle_shallow": {
                "per_seed": fr["shallow"],
                "median": statistics.median(med["shallow"]) if med["shallow"] else None,
            },
        }
        settle = "; settle (fraction of training, per seed; - no CCA matrix): " + ", ".join(
            f"{g} {' '.join(_f(x) for x in d[k]['per_seed'])} (median {_f(d[k]['median'])})"
            for g, k in (("deeper", "settle_deep"), ("shallower", "settle_shallow"))
        )
        per = " ".join(_f(a, 3) for a in d["test_accuracy"]["per_seed"])
        text = (
            f"{LABELS[role]} ({_setting(summary, runs[0][1])}), {len(runs)} seed(s): test acc mean ± sd "
            f"{_pm(mean, sd)} ({per}), {len(diverged)} diverged, {len(collapsed)} collapsed "
            f"(test acc < {COLLAPSE_ACC:g}){settle}"
        )
        out.append(_row(text, data={"role": role, **d}))
    # the CCA claim over the seeds
    checked = [s for s, c in claims.items() if c["holds"] is not None]
    held = [s for s in checked if claims[s]["holds"]]
    unchecked = [s for s, c in claims.items() if c["holds"] is None]
    agg: dict[str, Any] = {"seeds_checked": checked, "seeds_held": held, "seeds_cannot_check": unchecked}
    skipped = "".join(f"; cannot check seed {s} ({claims[s]['why']})" for s in unchecked)
    head = f"Gotmare et al.'s warmup finding ({CLAIM})"
    if len(checked) < MIN_SEEDS:
        ok = None
        text = (
            f"{head}: cannot check, {len(checked)} seed(s) with CCA matrices for all three runs "
            f"(need >= {MIN_SEEDS}: one seed is not a measurement at this size){skipped}"
        )
    else:
        ok = 2 * len(held) > len(checked)
        text = (
            f"{head}: holds in {len(held)} of {len(checked)} seeds with CCA matrices{skipped} — "
            + ("reproduces at this size (a majority)" if ok else "does not reproduce at this size (no majority)")
            + _mark(ok)
        )
    agg["holds"] = ok
    out.append(_row(text, ok=ok, data=agg))
    # warmup against no warmup in test accuracy, paired by seed
    pairs = [
        (s, roles["lb_warmup"].get("test_accuracy"), roles["lb_no_warmup"].get("test_accuracy"))
        for s, roles in seeds.items()
        if "lb_warmup" in roles and "lb_no_warmup" in roles
    ]
    diffs = [w - n for _, w, n in pairs if w is not None and n is not None]
    if diffs:
        dm, dsd = _mean_sd(diffs)
        per = ", ".join(f"{d:+.3f}" for d in diffs)
        acc = {"per_seed": diffs, "mean": dm, "sd": dsd}
        if dsd is None:
            ok = None
            text = f"warmup beats no warmup in test acc (paper: yes): {dm:+.3f} on one seed, no spread to judge by"
        else:
            ok = dm - dsd > 0
            text = (
                f"warmup beats no warmup in test acc by more than the spread over seeds (paper: yes): "
                f"mean difference {dm:+.3f}, sd {dsd:.3f} over {len(diffs)} seeds ({per}; a diverged run "
                f"counts with its test acc where it stopped); "
                f"mean - sd = {dm - dsd:+.3f} {'>' if ok else '<='} 0" + _mark(ok)
            )
        acc["ok"] = ok
        out.append(_row(text, ok=ok, data=acc))
    # the control: the frozen-FC runs against the gap between the means without and with warmup
    if all(
        k in cond and cond[k]["test_accuracy"]["mean"] is not None for k in ("lb_freeze", "lb_warmup", "lb_no_warmup")
    ):
        a_f, a_w, a_nw = (cond[k]["test_accuracy"]["mean"] for k in ("lb_freeze", "lb_warmup", "lb_no_warmup"))
        gap = a_w - a_nw
        nd = len(cond["lb_freeze"]["diverged"])
        div = f" ({nd} of its {len(cond['lb_freeze']['runs'])} runs diverged)" if nd else ""
        if gap <= 0:
            out.append(
                _row(
                    f"frozen-FC control: mean test acc {a_f:.3f}{div}; warmup did not help here on average "
                    f"({a_w:.3f} vs {a_nw:.3f} without), nothing to recover",
                    data={"share": None},
                )
            )
        else:
            share = (a_f - a_nw) / gap
            ok = share >= FREEZE_SHARE
            out.append(
                _row(
                    f"freezing the FC stack early recovers warmup's benefit (paper: about as good as warmup): "
                    f"mean test acc {a_f:.3f}{div} vs {a_nw:.3f} without warmup and {a_w:.3f} with, {share:.2f} "
                    f"of the gap {'>=' if ok else '<'} {FREEZE_SHARE:g}{_mark(ok)}",
                    ok=ok,
                    data={"share": share},
                )
            )
    return out
