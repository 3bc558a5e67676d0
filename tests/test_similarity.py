"""heur.core.measure.similarity against independent oracles (textbook formulas, brute force)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg as sla
import torch

from heur.core.errors import ConfigError
from heur.core.measure.errors import MeasurementError
from heur.core.measure.similarity import (
    FewSamplesWarning,
    SimilarityError,
    cca,
    flatten_conv,
    linear_cka,
    pwcca,
    svcca,
)


@pytest.fixture(autouse=True, params=["numpy", "workers", "torch"])
def gram_path(request, monkeypatch):
    """Every test runs on every kernel path of the Gram pipeline: scipy's BLAS in the caller's
    thread, the two single-threaded BLAS workers, torch's CPU BLAS (forced here even for small
    inputs, whatever the calibration would pick on this machine)."""
    from heur.core.measure import similarity as S

    monkeypatch.setattr(S, "_PATH", request.param)
    return request.param


def rng(seed=0):
    return np.random.default_rng(seed)


def related(n=400, px=8, py=6, seed=0):
    r = rng(seed)
    x = r.standard_normal((n, px)) * r.uniform(0.5, 3, px) + r.normal(0, 2, px)
    y = x[:, :5] @ r.standard_normal((5, py)) + r.standard_normal((n, py)) + 1.5
    return x, y


# --------------------------------------------------------------------------- oracles


def textbook_cca(x, y):
    """Generalised symmetric eigenproblem on the full covariance: [0 Sxy; Syx 0] v = rho [Sxx 0; 0 Syy] v."""
    px = x.shape[1]
    s = np.cov(np.hstack([x, y]).T)
    a = np.zeros_like(s)
    a[:px, px:], a[px:, :px] = s[:px, px:], s[px:, :px]
    b = np.zeros_like(s)
    b[:px, :px], b[px:, px:] = s[:px, :px], s[px:, px:]
    w = sla.eigh(a, b, eigvals_only=True)
    return np.sort(w)[::-1][: min(px, y.shape[1])]


def qr_cca(x, y):
    """Singular values (and left vectors) of Qxᵀ Qy for orthonormal bases of the centred columns."""
    qx, _ = np.linalg.qr(x - x.mean(0))
    qy, _ = np.linalg.qr(y - y.mean(0))
    u, s, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return qx, u, s


def hsic_cka(x, y):
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    kx, ky = x @ x.T, y @ y.T

    def hsic(k, m):
        return np.trace(k @ h @ m @ h)

    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


# --------------------------------------------------------------------------- CCA


def test_cca_matches_textbook_generalised_eigenproblem():
    x, y = related()
    np.testing.assert_allclose(cca(x, y), textbook_cca(x, y), atol=1e-8, rtol=0)
    np.testing.assert_allclose(cca(y, x), textbook_cca(y, x), atol=1e-8, rtol=0)


def test_cca_large_spectrum_matches_qr_oracle():
    # over 64 coefficients: the eigenvalue route of the values-only path
    x, y = related(n=2000, px=90, py=80, seed=3)
    y = np.hstack([y, x[:, 10:80] @ rng(4).standard_normal((70, 70)) + rng(5).standard_normal((2000, 70))])
    _, _, s = qr_cca(x, y)
    np.testing.assert_allclose(cca(x, y), s, atol=1e-8, rtol=0)


def test_self_and_invertible_map_give_all_ones():
    x, _ = related(px=10)
    a = rng(1).standard_normal((10, 10)) + 3 * np.eye(10)
    np.testing.assert_allclose(cca(x, x), np.ones(10), atol=1e-9)
    np.testing.assert_allclose(cca(x, x @ a + 7.0), np.ones(10), atol=1e-9)
    assert svcca(x, x @ a) == pytest.approx(1.0, abs=1e-9)
    assert pwcca(x, x @ a) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3 * x - 2) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n,expected", [(200, 0.64), (1000, 0.27)])
def test_random_baseline_100_vs_100_neurons(n, expected):
    r = rng(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewSamplesWarning)
        rho = cca(r.standard_normal((n, 100)), r.standard_normal((n, 100)))
    assert rho.shape == (100,)
    assert np.all(np.diff(rho) <= 0)
    assert rho.mean() == pytest.approx(expected, abs=0.03)


def test_torch_input_equals_numpy_input():
    x, y = related()
    ref = cca(x, y)
    np.testing.assert_allclose(cca(torch.from_numpy(x), torch.from_numpy(y)), ref, atol=1e-12)
    np.testing.assert_allclose(cca(torch.from_numpy(x).float(), y), cca(x.astype(np.float32), y), atol=1e-12)
    assert pwcca(torch.from_numpy(x), y) == pytest.approx(pwcca(x, y), abs=1e-12)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(linear_cka(x, y), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_input_equals_numpy_input():
    x, y = related()
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    np.testing.assert_allclose(cca(xt, yt), cca(x, y), atol=1e-10)
    np.testing.assert_allclose(cca(xt, yt, dtype=torch.float32), cca(x, y), atol=1e-4)


def test_float32_products_close_to_float64():
    x, y = related(n=3000, px=40, py=30)
    np.testing.assert_allclose(cca(x, y, dtype=torch.float32), cca(x, y), atol=1e-5)
    np.testing.assert_allclose(cca(x.astype(np.float32), y.astype(np.float32), dtype="float32"), cca(x, y), atol=1e-4)
    # neurons of very different scales (and an offset) are all kept: CCA is scale invariant
    xs = x * np.geomspace(1e-4, 1e4, x.shape[1]) + 1e3
    np.testing.assert_allclose(cca(xs, y, dtype=torch.float32), cca(x, y), atol=1e-5)
    np.testing.assert_allclose(cca(xs, y), cca(x, y), atol=1e-9)


def test_float32_tail_against_the_float64_oracle():
    # float32 products take a float32 Cholesky and float32 triangular solves; the coefficients
    # come from the float64 Gram of M (over 64 of them: the eigenvalue route, split over the
    # workers on that path). Against QR + SVD in float64: correlated neurons (x's correlation
    # matrix has condition 1e3, and is factorised in float32),
    # the narrower side second (cca works on the narrower side's M Mᵀ), and correlations of zero,
    # which a float32 Gram of M would get wrong (ρ² rounded by eps32: 1.6e-5 here)
    from heur.core.measure import similarity as S

    r = rng(7)
    n, px, py = 3000, 100, 80
    q = np.linalg.qr(r.standard_normal((px, px)))[0]
    x = (r.standard_normal((n, px)) * np.geomspace(1, 0.03, px)) @ q + 0.5
    y = x[:, :40] @ r.standard_normal((40, py)) * 0.2 + r.standard_normal((n, py))
    xc, z = x - x.mean(0), r.standard_normal((n, 20))  # 20 directions uncorrelated with x: ρ = 0
    zero = np.hstack([y[:, :70], z - xc @ np.linalg.lstsq(xc, z - z.mean(0), rcond=None)[0]])
    for a, b in ((x, y), (y, x), (x, zero)):
        _, _, s = qr_cca(a, b)
        np.testing.assert_allclose(cca(a, b, dtype=torch.float32), s, atol=1e-5, rtol=0)
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        _, _, s32 = qr_cca(a32.astype(np.float64), b32.astype(np.float64))  # the oracle on the rounded data
        np.testing.assert_allclose(cca(a32, b32), s32, atol=1e-5, rtol=0)
        # float64 stays exact (at ρ = 0 to √eps64 of the Gram route, as before: 5e-9)
        np.testing.assert_allclose(cca(a, b), s, atol=1e-8, rtol=0)
    assert np.abs(qr_cca(x, zero)[2][-20:]).max() < 1e-12  # the zero correlations were tested
    # the factor is in the products' dtype
    for dt in (np.float32, np.float64):
        assert S._Whitener(S._side_numpy(x, np.dtype(dt)), None, 0.0).chol.dtype == dt


def test_large_mean_offset_keeps_precision():
    x, y = related()
    np.testing.assert_allclose(cca(x + 1e7, y - 3e6), textbook_cca(x, y), atol=1e-8)


def test_constant_neurons_dropped():
    x, y = related()
    ref = cca(x, y)
    xz = np.hstack([x[:, :3], np.zeros((len(x), 1)), x[:, 3:], np.full((len(x), 1), 3.7)])
    np.testing.assert_allclose(cca(xz, y), ref, atol=1e-9)
    np.testing.assert_allclose(cca(y, xz), cca(y, x), atol=1e-9)
    assert pwcca(xz, y) == pytest.approx(pwcca(x, y), abs=1e-9)


def test_rank_deficient_input_uses_numerical_rank():
    x, y = related(px=6)
    dup = np.hstack([x, x[:, :4] @ rng(2).standard_normal((4, 5))])  # 11 columns, rank 6
    rho = cca(dup, y)
    assert rho.shape == (6,)
    np.testing.assert_allclose(rho, cca(x, y), atol=1e-8)


def test_fewer_samples_than_neurons_is_an_error():
    r = rng(1)
    x, y = r.standard_normal((35, 40)), r.standard_normal((35, 30))
    for fn in (cca, svcca, pwcca):
        with pytest.raises(SimilarityError, match="samples must greatly exceed neurons|samples to greatly exceed"):
            fn(x, y) if fn is not svcca else fn(x, y, keep=1.0)
    with pytest.raises(ValueError) as e:
        cca(x, y)
    # a plain measurement error: its own message and argument, no preset key (the edges add that)
    assert isinstance(e.value, MeasurementError) and not isinstance(e.value, ConfigError)
    assert e.value.arg == "samples" and str(e.value).startswith("35 samples for 40 and 30 neurons")


def test_epsilon_gives_a_regularised_estimate():
    r = rng(1)
    x, y = r.standard_normal((50, 40)), r.standard_normal((50, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewSamplesWarning)
        rho = cca(x, y, epsilon=0.1)
    assert rho.shape == (30,) and np.all((rho >= 0) & (rho < 1))
    # the ridge on the correlation matrices, by hand
    xc, yc = x - x.mean(0), y - y.mean(0)
    sx, sy = xc / np.linalg.norm(xc, axis=0), yc / np.linalg.norm(yc, axis=0)
    rxx, ryy, rxy = sx.T @ sx + 0.1 * np.eye(40), sy.T @ sy + 0.1 * np.eye(30), sx.T @ sy
    ix, iy = np.linalg.inv(sla.sqrtm(rxx)).real, np.linalg.inv(sla.sqrtm(ryy)).real
    np.testing.assert_allclose(rho, np.linalg.svd(ix @ rxy @ iy, compute_uv=False), atol=1e-8)


def test_warns_below_five_samples_per_neuron():
    r = rng(2)
    with pytest.warns(FewSamplesWarning) as rec:
        cca(r.standard_normal((120, 30)), r.standard_normal((120, 20)))
    assert rec[0].filename == __file__  # points at the caller
    x, y = r.standard_normal((120, 30)), r.standard_normal((120, 20))
    for fn, kw in ((pwcca, {}), (svcca, {}), (svcca, {"epsilon": 0.1})):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            fn(x, y, **kw)
        few = [w for w in rec if issubclass(w.category, FewSamplesWarning)]
        assert len(few) == 1 and few[0].filename == __file__, (fn.__name__, kw, [(w.filename, w.lineno) for w in few])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewSamplesWarning)
        cca(r.standard_normal((200, 30)), r.standard_normal((200, 20)))


def test_non_finite_input_is_an_error():
    x, y = related()
    x[3, 2] = np.nan
    with pytest.raises(SimilarityError, match="NaN or inf"):
        cca(x, y)
    y[0, 0] = np.inf
    with pytest.raises(SimilarityError, match="NaN or inf"):
        linear_cka(np.nan_to_num(x), y)


def test_bad_shapes_are_errors():
    with pytest.raises(SimilarityError, match="same number of samples"):
        cca(np.zeros((10, 2)), np.zeros((11, 2)))
    with pytest.raises(SimilarityError, match="dtype"):
        cca(np.ones((10, 2)), np.ones((10, 2)), dtype=torch.float16)


# --------------------------------------------------------------------------- SVCCA / PWCCA / CKA


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99, 1.0])
def test_svcca_keep_matches_manual_svd_truncation(keep):
    r = rng(7)
    n = 1500
    x = r.standard_normal((n, 12)) @ np.diag(np.geomspace(10, 0.1, 12)) @ sla.qr(r.standard_normal((12, 12)))[0]
    y = x[:, :8] @ r.standard_normal((8, 10)) + 0.5 * r.standard_normal((n, 10))

    def reduce(a):
        ac = a - a.mean(0)
        _, s, vt = np.linalg.svd(ac, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(frac >= keep - 1e-12)) + 1
        return ac @ vt[:k].T

    _, _, s = qr_cca(reduce(x), reduce(y))
    assert svcca(x, y, keep=keep) == pytest.approx(s.mean(), abs=1e-9)


def pwcca_reference(acts1, acts2):
    """The reference definition of google/svcca's compute_pwcca (its else branch fixed), written
    independently: inputs (neurons, datapoints); canonical directions from an explicit
    C^-1/2 Cxy C^-1/2 SVD; weights from the side with fewer neurons (acts1 on a tie): the
    variates orthonormalised by QR, projected on that side's activations. No centring here."""

    def inv_sqrt(c):
        lam, v = np.linalg.eigh(c)
        return v @ np.diag(lam**-0.5) @ v.T

    n = acts1.shape[1]
    c11, c22, c12 = acts1 @ acts1.T / n, acts2 @ acts2.T / n, acts1 @ acts2.T / n
    i1, i2 = inv_sqrt(c11), inv_sqrt(c22)
    u, rho, vt = np.linalg.svd(i1 @ c12 @ i2, full_matrices=False)
    if acts1.shape[0] <= acts2.shape[0]:
        coef, acts = u.T @ i1, acts1
    else:
        coef, acts = vt @ i2, acts2
    dirns = coef @ acts  # (k, datapoints): the canonical variates of that side
    q, _ = np.linalg.qr(dirns.T)
    weights = np.abs(q.T @ acts.T).sum(axis=1)
    return float((weights / weights.sum()) @ rho)


