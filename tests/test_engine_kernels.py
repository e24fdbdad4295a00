"""The engine's XNOR-popcount ops: numpy reference vs plain +-1 arithmetic, and every compiled
backend vs the reference, bit for bit."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import kernels, reference

from engine_fixtures import pm1

BACKENDS = kernels.available_backends()
MODULES = [reference, kernels]
INT32_MIN, INT32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max
K_SIZES = [1, 63, 64, 65, 200, 784]


@pytest.fixture(params=BACKENDS)
def backend(request):
    previous = kernels.get_backend()
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend(previous)




def conv_float(x, w, stride, padding, dilation, pad_value):
    """Direct convolution of float NHWC x (N,H,W,C) with w (O,KH,KW,C), padded with pad_value."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=pad_value)
    o, kh, kw, _ = w.shape
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], ho, wo, o))
    for y in range(ho):
        for z in range(wo):
            patch = xp[:, y * sh:y * sh + dh * (kh - 1) + 1:dh, z * sw:z * sw + dw * (kw - 1) + 1:dw]
            out[:, y, z] = np.einsum("nijc,oijc->no", patch, w)
    return out


def maxpool_float(x, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), dtype=x.dtype)
    for y in range(ho):
        for z in range(wo):
            out[:, y, z] = x[:, y * sh:y * sh + kh, z * sw:z * sw + kw].max(axis=(1, 2))
    return out


def threshold_bits(dot, thresh, flip):
    """Packed sign(BN) bits computed the plain way: pack(+1 where the test holds, else -1)."""
    keep = np.where(flip, dot <= thresh, dot >= thresh)
    return reference.pack(np.where(keep, 1.0, -1.0))


# ----------------------------------------------------------------------------------------------
# reference vs plain arithmetic
# ----------------------------------------------------------------------------------------------
def test_pack_layout_lsb_first_little_endian():
    x = np.full(130, -1.0)
    x[[0, 2, 63, 64, 129]] = 1.0
    packed = reference.pack(x)
    assert packed.dtype == np.uint64 and packed.shape == (3,)
    assert packed.tolist() == [5 | (1 << 63), 1, 2]  # element i -> bit i % 64 of word i // 64


def test_pack_sign_of_zero_and_nan():
    x = np.array([0.0, -0.0, np.nan, -1e-30, 1e-30, -np.inf])
    assert reference.pack(x).tolist() == [0b010011]  # 0 and -0.0 are +1; NaN is -1


@pytest.mark.parametrize("k", K_SIZES)
def test_reference_bgemm_matches_float_matmul(k):
    rng = np.random.default_rng(k)
    a, w = pm1(rng, (7, k)), pm1(rng, (9, k))
    got = reference.bgemm(reference.pack(a), reference.pack(w), k)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, a @ w.T)
    np.testing.assert_array_equal(reference.unpack(reference.pack(a), k), a.astype(np.int8))


def test_reference_bgemm_threshold_matches_float():
    rng = np.random.default_rng(1)
    k, n = 200, 70
    a, w = pm1(rng, (5, k)), pm1(rng, (n, k))
    dot = a @ w.T
    thresh = dot[0].astype(np.int32)  # exact ties in row 0
    thresh[:4] = [INT32_MIN, INT32_MAX, INT32_MIN, INT32_MAX]
    flip = rng.random(n) < 0.5
    flip[:4] = [False, False, True, True]
    got = reference.bgemm_threshold(reference.pack(a), reference.pack(w), k, thresh, flip)
    assert got.shape == (5, 2)
    np.testing.assert_array_equal(got, threshold_bits(dot, thresh, flip))
    bits = reference.unpack(got, n)
    assert (bits[:, 0] == 1).all() and (bits[:, 1] == -1).all()  # >= MIN always, >= MAX never
    assert (bits[:, 2] == -1).all() and (bits[:, 3] == 1).all()  # <= MIN never, <= MAX always
    assert (bits[0, 4:] == 1).all()  # dot == thresh passes both >= and <=


