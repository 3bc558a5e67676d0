"""Verdicts: what an experiment's results say about the theory its preset checks.

``verdicts(summary) -> list[dict]`` takes :func:`core.summary.collect`'s dict and returns rows
``{"run": name or None, "ok": True | False | None, "text": str}`` (``run`` None: a line about the
whole experiment; ``ok`` None: informational). Which theory is checked is the preset's top-level
``check`` (``summary["check"]``), else inferred: runs with a ``phase`` (catapult probe) ->
``"catapult"``.

- ``catapult`` (Lewkowycz et al. 2020): per run, the observed phase against the one predicted
  from the network's nonlinearity (core.measure.catapult.divergence_edge): lazy below lr_ntk = 2,
  catapult up to the divergence edge's band, either within it, diverged above (uv: 4 within 5%;
  linear nets: 4 within a factor 1.5; ReLU nets: about 12 within a factor 1.5; others: no
  prediction above 2, and the verdict says there is no theory), with the band printed; for runs
  that did not diverge, the final sharpness against 2/eta (a catapult ends below it); then the
  measured divergence edge, located between the largest stable and the first diverging lr_ntk,
  against the band (it fails when nothing diverged or everything did).
- ``warmup`` (Kalra & Barkeshli 2024): per target lr, the shortest warmup that did not diverge;
  then the largest stable target lr without warmup against that with the longest warmup, and
  whether the warmup runs that trained beyond the init's edge (lambda0 > 2/eta) sit at the edge of
  stability, within a factor 1.5 of 2/eta either side (a lower bound too: a sharpness far below
  2/eta is a flat region, not the edge), both at the end of warmup (step W, against the target
  lr's 2/eta: warmup brought the sharpness down to what the target lr can take) and at the end.
- ``gi_adam`` (Kalra & Barkeshli 2024), over seeds with a margin (every seed of one group below
  every seed of the other, medians a factor 2 apart): warmup helps Adam; GI-Adam without warmup
  beats Adam without warmup; GI-Adam against Adam with GI-Adam's own warmup (the
  ``adam_bias`` shape: informational, it tells "GI-Adam helps" from "it is a longer warmup");
  and the mechanism: the preconditioned sharpness over Adam's threshold at init (above 1 for
  Adam, lower for GI-Adam) and its maximum over the first 20 steps.
- ``warmup_cca`` (Gotmare et al. 2018): see core.verdicts_cca.
- ``connectivity`` (Garipov et al. 2018): per curve run (``task = "curve"``), the straight line
  between the ends has a barrier in train loss (at least :data:`LINE_BARRIER_MIN`), the trained
  curve removes most of it (its barrier at most :data:`CURVE_BARRIER_SHARE` of the line's), and
  its maximum test error stays within :data:`CURVE_ERROR_MARGIN` of the worse end's.
- ``sgdr`` (Gotmare et al. 2018): curve runs between consecutive snapshots, grouped by the
  schedule of the run their start references (sgdr or not): the straight line has a barrier
  (>= :data:`LINE_BARRIER_MIN`) between SGDR snapshots and none between SGD ones (a pair with a
  snapshot above :data:`TRAINED_ERROR_MAX` test error, a run that never learned, fails instead of
  counting as "no barrier"); and along each
  SGDR curve some point reaches a lower train loss than both snapshots but a higher test error
  than the better one (read from the run's ``curve.json``); and on each plane run (``task =
  "plane"``, :func:`plane_basins`), the two snapshots and the iterates projected between them
  join in one low-loss region of the grid: the lowest pass that connects them rises at most
  :data:`BASIN_MARGIN` nats of train loss above the highest of their own cells.
- ``resilience`` (Gotmare et al.'s poster): every curve run (a variant A-F connected to the
  reference mode G) is connected: its maximum test error stays within
  :data:`CURVE_ERROR_MARGIN` of the worse end's; the line's barrier is reported beside it.
- ``distill`` (Gotmare et al. 2018, third finding): per compare run (teacher, independent
  student, distilled student), the distilled-minus-independent closeness to the teacher per
  student layer; then the deeper half's mean gain minus the shallower half's, mean and spread
  over the seeds, against the claim that the knowledge goes primarily to the deeper layers
  (core.distill_verdict).

Run configs are read from ``<summary path>/<run>/config.toml`` (or a row's ``config`` dict).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import tomllib

from .config import get_dotted
from .measure.catapult import LAZY_EDGE, EdgeTheory, divergence_edge, predicted_phase
from .probes.catapult import edge_kind

CHECKS = ("catapult", "warmup", "gi_adam", "warmup_cca", "connectivity", "sgdr", "resilience", "distill")
OK, BAD = "\u2713", "\u2717"  # check mark, ballot x
EOS_FACTOR = 1.5  # warmup: at the edge of stability the sharpness hovers around 2/eta: within x1.5 either side


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
    if check == "warmup_cca":  # Gotmare et al.'s warmup finding (core.verdicts_cca)
        from .verdicts_cca import warmup_cca_verdicts

        return warmup_cca_verdicts(summary)
    if check == "connectivity":
        return connectivity_verdicts(summary)
    if check == "sgdr":
        return sgdr_verdicts(summary)
    if check == "resilience":
        return resilience_verdicts(summary)
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
    theory: Optional[EdgeTheory] = None
    kinds: set = set()
    for row in summary.get("runs", []):
        name = row["run"]
        if not _finished(row) or "phase" not in row:
            out.append({"run": name, "ok": None, "text": f"{name}: {row.get('state')}, no phase to check"})
            continue
        observed = row["phase"]
        kind, th = _edge_theory(summary, row)
        kinds.add(kind)
        theory = th or theory
        c = _lr_ntk(summary, row)
        parts, oks = [f"observed {observed}"], []
        if c is not None:
            predicted = predicted_phase(c, kind)
            if predicted is None:
                who = kind or "this network"
                parts.append(f"no prediction above lr_ntk {LAZY_EDGE:g} (no theory of the divergence edge for {who})")
            else:
                ok = observed in predicted.split(" or ")
                oks.append(ok)
                parts.append(f"predicted {predicted} ({_band_text(c, th)}){_mark(ok)}")
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
        kind = next(iter(kinds)) if len(kinds) == 1 else None
        out.append(_edge_verdict(points, theory, kind))
    return out


def _band_text(c: float, th: Optional[EdgeTheory]) -> str:
    if c < LAZY_EDGE:
        return f"below {LAZY_EDGE:g}"
    assert th is not None
    band = f"{th.lo:.3g}-{th.hi:.3g}"
    if c < th.lo:
        return f"between {LAZY_EDGE:g} and the edge's band {band}"
    if c > th.hi:
        return f"above the edge's band {band}"
    return f"within the edge's band {band} around {th.edge:g}"


def _edge_theory(summary: dict, row: dict) -> tuple[Optional[str], Optional[EdgeTheory]]:
    """(network kind, its divergence-edge theory) from the run's model and activation, not its
    name alone (core.probes.catapult.edge_kind); a row's ``edge_kind`` wins, and a hand-made
    row's ``lr_ntk_max`` (4 or 12) stands for "linear" or "relu"."""
    if row.get("edge_kind") is not None:
        kind = row["edge_kind"]
    elif row.get("lr_ntk_max") is not None:
        kind = "uv" if float(row["lr_ntk_max"]) <= 4.0 else "relu"
    else:
        kind = edge_kind(_param(summary, row, "model.name"), _param(summary, row, "model.activation"))
    return kind, divergence_edge(kind)