@pytest.mark.parametrize("px,py", [(30, 8), (8, 30), (6, 9), (12, 3), (7, 7)])
def test_pwcca_weighs_on_the_narrower_side_like_the_reference(px, py):
    r = rng(px * py)
    n = 800
    k = min(px, py)
    x = r.standard_normal((n, px)) * r.uniform(0.2, 5, px) + r.uniform(-3, 3, px)  # offsets: centring matters
    y = x[:, :k] @ r.standard_normal((k, py)) + 2.0 * r.standard_normal((n, py)) + 1.0
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = pwcca_reference(xc.T, yc.T)  # the reference on centred data
    assert pwcca(x, y) == pytest.approx(expected, abs=1e-9)
    if px != py:  # the narrower side decides, whichever argument it is
        assert pwcca(y, x) == pytest.approx(pwcca(x, y), abs=1e-9)
    else:  # equal widths: x's side, as the reference's <= does
        assert pwcca(y, x) == pytest.approx(pwcca_reference(yc.T, xc.T), abs=1e-9)


def test_pwcca_wider_side_weights_differ():
    """The case of issue 13: x the wider layer (30 vs 8 neurons); weighing on x's side (what
    heur did) gives a clearly different value from the narrower side's."""
    r = rng(3)
    n = 1000
    y = r.standard_normal((n, 8))
    x = np.hstack([y @ r.standard_normal((8, 8)), r.standard_normal((n, 22)) * 3]) + 0.3 * r.standard_normal((n, 30))
    got = pwcca(x, y)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert got == pytest.approx(pwcca_reference(yc.T, xc.T), abs=1e-9)
    assert got == pytest.approx(pwcca_reference(xc.T, yc.T), abs=1e-9)  # the reference picks y either way
    # x's own weights (old behaviour): the variates of the wider side, projected on its neurons
    qx, u, s = qr_cca(x, y)
    h = qx @ u[:, :8]
    alpha = np.abs(h.T @ xc).sum(axis=1)
    assert abs((alpha / alpha.sum()) @ s[:8] - got) > 0.01


