"""Benchmark: heur.core.measure.similarity.cca against the covariance method google/svcca uses.

Same data for every method (y = x·A + noise, so the coefficients are non-trivial), each timed as
the median of several repeats, side by side in one run. Prints the times, the ratios to the
baseline and to the three Gram products alone (the floor of any method that forms them), and the
largest coefficient difference to the baseline. "ours, float64" is what callers get (on two
BLAS threads, the two-worker Gram pipeline); "in the caller's thread" is the same code with the
workers turned off, for comparison. The baseline allocates two fresh 80 MB arrays per call
(np.vstack, np.cov's centred copy): on a VM its time swings with the cost of first-touch page
faults (230-680 ms per call on the 2-core EPYC), so the ratio to the three Gram products, which
allocate nothing large, is the steadier figure.

    python bench/similarity.py [--n 10000] [--p 512] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

import heur.core.measure.similarity as S
from heur.core.measure.similarity import cca


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


def one_thread(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cca with the Gram pipeline kept in the caller's thread (no two-worker split)."""
    old, S._WORKERS = S._WORKERS, False
    try:
        return cca(x, y)
    finally:
        S._WORKERS = old


def three_grams(x: np.ndarray, y: np.ndarray):
    return x.T @ x, y.T @ y, x.T @ y


def timed_side_by_side(fns: dict, repeats: int):
    """Run every method once per round (interleaved, so that load from other processes falls on
    all alike); return {name: (median wall s, median process-CPU s, value of the warm-up call)}.
    With --threads 1 the CPU time is the cost of the work itself, steady on a shared machine."""
    vals = {k: f() for k, f in fns.items()}  # warm-up, and the values compared
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            # numpy and scipy each bundle an OpenBLAS whose idle workers spin for a while after a
            # call: let the previous method's threads go to sleep so they do not steal the cores
            time.sleep(0.3)
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), vals[k]) for k in fns}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--p", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="limit BLAS/torch threads (0: library default); 1 gives steadier figures on a busy machine",
    )
    a = ap.parse_args()
    if a.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n, a.p)) + 0.5
    y = x @ (rng.standard_normal((a.p, a.p)) / np.sqrt(a.p)) + 0.7 * rng.standard_normal((a.n, a.p)) - 0.3

    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    res = timed_side_by_side(
        {
            "base": lambda: covariance_baseline(x, y),
            "grams": lambda: three_grams(x, y),
            "ours": lambda: cca(x, y),
            "seq": lambda: one_thread(x, y),
            "f32": lambda: cca(x, y, dtype=torch.float32),
            "f32in": lambda: cca(x32, y32, dtype=torch.float32),
        },
        a.repeats,
    )
    (tb, cb, rb), (tg, cg, _) = res["base"], res["grams"]

    def line(label, key, grams=False):
        t, c, r = res[key]
        extra = f", {t / tg:.3f}x the Grams (CPU {c / cg:.3f}x)" if grams else ""
        print(
            f"  {label:<38}: {t * 1e3:7.1f} ms (CPU {c * 1e3:7.1f})  {tb / t:.2f}x faster than baseline "
            f"(CPU {cb / c:.2f}x){extra}, max |diff| {np.abs(r - rb).max():.2e}"
        )

    print(
        f"cca on {a.n} samples x {a.p} features per side; median of {a.repeats} interleaved rounds, "
        f"wall (and process CPU) time; threads {a.threads or 'default'} (torch {torch.get_num_threads()}); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  coefficients: max {rb.max():.4f}, mean {rb.mean():.4f}, min {rb.min():.4f}")
    print(f"  {'baseline (np.cov + inverse sqrt + SVD)':<38}: {tb * 1e3:7.1f} ms (CPU {cb * 1e3:7.1f})")
    print(f"  {'three Gram products alone (float64)':<38}: {tg * 1e3:7.1f} ms (CPU {cg * 1e3:7.1f})")
    line("ours, float64", "ours", grams=True)
    line("ours, float64, in the caller's thread", "seq", grams=True)
    line("ours, dtype=float32 (float64 input)", "f32")
    line("ours, dtype=float32 (float32 input)", "f32in")


if __name__ == "__main__":
    main()