def _edge_verdict(points: list[tuple[float, bool]], th: Optional[EdgeTheory], kind: Optional[str]) -> dict[str, Any]:
    """Locate the measured divergence edge between the largest stable and the first diverging
    lr_ntk, and check that this interval meets the theory's band."""
    stable, first_div = _stable_edge(points)
    if stable is None:
        where = f"every run diverged, from lr_ntk {first_div:g}"
    elif first_div is None:
        where = f"none diverged up to lr_ntk {stable:g}"
    else:
        where = f"between lr_ntk {stable:g} (largest stable) and {first_div:g} (first diverged)"
    if th is None:
        return {
            "run": None,
            "ok": None,
            "text": f"divergence edge {where}; no theory predicts it for {kind or 'these networks'}",
        }
    ok = stable is not None and first_div is not None and first_div >= th.lo and stable <= th.hi
    return {
        "run": None,
        "ok": ok,
        "text": f"divergence edge {where}; {th.basis}, band {th.lo:.3g}-{th.hi:.3g}{_mark(ok)}",
    }


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
    ratios: list[float] = []
    warm_ok, warm_n = 0, 0
    warm_ratios: list[float] = []
    outside: list[str] = []
    warm_outside: list[str] = []
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
        beyond = lam0 is None or (thr is not None and lam0 > thr)
        # runs without warmup beyond the init's edge are catapults (their sharpness ends below
        # 2/eta, as the catapult verdict checks), not warmup at the edge of stability
        warmed = _warmup_len(summary, row) > 0
        if not div and lam is not None and thr is not None and beyond and warmed:
            sharp_n += 1
            sharp_ok += _in_eos_band(lam, thr)
            ratios.append(lam / thr)
            if not _in_eos_band(lam, thr):
                outside.append(f"{row['run']} {lam / thr:.3g}")
            if lam0 and lam > 0:
                drop = max(drop, lam0 / lam)
        lw, tw = row.get("sharpness_warmup_end"), row.get("sharpness_warmup_end_threshold")
        if not div and lw is not None and tw and beyond:
            warm_n += 1
            warm_ok += _in_eos_band(lw, tw)
            warm_ratios.append(lw / tw)
            if not _in_eos_band(lw, tw):
                warm_outside.append(f"{row['run']} {lw / tw:.3g}")
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
    band = f"{1 / EOS_FACTOR:.3g}-{EOS_FACTOR:g} x 2/eta"
    if warm_n:
        ok = warm_ok == warm_n
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"at the end of warmup, runs beyond the init's edge have their sharpness at the target lr's "
                f"edge (within {band}): {warm_ok}/{warm_n}, measured {_ratio_range(warm_ratios)} x 2/eta"
                f"{_outside(warm_outside)}{_mark(ok)}",
            }
        )
    if sharp_n:
        ok = sharp_ok == sharp_n
        fell = f"; sharpness fell from lambda0 by up to {drop:.3g}x" if drop > 1 else ""
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"stable warmup runs beyond the init's edge (lambda0 > 2/eta) ending at the edge of stability "
                f"(within {band}): {sharp_ok}/{sharp_n}, measured {_ratio_range(ratios)} x 2/eta{fell}"
                f"{_outside(outside)}{_mark(ok)}",
            }
        )
    return out


