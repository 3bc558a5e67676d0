"""Layer similarity: CCA, SVCCA, PWCCA and linear CKA between two activation matrices.

Inputs ``x`` (n_samples, n_features_x) and ``y`` (n_samples, n_features_y): numpy arrays or torch
tensors on any device. heur takes (samples, features); google/svcca takes (neurons, datapoints).

How it is computed (one pipeline, ``_pair``, used by every function here): centre the columns,
form the three Gram products XᵀX, YᵀY, XᵀY once, in ``dtype`` (by default float32 where both inputs
are float32, numpy or torch, else float64), then do every further step on those small (features ×
features) matrices: in float64, except that float32 products get a float32 Cholesky factor and
float32 triangular solves (their rounding is of the order the float32 products already carry;
the Gram of the whitened cross product, whose eigenvalues are ρ², stays float64, which keeps ρ
near 0 exact to the products' accuracy). The big products are the whole cost; nothing of size
(n × n) is ever formed. Where the Gram dtype equals the input dtype, centring is done on the Grams
(XᵀX − n·μμᵀ) so that the data are read once and never copied (float64 data for float32
products: a plain cast, then the same); a column whose mean dwarfs its spread (where that
correction would lose digits) makes that side be recomputed from explicitly centred data. On
CPU the products go through one of three kernel paths, the fastest on the machine it runs on
(timed once per process and dtype at the first large call: ``path_timings``, ``chosen_path``):
scipy's OpenBLAS in the caller's thread, two single-threaded OpenBLAS workers (the two sides,
then the two halves of XᵀY, then the two column halves of the last whitening and of M Mᵀ, side
by side, leaving only the final eigenvalues to one thread; only where BLAS runs two threads), or
torch's CPU BLAS (MKL in the official wheels) on zero-copy views. The small factorisations go
through scipy, on one BLAS thread (two threads on a (512 × 512) Cholesky or eigendecomposition
wait on each other, 10-100x the time on a busy machine). CUDA tensors stay on their device and
only the small Grams come back to the host.

Return types: :func:`cca` returns a 1-D float64 numpy array (always numpy, whatever the input);
:func:`svcca`, :func:`pwcca`, :func:`linear_cka` return Python floats.

Definitions:

- CCA: canonical correlations of the mean-centred data = singular values of Qxᵀ Qy for orthonormal
  bases Qx, Qy of the centred columns; equivalently of Wxᵀ Cxy Wy for any whitening W with
  Wᵀ C W = I. heur whitens the correlation matrices (columns scaled to unit variance; CCA is
  invariant to that) by Cholesky, or, where a matrix is numerically rank deficient, by an
  eigendecomposition that keeps the eigenvalues above ``rtol``·λ_max (numerical rank).
- SVCCA (Raghu et al. 2017): for each side keep the top singular directions of the centred data
  whose squared singular values sum to at least ``keep`` of the total, run CCA between the kept
  projections, return the mean of ALL canonical correlations (google's ``mean`` drops those past
  98% of their sum; heur's does not).
- PWCCA (Morcos et al. 2018): Σ α_i ρ_i with α_i ∝ Σ_j |⟨h_i, z_j⟩| (normalised to sum to 1),
  h_i the i-th canonical variate (unit norm) and z_j the j-th centred neuron of the side with
  fewer neurons (x on a tie), as google/svcca's ``compute_pwcca`` intends: symmetric in x, y
  when the widths differ. Computed without the (n × k) variates: Z_cᵀ h_i = C a_i.
- Linear CKA (Kornblith et al. 2019): ‖Y_cᵀ X_c‖_F² / (‖X_cᵀ X_c‖_F ‖Y_cᵀ Y_c‖_F).

Robustness: constant neurons are dropped (CCA family); CCA needs samples to greatly exceed
neurons: fewer (centred) samples than the (non-constant) neurons of either side raises
:class:`SimilarityError` (a MeasurementError, so a ValueError) unless ``epsilon`` > 0 asks for a
ridge-regularised estimate (ε added to the diagonal of each correlation matrix). Below 5 samples
per neuron a :class:`FewSamplesWarning` is issued: the random baseline is large there (100 vs 100
neurons: mean CCA 0.64 at 200 samples, 0.27 at 1000), and with n ≤ neurons_x + neurons_y the spans
meet, so some correlations are 1 whatever the data.

Convolutional activations (N, C, H, W) (any ndim > 2, channels on axis 1): every function takes
``conv=``: "mean" (global average pool: (N, C), the default), "flatten" (every spatial position
a sample: (N·H·W, C)), or "dft" (Raghu et al.: 2-D DFT over H, W — sizes must match between x
and y — the measure computed at each frequency on the complex coefficients, real and imaginary
parts as samples after removing the complex mean, and averaged over all H·W frequencies; with
:func:`cca` the sorted spectra are averaged).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import scipy.linalg as sla
import torch

from .blas import blas_threads, single_thread_blas
from .errors import MeasurementError

__all__ = [
    "cca",
    "svcca",
    "pwcca",
    "linear_cka",
    "flatten_conv",
    "similarity",
    "METHODS",
    "CONV_MODES",
    "SimilarityError",
    "FewSamplesWarning",
    "MIN_SAMPLES_PER_NEURON",
]

MIN_SAMPLES_PER_NEURON = 5
CONV_MODES = ("mean", "flatten", "dft")


class SimilarityError(MeasurementError):
    """Inputs a similarity measure cannot be computed from (bad shapes, too few samples);
    ``arg``: "samples" (too few rows), "conv", "method", "dtype", "keep", or None."""


class FewSamplesWarning(UserWarning):
    """Fewer than MIN_SAMPLES_PER_NEURON samples per neuron: the random baseline is large."""


# --------------------------------------------------------------------------- inputs


def _np_dtype(dtype: Any) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float64)
    if isinstance(dtype, torch.dtype):
        dtype = {torch.float64: "float64", torch.float32: "float32"}.get(dtype, str(dtype))
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in ("float64", "float32"):
        raise SimilarityError(f"dtype: expected float64 or float32, got {dtype!r}", arg="dtype")
    return dt


def _torch_dtype(dt: np.dtype) -> torch.dtype:
    return torch.float64 if dt == np.float64 else torch.float32


def _host(a: Any) -> Any:
    """A CPU torch tensor as a numpy array (no copy where possible); others unchanged."""
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.device.type == "cpu":
            if a.dtype not in (torch.float32, torch.float64):
                a = a.to(torch.float64)
            return a.numpy()
        return a
    a = np.asarray(a)
    if a.dtype.kind not in "f" or a.dtype.itemsize < 4:
        a = a.astype(np.float64)
    return a


def flatten_conv(acts: Any, conv: str = "mean") -> Any:
    """(N, C, *spatial) activations → (samples, C). ``conv`` is "mean" (global average pool,
    N samples) or "flatten" (every spatial position a sample, N·prod(spatial) samples). 2-D inputs
    are returned unchanged. Works on numpy arrays and torch tensors (keeps the type)."""
    if conv not in ("mean", "flatten"):
        raise SimilarityError(f"conv: expected 'mean' or 'flatten', got {conv!r}", arg="conv")
    if acts.ndim <= 2:
        return acts
    c = acts.shape[1]
    if conv == "mean":
        axes = tuple(range(2, acts.ndim))
        return acts.mean(dim=axes) if isinstance(acts, torch.Tensor) else acts.mean(axis=axes)
    if isinstance(acts, torch.Tensor):
        return acts.movedim(1, -1).reshape(-1, c)
    return np.moveaxis(acts, 1, -1).reshape(-1, c)


def _dft_pairs(x: Any, y: Any):
    """Per-frequency real (2N, C) sample matrices of x and y, with weights summing to 1."""
    if x.ndim != 4 or y.ndim != 4 or x.shape[2:] != y.shape[2:]:
        raise SimilarityError(
            f"conv='dft' needs (N, C, H, W) inputs of equal spatial size, got {tuple(x.shape)} and {tuple(y.shape)}",
            arg="conv",
        )
    h, w = x.shape[2], x.shape[3]

    def spectrum(a):
        if isinstance(a, torch.Tensor):
            f = torch.fft.rfft2(a.to(torch.float64))
            f = f - f.mean(dim=0, keepdim=True)
            return f
        f = np.fft.rfft2(np.asarray(a, dtype=np.float64))
        return f - f.mean(axis=0, keepdims=True)

    fx, fy = spectrum(x), spectrum(y)
    wr = fx.shape[3]
    pairs = []
    for i in range(h):
        for j in range(wr):
            # columns j in 1..ceil(w/2)-1 stand for themselves and their conjugate mirror
            mirrored = 0 < j and (2 * j != w)
            weight = (2.0 if mirrored else 1.0) / (h * w)
            pairs.append((_stack_complex(fx[:, :, i, j]), _stack_complex(fy[:, :, i, j]), weight))
    return pairs


def _stack_complex(f: Any) -> Any:
    if isinstance(f, torch.Tensor):
        return torch.cat([f.real, f.imag], dim=0)
    return np.concatenate([f.real, f.imag], axis=0)


def _per_conv(fn: Callable, x: Any, y: Any, conv: str, reduce: Callable) -> Any:
    if conv not in CONV_MODES:
        raise SimilarityError(f"conv: expected one of {', '.join(CONV_MODES)}, got {conv!r}", arg="conv")
    if conv == "dft" and (x.ndim > 2 or y.ndim > 2):
        return reduce([(fn(a, b), w) for a, b, w in _dft_pairs(x, y)])
    return fn(flatten_conv(x, "mean" if conv == "dft" else conv), flatten_conv(y, "mean" if conv == "dft" else conv))


def _avg_scalar(items):
    return float(sum(v * w for v, w in items))


def _avg_spectrum(items):
    k = min(len(v) for v, _ in items)
    return np.sum([v[:k] * w for v, w in items], axis=0)


# --------------------------------------------------------------------------- Gram products


@dataclass
class _Side:
    """One side after its Gram: the centred XᵀX as float64 (full, symmetric), the column means,
    the rounding levels of the products' dtype (``eps``) and of the input's own dtype
    (``eps_in``), and the array the cross product reads: the input itself, or (``centred``) an
    explicitly centred copy in the products' dtype."""

    n: int
    c: np.ndarray
    mean: np.ndarray
    eps: float
    eps_in: float
    data: Any = None
    centred: bool = False