CONV_CASES = [  # (c, kernel, stride, padding, dilation)
    (3, 1, 1, 0, 1),
    (64, 3, 1, 1, 1),
    (70, 3, 2, 1, 1),
    (65, 3, 1, 2, 2),
    (130, 3, 2, 3, 2),
    (5, 1, 2, 0, 1),
    (7, 2, 1, 1, 1),
]
PAD_VALUES = {"zero": 0.0, "one": 1.0, "minus_one": -1.0}


@pytest.mark.parametrize("pad_mode", list(PAD_VALUES))
@pytest.mark.parametrize("c,kernel,stride,padding,dilation", CONV_CASES)
def test_reference_bconv2d_matches_direct_float_conv(c, kernel, stride, padding, dilation, pad_mode):
    rng = np.random.default_rng(c + kernel)
    x, w = pm1(rng, (2, 7, 9, c)), pm1(rng, (5, kernel, kernel, c))
    want = conv_float(x, w, (stride,) * 2, (padding,) * 2, (dilation,) * 2, PAD_VALUES[pad_mode])
    got = reference.bconv2d(reference.pack(x), reference.pack(w), c, stride, padding, dilation,
                            pad_mode)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_reference_first_layer_matches_integer_matmul():
    rng = np.random.default_rng(2)
    for k in K_SIZES:
        x = rng.integers(0, 256, (5, k), dtype=np.uint8)
        x[0] = 255
        x[1] = 0
        w = pm1(rng, (9, k))
        want = x.astype(np.int64) @ w.T.astype(np.int64)
        np.testing.assert_array_equal(reference.bitplane_gemm(x, reference.pack(w), k), want)
        np.testing.assert_array_equal(reference.int_gemm(x, reference.pack(w), k), want)


def test_reference_pools_match_plain_max_pool():
    rng = np.random.default_rng(3)
    x = rng.integers(-50, 50, (2, 7, 9, 70)).astype(np.int32)
    np.testing.assert_array_equal(reference.maxpool2d_int(x, 2, 2), maxpool_float(x, (2, 2), (2, 2)))
    np.testing.assert_array_equal(reference.maxpool2d_int(x, 3, (1, 2)),
                                  maxpool_float(x, (3, 3), (1, 2)))
    # bit pooling: +-1 maps, max for the >= channels, min for the flipped ones
    v = pm1(rng, (2, 7, 9, 70))
    flip = rng.random(70) < 0.5
    pooled = np.where(flip, -maxpool_float(-v, (3, 3), (2, 2)), maxpool_float(v, (3, 3), (2, 2)))
    got = reference.bmaxpool2d(reference.pack(v), 3, 2, flip, 70)
    np.testing.assert_array_equal(got, reference.pack(pooled))


