"""The CCA probe: how each layer's representation moves during training (Gotmare et al. 2018).

``[probes.cca]`` (every_epochs, samples, method svcca|pwcca|cka, layers "auto"|[names],
conv mean|flatten|dft). At init and every ``every_epochs`` epochs (and always at the last step)
the probe captures the outputs of the layers (``"auto"``: the model's ``heur_blocks``) on a fixed
probe set — ``samples`` training inputs chosen by the run's seed, no augmentation, eval mode, no
graph — rounds them to float16 and saves them in ``<run>/cca/epoch_<e>.npz`` (with conv =
"mean" the pooled (N, C) maps, otherwise the whole maps). Each snapshot emits a live ``cca``
event {layers, values, method, against: "previous", epoch_a, epoch_b, weight_change, live_units}:
each layer against itself at the previous snapshot, with two diagnostics that show where a
collapse starts:

- ``weight_change``: per layer ||W_b - W_a|| / ||W_a||, W the concatenation of the layer's own
  parameters (weights and biases, every parameter under that module) at the two snapshots
  (null for a layer without parameters or with ||W_a|| = 0);
- ``live_units``: per layer at the new snapshot, the fraction of its units (output features,
  conv channels) whose output is non-zero on at least one probe input (in float32, before the
  float16 rounding of the saved activations). After a ReLU a dead unit is zero on every input;
  a layer without a ReLU (``out``) has all its units live.

When the run has completed, ``on_end`` computes every layer at every snapshot against the same
layer at the final one (the seed paper's warmup figure), writes ``<run>/cca.json``
{layers, epochs, method, conv, samples, seconds, against_final, against_previous, weight_change,
live_units} (matrices layers × snapshots; ``against_previous[l][0]`` and ``weight_change[l][0]``
are null) and emits a ``cca`` event with
against: "final" (``values``: each layer at the first snapshot vs the final one; ``matrix``,
``epochs``). The result fields it returns (one row per run in the summary):

- ``cca_deep_early``: mean similarity to the final representation of the deeper layers over the
  snapshots in (0, E/2], E the last epoch. Deeper/shallower (:func:`layer_groups`): where the
  layers are conv blocks followed by others (heur's cnn and VGG), the conv blocks are the
  shallower group and everything after them (the fc stack and ``out``: the papers' "deeper
  layers") the deeper one; otherwise the first and the last floor(L/2) layers;
- ``cca_shallow_early``: the same for the shallower layers (conv1, conv2);
- ``cca_deep_settle``: the first epoch from which the deeper layers' mean similarity to final
  stays >= 0.9 until the end (the last epoch itself = they never settled before the end);
- ``cca_shallow_settle``: the same for the shallower layers;
- ``cca_last_epoch``: the last snapshot's epoch (a settle epoch equal to it reads "never").

A value that cannot be computed (constant or non-finite activations) is null. The probe's
state is plain values (snapshot list, live values) and the probed layers' parameters at the last
snapshot (float32 CPU tensors, for the next weight change); the activations live on disk, so a
resumed run picks up where its checkpoint left off. ``check_cca(cfg, plan)`` validates the layer names and the
sample count before a run starts, on a model built on the meta device (no memory, no compute).
"""

from __future__ import annotations

import math
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..atomic import replace_atomic, write_json_atomic
from ..errors import ConfigError, to_config_error
from ..measure.blas import single_thread_blas
from . import Probe, TrainContext

__all__ = [
    "CcaProbe",
    "check_cca",
    "layer_groups",
    "live_fraction",
    "relative_change",
    "settle_epoch",
    "snapshot_steps",
    "summary_fields",
    "SETTLE_THRESHOLD",
]