def _check_2d(x: Any, y: Any) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise SimilarityError(
            f"expected 2-D (samples, features) inputs, got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise SimilarityError(f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise SimilarityError(f"need at least 2 samples, got {x.shape[0]}", arg="samples")


def _side_torch(a: torch.Tensor, dt: np.dtype) -> _Side:
    """A tensor's side on its own device: means in float64, centred before the cast to the
    products' dtype; only the (features × features) Gram comes back to the host."""
    td = _torch_dtype(dt)
    a64 = a.to(torch.float64)
    m = a64.mean(0)
    ac = (a64 - m).to(td)
    c = (ac.T @ ac).to(torch.float64).cpu().numpy()
    return _Side(a.shape[0], c, m.cpu().numpy(), float(torch.finfo(td).eps), float(torch.finfo(a.dtype).eps), ac, True)


def _center_cast(a: np.ndarray, mean: np.ndarray, dt: np.dtype) -> np.ndarray:
    out = np.empty(a.shape, dtype=dt)
    np.subtract(a, mean, out=out, casting="same_kind" if dt.itemsize <= a.dtype.itemsize else "safe")
    return out


# a column whose mean² exceeds this times its variance is centred explicitly, not on the Gram
_MEAN_RATIO_MAX = {np.dtype(np.float64): 1e5, np.dtype(np.float32): 1e2}


def _column_mean(a: np.ndarray, path: str = "numpy") -> np.ndarray:
    """Column means of a (n × p) in float64. float64: a BLAS gemv (half the time of a.mean(0));
    float32 in C order: float32 sums over blocks of 32 rows (no wider rounding than 32 terms'),
    then float64 over the blocks: 3x faster than a.mean(0, dtype=float64), which casts every
    element."""
    n = a.shape[0]
    if a.dtype == np.float64:
        if path != "numpy":
            return (np.ones(n) @ a) / n
        fa, ta = _fview(a)
        return sla.blas.dgemv(1.0 / n, fa, np.ones(n), trans=0 if ta else 1)
    k = n // 32
    if not a.flags.c_contiguous or k == 0:
        return a.mean(axis=0, dtype=np.float64)
    s = a[: k * 32].reshape(k, 32, a.shape[1]).sum(axis=1).sum(axis=0, dtype=np.float64)
    if n > k * 32:
        s += a[k * 32 :].sum(axis=0, dtype=np.float64)
    return s / n


def _side_numpy(a: np.ndarray, dt: np.dtype, path: str = "numpy") -> _Side:
    """Where the products' dtype is the input's, the data are read once and never copied: the
    Gram is centred afterwards (XᵀX − n·μμᵀ), unless a column's mean dwarfs its spread (where
    that loses digits); then an explicitly centred copy is made. float64 data for float32
    products are rounded by a plain cast (4x faster than centring into float32) and go the same
    way, with the rounded data's mean; the explicit centring, where needed, starts from the
    float64 data. Float32 data for float64 products are centred into a float64 copy.
    ``path``: the kernel path of the products (:func:`_gram`)."""
    n = a.shape[0]
    eps, eps_in = float(np.finfo(dt).eps), float(np.finfo(a.dtype).eps)
    src = a.astype(dt) if a.dtype.itemsize > dt.itemsize else a
    m = _column_mean(src, path)
    if src.dtype == dt:
        c = _rank1_update(_gram(src, path=path), -n, m, m)
        if _centring_ok(c, m, n, dt):
            return _Side(n, c, m, eps, eps_in, src, False)
        if src is not a:
            m = _column_mean(a, path)
    ac = _center_cast(a, m, dt)
    return _Side(n, _gram(ac, path=path), m, eps, eps_in, ac, True)


def _torch_view(a: np.ndarray) -> torch.Tensor:
    if any(st < 0 for st in a.strides) or not a.dtype.isnative:  # torch cannot view these
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    with warnings.catch_warnings():  # a read-only array (np.load's mmap): torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def _gram(a: np.ndarray, b: Optional[np.ndarray] = None, path: str = "numpy") -> np.ndarray:
    """aᵀa (symmetric) as a C-ordered float64 array, or aᵀb (in the products' dtype, any order),
    by the kernel path ``path`` (see :func:`_path`):

    - "numpy": scipy's BLAS (syrk for aᵀa: half the flops), the library that does the small
      factorisations afterwards: numpy and scipy each bundle their own OpenBLAS, and a
      two-threaded numpy product followed by two-threaded scipy solves makes each pool wait on
      the other's spinning threads (cca 2.6x slower end to end on 2 cores);
    - "workers": numpy's matmul, which releases the GIL so that the two sides run side by side
      on two single-threaded workers;
    - "torch": torch's CPU BLAS (MKL in the official wheels) on zero-copy views, on torch's
      intra-op threads.
    """
    if path == "torch":
        ta = _torch_view(a)
        if b is not None:
            return (ta.T @ _torch_view(b)).numpy()
        return (ta.T @ ta).numpy().astype(np.float64, copy=False)
    if path == "workers":
        if b is not None:
            return a.T @ b
        return (a.T @ a).astype(np.float64, copy=False)
    blas = sla.blas
    if a.dtype == np.float32:
        syrk, gemm = blas.ssyrk, blas.sgemm
    else:
        syrk, gemm = blas.dsyrk, blas.dgemm
    fa, ta = _fview(a)
    if b is None:
        # ta: fa = aᵀ (p × n) and fa·faᵀ = aᵀa (trans=0); else fa = a and faᵀ·fa (trans=1)
        c = syrk(1.0, fa, trans=0 if ta else 1, lower=1).T  # C-ordered, upper triangle filled
        c = c.astype(np.float64, copy=False)
        il = np.tril_indices(c.shape[0], -1)
        c[il] = c.T[il]
        return c
    fb, tb = _fview(b)
    return gemm(1.0, fa, fb, trans_a=0 if ta else 1, trans_b=1 if tb else 0)  # aᵀb, Fortran-ordered


def _rank1_update(g: np.ndarray, alpha: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """g += alpha·u vᵀ in place (BLAS ger on the Fortran view of a C-ordered g)."""
    if g.flags.c_contiguous:
        sla.blas.dger(float(alpha), v, u, a=g.T, overwrite_a=1)
        return g
    return g + alpha * np.outer(u, v)


def _centring_ok(c: np.ndarray, m: np.ndarray, n: int, dt: np.dtype) -> bool:
    """Whether XᵀX − n·μμᵀ kept its digits: no column's mean² dwarfs its variance."""
    var = np.maximum(np.diag(c) / n, 0.0)
    return not bool(np.any(m * m > _MEAN_RATIO_MAX[dt] * var))


def _cross_block(sx: _Side, sy: _Side, rows: slice, out: np.ndarray, path: str = "numpy") -> np.ndarray:
    """Rows ``rows`` (x's neurons) of the centred XᵀY, written into ``out`` (a C-ordered float64
    view of the full product's buffer) and returned. A product with one explicitly centred side
    needs no correction (its column sums are zero). ``path``: as in :func:`_gram`."""
    a, b = sx.data[:, rows], sy.data
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        out[...] = (a.T @ b).to(torch.float64).cpu().numpy()
        return out
    if path == "workers" and a.dtype == np.float64 and b.dtype == np.float64:
        np.matmul(a.T, b, out=out)
    else:
        out[...] = _gram(a, b, path)
    if not (sx.centred or sy.centred):
        _rank1_update(out, -sx.n, sx.mean[rows], sy.mean)
    return out


# The kernel path of the Gram products of numpy (and CPU tensor) inputs, chosen on the machine it
# runs on. Which BLAS is fastest depends on the CPU, the dtype and the load: on a 2-core AMD EPYC
# two single-threaded OpenBLAS workers (one per side, then one per half of XᵀY, each side's
# factorisation overlapping the other's product) beat one two-threaded call per product, whose
# symmetric rank-k update scales poorly, while torch's MKL can win in float32, and the issue's
# Intel Xeon ranked them otherwise. So the first large call per process and dtype times the
# products (linear_cka: the rest is the same on every path) of a (4096 × 512) pair by each path,
# and keeps the fastest (``path_timings()`` shows the figures): "numpy" (scipy's OpenBLAS in the
# caller's thread), "workers" (where every BLAS library runs exactly two threads) and "torch"
# (torch's CPU BLAS). A shorter pair misleads: at 2048 × 256 or 2048 × 512 scipy's two threads
# tied with or beat the workers, which take 0.65-0.8x its time from 4096 samples on. Products
# smaller than a third of the calibration's own take the workers where BLAS runs two threads,
# else the caller's thread, as do small ones. ``_PATH`` forces a path (tests, benchmarks).
PATHS = ("numpy", "workers", "torch")
_PATH: Optional[str] = None
_PATH_MIN_FLOPS = 5e7
_CALIBRATE_MIN_FLOPS = 4e9  # under a third of the calibration's products for one path (4 runs on 4096 x 512)
_CALIBRATION: dict[tuple, dict[str, float]] = {}
_CALIBRATION_SHAPE = (4096, 512)
_CALIBRATING = threading.local()
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


def _candidates() -> list[str]:
    out = ["numpy"]
    threads = blas_threads()
    if threads and all(t == 2 for t in threads):
        out.append("workers")
    out.append("torch")
    return out


def _calibration_key(dt: np.dtype) -> tuple:
    return (dt.name, tuple(blas_threads()), torch.get_num_threads())


def path_timings(dtype: Any = None) -> dict[str, float]:
    """Seconds of the calibration cca by each kernel path on this machine (measured at the first
    large call, or now), for ``dtype`` (float64 by default); the fastest is the one used."""
    dt = _np_dtype(dtype)
    key = _calibration_key(dt)
    if key not in _CALIBRATION:
        cands = _candidates()
        times: dict[str, list[float]] = {k: [] for k in cands}
        failed: set[str] = set()
        if len(cands) > 1:
            r = np.random.default_rng(0)
            n, p = _CALIBRATION_SHAPE
            a = r.standard_normal((n, p)).astype(dt)
            # y = x·A/√p + noise: well conditioned, so that the products and the Cholesky route are
            # timed (an unscaled A makes y's correlation matrix near singular, and the eigh
            # fallback, the same on every path, swamps the products)
            mix = r.standard_normal((p, p)) / np.sqrt(p)
            b = (a @ mix.astype(dt) + r.standard_normal((n, p)).astype(dt)).astype(dt)
            _CALIBRATING.path = None
            try:
                # path by path, two untimed runs then two timed ones: the untimed ones warm the
                # path up (thread pools, first touches) and wait out the previous path's BLAS
                # threads, which spin for a while after a call (the workers, timed straight after a
                # two-threaded call, ran 1.5x their time, and the calibration picked the slower
                # path); a path whose warm-up run takes over 3x the best time so far stops there.
                # The products alone (linear_cka): the rest is the same on every path
                for k in cands:
                    last = 0.0
                    for timed in (False, False, True, True):
                        best = min((min(v) for v in times.values() if v), default=None)
                        if not times[k] and best is not None and last > 3 * best:
                            times[k].append(last)  # a warm-up run took over 3x the best path's time
                            break
                        _CALIBRATING.path = k
                        t = time.perf_counter()
                        try:
                            linear_cka(a, b, dtype=dt)
                        except Exception:  # a library that cannot run here is not a candidate
                            failed.add(k)
                            break
                        last = time.perf_counter() - t
                        if timed:
                            times[k].append(last)
            finally:
                _CALIBRATING.path = None
        for k in failed:
            times.pop(k, None)
        if not times:
            times = {"numpy": []}
        _CALIBRATION[key] = {k: (min(v) if v else 0.0) for k, v in times.items()}
    return dict(_CALIBRATION[key])


def _path(x: Any, y: Any, dt: np.dtype) -> str:
    """The kernel path for these inputs (see above): calibrated for products large enough to pay
    for it; below that the two workers where BLAS runs two threads, else the caller's thread."""
    if isinstance(x, torch.Tensor):  # products on the tensors' device
        return "tensor"
    forced = getattr(_CALIBRATING, "path", None) or _PATH
    if forced is not None:
        return forced
    n, px, py = x.shape[0], x.shape[1], y.shape[1]
    flops = n * (px * px + py * py + px * py)
    if flops < _PATH_MIN_FLOPS:
        return "numpy"
    if flops < _CALIBRATE_MIN_FLOPS:
        threads = blas_threads()
        return "workers" if threads and all(t == 2 for t in threads) else "numpy"
    t = path_timings(dt)
    return min(t, key=t.get)


def chosen_path(dtype: Any = None) -> str:
    """The kernel path a large cca in ``dtype`` takes on this machine (calibrating if needed)."""
    if _PATH is not None:
        return _PATH
    t = path_timings(dtype)
    return min(t, key=t.get)


@contextlib.contextmanager
def _runner(path: str):
    """A ``run(fn, items) -> [fn(item) ...]``: in this thread, or ("workers") on two workers whose
    BLAS runs single-threaded (one caller at a time; all items finish before an error is raised).
    """
    if path != "workers":
        yield lambda fn, items: [fn(i) for i in items]
        return
    global _POOL
    with _POOL_LOCK, single_thread_blas():
        if _POOL is None:
            _POOL = ThreadPoolExecutor(2, thread_name_prefix="heur-gram")

        def run(fn, items):
            futures = [_POOL.submit(fn, i) for i in items]
            wait(futures)
            return [f.result() for f in futures]

        yield run


def _small() -> Any:
    """The context of the small (features × features) factorisations: one BLAS thread. Two
    OpenBLAS threads on a (512 × 512) Cholesky or eigendecomposition wait on each other and on
    the products' threads (on a busy 2-core machine 10-100x the single-threaded time)."""
    return single_thread_blas()


def _inputs_dtype(x: Any, y: Any, dtype: Any) -> np.dtype:
    """The products' dtype: ``dtype``, else float32 where both inputs are float32 (numpy or
    torch), else float64."""
    if dtype is not None:
        return _np_dtype(dtype)
    f32 = all(
        (a.dtype == torch.float32) if isinstance(a, torch.Tensor) else (np.asarray(a).dtype == np.float32)
        for a in (x, y)
    )
    return np.dtype(np.float32 if f32 else np.float64)


def _pair(
    x: Any, y: Any, dtype: Any, side_fn: Callable, cross_fn: Callable, check: Callable, tail: Optional[Callable] = None
) -> tuple[Any, Any, Any, np.ndarray]:
    """The one pipeline every measure runs: each side's centred Gram, then ``side_fn(side)`` (on
    the side's worker, as soon as its Gram is ready), then ``check(sx, sy, rx, ry)`` (before the
    cross product is paid for), then ``cross_fn(rows, block, rx, ry)`` on row blocks of the
    centred XᵀY (rows: a slice of x's neurons; one block unless on workers; each block a view of
    one (px × py) buffer, which cross_fn may overwrite).
    Returns (rx, ry, [cross_fn results in row order], the buffer) with rx = side_fn(sx); with
    ``tail``, ``tail(rx, ry, parts, buffer, run, split)`` in place of the parts, run where the
    products ran (``run(fn, items)``: on the workers, if any; ``split(k)``: k columns as the
    slices to hand to ``run``, two on the workers, else one)."""
    dt = _inputs_dtype(x, y, dtype)
    x, y = _host(x), _host(y)
    _check_2d(x, y)
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        dev = x.device if isinstance(x, torch.Tensor) else y.device
        x, y = torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev)
    path = _path(x, y, dt)
    workers = path == "workers"

    def side(a):
        s = _side_torch(a, dt) if isinstance(a, torch.Tensor) else _side_numpy(a, dt, path)
        # a NaN or inf anywhere in a column reaches that column's diagonal entry
        if not np.isfinite(np.diag(s.c)).all():
            raise SimilarityError("activations contain NaN or inf (a diverged model?)")
        with _small():
            return s, side_fn(s)

    px = x.shape[1]
    full = np.empty((px, y.shape[1]))
    with _runner(path) as run:
        (sx, rx), (sy, ry) = run(side, [x, y])
        check(sx, sy, rx, ry)
        blocks = [slice(0, px // 2), slice(px // 2, px)] if workers and px > 1 else [slice(0, px)]

        def cross(rows):
            block = _cross_block(sx, sy, rows, full[rows], path)
            with _small():
                return cross_fn(rows, block, rx, ry)

        parts = run(cross, blocks)
        if tail is not None:

            def split(k: int) -> list:
                return [slice(0, k // 2), slice(k // 2, k)] if workers and k > 1 else [slice(0, k)]

            parts = tail(rx, ry, parts, full, run, split)
    return rx, ry, parts, full


# --------------------------------------------------------------------------- whitening


def _constant(d2: np.ndarray, n: int, mean: np.ndarray, eps: float) -> np.ndarray:
    """Mask of the constant neurons, from the diagonal of the centred Gram: no spread, or spread
    at the rounding level of the mean (the Gram products are accurate relative to each column's
    own scale, so small neurons beside large ones stay)."""
    std = np.sqrt(np.maximum(d2, 0.0) / n)
    return (d2 <= np.finfo(np.float64).tiny) | (std <= 64 * eps * np.abs(mean))


def _varying(s: _Side) -> int:
    """How many of a side's neurons are not constant."""
    return int((~_constant(np.diag(s.c), s.n, s.mean, s.eps_in)).sum())


class _Whitener:
    """A whitening of one side's correlation matrix R (constant neurons dropped; R + εI with a
    ridge ε, while ``r`` keeps the data's own R).

    ``whiten(B)`` = Wᵀ B for B indexed by the kept neurons; ``colour(U)`` = R W U; ``rank``.
    Scales the side's Gram in place (nobody reads it afterwards).
    """

    def __init__(self, s: _Side, rtol: Optional[float], epsilon: float):
        c = s.c
        d2 = np.diag(c).copy()
        const = _constant(d2, s.n, s.mean, s.eps_in)
        self.all = not const.any()
        self.keep = np.flatnonzero(~const)
        d = np.sqrt(d2[self.keep])
        self.d = d
        r = c if self.all else c[np.ix_(self.keep, self.keep)]
        r /= d
        r /= d[:, None]
        p = r.shape[0]
        self.r = r  # the data's own correlation matrix
        if epsilon > 0:
            r = r + epsilon * np.eye(p)  # the ridged one, factorised below
        rtol = (max(p, 1) * s.eps) if rtol is None else rtol
        # float32 products: the Cholesky factor and the triangular solves in float32 too
        self.f32 = s.eps >= float(np.finfo(np.float32).eps)
        self.chol = None
        self.vecs = None
        if p == 0:
            self.rank = 0
            return
        # r symmetric: its F-ordered view; the strict upper triangle of the factor is left as it
        # was (trsm reads the lower one; colour() masks it). In the products' precision: a
        # float32 Cholesky's backward error (a perturbation of R of order eps32) is that of the
        # float32 products themselves, at half the time of float64's
        if self.f32:
            lfac, info = sla.lapack.spotrf(r.astype(np.float32).T, lower=1, clean=0, overwrite_a=1)
        else:
            lfac, info = sla.lapack.dpotrf(r.T, lower=1, clean=0)
        if info == 0:
            # reciprocal 1-norm condition of R from its factor; cond_2 ≤ p·cond_1, so accepting
            # rcond_1 > rtol keeps λ_min/λ_max above rtol/p (the eigh path's cut is rtol)
            pocon = sla.lapack.spocon if self.f32 else sla.lapack.dpocon
            rc, _ = pocon(lfac, float(np.abs(r).sum(axis=0).max()), uplo="L")
            if rc > rtol:
                self.chol = lfac
                self.rank = p
                return
        lam, v = sla.eigh(r, check_finite=False)
        ok = lam > rtol * lam[-1]
        self.lam = lam[ok][::-1]
        self.vecs = v[:, ok][:, ::-1]
        self.rank = int(ok.sum())

    def whiten(self, b: np.ndarray) -> np.ndarray:
        """Wᵀ B where B has one row per kept neuron (already divided by the neuron scales).
        B may be overwritten."""
        if self.chol is not None:
            # BLAS trsm straight on b's memory (LAPACK's trtrs via solve_triangular copies and
            # checks, at twice the cost); b is overwritten. A float32 factor solves in float32
            # (the result is float32 then)
            dt = self.chol.dtype
            trsm = sla.blas.strsm if dt == np.float32 else sla.blas.dtrsm
            if b.flags.f_contiguous or b.dtype != dt and not b.flags.c_contiguous:
                return trsm(1.0, self.chol, np.asarray(b, dtype=dt, order="F"), lower=1, overwrite_b=1)
            # C order: solve on the transpose, X Lᵀ = bᵀ, i.e. X = (L⁻¹ b)ᵀ
            bt = np.ascontiguousarray(b, dtype=dt).T
            return trsm(1.0, self.chol, bt, side=1, lower=1, trans_a=1, overwrite_b=1).T
        return (self.vecs.T @ b) / np.sqrt(self.lam)[:, None]

    def colour(self, u: np.ndarray) -> np.ndarray:
        """R W U."""
        if self.chol is not None:
            return np.tril(self.chol).astype(np.float64, copy=False) @ u
        return self.vecs @ (np.sqrt(self.lam)[:, None] * u)

    def solve(self, u: np.ndarray) -> np.ndarray:
        """W U (directions in the standardised neuron coordinates)."""
        if self.chol is not None:
            chol = self.chol.astype(np.float64, copy=False)
            return sla.solve_triangular(chol, u, lower=True, trans="T", check_finite=False)
        return self.vecs @ (u / np.sqrt(self.lam)[:, None])


def _whiten_rows(rows: slice, c: np.ndarray, wx: _Whitener, wy: _Whitener) -> np.ndarray:
    """(Rxy Wy) for x's kept neurons in ``rows``, shape (kept rows × rank_y), from the same rows
    of the centred XᵀY, with Rxy the correlation matrix. Overwrites c, and is c itself when no
    neuron was dropped."""
    at = np.flatnonzero((wx.keep >= rows.start) & (wx.keep < rows.stop))  # positions in keep
    if not (wx.all and wy.all):
        c = c[np.ix_(wx.keep[at] - rows.start, wy.keep)]
    c /= wy.d
    c /= wx.d[at, None]
    return wy.whiten(c.T).T


def _whitened(
    x: Any, y: Any, dtype: Any, rtol: Optional[float], epsilon: float, gram: bool = False, swapped: bool = False
) -> tuple[np.ndarray, _Whitener, _Whitener, bool]:
    """M = Wxᵀ Rxy Wy (rank_x × rank_y), whose singular values are the canonical correlations,
    and both sides' whiteners: the pipeline cca and pwcca share. With ``gram`` (values only),
    M Mᵀ in float64 in place of M where rank_x ≤ rank_y and rank_x > 64 (:func:`_rhos_only`'s
    eigenvalue route); the last item says which was returned. ``swapped``: the caller swapped
    its x and y (errors name them in the caller's order).

    The last whitening (Wxᵀ on every column of Rxy Wy) and M Mᵀ = Σ M_j M_jᵀ run on column blocks
    M_j, one per worker where the products ran on two, so that only the final eigenvalue problem
    is left to one thread."""

    def tail(wx, wy, parts, full, run, split):
        # the row blocks of Rxy Wy, already in place in ``full`` when no neuron was dropped
        in_place = wx.all and wy.all and all(np.may_share_memory(p, full) for p in parts)
        t = full if in_place else parts[0] if len(parts) == 1 else np.vstack(parts)
        as_gram = gram and 64 < wx.rank <= t.shape[1]

        def block(cols):
            with _small():
                m = wx.whiten(t[:, cols])
                if not as_gram:
                    return m
                m = m.astype(np.float64)
                return m @ m.T  # numpy's syrk, which releases the GIL (scipy's holds it)

        out = run(block, split(t.shape[1]))
        if as_gram:
            return sum(out[1:], out[0]), True
        return (out[0] if len(out) == 1 else np.hstack(out)), False

    wx, wy, (m, is_gram), _ = _pair(
        x,
        y,
        dtype,
        lambda s: _Whitener(s, rtol, epsilon),
        _whiten_rows,
        lambda sx, sy, wx, wy: _check_samples(
            sx.n, *(len(w.keep) for w in ((wy, wx) if swapped else (wx, wy))), epsilon
        ),
        tail,
    )
    return m, wx, wy, is_gram


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the nearest frame outside this module, for a warning issued by the
    function that calls this one."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_code.co_filename == __file__:
        f, level = f.f_back, level + 1
    return level


def _check_samples(n: int, px: int, py: int, epsilon: float) -> None:
    """For px and py varying neurons: raise on none, or (without a ridge) on too few samples;
    warn below MIN_SAMPLES_PER_NEURON per neuron (pointing at the first caller outside this
    module, whichever measure and path led here)."""
    if px == 0 or py == 0:
        raise SimilarityError(f"no varying neurons (x: {px}, y: {py} after dropping constant ones)")
    if epsilon <= 0 and n - 1 < max(px, py):
        raise SimilarityError(
            f"{n} samples for {px} and {py} neurons: CCA needs samples to greatly exceed neurons "
            f"(at least {MIN_SAMPLES_PER_NEURON}-10 per neuron); use more samples, fewer neurons "
            "(e.g. conv='mean'), or epsilon= for a regularised estimate",
            arg="samples",
        )
    if n < MIN_SAMPLES_PER_NEURON * max(px, py):
        warnings.warn(
            f"CCA with {n} samples for {max(px, py)} neurons (< {MIN_SAMPLES_PER_NEURON} per neuron): "
            "the random baseline is large (with n <= neurons_x + neurons_y some correlations are 1 "
            "whatever the data); compare against it",
            FewSamplesWarning,
            stacklevel=_outside_stacklevel(),
        )


def _rhos_only(m: np.ndarray) -> np.ndarray:
    """Singular values of M, descending, via the eigenvalues of the smaller of MᵀM, MMᵀ (formed
    in float64 whatever M's dtype: a float32 Gram would round ρ² by eps32, i.e. ρ near 0 by
    √eps32 ≈ 3e-4)."""
    m = np.asarray(m, dtype=np.float64)
    k = min(m.shape)
    if k <= 64:
        s = sla.svd(m, compute_uv=False, check_finite=False)
        return np.clip(s[:k], 0.0, 1.0)
    # the smaller Gram of M, lower triangle only (all eigh reads), through scipy's BLAS
    fm, tm = _fview(m)
    return _rhos_of_gram(sla.blas.dsyrk(1.0, fm, trans=int((m.shape[1] <= m.shape[0]) != tm), lower=1))


def _rhos_of_gram(g: np.ndarray) -> np.ndarray:
    """Singular values of M, descending, from the eigenvalues of its Gram g = M Mᵀ (or MᵀM; the
    lower triangle is read)."""
    lam = sla.eigh(g, eigvals_only=True, lower=True, driver="evr", check_finite=False)
    return np.clip(np.sqrt(np.clip(lam[::-1], 0.0, None)), 0.0, 1.0)


def _fview(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """A Fortran-ordered view of a (n × p) and whether it is transposed: (aᵀ, True) for C order."""
    if a.flags.f_contiguous:
        return a, False
    return np.ascontiguousarray(a).T, True


# --------------------------------------------------------------------------- public API


def cca(
    x: Any, y: Any, *, dtype: Any = None, epsilon: float = 0.0, rtol: Optional[float] = None, conv: str = "mean"
) -> np.ndarray:
    """Canonical correlations between x and y, descending, as a 1-D float64 numpy array of
    length min(rank_x, rank_y).

    ``dtype``: precision of the Gram products (torch/numpy float64 or float32; default float32
    where both inputs are float32, else float64; the Cholesky factors and triangular solves
    follow it, every other later step is float64);
    ``epsilon``: ridge on the correlation matrices (allows few samples); ``rtol``: relative
    eigenvalue threshold of the numerical rank (default n_features · eps(dtype));
    ``conv``: how (N, C, H, W) inputs are compared (see the module doc).
    """

    def one(a, b):
        swapped = b.shape[1] < a.shape[1]  # the same coefficients; the narrower side's M Mᵀ is the smaller
        if swapped:
            a, b = b, a
        m, _, _, is_gram = _whitened(a, b, dtype, rtol, epsilon, gram=True, swapped=swapped)
        with _small():
            return _rhos_of_gram(m) if is_gram else _rhos_only(m)

    return _per_conv(one, x, y, conv, _avg_spectrum)


def svcca(
    x: Any,
    y: Any,
    keep: float = 0.99,
    *,
    dtype: Any = None,
    epsilon: float = 0.0,
    rtol: Optional[float] = None,
    conv: str = "mean",
) -> float:
    """SVCCA (Raghu et al. 2017): mean of all canonical correlations between the top singular
    directions of each side's centred data that explain at least ``keep`` of the variance (sum of
    squared singular values). The samples check applies to the neurons themselves: the SVD step
    cannot make up for too few samples."""
    if not 0 < keep <= 1:
        raise SimilarityError(f"keep: expected a fraction in (0, 1], got {keep}", arg="keep")

    def side(s: _Side):  # (varying neurons, the kept directions, their eigenvalues)
        return _varying(s), *_top_directions(s.c, keep, s.eps, rtol)

    def check(sx, sy, rx, ry):
        if epsilon <= 0:  # the SVD step cannot make up for too few samples: count the neurons
            _check_samples(sx.n, rx[0], ry[0], 0.0)
        else:
            _check_samples(sx.n, len(rx[2]), len(ry[2]), epsilon)

    def project(rows, c, rx, ry):  # the rows' share of Vxᵀ Cxy Vy
        return rx[1][rows].T @ (c @ ry[1])

    def one(a, b):
        (_, _, lx), (_, _, ly), parts, _ = _pair(a, b, dtype, side, project, check)
        with _small():
            return _svcca_tail(a.shape[0], lx, ly, parts, rtol, epsilon)

    return _per_conv(one, x, y, conv, _avg_scalar)


def _svcca_tail(n: int, lx: np.ndarray, ly: np.ndarray, parts: list, rtol: Optional[float], epsilon: float) -> float:
    """SVCCA's CCA between the kept directions, from their eigenvalues and the projected XᵀY."""
    eps64 = float(np.finfo(np.float64).eps)
    wx, wy = (_Whitener(_Side(n, np.diag(lam), np.zeros(len(lam)), eps64, eps64), rtol, epsilon) for lam in (lx, ly))
    cxy = np.ascontiguousarray(sum(parts[1:], parts[0]))
    return float(_rhos_only(wx.whiten(_whiten_rows(slice(0, len(lx)), cxy, wx, wy))).mean())


def _top_directions(c: np.ndarray, keep: float, eps: float, rtol: Optional[float]):
    lam, v = sla.eigh(c, check_finite=False, driver="evd")  # divide and conquer: all pairs, fastest
    lam, v = lam[::-1], v[:, ::-1]
    tol = (c.shape[0] * eps if rtol is None else rtol) * max(lam[0], 0.0)
    lam = np.where(lam > tol, lam, 0.0)
    total = lam.sum()
    if total <= 0:
        raise SimilarityError("no varying neurons")
    k = int(np.searchsorted(np.cumsum(lam) / total, keep - 1e-12) + 1)
    k = min(k, int((lam > 0).sum()))
    return np.ascontiguousarray(v[:, :k]), lam[:k]


def pwcca(
    x: Any, y: Any, *, dtype: Any = None, epsilon: float = 0.0, rtol: Optional[float] = None, conv: str = "mean"
) -> float:
    """PWCCA (Morcos et al. 2018): Σ α_i ρ_i, α_i ∝ Σ_j |⟨h_i, z_j⟩| with h_i the unit-norm
    canonical variates and z_j the centred neurons of the side with fewer (non-constant) neurons,
    α normalised to sum to one; on equal counts x's side. That is google/svcca's
    ``compute_pwcca`` (its ``<=`` on the kept neurons; its else branch indexes acts1 with y's mask,
    a bug there, so heur follows the definition), and so ``pwcca(x, y) == pwcca(y, x)`` whenever
    the widths differ. There are min(rank_x, rank_y) variates, which span the narrower side.

    Centring: heur centres every neuron before anything else (CCA is a statement about the
    centred data), so the variates h_i and the neurons z_j are both centred and orthonormal
    variates need no QR. The reference instead adds the neuron means back to its variates and
    weighs with the raw (uncentred) activations, so its weights change when a constant is added
    to a neuron (a ReLU unit's positive mean); on centred inputs the two agree."""

    def one(a, b):
        m, wx, wy, _ = _whitened(a, b, dtype, rtol, epsilon)
        with _small():
            return _pwcca_tail(m, wx, wy, epsilon)

    return _per_conv(one, x, y, conv, _avg_scalar)


def _pwcca_tail(m: np.ndarray, wx: "_Whitener", wy: "_Whitener", epsilon: float) -> float:
    """PWCCA's weighted mean from M = Wxᵀ Rxy Wy and both whiteners."""
    u, s, vt = sla.svd(np.asarray(m, dtype=np.float64), full_matrices=False, check_finite=False)
    k = min(m.shape)
    rho = np.clip(s[:k], 0.0, 1.0)
    # the narrower side's directions: x's left, y's right singular vectors of M
    w, dirs = (wy, vt[:k].T) if len(wy.keep) < len(wx.keep) else (wx, u[:, :k])
    # Z_cᵀ h_i = C a_i = D R W d_i (D: neuron scales, R: correlation matrix); with a
    # ridge W whitens R + εI, and the projections use the data's own R
    rw = w.colour(dirs) if epsilon <= 0 else w.r @ w.solve(dirs)
    proj = w.d[:, None] * rw
    alpha = np.abs(proj).sum(axis=0)
    return float(alpha @ rho / alpha.sum())


def linear_cka(x: Any, y: Any, *, dtype: Any = None, conv: str = "mean") -> float:
    """Linear CKA (Kornblith et al. 2019): ‖Y_cᵀX_c‖_F² / (‖X_cᵀX_c‖_F · ‖Y_cᵀY_c‖_F)."""

    def one(a, b):
        def check(sx, sy, nx, ny):
            if nx * ny <= 0:
                raise SimilarityError("linear CKA of a constant representation is undefined")

        nx, ny, parts, _ = _pair(
            a, b, dtype, lambda s: float(np.linalg.norm(s.c)), lambda rows, c, nx, ny: float(np.sum(c * c)), check
        )
        return float(sum(parts) / (nx * ny))

    return _per_conv(one, x, y, conv, _avg_scalar)


METHODS: dict[str, Callable[..., float]] = {"svcca": svcca, "pwcca": pwcca, "cka": linear_cka}


def similarity(x: Any, y: Any, method: str = "svcca", *, conv: str = "mean", **kw: Any) -> float:
    """One scalar similarity by the name used in presets (``probes.cca.method``):
    "svcca", "pwcca" or "cka" (linear CKA); extra keywords go to that function."""
    fn = METHODS.get(method)
    if fn is None:
        raise SimilarityError(f"expected one of {', '.join(METHODS)}, got {method!r}", arg="method")
    return fn(x, y, conv=conv, **kw)