@pytest.mark.parametrize("pad_mode", list(PAD_VALUES))
def test_reference_fused_pool_is_paper_order(pad_mode):
    """conv -> int max-pool -> BN -> sign equals the fused kernel's threshold-then-OR/AND."""
    rng = np.random.default_rng(4)
    c, o = 70, 67
    x, w = pm1(rng, (2, 9, 8, c)), pm1(rng, (o, 3, 3, c))
    dot = conv_float(x, w, (1, 1), (1, 1), (1, 1), PAD_VALUES[pad_mode])
    pooled = maxpool_float(dot, (2, 2), (2, 2))
    thresh = rng.integers(-30, 31, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    want = threshold_bits(pooled, thresh, flip)
    xb, wb = reference.pack(x), reference.pack(w)
    fused = reference.bconv2d_threshold_maxpool(xb, wb, c, thresh, flip, 2, 2, 1, 1, 1, pad_mode)
    np.testing.assert_array_equal(fused, want)
    composed = reference.bmaxpool2d(
        reference.bconv2d_threshold(xb, wb, c, thresh, flip, 1, 1, 1, pad_mode), 2, 2, flip, o)
    np.testing.assert_array_equal(composed, want)


# ----------------------------------------------------------------------------------------------
# compiled backends vs the reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", K_SIZES)
def test_bgemm_and_threshold_match_reference(backend, k):
    rng = np.random.default_rng(k)
    for m, n in [(1, 1), (1, 9), (3, 5), (5, 7), (17, 131), (33, 17), (75, 130)]:
        a, w = reference.pack(pm1(rng, (m, k))), reference.pack(pm1(rng, (n, k)))
        np.testing.assert_array_equal(kernels.bgemm(a, w, k), reference.bgemm(a, w, k))
        thresh = rng.integers(-k - 1, k + 2, n).astype(np.int32)
        thresh[0] = INT32_MIN
        thresh[-1] = INT32_MAX
        flip = rng.random(n) < 0.5
        np.testing.assert_array_equal(kernels.bgemm_threshold(a, w, k, thresh, flip),
                                      reference.bgemm_threshold(a, w, k, thresh, flip))


def edge_thresholds(k, n, dots, rng):
    """Thresholds of n outputs at and beside +-k, int32's ends and real sums (both parities:
    the panel path compares counts against floor / ceil of (k - t) / 2)."""
    edges = [INT32_MIN, -k - 2, -k - 1, -k, -k + 1, -1, 0, 1, k - 1, k, k + 1, k + 2, INT32_MAX]
    ties = rng.choice(dots.ravel(), n)
    thresh = np.where(rng.random(n) < 0.5, ties + rng.integers(-1, 2, n), ties)
    thresh[:2 * len(edges)] = np.repeat(edges, 2)[:n]
    return np.clip(thresh, INT32_MIN, INT32_MAX).astype(np.int32)


@pytest.mark.parametrize("k", [64, 131, 1152])
def test_threshold_edges_on_the_panel_path(backend, k):
    """Enough rows for the AVX-512 panel kernels (the count thresholds of its epilogue): every
    edge threshold, flipped and not, against the reference, dense and conv (interior pixels on
    the fast path, zero-padded borders on their own k) with and without the fused max-pool."""
    rng = np.random.default_rng(k)
    n = 40
    a, w = pm1(rng, (64, k)), pm1(rng, (n, k))
    flip = np.tile([False, True], n // 2)
    thresh = edge_thresholds(k, n, a @ w.T, rng)
    args = (reference.pack(a), reference.pack(w), k, thresh, flip)
    np.testing.assert_array_equal(kernels.bgemm_threshold(*args), reference.bgemm_threshold(*args))
    c = k // 9 + 1
    x, wc = pm1(rng, (2, 10, 10, c)), pm1(rng, (n, 3, 3, c))
    thresh = edge_thresholds(9 * c, n, conv_float(x, wc, (1, 1), (1, 1), (1, 1), 0.0), rng)
    xb, wb = reference.pack(x), reference.pack(wc)
    for pad_mode in PAD_VALUES:
        conv = (xb, wb, c, thresh, flip, 1, 1, 1, pad_mode)
        np.testing.assert_array_equal(kernels.bconv2d_threshold(*conv),
                                      reference.bconv2d_threshold(*conv))
        pooled = (xb, wb, c, thresh, flip, 2, 2, 1, 1, 1, pad_mode)
        np.testing.assert_array_equal(kernels.bconv2d_threshold_maxpool(*pooled),
                                      reference.bconv2d_threshold_maxpool(*pooled))


@pytest.mark.parametrize("k", K_SIZES)
def test_pack_unpack_match_reference(backend, k):
    rng = np.random.default_rng(k)
    for dtype in [np.float32, np.float64, np.int8, np.uint8, np.int32, np.float16]:
        x = (rng.standard_normal((3, 2, k)) * 3).astype(dtype)
        x.flat[0] = 0
        got = kernels.pack(x)
        assert got.dtype == np.uint64 and got.shape == (3, 2, (k + 63) // 64)
        np.testing.assert_array_equal(got, reference.pack(x))
        np.testing.assert_array_equal(kernels.unpack(got, k), reference.unpack(got, k))
    special = np.array([0.0, -0.0, np.nan, -np.inf, np.inf] * 20, dtype=np.float32)[:k]
    np.testing.assert_array_equal(kernels.pack(special), reference.pack(special))
    strided = rng.standard_normal((4, 2 * k))[:, ::2]
    np.testing.assert_array_equal(kernels.pack(strided), reference.pack(strided))


@pytest.mark.parametrize("pad_mode", list(PAD_VALUES))
@pytest.mark.parametrize("c,kernel,stride,padding,dilation", CONV_CASES)
def test_bconv2d_ops_match_reference(backend, c, kernel, stride, padding, dilation, pad_mode):
    rng = np.random.default_rng(c * kernel + stride)
    o = 67
    x, w = reference.pack(pm1(rng, (2, 7, 9, c))), reference.pack(pm1(rng, (o, kernel, kernel, c)))
    args = (stride, padding, dilation, pad_mode)
    dot = reference.bconv2d(x, w, c, *args)
    np.testing.assert_array_equal(kernels.bconv2d(x, w, c, *args), dot)
    thresh = rng.integers(-20, 21, o).astype(np.int32)
    thresh[:2] = [INT32_MIN, INT32_MAX]
    thresh[2] = dot[0, 0, 0, 2]  # a tie
    flip = rng.random(o) < 0.5
    np.testing.assert_array_equal(kernels.bconv2d_threshold(x, w, c, thresh, flip, *args),
                                  reference.bconv2d_threshold(x, w, c, thresh, flip, *args))
    for pool, pool_stride in [(2, 2), (3, 2), ((2, 1), (1, 2))]:
        if dot.shape[1] >= 3 and dot.shape[2] >= 3:
            np.testing.assert_array_equal(
                kernels.bconv2d_threshold_maxpool(x, w, c, thresh, flip, pool, pool_stride, *args),
                reference.bconv2d_threshold_maxpool(x, w, c, thresh, flip, pool, pool_stride, *args))


def test_pools_match_reference(backend):
    rng = np.random.default_rng(5)
    for c in [3, 64, 130]:
        x = reference.pack(pm1(rng, (2, 7, 9, c)))
        flip = rng.random(c) < 0.5
        xi = rng.integers(-1000, 1000, (2, 7, 9, c)).astype(np.int32)
        for kernel, stride in [(2, 2), (3, (1, 2)), (1, 1), ((7, 9), 1)]:
            np.testing.assert_array_equal(kernels.bmaxpool2d(x, kernel, stride, flip, c),
                                          reference.bmaxpool2d(x, kernel, stride, flip, c))
            np.testing.assert_array_equal(kernels.maxpool2d_int(xi, kernel, stride),
                                          reference.maxpool2d_int(xi, kernel, stride))


@pytest.mark.parametrize("k", K_SIZES + [3, 4, 5, 27, 3072])
def test_first_layer_matches_reference(backend, k):
    rng = np.random.default_rng(k)
    # 8 m >= 32: the bit-plane panel path on AVX-512; int_gemm tiles are 4 rows x 4 panels of
    # 16 (AVX-512) or 8 (AVX2) channels: whole tiles, row and panel edges, partial panels
    for m, n in [(1, 1), (3, 9), (17, 70), (5, 33), (8, 128)]:
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        x[0, :] = 255
        w = reference.pack(pm1(rng, (n, k)))
        want = reference.int_gemm(x, w, k)
        np.testing.assert_array_equal(kernels.bitplane_gemm(x, w, k), want)
        np.testing.assert_array_equal(kernels.int_gemm(x, w, k), want)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200])
def test_threshold_pack(backend, n):
    rng = np.random.default_rng(n)
    x = rng.integers(-5, 6, (3, 4, n)).astype(np.int32)
    thresh = rng.integers(-5, 6, n).astype(np.int32)
    thresh[0] = INT32_MIN
    flip = rng.random(n) < 0.5
    want = threshold_bits(x, thresh, flip)
    np.testing.assert_array_equal(reference.threshold_pack(x, thresh, flip), want)
    np.testing.assert_array_equal(kernels.threshold_pack(x, thresh, flip), want)
    with pytest.raises(TypeError, match=r"threshold_pack: x must be an int32 numpy array"):
        kernels.threshold_pack(x.astype(np.int64), thresh, flip)


def test_large_shapes_match_float_matmul_on_all_threads(backend):
    """Shapes big enough for several blocks, edge tiles and the threaded path."""
    rng = np.random.default_rng(6)
    m, k, n = 301, 3000, 517
    a, w = pm1(rng, (m, k)), pm1(rng, (n, k))
    want = (a @ w.T).astype(np.int32)
    ap, wp = kernels.pack(a), kernels.pack(w)
    threads = kernels.get_num_threads()
    try:
        for t in [1, 2, 3]:
            kernels.set_num_threads(t)
            np.testing.assert_array_equal(kernels.bgemm(ap, wp, k), want)
            np.testing.assert_array_equal(kernels.bgemm(ap[:1], wp, k), want[:1])
        thresh = rng.integers(-40, 41, n).astype(np.int32)
        flip = rng.random(n) < 0.5
        np.testing.assert_array_equal(kernels.bgemm_threshold(ap, wp, k, thresh, flip),
                                      threshold_bits(want, thresh, flip))
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        want_u8 = x.astype(np.float64) @ w.T  # exact: |sums| <= 255 k < 2**53
        np.testing.assert_array_equal(kernels.bitplane_gemm(x, wp, k), want_u8)
        np.testing.assert_array_equal(kernels.int_gemm(x, wp, k), want_u8)
    finally:
        kernels.set_num_threads(threads)


# Jobs below 2.5e5 word-ops (BN_PARALLEL_MIN_WORK in csrc/core.h) run inline on the caller; the
# shapes below sit on both sides of it: the work estimates are the ones the C drivers use.
@pytest.mark.parametrize("m,k,n", [
    (200, 27, 130),    # int: m n k / 64 (+ n k / 8 per 64 rows) = 13k, bitplane: 8 m n ceil(k/64)
                       # = 208k -> inline
    (20000, 27, 130),  # CIFAR first conv (small K): 1.2M / 20.8M -> threaded
    (67, 784, 300),    # MNIST first layer, K tail (784 % 64 = 16), N not a multiple of 16
])
def test_first_layer_inline_and_threaded_sizes(backend, m, k, n):
    rng = np.random.default_rng(m + k)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    x[-1] = 255  # the largest sums, in the last row (its tail quad ends the buffer)
    w = pm1(rng, (n, k))
    want = x.astype(np.float64) @ w.T  # exact: |sums| <= 255 k < 2**53
    wp = kernels.pack(w)
    threads = kernels.get_num_threads()
    try:
        for t in [1, 2, 3]:
            kernels.set_num_threads(t)
            np.testing.assert_array_equal(kernels.int_gemm(x, wp, k), want)
            np.testing.assert_array_equal(kernels.bitplane_gemm(x, wp, k), want)
    finally:
        kernels.set_num_threads(threads)


@pytest.mark.parametrize("rows,n", [(50, 130), (64000, 130), (1000, 7)])  # rows n / 8: 812, 1.04M
def test_threshold_pack_inline_and_threaded_sizes(backend, rows, n):
    rng = np.random.default_rng(rows)
    x = rng.integers(-40, 41, (rows, n)).astype(np.int32)
    x[0, :3] = [INT32_MIN, INT32_MAX, 0]
    thresh = rng.integers(-40, 41, n).astype(np.int32)
    thresh[:2] = [INT32_MIN, INT32_MAX]
    flip = rng.random(n) < 0.5
    want = reference.threshold_pack(x, thresh, flip)
    threads = kernels.get_num_threads()
    try:
        for t in [1, 2]:
            kernels.set_num_threads(t)
            np.testing.assert_array_equal(kernels.threshold_pack(x, thresh, flip), want)
    finally:
        kernels.set_num_threads(threads)


def test_pool_back_to_back_jobs_of_mixed_sizes_stay_exact():
    """Threaded and inline jobs alternate with more threads than cores: a worker that wakes late
    for one job must never run a task of the next (claims carry the job's generation)."""
    rng = np.random.default_rng(9)
    k = 640
    a, w = pm1(rng, (90, k)), pm1(rng, (300, k))  # 90 x 300 x 10 words: threaded
    ap, wp = kernels.pack(a), kernels.pack(w)
    want = (a @ w.T).astype(np.int32)
    threads = kernels.get_num_threads()
    try:
        for t in [2, 4]:
            kernels.set_num_threads(t)
            for i in range(150):
                rows = 90 if i % 3 else 2  # 2 x 300 x 10 words: inline
                np.testing.assert_array_equal(kernels.bgemm(ap[:rows], wp, k), want[:rows])
    finally:
        kernels.set_num_threads(threads)


@pytest.mark.parametrize("threads", [2, 3])
def test_pool_protocol_self_test_under_many_back_to_back_jobs(threads):
    """The C pool's own check: 500,000 tiny jobs back to back, each task must run exactly once
    under its own job. A worker that picked up the next job's generation while its fields were
    still being written ran a stale task in the new job (an FPE/segfault in bench_engine)."""
    from binarynet.engine import _core

    assert _core.pool_selftest(500_000, threads) == 0


def test_concurrent_python_threads_and_forked_child_get_exact_results():
    """The pool runs one job at a time (a concurrent caller runs inline) and survives fork()."""
    from concurrent.futures import ThreadPoolExecutor
    import multiprocessing

    rng = np.random.default_rng(8)
    k = 1000
    a, w = pm1(rng, (97, k)), pm1(rng, (301, k))
    ap, wp = kernels.pack(a), kernels.pack(w)
    want = (a @ w.T).astype(np.int32)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: kernels.bgemm(ap, wp, k), range(16)))
    for got in results:
        np.testing.assert_array_equal(got, want)
    if "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(1) as child:
            got = child.apply(kernels.bgemm, (ap, wp, k))
        np.testing.assert_array_equal(got, want)