SETTLE_THRESHOLD = 0.9
_DIR = "cca"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` at zlib level 1 (half the time, the same size on float16
    activations); readable by ``np.load``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for k, a in arrays.items():
            with zf.open(k + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)


def snapshot_steps(every_epochs: float, steps_per_epoch: int, total_steps: int) -> list[int]:
    """Steps after which a snapshot is taken: 0, round(k * every * spe) for k = 1, 2, ... below
    ``total_steps``, and ``total_steps`` itself."""
    out = [0]
    k = 1
    while True:
        s = int(round(k * every_epochs * steps_per_epoch))
        if s >= total_steps:
            break
        if s > out[-1]:
            out.append(s)
        k += 1
    out.append(total_steps)
    return out


def _epoch_name(epoch: float) -> str:
    e = round(epoch, 4)
    return f"epoch_{int(e)}" if float(e).is_integer() else f"epoch_{e:g}"


def layer_groups(layers: list[str]) -> tuple[list[int], list[int]]:
    """(shallow, deep) layer indices. Conv blocks followed by other layers (``conv1..convK`` then
    ``fc1..``, ``out``): the conv blocks and the rest. Otherwise the first and the last floor(L/2)
    layers (at least one)."""
    n = len(layers)
    conv = [i for i, name in enumerate(layers) if name.startswith("conv")]
    if conv and conv == list(range(len(conv))) and len(conv) < n:
        return conv, list(range(len(conv), n))
    h = max(1, n // 2)
    return list(range(h)), list(range(n - h, n))


def settle_epoch(epochs: list[float], against_final: list[list[Optional[float]]], rows: list[int]) -> float:
    """The first epoch from which the mean similarity to final of layers ``rows`` stays >=
    :data:`SETTLE_THRESHOLD` up to the end (the last epoch when they only match at the end)."""
    settle = epochs[-1]
    for j in range(len(epochs) - 1, -1, -1):
        m = _mean([against_final[i][j] for i in rows])
        if m is None or m < SETTLE_THRESHOLD:
            break
        settle = epochs[j]
    return float(settle)


def _mean(vals: list[Optional[float]]) -> Optional[float]:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def summary_fields(
    layers: list[str], epochs: list[float], against_final: list[list[Optional[float]]]
) -> dict[str, Any]:
    """``cca_deep_early``, ``cca_shallow_early``, ``cca_deep_settle`` from the layer × snapshot
    matrix of similarities to the final snapshot (see the module doc)."""
    if not layers or len(epochs) < 2:
        return {}
    shallow, deep = layer_groups(layers)
    last = epochs[-1]
    early = [j for j, e in enumerate(epochs) if 0 < e <= last / 2 + 1e-9] or list(range(len(epochs) - 1))

    def block_mean(rows: list[int], cols: list[int]) -> Optional[float]:
        return _mean([against_final[i][j] for i in rows for j in cols])

    return {
        "cca_deep_early": block_mean(deep, early),
        "cca_shallow_early": block_mean(shallow, early),
        "cca_deep_settle": settle_epoch(epochs, against_final, deep),
        "cca_shallow_settle": settle_epoch(epochs, against_final, shallow),
        "cca_last_epoch": float(last),  # a settle epoch equal to it: the group never settled
    }


def relative_change(before: Any, after: Any) -> Optional[float]:
    """||after - before|| / ||before|| of two flat float tensors (None when either is missing or
    ||before|| is 0)."""
    if before is None or after is None or before.shape != after.shape:
        return None
    import torch

    den = float(torch.linalg.vector_norm(before))
    if not math.isfinite(den) or den == 0.0:
        return None
    v = float(torch.linalg.vector_norm(after - before)) / den
    return v if math.isfinite(v) else None


def live_fraction(acts: Any) -> Optional[float]:
    """The fraction of units (dim 1 of a (samples, units, ...) tensor) whose output is non-zero on
    at least one sample (and position). None for an empty layer."""
    if acts.ndim < 2 or acts.shape[1] == 0:
        return None
    nz = (acts != 0).transpose(0, 1).reshape(acts.shape[1], -1).any(dim=1)
    return float(nz.float().mean())


# --------------------------------------------------------------------------- preflight


def check_cca(cfg: Any, plan: Any) -> None:
    """ConfigError before a run starts if ``[probes.cca]`` names unknown layers
    (key probes.cca.layers) or has fewer samples than a layer has neurons for svcca/pwcca
    (key probes.cca.samples). ``plan``: the run's core.plan.RunPlan (its model is on the meta
    device: no memory, no compute)."""
    section = getattr(cfg.probes, "cca", None)
    if section is None or plan.model is None:
        return
    import torch

    from ..measure.activations import CaptureError, capture, resolve_layers

    model = plan.model
    try:
        names = resolve_layers(model, section.layers)
    except CaptureError as e:
        raise to_config_error(e, "probes.cca.layers") from None
    if section.method == "cka":
        return
    n = min(section.samples, plan.train_size)
    try:
        out = capture(model, torch.empty((2,) + tuple(plan.input_shape), device="meta"), names)
    except Exception:  # an exotic model that cannot run on meta: the names were checked, that's all
        return
    shapes = {k: tuple(v.shape[1:]) for k, v in out.items()}
    for k in names:
        s = shapes.get(k)
        if not s:
            continue
        neurons = s[0]
        spatial = int(np.prod(s[1:])) if len(s) > 1 else 1
        rows = n * spatial if section.conv == "flatten" else 2 * n if section.conv == "dft" and len(s) > 1 else n
        if rows - 1 < neurons:
            raise ConfigError(
                f"{section.method} of layer {k!r} ({neurons} neurons) needs more than {neurons} samples, "
                f'the probe set has {rows} rows ({n} samples); raise samples or use method = "cka"',
                key="probes.cca.samples",
            )


# --------------------------------------------------------------------------- the probe


class CcaProbe(Probe):
    name = "cca"

    @classmethod
    def check(cls, section: Any, cfg: Any, plan: Any) -> None:
        check_cca(cfg, plan)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.layers: list[str] = []
        self.snapshots: list[dict[str, Any]] = []  # {"step", "epoch", "file"}
        self.against_previous: list[list[Optional[float]]] = []  # per snapshot, per layer
        self.weight_change: list[list[Optional[float]]] = []  # per snapshot, per layer
        self.live_units: list[list[Optional[float]]] = []  # per snapshot, per layer
        self._w_prev: dict[str, Any] = {}  # layer -> its flattened parameters at the last snapshot
        self.seconds = 0.0
        self._x = None
        self._prev: Optional[dict[str, np.ndarray]] = None
        self._due: list[int] = []

    # ------------------------------------------------------------------ helpers
    def _setup(self, ctx: TrainContext) -> None:
        if self._x is not None:
            return
        import torch

        from ..measure.activations import CaptureError, probe_indices, resolve_layers

        data = ctx.data
        try:
            idx = probe_indices(data.n_train, self.cfg.samples, ctx.cfg.seed)
            self._x = data.x_train.index_select(0, torch.as_tensor(idx, device=data.x_train.device))
            if not self.layers:
                self.layers = resolve_layers(ctx.model, self.cfg.layers, example=self._x[:2])
        except CaptureError as e:
            raise to_config_error(e, {"samples": "probes.cca.samples", "layers": "probes.cca.layers"}) from None
        last = self.snapshots[-1]["step"] if self.snapshots else -1
        self._due = [s for s in snapshot_steps(self.cfg.every_epochs, ctx.steps_per_epoch, ctx.total_steps) if s > last]
        if self.snapshots and self._prev is None:
            self._prev = self._load(ctx.run_dir, self.snapshots[-1]["file"])

    def _capture(self, ctx: TrainContext) -> tuple[dict[str, np.ndarray], list[Optional[float]]]:
        """(float16 activations per layer, live-unit fraction per layer)."""
        from ..measure.activations import capture
        from ..measure.similarity import flatten_conv

        tf = (lambda t: flatten_conv(t, "mean")) if self.cfg.conv == "mean" else None
        acts = capture(ctx.model, self._x, self.layers, batch_size=512, transform=tf)
        live = [live_fraction(acts[k]) for k in self.layers]
        return {k: v.to("cpu").half().numpy() for k, v in acts.items()}, live

    def _weights(self, ctx: TrainContext) -> dict[str, Any]:
        import torch

        mods = dict(ctx.model.named_modules())
        out = {}
        for k in self.layers:
            ps = [p.detach().reshape(-1) for p in mods[k].parameters()]
            if ps:
                out[k] = torch.cat(ps).to(device="cpu", dtype=torch.float32, copy=True)
        return out

    def _save(self, run_dir: Path, name: str, acts: dict[str, np.ndarray], step: int, epoch: float) -> str:
        d = Path(run_dir) / _DIR
        d.mkdir(parents=True, exist_ok=True)
        rel = f"{_DIR}/{name}.npz"
        arrays = {f"a{i}": acts[k] for i, k in enumerate(self.layers)}
        meta = {"layers": np.array(self.layers), "step": np.array(step), "epoch": np.array(epoch)}
        replace_atomic(Path(run_dir) / rel, lambda tmp: save_npz(tmp, {**meta, **arrays}))
        return rel

    def _load(self, run_dir: Path, rel: str) -> dict[str, np.ndarray]:
        with np.load(Path(run_dir) / rel) as z:
            names = [str(s) for s in z["layers"]]
            return {k: z[f"a{i}"] for i, k in enumerate(names)}

    def _sim(self, a: np.ndarray, b: np.ndarray) -> Optional[float]:
        from ..measure.similarity import similarity

        # float64 products on the float16 snapshots (float32 products lose ~1e-5 on ReLU layers
        # whose means dwarf their spread; the matrices are small, so float64 costs nothing)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        try:  # non-finite activations (a diverged run) raise SimilarityError, a ValueError
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = similarity(a64, b64, self.cfg.method, conv=self.cfg.conv)
        except (ValueError, np.linalg.LinAlgError):
            return None
        return float(min(1.0, max(0.0, v))) if math.isfinite(v) else None

    def _snapshot(self, ctx: TrainContext) -> None:
        t0 = time.perf_counter()
        while self._due and self._due[0] <= ctx.step:
            self._due.pop(0)
        acts, live = self._capture(ctx)
        w = self._weights(ctx)
        change = [relative_change(self._w_prev.get(k), w.get(k)) for k in self.layers]
        rel = self._save(ctx.run_dir, _epoch_name(ctx.epoch), acts, ctx.step, ctx.epoch)
        if self._prev is not None and self.snapshots:
            # the probe's matrices are small (hundreds of samples x tens of neurons): a
            # multi-threaded BLAS pool only spins against the training loop's own threads there
            # (5x slower on a busy 2-core machine)
            with single_thread_blas():
                values = [self._sim(self._prev[k], acts[k]) for k in self.layers]
            ctx.emit(
                "cca",
                layers=self.layers,
                values=values,
                method=self.cfg.method,
                against="previous",
                epoch_a=self.snapshots[-1]["epoch"],
                epoch_b=ctx.epoch,
                weight_change=change,
                live_units=live,
            )
        else:
            values = [None] * len(self.layers)
        if not self.snapshots:
            change = [None] * len(self.layers)
        self.snapshots.append({"step": int(ctx.step), "epoch": float(ctx.epoch), "file": rel})
        self.against_previous.append(values)
        self.weight_change.append(change)
        self.live_units.append(live)
        self._w_prev = w
        self._prev = acts
        self.seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ hooks
    def on_start(self, ctx: TrainContext) -> None:
        self._setup(ctx)
        if not self.snapshots:
            self._snapshot(ctx)

    def after_step(self, ctx: TrainContext) -> None:
        if self._x is None:
            self._setup(ctx)
        if self._due and ctx.step >= self._due[0]:
            self._snapshot(ctx)

    def on_end(self, ctx: TrainContext) -> dict[str, Any]:
        if self._x is None:
            if not self.snapshots:
                return {}
            self._setup(ctx)
        completed = ctx.extra.get("state") == "completed"
        if completed and self.snapshots[-1]["step"] != ctx.step:
            self._snapshot(ctx)
        t0 = time.perf_counter()
        epochs = [s["epoch"] for s in self.snapshots]
        against_final: Optional[list[list[Optional[float]]]] = None
        if completed and len(self.snapshots) >= 2:
            final = self._prev
            cols = []
            with single_thread_blas():
                for s in self.snapshots[:-1]:
                    acts = self._load(ctx.run_dir, s["file"])
                    cols.append([self._sim(acts[k], final[k]) for k in self.layers])
                cols.append([self._sim(final[k], final[k]) for k in self.layers])
            against_final = [[c[i] for c in cols] for i in range(len(self.layers))]
        self.seconds += time.perf_counter() - t0
        n_l = range(len(self.layers))
        prev = [[row[i] for row in self.against_previous] for i in n_l]
        change = [[row[i] if i < len(row) else None for row in self.weight_change] for i in n_l]
        live = [[row[i] if i < len(row) else None for row in self.live_units] for i in n_l]
        doc = {
            "layers": self.layers,
            "epochs": epochs,
            "steps": [s["step"] for s in self.snapshots],
            "method": self.cfg.method,
            "conv": self.cfg.conv,
            "samples": int(self._x.shape[0]),
            "seconds": self.seconds,
            "against_final": against_final,
            "against_previous": prev,
            "weight_change": change,
            "live_units": live,
        }
        from ..events import sanitize

        write_json_atomic(Path(ctx.run_dir) / "cca.json", sanitize(doc))
        if against_final is None:
            return {}
        ctx.emit(
            "cca",
            layers=self.layers,
            values=[row[0] for row in against_final],
            method=self.cfg.method,
            against="final",
            epoch_a=epochs[0],
            epoch_b=epochs[-1],
            epochs=epochs,
            matrix=against_final,
        )
        return summary_fields(self.layers, epochs, against_final)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "snapshots": [dict(s) for s in self.snapshots],
            "against_previous": [list(v) for v in self.against_previous],
            "weight_change": [list(v) for v in self.weight_change],
            "live_units": [list(v) for v in self.live_units],
            "weights": {k: v.clone() for k, v in self._w_prev.items()},
            "seconds": float(self.seconds),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers = list(state.get("layers", []))
        self.snapshots = [dict(s) for s in state.get("snapshots", [])]
        self.against_previous = [list(v) for v in state.get("against_previous", [])]
        self.weight_change = [list(v) for v in state.get("weight_change", [])]
        self.live_units = [list(v) for v in state.get("live_units", [])]
        self._w_prev = dict(state.get("weights", {}))
        self.seconds = float(state.get("seconds", 0.0))
        self._prev = None
        self._x = None