def test_linear_cka_matches_hsic_with_centering_matrix():
    x, y = related(n=60, px=7, py=5)
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), abs=1e-10)
    # CKA needs no more samples than neurons
    r = rng(3)
    a, b = r.standard_normal((20, 50)), r.standard_normal((20, 40))
    assert linear_cka(a, b) == pytest.approx(hsic_cka(a, b), abs=1e-10)


# --------------------------------------------------------------------------- convolutional activations


def test_flatten_conv_modes():
    a = rng(0).standard_normal((4, 3, 5, 6))
    np.testing.assert_allclose(flatten_conv(a, "mean"), a.mean(axis=(2, 3)))
    f = flatten_conv(a, "flatten")
    assert f.shape == (4 * 5 * 6, 3)
    np.testing.assert_allclose(f[7], a[0, :, 1, 1])
    t = flatten_conv(torch.from_numpy(a), "flatten")
    np.testing.assert_allclose(t.numpy(), f)


def test_conv_keyword_mean_and_flatten():
    r = rng(1)
    x = r.standard_normal((300, 4, 3, 3))
    y = np.einsum("nchw,cd->ndhw", x, r.standard_normal((4, 5))) + 0.3 * r.standard_normal((300, 5, 3, 3))
    np.testing.assert_allclose(cca(x, y, conv="mean"), cca(x.mean((2, 3)), y.mean((2, 3))), atol=1e-12)
    np.testing.assert_allclose(
        cca(x, y, conv="flatten"), cca(flatten_conv(x, "flatten"), flatten_conv(y, "flatten")), atol=1e-12
    )


