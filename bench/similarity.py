"""Benchmark: heur.core.measure.similarity.cca against its floor (the three Gram products alone) and
against the covariance method google/svcca uses, in float64 and float32, side by side in one run.

Same data for every method (y = x·A + noise, so the coefficients are non-trivial). Every method
runs once per round, in turns (so that load from other processes falls on all alike), for
``--repeats`` rounds; the figures are medians over rounds, and each ratio is the median of the
per-round ratios (with its min-max spread over rounds), which is steadier than a ratio of medians
on a shared machine. Printed first: the CPU, the BLAS libraries loaded (threadpoolctl, and torch's
own), the kernel path heur's calibration chose for each dtype and the timings it chose by.

Floors: XᵀX, YᵀY, XᵀY by numpy (its OpenBLAS; XᵀX is a symmetric rank-k update there) and by
torch (its CPU BLAS, MKL in the official wheels; three general products) on the same memory; the
floor of a dtype is the faster of the two in each round. The baseline ("google") is the
covariance method of google/svcca's cca_core in float64: np.cov of the stacked activations,
inverse square roots of the diagonal blocks by eigendecomposition, SVD of the whitened cross
block. It allocates two fresh 80 MB arrays per call, so its time swings with the cost of
first-touch page faults on a VM; the ratios to the floor are the steadier figures.

    python bench/similarity.py [--n 10000] [--p 512] [--repeats 7] [--threads 0] [--path workers]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from machine import cpu_model  # bench/machine.py

import heur.core.measure.similarity as S
from heur.core.measure.similarity import cca


def blas_libraries() -> list[str]:
    """The BLAS libraries in this process: threadpoolctl's view (numpy's and scipy's OpenBLAS,
    with their threads and the kernel architecture) and torch's CPU BLAS."""
    out = []
    try:
        from threadpoolctl import threadpool_info

        for i in threadpool_info():
            if i.get("user_api") == "blas":
                out.append(
                    f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                    f"{i.get('num_threads')} threads): {os.path.basename(i.get('filepath', ''))}"
                )
    except Exception as e:  # threadpoolctl missing
        out.append(f"threadpoolctl unavailable ({e})")
    cfg = torch.__config__.show()
    blas = next((ln.split("=", 1)[1].split(",")[0] for ln in cfg.split() if ln.startswith("BLAS_INFO=")), "?")
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    out.append(f"torch {torch.__version__}: BLAS_INFO={blas} ({mkl}), {torch.get_num_threads()} threads")
    return out


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


def three_grams(x, y):
    return x.T @ x, y.T @ y, x.T @ y


def timed_side_by_side(fns: dict, repeats: int):
    """Every method once per round, in turns; returns ({name: [wall s per round]}, {name: value of
    the warm-up call})."""
    vals = {k: f() for k, f in fns.items()}  # warm-up, and the values compared
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            # numpy and scipy each bundle an OpenBLAS whose idle workers spin for a while after a
            # call: let the previous method's threads go to sleep so they do not steal the cores
            time.sleep(0.2)
            t0 = time.perf_counter()
            f()
            wall[k].append(time.perf_counter() - t0)
    return wall, vals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--p", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="limit BLAS/torch threads (0: library default)")
    ap.add_argument("--path", choices=S.PATHS, default=None, help="force heur's kernel path (default: calibrated)")
    a = ap.parse_args()
    S._PATH = a.path
    if a.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n, a.p)) + 0.5
    y = x @ (rng.standard_normal((a.p, a.p)) / np.sqrt(a.p)) + 0.7 * rng.standard_normal((a.n, a.p)) - 0.3
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    tx, ty, tx32, ty32 = (torch.from_numpy(v) for v in (x, y, x32, y32))

    print(f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); load average {os.getloadavg()[0]:.1f} at the start")
    print("BLAS: " + "; ".join(blas_libraries()))
    t0 = time.perf_counter()
    for dt in (np.float64, np.float32):
        t = S.path_timings(dt)
        print(
            f"heur's kernel path for {np.dtype(dt).name}: {S.chosen_path(dt)!r} "
            + ("(forced by --path; " if a.path else "(")
            + "calibration, the products alone, best of 2 runs on "
            f"{S._CALIBRATION_SHAPE[0]} x {S._CALIBRATION_SHAPE[1]}: "
            + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items())
            + ")"
        )
    print(f"  (calibration of both dtypes took {time.perf_counter() - t0:.2f} s, once per process)")

    fns = {
        "google": lambda: covariance_baseline(x, y),
        "grams64 numpy": lambda: three_grams(x, y),
        "grams64 torch": lambda: three_grams(tx, ty),
        "grams32 numpy": lambda: three_grams(x32, y32),
        "grams32 torch": lambda: three_grams(tx32, ty32),
        "heur f64": lambda: cca(x, y),
        "heur f32 (dtype=float32, float64 arrays)": lambda: cca(x, y, dtype=torch.float32),
        "heur f32 (float32 arrays)": lambda: cca(x32, y32),
        "heur f32 (float32 tensors)": lambda: cca(tx32, ty32),
    }
    wall, vals = timed_side_by_side(fns, a.repeats)
    rounds = range(a.repeats)
    floor64 = [min(wall["grams64 numpy"][i], wall["grams64 torch"][i]) for i in rounds]
    floor32 = [min(wall["grams32 numpy"][i], wall["grams32 torch"][i]) for i in rounds]
    ref = vals["google"]

    def ratio(num, den):
        r = [n / d for n, d in zip(num, den)]
        return statistics.median(r), min(r), max(r)

    def fmt(r):
        return f"{r[0]:5.2f}x ({r[1]:.2f}-{r[2]:.2f})"

    print(
        f"\ncca on {a.n} samples x {a.p} features per side; {a.repeats} interleaved rounds, medians (spread over "
        f"rounds); load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"  coefficients: max {ref.max():.4f}, mean {ref.mean():.4f}, min {ref.min():.4f}")
    print(f"  {'method':<42} {'median ms':>9}  {'vs its floor':<20} {'google / this':<20} max |diff|")
    for k in fns:
        t = statistics.median(wall[k])
        fl = floor32 if ("32" in k or "f32" in k) else floor64
        vs_floor = fmt(ratio(wall[k], fl)) if not k.startswith("google") else ""
        faster = fmt(ratio(wall["google"], wall[k])) if k != "google" else ""
        diff = f"{np.abs(vals[k] - ref).max():.1e}" if k.startswith(("heur", "google")) else ""
        print(f"  {k:<42} {t * 1e3:9.1f}  {vs_floor:<20} {faster:<20} {diff}")
    print(
        f"  floors (faster library per round): float64 {statistics.median(floor64) * 1e3:.1f} ms, float32 "
        f"{statistics.median(floor32) * 1e3:.1f} ms; google / float32 floor {fmt(ratio(wall['google'], floor32))}"
    )
    print(
        "  float32 tensors / float64 arrays: "
        f"{fmt(ratio(wall['heur f32 (float32 tensors)'], wall['heur f64']))} the time"
    )


if __name__ == "__main__":
    main()
