"""Min/max bucketing: shrink a series to about two points per plot column, keeping its spikes.

Stride sampling (every k-th point) drops a one-step loss spike; taking the minimum and the
maximum of every bucket keeps the envelope of the curve, so a catapult stays visible however
long the run is. ``NaN`` (a ``null`` in the event stream) is ignored inside a bucket.
"""

from __future__ import annotations

import numpy as np


def _finite_in_range(x: np.ndarray, y: np.ndarray, lo: float | None, hi: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The points with finite x and y inside ``[lo, hi]`` (None: unbounded), as float arrays."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y) & np.isfinite(x)
    if lo is not None:
        ok &= x >= lo
    if hi is not None:
        ok &= x <= hi
    return (x, y) if ok.all() else (x[ok], y[ok])


def _buckets(x: np.ndarray, buckets: int, x0: float, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Each point's bucket (equal slices of ``[x0, x0 + span]``) and, ``x`` being sorted, the
    index where each non-empty bucket starts."""
    b = np.minimum(((x - x0) * (buckets / span)).astype(np.int64), buckets - 1)
    return b, np.flatnonzero(np.r_[True, b[1:] != b[:-1]])


def minmax(
    x: np.ndarray, y: np.ndarray, buckets: int, lo: float | None = None, hi: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decimate ``(x, y)`` (``x`` non-decreasing) to at most ``2 * buckets`` points.

    Buckets are equal slices of ``[lo, hi]`` (default: the data's x range), so several series
    decimated with the same range line up column by column. Each non-empty bucket yields its
    minimum and its maximum, in the order they occur. Points outside ``[lo, hi]`` are dropped.
    Series with at most ``2 * buckets`` points come back unchanged (minus NaNs).
    """
    x, y = _finite_in_range(x, y, lo, hi)
    n = x.size
    buckets = max(1, int(buckets))
    if n <= 2 * buckets:
        return x, y
    x0 = x[0] if lo is None else lo
    x1 = x[-1] if hi is None else hi
    span = x1 - x0
    if span <= 0:
        i, j = int(np.argmin(y)), int(np.argmax(y))
        idx = np.array(sorted({i, j}))
        return x[idx], y[idx]
    _, starts = _buckets(x, buckets, x0, span)  # x is sorted: each bucket a contiguous slice
    ends = np.r_[starts[1:], n]
    # index of the min and max inside each slice, via a per-bucket offset trick
    imin = _arg_reduce(y, starts, ends, np.minimum)
    imax = _arg_reduce(y, starts, ends, np.maximum)
    first = np.minimum(imin, imax)
    second = np.maximum(imin, imax)
    idx = np.empty(first.size * 2, dtype=np.int64)
    idx[0::2] = first
    idx[1::2] = second
    # a bucket whose min and max are the same point contributes it once
    dup = np.r_[False, idx[1:] == idx[:-1]]
    idx = idx[~dup]
    return x[idx], y[idx]


def _arg_reduce(y: np.ndarray, starts: np.ndarray, ends: np.ndarray, op) -> np.ndarray:
    """Index of ``op``-extreme of ``y`` in each slice ``[starts[k], ends[k])`` (first on ties)."""
    ext = op.reduceat(y, starts)
    lengths = ends - starts
    target = np.repeat(ext, lengths)
    hit = y == target
    # first hit in each slice: positions of hits, then the smallest per bucket
    pos = np.flatnonzero(hit)
    bucket_of = np.searchsorted(starts, pos, side="right") - 1
    firsts = np.full(starts.size, -1, dtype=np.int64)
    # reverse assignment so the earliest position wins
    firsts[bucket_of[::-1]] = pos[::-1]
    return firsts


def smooth(y: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard-style); NaNs carry the last value."""
    y = np.asarray(y, dtype=float)
    if weight <= 0 or y.size == 0:
        return y
    from scipy.signal import lfilter

    valid = np.isfinite(y)
    if valid.all():
        filled, w_in = y, np.ones_like(y)
    else:
        last = np.where(valid, np.arange(y.size), 0)
        np.maximum.accumulate(last, out=last)
        lead = np.cumsum(valid) == 0  # before the first finite value: no weight
        filled = y[last]
        filled[lead] = 0.0
        w_in = (~lead).astype(float)
    num = lfilter([1 - weight], [1, -weight], filled * w_in)
    den = lfilter([1 - weight], [1, -weight], w_in)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den == 0] = np.nan
    return out


def envelope(
    x: np.ndarray, y: np.ndarray, buckets: int, lo: float | None = None, hi: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-bucket ``(x_mid, y_min, y_max)``, or None when the series is short enough to draw as is.

    Drawn as two lines (the lower and the upper edge), a noisy series costs a plotter two
    nearly flat lines instead of a full-height zig-zag per column; a spike stays on the upper
    edge.
    """
    x, y = _finite_in_range(x, y, lo, hi)
    buckets = max(1, int(buckets))
    if x.size <= 2 * buckets:
        return None
    x0 = x[0] if lo is None else lo
    x1 = x[-1] if hi is None else hi
    span = x1 - x0
    if span <= 0:
        return np.array([x0]), np.array([y.min()]), np.array([y.max()])
    b, starts = _buckets(x, buckets, x0, span)
    ymin = np.minimum.reduceat(y, starts)
    ymax = np.maximum.reduceat(y, starts)
    xmid = x0 + (b[starts] + 0.5) * (span / buckets)
    return xmid, ymin, ymax