@pytest.mark.parametrize("hw", [(4, 4), (3, 5)])
def test_conv_dft_averages_over_every_frequency(hw):
    r = rng(2)
    n, h, w = 400, *hw
    x = r.standard_normal((n, 3, h, w))
    y = np.einsum("nchw,cd->ndhw", x, r.standard_normal((3, 4))) + r.standard_normal((n, 4, h, w))
    y = y + np.roll(y, 1, axis=2)
    # oracle: full complex fft2, per frequency real CCA on [Re; Im] after removing the complex mean
    fx, fy = np.fft.fft2(x), np.fft.fft2(y)
    vals = []
    for i in range(h):
        for j in range(w):
            a, b = fx[:, :, i, j], fy[:, :, i, j]
            a, b = a - a.mean(0), b - b.mean(0)
            vals.append(textbook_cca(np.vstack([a.real, a.imag]), np.vstack([b.real, b.imag])).mean())
    assert svcca(x, y, keep=1.0, conv="dft") == pytest.approx(np.mean(vals), abs=1e-8)
    # a 1x1 convolution (channel mixing) is an invertible map at every frequency
    z = np.einsum("nchw,cd->ndhw", x, r.standard_normal((3, 3)) + 2 * np.eye(3))
    np.testing.assert_allclose(cca(x, z, conv="dft"), np.ones(3), atol=1e-9)


