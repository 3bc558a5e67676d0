"""Compare two trained networks: layer similarity (SVCCA, PWCCA, linear CKA) and the straight path.

``compare(path_a, path_b, ...)`` rebuilds both models from their checkpoints (``weights_only``
loads), evaluates each on its own, captures the layers' outputs on one probe set — up to
``samples`` test inputs chosen by ``seed`` (data from A's config, or ``data`` names another
dataset with the same input shape) — and returns one plain dict (JSON-ready):

- same architecture (identical parameter names and shapes): ``layers``: one row per layer
  {layer, svcca, pwcca, cka} (layer i of A vs layer i of B), and ``interpolation``: train/test
  loss and accuracy at ``points`` values of t in [0, 1] along (1 − t)·w_A + t·w_B, batch-norm
  statistics recomputed at every point (``core.connectivity.linear_path``), with the loss
  barriers (max height of the path above the chord between its endpoints);
- ``agreement``: the share of the probe inputs on which A's and B's top-1 classes agree
  (classification; None otherwise);
- B's numbers are on the same data as A's: where B was trained on another split (digits and the
  synthetic sets split by seed) ``notes`` says so;
- different architectures (e.g. teacher vs student): ``matrix``: {layers_a, layers_b, svcca,
  pwcca, cka} — every layer of A against every layer of B — and no interpolation.

A similarity that cannot be computed (too few samples for a layer's neurons, a constant layer)
is None and the reason is kept in ``notes``. Missing files, non-checkpoints, inputs of
different shapes and layer names the models do not have raise ConfigError, keyed by the
command line's names (``--layers``, ``CKPT_B``, ...); other measurement errors are
MeasurementErrors (ValueErrors) and left to the caller.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .errors import ConfigError, to_config_error

__all__ = ["check_compare", "compare", "DEFAULT_POINTS", "DEFAULT_SAMPLES"]

DEFAULT_POINTS = 11
MAX_POINTS = 201  # each point is a BN recompute and two full evaluations: more is minutes for no new shape
DEFAULT_SAMPLES = 1000
_METHODS = ("svcca", "pwcca", "cka")
_SEEDED_SPLITS = ("digits", "synthetic", "teacher_student")


def _load(path: Path | str, device: Any):
    from .checkpoint import model_from_checkpoint
    from .models import build_model

    model, cfg, ck = model_from_checkpoint(path, device)
    shape, n_out = tuple(int(s) for s in ck["input_shape"]), int(ck["num_outputs"])

    def build():
        return build_model(cfg, shape, n_out).to(device)

    return {
        "path": str(path),
        "ck": ck,
        "cfg": cfg,
        "shape": shape,
        "num_outputs": n_out,
        "model": model,
        "build": build,
    }


def _same_architecture(sd_a: dict, sd_b: dict) -> bool:
    if sd_a.keys() != sd_b.keys():
        return False
    return all(getattr(sd_a[k], "shape", None) == getattr(sd_b[k], "shape", None) for k in sd_a)


def _data_for(a: dict, data: Optional[str], device: Any):
    from .config import validate_run
    from .data import load_data

    cfg = a["cfg"]
    if data:
        raw = cfg.to_dict()
        raw["data"] = {**raw.get("data", {}), "name": data}
        cfg = validate_run(raw, "--data")
    bundle = load_data(cfg, device)
    if tuple(bundle.input_shape) != a["shape"]:
        raise ConfigError(
            f"data {bundle.name!r} has inputs of shape {tuple(bundle.input_shape)}, the models take {a['shape']}",
            key="--data",
        )
    if bundle.num_outputs != a["num_outputs"]:
        raise ConfigError(
            f"data {bundle.name!r} has {bundle.num_outputs} outputs, model A has {a['num_outputs']}", key="--data"
        )
    return bundle, cfg


def _sim(x: Any, y: Any, method: str, conv: str, notes: list[str], label: str) -> Optional[float]:
    from .measure.similarity import similarity

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # float64 products (the measures' own default for float32 activations is float32)
            v = similarity(x, y, method, conv=conv, dtype="float64")
        for w in caught:
            msg = f"{label} {method}: {w.message}"
            if msg not in notes:
                notes.append(msg)
    except (ValueError, np.linalg.LinAlgError) as e:  # a SimilarityError is a ValueError
        notes.append(f"{label} {method}: {e}")
        return None
    return float(v) if np.isfinite(v) else None


def compare(
    path_a: Path | str,
    path_b: Path | str,
    data: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    points: int = DEFAULT_POINTS,
    samples: int = DEFAULT_SAMPLES,
    conv: str = "mean",
    device: Any = "cpu",
    seed: int = 0,
    batch_size: int = 512,
    methods: Sequence[str] = _METHODS,
    interpolate: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Any]:
    """See the module doc. ``layers``: names present in both models (default: each model's
    ``heur_blocks``); ``points`` >= 2 values of t (0 and 1 included), at most MAX_POINTS;
    ``methods``: the measures computed (a subset of svcca, pwcca, cka); ``interpolate=False``: no
    straight path (the ``compare`` task's per-layer report). ``progress(done, points)`` is called
    before each point of the path and after the last."""
    import torch

    from .measure.activations import CaptureError, capture, probe_indices, resolve_layers
    from .measure.connectivity import barrier, bn_modules, eval_row, linear_path
    from .measure.similarity import CONV_MODES
    from .objective import make_loss

    if points < 2 or points > MAX_POINTS:
        raise ConfigError(f"expected 2 to {MAX_POINTS} points, got {points}", key="--points")
    if conv not in CONV_MODES:
        raise ConfigError(f"expected one of {', '.join(CONV_MODES)}, got {conv!r}", key="--conv")
    if samples < 1:
        raise ConfigError(f"expected a positive number, got {samples}", key="--samples")
    bad = [m for m in methods if m not in _METHODS]
    if bad or not methods:
        raise ConfigError(f"expected methods among {', '.join(_METHODS)}, got {list(methods)}", key="--method")
    device = torch.device(device)
    a, b = _load(path_a, device), _load(path_b, device)
    if a["shape"] != b["shape"]:
        raise ConfigError(
            f"the models take inputs of different shapes: {a['shape']} (A) vs {b['shape']} (B)", key="CKPT_B"
        )
    bundle, data_cfg = _data_for(a, data, device)
    loss_fn = make_loss(a["cfg"].train, bundle.task, bundle.num_outputs)
    notes: list[str] = []
    cb = b["cfg"]
    if _data_identity(cb.data) != _data_identity(data_cfg.data) or (
        _split_seed(cb) != _split_seed(data_cfg) and data_cfg.data.name in _SEEDED_SPLITS
    ):
        notes.append(
            f"B was trained on other data than {data_cfg.data.name!r} with seed {_split_seed(data_cfg)} "
            "(the split of digits/synthetic sets follows the seed): every number here, B's too, "
            "is on that data"
        )

    sel = "auto" if not layers else list(layers)
    try:
        names_a = resolve_layers(a["model"], sel)
        names_b = resolve_layers(b["model"], sel)
    except CaptureError as e:
        if layers:
            raise to_config_error(e, "--layers") from None
        # a model without layers to look at (uv: two weight matrices): the straight path still says something
        names_a = names_b = []
        notes.append(f"no layer similarity: {e.message} (--layers)")
    idx = probe_indices(int(bundle.x_test.shape[0]), samples, seed)
    x = bundle.x_test.index_select(0, torch.as_tensor(idx, device=bundle.x_test.device))
    same = _same_architecture(a["ck"]["model"], b["ck"]["model"])
    acts_a = capture(a["model"], x, names_a, batch_size=batch_size) if names_a else {}
    acts_b = capture(b["model"], x, names_b, batch_size=batch_size) if names_b else {}
    agreement = _agreement(a["model"], b["model"], x, batch_size) if bundle.task == "classification" else None

    doc: dict[str, Any] = {
        "a": _describe(a),
        "b": _describe(b),
        "data": bundle.name,
        "samples": int(x.shape[0]),
        "probe_split": "test",
        "conv": conv,
        "same_architecture": same,
        "methods": list(methods),
        "agreement": agreement,
    }
    doc["a"]["eval"] = eval_row(a["model"], bundle, loss_fn, batch_size)
    doc["b"]["eval"] = eval_row(b["model"], bundle, loss_fn, batch_size)

    if same and names_a == names_b:
        doc["layers"] = [
            {"layer": n, **{m: _sim(acts_a[n], acts_b[n], m, conv, notes, n) for m in methods}} for n in names_a
        ]
        doc["matrix"] = None
    else:
        doc["layers"] = None
        doc["matrix"] = {
            "layers_a": names_a,
            "layers_b": names_b,
            **{
                m: [[_sim(acts_a[p], acts_b[q], m, conv, notes, f"{p}~{q}") for q in names_b] for p in names_a]
                for m in methods
            },
        }

    if same and interpolate:
        ts = [float(t) for t in np.linspace(0.0, 1.0, points)]
        rows = linear_path(
            a["ck"]["model"], b["ck"]["model"], a["build"], bundle, _reporting(ts, progress), loss_fn, batch_size
        )
        interp = {
            "t": ts,
            **{k: [r[k] for r in rows] for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")},
        }
        interp["barrier_train_loss"] = barrier(ts, interp["train_loss"])
        interp["barrier_test_loss"] = barrier(ts, interp["test_loss"])
        interp["bn_recomputed"] = bool(bn_modules(a["model"]))
        doc["interpolation"] = interp
    else:
        doc["interpolation"] = None
        if interpolate:
            notes.append("different architectures: no interpolation")
    doc["notes"] = fold_notes(notes)
    return doc


def fold_notes(notes: list[str], shown: int = 4) -> list[str]:
    """One note per message instead of one per layer and method: a cross-architecture compare of
    4 × 4 layers gave the same warning 16 times for each method. ``"conv1~fc1 pwcca: msg"`` notes
    with the same message become ``"svcca, pwcca: msg (16 layer pairs: conv1~fc1, …)"``; other
    notes stay as they are."""
    groups: dict[str, tuple[list[str], list[str]]] = {}  # message -> (methods, labels)
    order: list[Any] = []
    for n in notes:
        m = re.fullmatch(r"(\S+) (svcca|pwcca|cka): (.*)", n, flags=re.S)
        if m is None:
            order.append(n)
            continue
        label, method, msg = m.groups()
        if msg not in groups:
            groups[msg] = ([], [])
            order.append((msg,))
        methods, labels = groups[msg]
        methods.append(method) if method not in methods else None
        labels.append(label) if label not in labels else None
    out = []
    for item in order:
        if isinstance(item, str):
            out.append(item)
            continue
        methods, labels = groups[item[0]]
        how = ", ".join(methods)
        if len(labels) == 1:
            out.append(f"{labels[0]} {how}: {item[0]}")
            continue
        what = "layer pairs" if any("~" in lb for lb in labels) else "layers"
        names = ", ".join(labels[:shown]) + (f", … ({len(labels) - shown} more)" if len(labels) > shown else "")
        out.append(f"{how}: {item[0]} ({len(labels)} {what}: {names})")
    return out


def _reporting(ts: list[float], progress: Optional[Callable[[int, int], None]]) -> Iterator[float]:
    """``ts`` one at a time (linear_path reads them lazily), telling ``progress`` how far it got."""
    for i, t in enumerate(ts):
        if progress is not None:
            progress(i, len(ts))
        yield t
    if progress is not None:
        progress(len(ts), len(ts))


# [data] keys that change how a run trains on its data (augmentation) or where the files are, not which data
_NOT_DATA = ("augment", "crop_padding", "flip", "root", "download", "checksums")


def _data_identity(d: Any) -> dict[str, Any]:
    return {k: v for k, v in d.model_dump().items() if k not in _NOT_DATA}


def _agreement(model_a: Any, model_b: Any, x: Any, batch_size: int) -> float:
    """Share of the probe inputs on which the two models' top-1 classes agree."""
    import torch

    from .measure.evaluation import eval_batches

    same = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for xb, _ in eval_batches(x, x, batch_size):
            same += (model_a(xb).argmax(1) == model_b(xb).argmax(1)).sum().to(same)
    return float(same.item()) / max(int(x.shape[0]), 1)


def _describe(m: dict) -> dict[str, Any]:
    ck, cfg = m["ck"], m["cfg"]
    return {
        "path": m["path"],
        "name": cfg.name,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "step": ck.get("step"),
        "epoch": ck.get("epoch"),
        "params": int(sum(p.numel() for p in m["model"].parameters())),
    }


# --------------------------------------------------------------------------- a compare run's preflight


def check_compare(cfg: Any, exp: Any) -> None:
    """Preflight of a ``task = "compare"`` run (core.compare_task): the referenced runs take
    inputs of one shape and have the named layers (read on their models built on the meta
    device). Plain paths are checked by core.pipeline."""
    from .data import data_shape
    from .measure.activations import CaptureError, resolve_layers
    from .models import meta_model
    from .pipeline import parse_ref

    shapes = {}
    for i, value in enumerate(cfg.compare.checkpoints):
        key = f"compare.checkpoints[{i}]"
        ref = parse_ref(value, key)
        if ref is None:
            continue
        other = exp.runs[ref.run]
        shape = data_shape(other.data)
        if shape is not None:
            shapes[key] = (ref.text, tuple(shape[0]))
        if cfg.compare.layers != "auto":
            model = meta_model(other)
            if model is not None:
                try:
                    resolve_layers(model, list(cfg.compare.layers))
                except CaptureError as e:
                    raise ConfigError(f"run {ref.run!r}: {e.message}", key="compare.layers") from None
    seen = list(shapes.values())
    for key, (text, shape) in shapes.items():
        if shape != seen[0][1]:
            raise ConfigError(
                f"{text} takes inputs of shape {shape}, {seen[0][0]} of shape {seen[0][1]}: "
                "they cannot share a probe set",
                key=key,
            )


def _split_seed(cfg: Any) -> int:
    """The seed of a run's data split: ``data.seed``, else the run's seed."""
    return cfg.seed if getattr(cfg.data, "seed", None) is None else cfg.data.seed
