"""The kernel paths of heur.core.measure.similarity: which one a call takes (size, BLAS threads,
the per-process calibration) and the float32 default for float32 inputs, against a float64
oracle. (tests/test_similarity.py runs every measure on every path, forced.)"""

from __future__ import annotations

import numpy as np
import torch

from heur.core.measure.similarity import cca


def related(n=400, px=8, py=6, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, px)) * r.uniform(0.5, 3, px) + r.normal(0, 2, px)
    y = x[:, :5] @ r.standard_normal((5, py)) + r.standard_normal((n, py)) + 1.5
    return x, y


def exact_cca(x, y):
    """Canonical correlations as the singular values of Qxᵀ Qy (QR of the centred data)."""
    qx = np.linalg.qr(x - x.mean(0))[0]
    qy = np.linalg.qr(y - y.mean(0))[0]
    return np.linalg.svd(qx.T @ qy, compute_uv=False)[: min(x.shape[1], y.shape[1])]


def test_path_by_size_blas_threads_and_calibration(monkeypatch):
    from heur.core.measure import similarity as S

    monkeypatch.setattr(S, "_PATH", None)
    mid, small, big = np.zeros((2_000, 256)), np.zeros((400, 8)), np.zeros((10_000, 512))
    dt = np.dtype(np.float64)
    monkeypatch.setattr(S, "blas_threads", lambda: [2, 2])
    assert S._path(mid, mid, dt) == "workers" and S._path(small, small, dt) == "numpy"
    for threads in ([1, 1], [8, 2], []):
        monkeypatch.setattr(S, "blas_threads", lambda t=threads: t)
        assert S._path(mid, mid, dt) == "numpy"
    # large products take the path the calibration timed fastest (here a made-up table)
    monkeypatch.setattr(S, "path_timings", lambda dt: {"numpy": 0.3, "workers": 0.2, "torch": 0.1})
    assert S._path(big, big, dt) == "torch"
    monkeypatch.setattr(S, "path_timings", lambda dt: {"numpy": 0.3, "workers": 0.05, "torch": 0.1})
    assert S._path(big, big, dt) == "workers"
    assert S._path(torch.zeros(3, 2), torch.zeros(3, 2), dt) == "tensor"


def test_calibration_times_every_candidate_once_and_caches(monkeypatch):
    from heur.core.measure import similarity as S

    monkeypatch.setattr(S, "_PATH", None)
    monkeypatch.setattr(S, "_CALIBRATION", {})
    monkeypatch.setattr(S, "_CALIBRATION_SHAPE", (300, 24))
    monkeypatch.setattr(S, "blas_threads", lambda: [2])
    seen = []
    real = S._cross_block

    def spy(sx, sy, rows, out, path="numpy"):
        seen.append(path)
        return real(sx, sy, rows, out, path)

    monkeypatch.setattr(S, "_cross_block", spy)
    t = S.path_timings(np.float32)
    assert set(t) == {"numpy", "workers", "torch"} and all(v > 0 for v in t.values())
    assert set(seen) == {"numpy", "workers", "torch"}
    n = len(seen)
    assert S.path_timings(np.float32) == t and len(seen) == n  # cached: nothing timed again
    assert S.chosen_path(np.float32) == min(t, key=t.get)
    assert S._CALIBRATING.path is None


def test_float32_inputs_default_to_float32_products():
    # float32 inputs (numpy or torch) get float32 Grams unless float64 is asked for; the result
    # agrees with the float64 oracle to float32's accuracy, and dtype=float64 gives float64's
    x, y = related(n=2000, px=20, py=12)
    ref = exact_cca(x, y)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    from heur.core.measure import similarity as S

    assert S._inputs_dtype(x32, torch.from_numpy(y32), None) == np.float32
    assert S._inputs_dtype(x32, y, None) == np.float64
    f32 = cca(torch.from_numpy(x32), torch.from_numpy(y32))
    np.testing.assert_allclose(f32, cca(x32, y32, dtype=torch.float32), atol=1e-12)
    np.testing.assert_allclose(f32, ref, atol=1e-4)
    # the float32 data themselves, in float64 products: the oracle on the same rounded data
    np.testing.assert_allclose(
        cca(x32, y32, dtype=torch.float64), exact_cca(x32.astype(np.float64), y32.astype(np.float64)), atol=1e-10
    )


def test_a_path_that_fails_is_left_out_of_the_calibration(monkeypatch):
    from heur.core.measure import similarity as S

    monkeypatch.setattr(S, "_PATH", None)
    monkeypatch.setattr(S, "_CALIBRATION", {})
    monkeypatch.setattr(S, "_CALIBRATION_SHAPE", (300, 24))
    monkeypatch.setattr(S, "blas_threads", lambda: [1])
    real = S._gram

    def broken(a, b=None, path="numpy"):
        if path == "torch":
            raise RuntimeError("no such library here")
        return real(a, b, path)

    monkeypatch.setattr(S, "_gram", broken)
    assert set(S.path_timings(np.float64)) == {"numpy"} and S.chosen_path(np.float64) == "numpy"
    x, y = related(n=3000, px=200, py=200)
    monkeypatch.setattr(S, "_CALIBRATE_MIN_FLOPS", 1.0)  # this call takes the calibrated path
    np.testing.assert_allclose(cca(x, y), exact_cca(x, y), atol=1e-9)


def test_float32_column_means_by_blocks_match_float64():
    # float32 means summed in blocks of 32 rows (then float64) against the float64 mean of the same
    # data: row counts that are and are not multiples of 32, a large offset, C and F order
    from heur.core.measure import similarity as S

    r = np.random.default_rng(3)
    for n in (31, 64, 1000, 4099):
        a = (r.standard_normal((n, 7)) * np.geomspace(1e-3, 1e3, 7) + 50.0).astype(np.float32)
        ref = a.astype(np.float64).mean(0)
        for arr in (a, np.asfortranarray(a)):
            np.testing.assert_allclose(S._column_mean(arr), ref, rtol=1e-6, atol=0)