def _in_eos_band(lam: float, thr: float) -> bool:
    """At the edge of stability: within a factor EOS_FACTOR of 2/eta, either side."""
    return thr / EOS_FACTOR <= lam <= EOS_FACTOR * thr


def _outside(names: list[str]) -> str:
    return f" (outside: {', '.join(names)})" if names else ""


def _ratio_range(rs: list[float]) -> str:
    return f"{min(rs):.3g}-{max(rs):.3g}" if rs else "-"


# --------------------------------------------------------------------------- GI-Adam


def _final_loss(row: dict) -> float:
    if row.get("state") == "diverged":
        return math.inf
    for k in ("train_loss", "train_loss_running"):
        if row.get(k) is not None:
            return float(row[k])
    return math.nan


GROUPS = {
    "adam": "Adam, no warmup",
    "adam_warmup": "Adam + warmup",
    "adam_gi_warmup": "Adam + GI-Adam's warmup",
    "gi_adam": "GI-Adam, no warmup",
}
LOSS_MARGIN = 2.0  # "X beats Y": every seed of X below every seed of Y, and the medians a factor 2 apart
EARLY_STEPS = 20  # "the first steps" of the mechanism


def _group(summary: dict, row: dict) -> Optional[str]:
    opt = _param(summary, row, "optim.name")
    if _warmup_len(summary, row) > 0:
        if opt not in ("adam", "adamw"):
            return None
        return "adam_gi_warmup" if _param(summary, row, "schedule.warmup.shape") == "adam_bias" else "adam_warmup"
    return "adam" if opt in ("adam", "adamw") else "gi_adam" if opt == "gi_adam" else None


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return math.nan if not n else ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def _precond_ratios(summary: dict, row: dict) -> tuple[Optional[float], Optional[float]]:
    """(at init, max over steps 1..EARLY_STEPS) of the preconditioned sharpness over Adam's
    threshold at that step's lr; at init, and at lr 0 (a warmup's first step), the threshold at
    the run's base lr."""
    from .measure.curvature import adam_threshold  # torch: imported only when a verdict needs it

    hist = row.get("preconditioned_history") or []
    b1 = (_param(summary, row, "optim.betas") or [0.9])[0]
    base = row.get("base_lr")
    base_thr = adam_threshold(float(base), float(b1)) if base else None
    init, early = None, None
    for step, val, thr in hist:
        if val is None:
            continue
        t = thr if thr else base_thr
        if not t:
            continue
        if step == 0:
            init = val / (base_thr or t)
        elif step <= EARLY_STEPS:
            early = max(early or 0.0, val / t)
    return init, early