def test_large_conv_matches_reference(backend):
    rng = np.random.default_rng(7)
    c, o = 130, 200
    x, w = reference.pack(pm1(rng, (2, 16, 15, c))), reference.pack(pm1(rng, (o, 3, 3, c)))
    thresh = rng.integers(-60, 61, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    np.testing.assert_array_equal(kernels.bconv2d(x, w, c, 1, 1), reference.bconv2d(x, w, c, 1, 1))
    np.testing.assert_array_equal(
        kernels.bconv2d_threshold_maxpool(x, w, c, thresh, flip, 2, 2, 1, 1),
        reference.bconv2d_threshold_maxpool(x, w, c, thresh, flip, 2, 2, 1, 1))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 70), n=st.integers(1, 80), k=st.integers(1, 700),
       seed=st.integers(0, 2**32 - 1))
def test_property_dense_ops_all_backends(m, n, k, seed):
    rng = np.random.default_rng(seed)
    a, w = pm1(rng, (m, k)), pm1(rng, (n, k))
    ap, wp = reference.pack(a), reference.pack(w)
    thresh = rng.integers(-k - 2, k + 3, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    want = (a @ w.T).astype(np.int32)
    want_bits = threshold_bits(want, thresh, flip)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    want_u8 = x.astype(np.int64) @ w.T.astype(np.int64)
    previous = kernels.get_backend()
    try:
        for name in BACKENDS:
            kernels.set_backend(name)
            np.testing.assert_array_equal(kernels.bgemm(ap, wp, k), want)
            np.testing.assert_array_equal(kernels.bgemm_threshold(ap, wp, k, thresh, flip), want_bits)
            np.testing.assert_array_equal(kernels.bitplane_gemm(x, wp, k), want_u8)
            np.testing.assert_array_equal(kernels.int_gemm(x, wp, k), want_u8)
    finally:
        kernels.set_backend(previous)


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 140), o=st.integers(1, 70), h=st.integers(1, 7), wd=st.integers(1, 7),
       kernel=st.sampled_from([1, 2, 3]), stride=st.integers(1, 2), padding=st.integers(0, 2),
       dilation=st.integers(1, 2), pad_mode=st.sampled_from(list(PAD_VALUES)),
       seed=st.integers(0, 2**32 - 1))