def test_conv_dft_needs_equal_spatial_size():
    with pytest.raises(SimilarityError, match="equal spatial size"):
        cca(np.zeros((10, 2, 4, 4)), np.zeros((10, 2, 2, 2)), conv="dft")


def test_similarity_dispatch_by_preset_name():
    from heur.core.measure.similarity import similarity

    x, y = related()
    assert similarity(x, y, "svcca") == svcca(x, y)
    assert similarity(x, y, "pwcca") == pwcca(x, y)
    assert similarity(x, y, "cka") == linear_cka(x, y)
    with pytest.raises(SimilarityError) as e:
        similarity(x, y, "rsa")
    assert e.value.arg == "method" and str(e.value) == "expected one of svcca, pwcca, cka, got 'rsa'"


def test_torch_gram_path_matches_numpy_path():
    # the path CUDA tensors take (sides centred and multiplied on their device), run here on CPU
    from heur.core.measure import similarity as S

    x, y = related()
    px = x.shape[1]
    for dt, tol in ((np.dtype(np.float64), 1e-9), (np.dtype(np.float32), 1e-3)):
        tx, ty = S._side_torch(torch.from_numpy(x), dt), S._side_torch(torch.from_numpy(y), dt)
        nx, ny = S._side_numpy(x, dt), S._side_numpy(y, dt)
        ct = S._cross_block(tx, ty, slice(0, px), np.empty((px, y.shape[1])))
        cn = S._cross_block(nx, ny, slice(0, px), np.empty((px, y.shape[1])))
        for a, b in ((tx.c, nx.c), (ty.c, ny.c), (ct, cn)):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
        np.testing.assert_allclose(tx.mean, x.mean(0), rtol=1e-12)
        wx, wy = S._Whitener(tx, None, 0.0), S._Whitener(ty, None, 0.0)
        m = wx.whiten(S._whiten_rows(slice(0, px), ct, wx, wy))
        np.testing.assert_allclose(S._rhos_only(m), textbook_cca(x, y), atol=1e-8 if tol < 1e-6 else 1e-5)


def test_cross_blocks_assemble_the_full_product():
    # the row blocks the two workers compute: centred XᵀY restricted to x's neurons in each block
    from heur.core.measure import similarity as S

    x, y = related(px=9)
    for path in S.PATHS:
        sx, sy = S._side_numpy(x, np.dtype(np.float64), path), S._side_numpy(y, np.dtype(np.float64), path)
        full = (x - x.mean(0)).T @ (y - y.mean(0))
        buf = np.full((9, y.shape[1]), np.nan)
        for r in (slice(0, 4), slice(4, 9)):
            assert S._cross_block(sx, sy, r, buf[r], path).base is buf
        np.testing.assert_allclose(buf, full, rtol=1e-10, atol=1e-9 * np.abs(full).max())


def test_small_factorisations_restore_blas_threads_even_on_error(gram_path):
    from heur.core.measure.blas import blas_threads

    before = blas_threads()
    x, y = related()
    y[3, 2] = np.nan
    with pytest.raises(SimilarityError, match="NaN"):
        cca(x, y)
    assert blas_threads() == before
    assert cca(x, x[:, ::-1]) == pytest.approx(np.ones(8), abs=1e-9)
    assert blas_threads() == before