def _beats(x: list[float], y: list[float]) -> tuple[bool, str]:
    """Whether the losses x beat y over seeds: max(x) < min(y) and median(y) >= 2 median(x)."""
    mx, my = _median(x), _median(y)
    ok = max(x) < min(y) and (math.isinf(my) or my >= LOSS_MARGIN * mx)
    return ok, f"{_num(mx)} vs {_num(my)}"


def gi_adam_verdicts(summary: dict) -> list[dict[str, Any]]:
    """Kalra & Barkeshli 2024 over seeds: warmup helps Adam, GI-Adam without warmup beats Adam
    without warmup, whether GI-Adam beats Adam with GI-Adam's own warmup (sqrt(1 - beta2^t);
    informational: it tells "GI-Adam helps" from "GI-Adam is a longer warmup"), and the
    mechanism: the preconditioned sharpness at init and over the first steps against Adam's
    threshold (above it without warmup, below it with GI-Adam)."""
    out: list[dict[str, Any]] = []
    losses: dict[str, list[float]] = {k: [] for k in GROUPS}
    mech: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in GROUPS}
    for row in summary.get("runs", []):
        if not _finished(row):
            continue
        g = _group(summary, row)
        if g is None:
            continue
        losses[g].append(_final_loss(row))
        i, e = _precond_ratios(summary, row)
        if i is not None:
            mech[g][0].append(i)
        if e is not None:
            mech[g][1].append(e)
    for g, label in GROUPS.items():
        ls = losses[g]
        if not ls:
            continue
        div = sum(math.isinf(v) for v in ls)
        vals = " / ".join("diverged" if math.isinf(v) else _num(v) for v in ls)
        text = f"{label} ({len(ls)} seeds): final train loss {vals} (median {_num(_median(ls))})"
        if div:
            text += f", {div} diverged"
        init, early = mech[g]
        if init or early:
            text += (
                f"; preconditioned sharpness / Adam's threshold: at init {_num(_median(init)) if init else '-'}x, "
                f"max over steps 1-{EARLY_STEPS} {_num(_median(early)) if early else '-'}x (medians)"
            )
        out.append({"run": None, "ok": None, "text": text})
    a, w, m, g = (losses[k] for k in GROUPS)
    margin = f"every seed below every seed and medians >= {LOSS_MARGIN:g}x apart"
    if a and w:
        ok, nums = _beats(w, a)
        out.append({"run": None, "ok": ok, "text": f"warmup helps Adam ({margin}): {nums}{_mark(ok)}"})
    if a and g:
        ok, nums = _beats(g, a)
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"GI-Adam without warmup beats Adam without warmup ({margin}): {nums}{_mark(ok)}",
            }
        )
    if m and g:
        better, nums = _beats(g, m)
        worse, _ = _beats(m, g)
        what = (
            "GI-Adam does more than its built-in warmup"
            if better
            else "Adam with GI-Adam's warmup does better: GI-Adam's gain is less than its warmup's"
            if worse
            else "no separation: GI-Adam's benefit is that of its built-in warmup"
        )
        out.append(
            {"run": None, "ok": None, "text": f"GI-Adam vs Adam + GI-Adam's warmup sqrt(1 - beta2^t): {nums}: {what}"}
        )
    ai, gi_ = mech["adam"][0], mech["gi_adam"][0]
    ae, ge = mech["adam"][1], mech["gi_adam"][1]
    if ai and gi_:
        ok = _median(ai) > 1.0 and _median(gi_) < _median(ai)
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"mechanism at init: preconditioned sharpness / Adam's threshold {_num(_median(ai))}x for Adam "
                f"(paper: above 1, its first steps are unstable), {_num(_median(gi_))}x for GI-Adam (its v_0 = g^2 "
                f"scales P by 1/sqrt(1 - beta2): GI/Adam {_num(_median(gi_) / _median(ai))}){_mark(ok)}",
            }
        )
    if ae and ge:
        # the paper's mechanism: warmup (built in or not) keeps the preconditioned sharpness at or
        # below Adam's edge through the first steps, where Adam without warmup overshoots it
        ok = _median(ae) > 1.0 and _median(ge) <= EOS_FACTOR
        parts = [f"{GROUPS[k]} {_num(_median(mech[k][1]))}x" for k in GROUPS if mech[k][1]]
        text = (
            f"mechanism over steps 1-{EARLY_STEPS}: max preconditioned sharpness / threshold at the step's lr: "
            + ", ".join(parts)
            + f" (paper: GI-Adam at or below the edge, <= {EOS_FACTOR:g}x, Adam above it)"
        )
        if not ok and _median(ge) > EOS_FACTOR:
            text += "; not reproduced at this size: GI-Adam is far above the edge too"
        out.append({"run": None, "ok": ok, "text": text + _mark(ok)})
    return out


