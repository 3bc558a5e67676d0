"""Benchmark: heur.core.similarity.cca against the covariance method google/svcca uses.

Same data for every method (y = x·A + noise, so the coefficients are non-trivial), each timed as
the median of several repeats, side by side in one run. Prints the times, the ratios to the
baseline and to the three Gram products alone (the floor of any method that forms them), and the
largest coefficient difference to the baseline.

    python bench/similarity.py [--n 10000] [--p 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from heur.core.similarity import cca


def covariance_baseline(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The covariance method: np.cov of the stacked activations (features × samples), inverse
    square roots of the diagonal blocks (eigendecomposition), SVD of the whitened cross block."""
    px = x.shape[1]
    sigma = np.cov(np.vstack([x.T, y.T]))
    sxx, sxy, syy = sigma[:px, :px], sigma[:px, px:], sigma[px:, px:]

    def inv_sqrt(s):
        w, v = np.linalg.eigh(s)
        return (v / np.sqrt(w)) @ v.T

    arr = inv_sqrt(sxx) @ sxy @ inv_sqrt(syy)
    return np.linalg.svd(arr, compute_uv=False)


def three_grams(x: np.ndarray, y: np.ndarray):
    return x.T @ x, y.T @ y, x.T @ y


def timed(fn, repeats: int):
    out = fn()  # warm-up (also the value compared)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--p", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n, a.p)) + 0.5
    y = x @ (rng.standard_normal((a.p, a.p)) / np.sqrt(a.p)) + 0.7 * rng.standard_normal((a.n, a.p)) - 0.3

    t_base, r_base = timed(lambda: covariance_baseline(x, y), a.repeats)
    t_grams, _ = timed(lambda: three_grams(x, y), a.repeats)
    t_ours, r_ours = timed(lambda: cca(x, y), a.repeats)
    t_32, r_32 = timed(lambda: cca(x, y, dtype=torch.float32), a.repeats)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    t_32in, r_32in = timed(lambda: cca(x32, y32, dtype=torch.float32), a.repeats)

    print(f"cca on {a.n} samples x {a.p} features per side; median of {a.repeats}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"  coefficients: max {r_base.max():.4f}, mean {r_base.mean():.4f}, min {r_base.min():.4f}")
    print(f"  baseline (np.cov + inverse sqrt + SVD) : {t_base * 1e3:8.1f} ms")
    print(f"  three Gram products alone (float64)   : {t_grams * 1e3:8.1f} ms")
    print(f"  ours, float64                          : {t_ours * 1e3:8.1f} ms   "
          f"{t_base / t_ours:.2f}x faster than baseline, {t_ours / t_grams:.3f}x the Grams, "
          f"max |diff| {np.abs(r_ours - r_base).max():.2e}")
    print(f"  ours, dtype=float32 (float64 input)    : {t_32 * 1e3:8.1f} ms   "
          f"{t_base / t_32:.2f}x faster than baseline, max |diff| {np.abs(r_32 - r_base).max():.2e}")
    print(f"  ours, dtype=float32 (float32 input)    : {t_32in * 1e3:8.1f} ms   "
          f"{t_base / t_32in:.2f}x faster than baseline, max |diff| {np.abs(r_32in - r_base).max():.2e}")


if __name__ == "__main__":
    main()
