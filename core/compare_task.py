"""``task = "compare"``: per-layer similarity of trained networks, as a run of an experiment.

``python -m heur.core.compare_task RUN_DIR``. The run's ``[compare]`` section names two or more
``checkpoints`` (``"@RUN"``, ``"@RUN:CHECKPOINT"`` or paths; core.pipeline resolves them, and
the supervisor starts the run once the runs it references have completed). The first is the
reference (a teacher): each of the others is compared with it by :func:`core.compare.compare`,
the function ``heur compare A B`` runs, on a fixed probe set of up to ``samples`` test inputs
chosen by the run's ``seed`` (the data of the reference's config, or the run's ``[data]`` when
the preset writes one), with ``method`` (svcca | pwcca | cka; default cka: a linear CKA is
meaningful with fewer samples than neurons, the CCA family is not) and ``conv`` (how conv maps
become (samples, channels) matrices, as the CCA probe does). Same architecture: layer i against
layer i (``values``); otherwise the full layer × layer ``matrix`` (reference's layers in rows).
There is no ``[optim]``, ``[schedule]``, ``[train]``, ``[probes]`` or ``[distill]``.

It writes ``RUN_DIR/compare.json`` {method, conv, samples, reference, pairs: [one
core.compare document each, plus ``against``, ``closeness``]}, one ``compare`` event per pair
and an ``end`` event whose result holds: ``method``, ``samples``, ``reference``, ``against``
(the other checkpoints as the preset names them), ``layers`` (each other model's layers),
``closeness`` (per pair, per layer of the other model: its similarity to the reference's layer
at the same place when both have the same list of layers, else to the most similar reference
layer),
``agreement`` (per pair, share of probe inputs with the same top-1 class) and ``compare_json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

__all__ = ["closeness", "main", "run_compare"]

KEY = "compare.checkpoints"
# its preflight, core.compare.check_compare, lives beside compare() (this module imports core.runs,
# which imports the preflight)


def closeness(doc: dict[str, Any], method: str) -> tuple[list[str], list[Optional[float]]]:
    """(layers of B, per layer of B its similarity to A): layer i vs i when both models have the
    same list of layers (one architecture, or a wider one of the same depth: conv1 is conv1);
    otherwise (another depth: VGG-11's conv8 is not VGG-16's) the most similar of A's layers."""
    if doc.get("layers") is not None:
        return [r["layer"] for r in doc["layers"]], [r[method] for r in doc["layers"]]
    m = doc["matrix"]
    rows, cols, values = m["layers_a"], m["layers_b"], m[method]
    if rows == cols:
        return list(cols), [values[j][j] for j in range(len(cols))]
    out: list[Optional[float]] = []
    for j in range(len(cols)):
        col = [values[i][j] for i in range(len(rows)) if values[i][j] is not None]
        out.append(max(col) if col else None)
    return list(cols), out


def run_compare(cfg: Any, run_dir: Path, device: Any, events: Any = None, status: Any = None) -> dict[str, Any]:
    """Every pair (reference, other) of the run's ``[compare]``; writes compare.json and returns
    the run's result."""
    from .atomic import write_json_atomic
    from .compare import compare
    from .errors import to_config_error
    from .events import sanitize
    from .measure.errors import MeasurementError
    from .pipeline import resolve

    cc = cfg.compare
    exp_dir = Path(run_dir).parent
    paths = [resolve(v, exp_dir) for v in cc.checkpoints]
    for i, path in enumerate(paths):  # before any work, naming the item
        if not path.is_file():
            raise ConfigError(f"no such checkpoint file: {path}", key=f"{KEY}[{i}]")
    data = cfg.data.name if "data" in cfg.model_fields_set else None
    layers = None if cc.layers == "auto" else list(cc.layers)
    pairs, result_layers, result_close, result_agree = [], [], [], []
    for k, (value, path) in enumerate(zip(cc.checkpoints[1:], paths[1:]), start=1):
        try:
            doc = compare(
                paths[0],
                path,
                data=data,
                layers=layers,
                samples=cc.samples,
                conv=cc.conv,
                device=device,
                seed=cfg.seed,
                batch_size=cc.batch_size,
                methods=(cc.method,),
                interpolate=False,
            )
        except ConfigError as e:  # compare() keys by the CLI's names: here the preset's
            key = {"--layers": "compare.layers", "--samples": "compare.samples", "--conv": "compare.conv"}
            raise ConfigError(e.message, key=key.get(e.key or "", f"{KEY}[{k}]"), file=e.file) from None
        except MeasurementError as e:
            raise to_config_error(e, {"layers": "compare.layers", "samples": "compare.samples"}) from None
        names, close = closeness(doc, cc.method)
        doc.update(reference=cc.checkpoints[0], against=value, closeness=close)
        pairs.append(doc)
        result_layers.append(names)
        result_close.append(close)
        result_agree.append(doc["agreement"])
        if events is not None:
            m = doc["matrix"]
            events.emit(
                "compare",
                k,
                0.0,
                a=cc.checkpoints[0],
                b=value,
                method=cc.method,
                layers_a=m["layers_a"] if m else names,
                layers_b=names,
                values=close,
                matrix=m[cc.method] if m else None,
                agreement=doc["agreement"],
            )
        if status is not None:
            status.update(step=k, total_steps=len(paths) - 1, force=True)
    report = {
        "method": cc.method,
        "conv": cc.conv,
        "samples": pairs[0]["samples"],
        "reference": cc.checkpoints[0],
        "pairs": pairs,
    }
    write_json_atomic(Path(run_dir) / "compare.json", sanitize(report))
    return {
        "method": cc.method,
        "samples": pairs[0]["samples"],
        "reference": cc.checkpoints[0],
        "against": list(cc.checkpoints[1:]),
        "layers": result_layers,
        "closeness": result_close,
        "agreement": result_agree,
        "compare_json": "compare.json",
    }


class _Stopped(Exception):
    """SIGTERM or SIGINT: the run ends ``stopped`` (it has no state to checkpoint)."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stopped(signal.Signals(signum).name)


def main(argv: Optional[list[str]] = None) -> int:
    from . import runs as runs_mod
    from .device import resolve_device
    from .events import EventWriter

    ap = argparse.ArgumentParser(prog="python -m heur.core.compare_task")
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true", help="the same as a fresh start: a compare run has no state")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    t0 = time.time()
    status = runs_mod.StatusWriter(run_dir)
    events = EventWriter(run_dir / "events.jsonl")
    status.update(state="running", pid=os.getpid(), step=0, force=True)
    code, state, reason, result = 0, "completed", "", {}
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        threads = os.environ.get("HEUR_THREADS")
        if threads:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        cfg = runs_mod.read_run_config(run_dir)
        result = run_compare(cfg, run_dir, resolve_device(cfg.device), events, status)
        reason = f"compared {len(result['against'])} checkpoint(s) with {result['reference']}"
    except _Stopped as e:
        state, reason = "stopped", f"{e} before the comparison finished"
    except ConfigError as e:
        print(f"heur: error: {e}", file=sys.stderr)
        code, state, reason = 2, "failed", str(e)
    except Exception as e:  # the traceback goes to stdout.log; the run dir stays readable
        traceback.print_exc()
        code, state, reason = 1, "failed", f"{type(e).__name__}: {e}"
    result["wall_time"] = time.time() - t0
    steps = len(result.get("against", []))
    events.emit("end", steps, 0.0, state=state, reason=reason, result=result)
    status.update(state=state, reason=reason, result=result, step=steps, force=True)
    events.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