# --------------------------------------------------------------------------- connectivity

LINE_BARRIER_MIN = 0.1  # nats of train loss above the chord: "the line has a barrier"
CURVE_BARRIER_SHARE = 0.25  # the curve's train-loss barrier at most this share of the line's
CURVE_ERROR_MARGIN = 0.02  # the curve's max test error at most the worse end's + 2 points
GARIPOV_CLAIM = "Garipov et al., VGG16/CIFAR-10: ends 6.8-6.9% test error, Bezier curve at most 7.75%"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.2f}%"


def connectivity_verdicts(summary: dict) -> list[dict[str, Any]]:
    """One row per curve run: the line's barrier and the curve's maximum, in train loss and test
    error, against the paper's claim with the margins above."""
    out: list[dict[str, Any]] = []
    for row in summary.get("runs", []):
        if "line_barrier_train_loss" not in row:
            continue
        name = row["run"]
        if row.get("state") != "completed":
            out.append({"run": name, "ok": False, "text": f"{name}: {row.get('state')}, no curve to check"})
            continue
        line_b, curve_b = row["line_barrier_train_loss"], row["curve_barrier_train_loss"]
        oks, parts = [], []
        ok = line_b >= LINE_BARRIER_MIN
        oks.append(ok)
        parts.append(
            f"line barrier in train loss {_num(line_b)} (claim: a barrier, >= {LINE_BARRIER_MIN:g}){_mark(ok)}"
        )
        ok = curve_b <= CURVE_BARRIER_SHARE * max(line_b, 0.0)
        oks.append(ok)
        maxima = f"max {_num(row.get('curve_max_train_loss'))} vs the line's {_num(row.get('line_max_train_loss'))}"
        parts.append(
            f"curve barrier {_num(curve_b)} ({maxima}; claim: low-loss, <= {CURVE_BARRIER_SHARE:g} x the line's)"
            + _mark(ok)
        )
        ends = [row.get("start_test_error"), row.get("end_test_error")]
        cmax = row.get("curve_max_test_error")
        if cmax is not None and None not in ends:
            worst = max(ends)
            ok = cmax <= worst + CURVE_ERROR_MARGIN
            oks.append(ok)
            parts.append(
                f"test error: ends {_pct(ends[0])} / {_pct(ends[1])}, line max {_pct(row.get('line_max_test_error'))}, "
                f"curve max {_pct(cmax)} (claim: within {100 * CURVE_ERROR_MARGIN:g} points of the worse end: "
                f"margin {100 * (worst + CURVE_ERROR_MARGIN - cmax):+.2f} points){_mark(ok)}"
            )
        out.append({"run": name, "ok": all(oks), "text": f"{name}: " + "; ".join(parts)})
    if out:
        out.append({"run": None, "ok": None, "text": f"paper: {GARIPOV_CLAIM}"})
    return out