def test_property_conv_all_backends(c, o, h, wd, kernel, stride, padding, dilation, pad_mode, seed):
    span = dilation * (kernel - 1) + 1
    if h + 2 * padding < span or wd + 2 * padding < span:
        return  # the kernel does not fit: covered by the error tests
    rng = np.random.default_rng(seed)
    x, w = pm1(rng, (2, h, wd, c)), pm1(rng, (o, kernel, kernel, c))
    want = conv_float(x, w, (stride,) * 2, (padding,) * 2, (dilation,) * 2, PAD_VALUES[pad_mode])
    xp, wp = reference.pack(x), reference.pack(w)
    thresh = rng.integers(-10, 11, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    args = (stride, padding, dilation, pad_mode)
    previous = kernels.get_backend()
    try:
        for name in BACKENDS:
            kernels.set_backend(name)
            np.testing.assert_array_equal(kernels.bconv2d(xp, wp, c, *args), want)
            np.testing.assert_array_equal(kernels.bconv2d_threshold(xp, wp, c, thresh, flip, *args),
                                          threshold_bits(want, thresh, flip))
            if want.shape[1] >= 2 and want.shape[2] >= 2:
                pooled = maxpool_float(want, (2, 2), (2, 2))
                np.testing.assert_array_equal(
                    kernels.bconv2d_threshold_maxpool(xp, wp, c, thresh, flip, 2, 2, *args),
                    threshold_bits(pooled, thresh, flip))
    finally:
        kernels.set_backend(previous)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
@pytest.fixture(params=MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def ops(request):
    return request.param


def packed(rows, k, seed=0):
    return reference.pack(pm1(np.random.default_rng(seed), (rows, k)))


def test_dense_errors_name_the_argument(ops):
    a, w = packed(3, 100), packed(4, 100)
    with pytest.raises(TypeError, match=r"bgemm: a must have dtype uint64, got float64"):
        ops.bgemm(a.astype(np.float64), w, 100)
    with pytest.raises(TypeError, match=r"bgemm: w must be a numpy array"):
        ops.bgemm(a, w.tolist(), 100)
    with pytest.raises(ValueError, match=r"bgemm: a last axis must hold ceil\(k/64\) = 1 words"):
        ops.bgemm(a, w, 60)
    with pytest.raises(ValueError, match=r"bgemm: w last axis must hold ceil\(k/64\) = 2 words"):
        ops.bgemm(a, packed(4, 300), 100)
    with pytest.raises(ValueError, match=r"bgemm: a must be 2-D"):
        ops.bgemm(a[None], w, 100)
    with pytest.raises(ValueError, match=r"bgemm: w must be C-contiguous"):
        ops.bgemm(packed(3, 200), np.asfortranarray(packed(4, 200)), 200)
    with pytest.raises(ValueError, match=r"bgemm: a has pad bits set beyond k=100"):
        ops.bgemm(a | np.uint64(1 << 63), w, 100)
    with pytest.raises(TypeError, match=r"bgemm: k must be an int"):
        ops.bgemm(a, w, 100.0)
    with pytest.raises(ValueError, match=r"bgemm: k must be in \[1,"):
        ops.bgemm(a, w, 0)
    with pytest.raises(ValueError, match=r"thresh must have shape \(4,\), got \(3,\)"):
        ops.bgemm_threshold(a, w, 100, np.zeros(3, np.int32), np.zeros(4, bool))
    with pytest.raises(TypeError, match=r"flip must be a bool array, got dtype int64"):
        ops.bgemm_threshold(a, w, 100, np.zeros(4, np.int32), np.zeros(4, np.int64))
    with pytest.raises(TypeError, match=r"thresh must be an integer array"):
        ops.bgemm_threshold(a, w, 100, np.zeros(4), np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"thresh values must fit int32"):
        ops.bgemm_threshold(a, w, 100, np.full(4, 2**40), np.zeros(4, bool))


def test_conv_pool_and_first_layer_errors(ops):
    x, w = packed(2 * 5 * 5, 70).reshape(2, 5, 5, 2), packed(3 * 9, 70).reshape(3, 3, 3, 2)
    with pytest.raises(ValueError, match=r"bconv2d: pad_mode must be one of"):
        ops.bconv2d(x, w, 70, pad_mode="reflect")
    with pytest.raises(ValueError, match=r"bconv2d: x last axis must hold ceil\(c/64\) = 1 words"):
        ops.bconv2d(x, w, 64)
    with pytest.raises(ValueError, match=r"does not fit the 5x5 input"):
        ops.bconv2d(x, w, 70, dilation=3)
    with pytest.raises(ValueError, match=r"stride values must be >= 1"):
        ops.bconv2d(x, w, 70, stride=0)
    with pytest.raises(TypeError, match=r"padding must be an int or a pair"):
        ops.bconv2d(x, w, 70, padding=(1, 1, 1))
    with pytest.raises(ValueError, match=r"pool kernel \(4, 4\) is larger than the 3x3 input"):
        ops.bconv2d_threshold_maxpool(x, w, 70, np.zeros(3, np.int32), np.zeros(3, bool), 4, 1)
    with pytest.raises(ValueError, match=r"bmaxpool2d: flip must have shape \(70,\)"):
        ops.bmaxpool2d(x, 2, 2, np.zeros(3, bool), 70)
    with pytest.raises(TypeError, match=r"maxpool2d_int: x must have dtype int32, got int64"):
        ops.maxpool2d_int(np.zeros((1, 4, 4, 3), np.int64), 2, 2)
    wd = packed(5, 70)
    with pytest.raises(TypeError, match=r"bitplane_gemm: x_u8 must have dtype uint8, got float32"):
        ops.bitplane_gemm(np.zeros((2, 70), np.float32), wd, 70)
    with pytest.raises(ValueError, match=r"int_gemm: x_u8 must have k=70 columns"):
        ops.int_gemm(np.zeros((2, 71), np.uint8), wd, 70)
    with pytest.raises(TypeError, match=r"pack: x must be a real numeric array, got dtype bool"):
        ops.pack(np.ones(3, bool))
    with pytest.raises(ValueError, match=r"unpack: p last axis must hold"):
        ops.unpack(packed(2, 70), 200)
    with pytest.raises(ValueError, match=r"set_num_threads: n must be a positive int"):
        ops.set_num_threads(0)


# ----------------------------------------------------------------------------------------------
# backend selection
# ----------------------------------------------------------------------------------------------
def test_backend_selection():
    assert "portable" in BACKENDS
    features = kernels.cpu_features()
    assert features["backend"] == kernels.get_backend()
    assert features["threads"] == kernels.get_num_threads() >= 1
    if os.path.exists("/proc/cpuinfo"):
        flags = open("/proc/cpuinfo").read().split()
        assert features["avx512_vpopcntdq"] == ("avx512_vpopcntdq" in flags)
        assert features["avx2"] == ("avx2" in flags)
    with pytest.raises(ValueError, match=r"set_backend: backend must be one of"):
        kernels.set_backend("sse")


def _backend_in_subprocess(value):
    env = dict(os.environ, BINARYNET_KERNEL=value)
    code = "from binarynet.engine import kernels; print(kernels.cpu_features()['backend'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_environment_variable_forces_backend():
    assert _backend_in_subprocess("portable").stdout.strip() == "portable"
    bad = _backend_in_subprocess("neon")
    assert bad.returncode != 0 and "BINARYNET_KERNEL must be one of" in bad.stderr


def test_engine_does_not_import_torch():
    code = ("import sys; from binarynet.engine import kernels, reference; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