# --------------------------------------------------------------------------- SGDR snapshots

GOTMARE_CLAIM = (
    "Gotmare et al.: barriers on the line between SGDR snapshots, none between SGD snapshots; "
    "points of the curve reach lower train loss than the snapshots but higher test error; the iterates between "
    "two restarts do not sit in separate basins of the plane (Fig. 2-4)"
)


def _curve_doc(summary: dict, run: str) -> dict:
    import json

    path = summary.get("path")
    try:
        return json.loads((Path(path) / run / "curve.json").read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def _snapshot_group(summary: dict, row: dict) -> str:
    """``"sgdr"`` when the run a curve's start references trains with SGDR, else ``"sgd"``."""
    start = _param(summary, row, "curve.start")
    if not isinstance(start, str) or not start.startswith("@"):
        return "sgd"
    ref = start[1:].split(":")[0]
    sched = get_dotted(_config(summary, {"run": ref}), "schedule.name")
    return "sgdr" if sched == "sgdr" else "sgd"


BASIN_MARGIN = LINE_BARRIER_MIN  # nats: a ridge lower than this between the iterates is not a second basin


def plane_basins(doc: dict) -> Optional[dict[str, Any]]:
    """Do a cycle's iterates sit in one basin of the plane? From a plane run's ``plane.json``
    (core.plane): the plane's ``start`` and ``end`` snapshots and the ``projected`` checkpoints
    whose step lies strictly between theirs (all projected ones when the steps are unknown), each
    at its nearest grid cell (those outside the grid are left out). ``level`` is the lowest train
    loss L such that the grid's cells with loss <= L join all of them in one 4-connected region
    (the minimax path over the grid, by union-find in order of loss); ``ridge`` = level − the
    highest loss among their own cells: 0 when they lie in one valley, the height of the lowest
    pass between them otherwise. None when the grid has no train loss, no iterate lies between
    the snapshots or fewer than two of their cells lie on the grid. Also returns how many were
    joined and left out, and the farthest iterate's distance from the plane relative to
    ||end − start||."""
    grid, axis_a, axis_b = doc.get("train_loss"), doc.get("a") or [], doc.get("b") or []
    if not grid or not axis_a or not axis_b:
        return None
    steps = doc.get("steps") or {}
    lo, hi = sorted((steps.get("start") or 0, steps.get("end") or 0))
    known = steps.get("start") is not None and steps.get("end") is not None
    between = [
        p for p in doc.get("projected") or [] if not known or (p.get("step") is not None and lo < p["step"] < hi)
    ]
    if not between:
        return None
    points = [doc["points"]["start"][:2], *[[p["a"], p["b"]] for p in between], doc["points"]["end"][:2]]
    na, nb = len(axis_a), len(axis_b)

    def cell(a: float, b: float) -> Optional[int]:
        if not (axis_a[0] <= a <= axis_a[-1] and axis_b[0] <= b <= axis_b[-1]):
            return None
        i = min(range(na), key=lambda k: abs(axis_a[k] - a))
        j = min(range(nb), key=lambda k: abs(axis_b[k] - b))
        return j * na + i

    cells = [c for c in (cell(a, b) for a, b in points) if c is not None]
    if len(set(cells)) < 2:  # nothing on the grid to join
        return None
    vals = [math.inf if v is None else float(v) for row in grid for v in row]
    parent = list(range(len(vals)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    added = [False] * len(vals)
    targets = set(cells)
    level = math.inf
    for c in sorted(range(len(vals)), key=vals.__getitem__):
        added[c] = True
        j, i = divmod(c, na)
        for nbr in ((c - 1) if i > 0 else -1, (c + 1) if i < na - 1 else -1, c - na, c + na):
            if 0 <= nbr < len(vals) and added[nbr]:
                parent[root(nbr)] = root(c)
        if all(added[t] for t in targets) and len({root(t) for t in targets}) == 1:
            level = vals[c]
            break
    top = max(vals[t] for t in targets)
    dx = (doc.get("result") or {}).get("plane_dx")
    far = max((p.get("distance") or 0.0 for p in between), default=0.0)
    return {
        "level": level,
        "top": top,
        "ridge": level - top,
        "joined": len(cells),
        "outside": len(points) - len(cells),
        "iterates": len(between),
        "distance": far / dx if dx else None,
    }


def _plane_doc(summary: dict, run: str) -> dict:
    import json

    path = summary.get("path")
    try:
        return json.loads((Path(path) / run / "plane.json").read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def _basin_verdict(summary: dict, row: dict) -> dict[str, Any]:
    """The verdict row of one plane run: its cycle's iterates in one basin of the plane."""
    name = row["run"]
    if row.get("state") != "completed":
        return {"run": name, "ok": False, "text": f"{name}: {row.get('state')}, no plane to check"}
    b = plane_basins(_plane_doc(summary, name))
    if b is None:
        return {"run": name, "ok": None, "text": f"{name}: no iterate between the two snapshots projected onto it"}
    ok = b["ridge"] <= BASIN_MARGIN
    far = "" if b["distance"] is None else f", up to {b['distance']:.2f} x |end - start| off the plane"
    return {
        "run": name,
        "ok": ok,
        "text": f"{name}: the two snapshots and the {b['iterates']} iterates between them ({b['joined']} on the "
        f"grid{far}) join in one region of the plane below train loss {_num(b['level'])}, "
        f"{_num(b['ridge'])} above the highest of their own cells ({_num(b['top'])}) (claim: one basin, no ridge "
        f"between them higher than {BASIN_MARGIN:g} nats){_mark(ok)}",
    }


TRAINED_ERROR_MAX = 0.5  # a snapshot with a higher test error has not learned the task: its line says nothing


def sgdr_verdicts(summary: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    barriers: dict[str, list[bool]] = {"sgdr": [], "sgd": []}
    lower_worse: list[bool] = []
    untrained: list[str] = []
    for row in summary.get("runs", []):
        if "line_barrier_train_loss" not in row or row.get("state") != "completed":
            continue
        name, group = row["run"], _snapshot_group(summary, row)
        errs = [e for e in (row.get("start_test_error"), row.get("end_test_error")) if e is not None]
        if errs and max(errs) > TRAINED_ERROR_MAX:  # e.g. a run that collapsed to chance: no basin to compare
            untrained.append(name)
            out.append(
                {
                    "run": name,
                    "ok": False,
                    "text": f"{name} ({group.upper()} snapshots): a snapshot at {_pct(max(errs))} test error "
                    f"(over {100 * TRAINED_ERROR_MAX:g}%: not trained), its line and curve say nothing about basins "
                    f"{_mark(False)}",
                }
            )
            continue
        lb = row["line_barrier_train_loss"]
        has = lb >= LINE_BARRIER_MIN
        barriers[group].append(has)
        said = "a barrier" if has else "no barrier"
        text = (
            f"{name} ({group.upper()} snapshots): line {said} (train loss {_num(lb)} above the chord, test error "
            f"{_pct(row.get('line_barrier_test_error'))}); curve barrier {_num(row.get('curve_barrier_train_loss'))}"
        )
        if group == "sgdr":
            doc = _curve_doc(summary, name).get("curve") or {}
            losses, accs = doc.get("train_loss") or [], doc.get("test_accuracy") or []
            if len(losses) >= 3 and len(accs) == len(losses) and None not in accs:
                inner = range(1, len(losses) - 1)
                k = min(inner, key=lambda i: losses[i])
                best_end_err = min(1 - accs[0], 1 - accs[-1])
                ok = losses[k] < min(losses[0], losses[-1]) and 1 - accs[k] > best_end_err
                lower_worse.append(ok)
                text += (
                    f"; lowest train loss on the curve {_num(losses[k])} at t = {doc['t'][k]:.3g} "
                    f"(snapshots {_num(losses[0])} / {_num(losses[-1])}) with test error {_pct(1 - accs[k])} "
                    f"(better snapshot {_pct(best_end_err)}){_mark(ok)}"
                )
        out.append({"run": name, "ok": None, "text": text})
    planes = [  # the iterates between two restarts in one basin of the plane
        _basin_verdict(summary, row)
        for row in summary.get("runs", [])
        if "plane_min_train_loss" in row or _param(summary, row, "task") == "plane"
    ]
    if not out:
        return planes
    n_r, n_s = len(barriers["sgdr"]), len(barriers["sgd"])
    b_r, b_s = sum(barriers["sgdr"]), sum(barriers["sgd"])
    ok = n_r > 0 and n_s > 0 and b_r == n_r and b_s == 0 and not untrained
    out.append(
        {
            "run": None,
            "ok": ok,
            "text": f"lines with a barrier (>= {LINE_BARRIER_MIN:g} nats): SGDR {b_r}/{n_r}, SGD {b_s}/{n_s} "
            + (f"({len(untrained)} pair(s) of untrained snapshots left out) " if untrained else "")
            + f"(claim: all SGDR, no SGD){_mark(ok)}",
        }
    )
    if lower_worse:
        ok = all(lower_worse)
        out.append(
            {
                "run": None,
                "ok": ok,
                "text": f"SGDR curves with a point of lower train loss and higher test error than the snapshots: "
                f"{sum(lower_worse)}/{len(lower_worse)}{_mark(ok)}",
            }
        )
    out += planes
    out.append({"run": None, "ok": None, "text": f"paper: {GOTMARE_CLAIM}"})
    return out


# --------------------------------------------------------------------------- resilience

RESILIENCE_CLAIM = (
    "Gotmare et al. (poster): a low-loss curve connects G to each of A-F (a few epochs of curve training)"
)


def resilience_verdicts(summary: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    oks: list[bool] = []
    for row in summary.get("runs", []):
        if "line_barrier_train_loss" not in row:
            continue
        name = row["run"]
        ends, cmax = [row.get("start_test_error"), row.get("end_test_error")], row.get("curve_max_test_error")
        if row.get("state") != "completed" or cmax is None or None in ends:
            oks.append(False)
            out.append({"run": name, "ok": False, "text": f"{name}: {row.get('state')}, no curve to check"})
            continue
        worst = max(ends)
        ok = cmax <= worst + CURVE_ERROR_MARGIN
        oks.append(ok)
        out.append(
            {
                "run": name,
                "ok": ok,
                "text": f"{name}: curve max test error {_pct(cmax)}, ends {_pct(ends[0])} / {_pct(ends[1])} "
                f"(claim: within {100 * CURVE_ERROR_MARGIN:g} points of the worse end, margin "
                f"{100 * (worst + CURVE_ERROR_MARGIN - cmax):+.2f} points); the line's max "
                f"{_pct(row.get('line_max_test_error'))}, barrier {_num(row.get('line_barrier_train_loss'))} "
                f"nats in train loss{_mark(ok)}",
            }
        )
    if oks:
        ok = all(oks)
        out.append({"run": None, "ok": ok, "text": f"variants connected to G: {sum(oks)}/{len(oks)}{_mark(ok)}"})
        out.append({"run": None, "ok": None, "text": f"paper: {RESILIENCE_CLAIM}"})
    return out
