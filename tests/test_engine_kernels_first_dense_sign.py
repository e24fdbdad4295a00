"""first_dense_float_sign: the float-input first dense layer's sign bits from float32 sums with
an error bound (float64 for the near-ties) equal, bit for bit and on every backend, to the
reference's, which decides from float64 sums: exact ties, one float32 step either side of a
tie, sums that float32 gets badly wrong, inf / NaN / float32 overflow, flips, +-inf thresholds,
the thread pool, the prepared call and the errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import float_dense_sign, kernels, reference

from engine_fixtures import pm1

BACKENDS = kernels.available_backends()
F32 = np.float32

pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest


def exact_inputs(rng, shape):
    """float32 multiples of 2^-10 below 2^10: any float64 sum of up to 2^20 of them is exact,
    so every summation order gives the reference's sums, while float32 sums round."""
    x = rng.integers(-2**20, 2**20, shape) * 2.0 ** -10
    return np.where(rng.random(shape) < 0.2, 0.0, x).astype(F32)


def near_ties(rng, z):
    """Thresholds (n,) at row 0's z: exactly on it, one float32 step either side, or random."""
    kind = rng.integers(0, 4, z.shape)
    up, down = np.nextafter(z, F32(np.inf)), np.nextafter(z, F32(-np.inf))
    t = np.where(kind == 0, z, np.where(kind == 1, up, np.where(kind == 2, down, z + F32(
        rng.standard_normal(z.shape) * 50))))
    return np.where(rng.random(z.shape) < 0.05, F32(np.inf) * np.sign(rng.standard_normal(
        z.shape)), t).astype(F32)


def check_all_backends(x, wp, k, bias, thresh, flip):
    want = float_dense_sign.first_dense_float_sign(x, wp, k, bias, thresh, flip)
    assert want.shape == (x.shape[0], reference.words_for(wp.shape[0]))
    for name in BACKENDS:
        kernels.set_backend(name)
        np.testing.assert_array_equal(kernels.first_dense_float_sign(x, wp, k, bias, thresh, flip),
                                      want, err_msg=name)
        prepared = kernels.prepare("first_dense_float_sign", wp, k, bias, thresh, flip)
        np.testing.assert_array_equal(prepared(x), want, err_msg=name)
    return want


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 200), k=st.integers(1, 600),
       seed=st.integers(0, 2**32 - 1))
def test_property_bits_equal_the_float64_decisions(m, n, k, seed):
    rng = np.random.default_rng(seed)
    w = pm1(rng, (n, k))
    wp = reference.pack(w)
    x = exact_inputs(rng, (m, k))
    bias = np.where(rng.random(n) < 0.3, 0.0, rng.integers(-64, 64, n) / 8).astype(F32)
    z = (x[0].astype(np.float64) @ w.T).astype(F32) + bias  # the reference's z of row 0
    flip = rng.random(n) < 0.3
    check_all_backends(x, wp, k, bias, near_ties(rng, z), flip)
    # the bits mean what they say: row 0 against a threshold exactly at its z is all set
    exact = reference.unpack(check_all_backends(x, wp, k, bias, z, None)[:1], n)[0] > 0
    assert exact.all()


def test_sums_float32_gets_wrong_are_decided_in_float64():
    """2^25, then inputs whose table entries are +-1 (lost next to 2^25 in float32), then
    -2^25: the float32 sum misses every 1, the float64 sum is their count; thresholds half a
    unit below and above the count."""
    k = 2 + 4 * 60
    x = np.zeros((1, k), F32)
    x[0, 0], x[0, -1] = 2.0 ** 25, -(2.0 ** 25)
    x[0, 1:-1:4] = 1.0
    w = np.ones((4, k))
    s = (x.astype(np.float64) @ w[0])[0]
    assert s == 60.0
    f32_sum = np.float32(0)
    for v in x[0]:
        f32_sum = np.float32(f32_sum + v)
    assert f32_sum != s  # float32 really is wrong here
    bias = np.zeros(4, F32)
    thresh = np.array([59.5, 60.5, 60.0, -1.0], F32)
    flip = np.array([False, False, True, False])
    want = check_all_backends(x, reference.pack(w), k, bias, thresh, flip)
    np.testing.assert_array_equal(reference.unpack(want, 4)[0], [1, -1, 1, 1])


def test_inf_nan_and_float32_overflow():
    """Rows with NaN, +inf, -inf, both infinities, and float32 partial sums beyond its range
    that float64 keeps finite (2^127 + 2^127 - 2^127)."""
    rng = np.random.default_rng(7)
    k, n = 70, 130
    x = exact_inputs(rng, (6, k))
    x[0, 3] = np.nan
    x[1, 5] = np.inf
    x[2, 9] = -np.inf
    x[3, [2, 40]] = [np.inf, -np.inf]
    x[4, :3] = [2.0 ** 127, 2.0 ** 127, 2.0 ** 127]
    x[5, :] = F32(3e38)
    w = pm1(rng, (n, k))
    w[:, :3] = [1.0, 1.0, -1.0]
    bias = rng.standard_normal(n).astype(F32)
    thresh = np.where(rng.random(n) < 0.5, F32(2.0 ** 127), rng.standard_normal(n)).astype(F32)
    check_all_backends(x, reference.pack(w), k, bias, thresh, rng.random(n) < 0.5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_paper_mlp_shape_on_the_thread_pool(threads):
    """The paper MLP's first layer (784 -> 4096) on MNIST-like input (zeros and [-1, 1]) at
    batches 1 and 9, thresholds where its sums are: outputs split across tasks."""
    rng = np.random.default_rng(threads)
    w = pm1(rng, (4096, 784))
    wp = reference.pack(w)
    bias = rng.standard_normal(4096).astype(F32)
    kernels.set_num_threads(threads)
    for m in [1, 9]:
        x = np.where(rng.random((m, 784)) < 0.8, -1.0, rng.uniform(-1, 1, (m, 784))).astype(F32)
        thresh = (rng.standard_normal(4096) * 20).astype(F32)
        check_all_backends(x, wp, 784, bias, thresh, rng.random(4096) < 0.5)


def test_errors():
    w = reference.pack(np.ones((3, 70)))
    b, t, f = np.zeros(3, F32), np.zeros(3, F32), np.zeros(3, bool)
    for ops in (float_dense_sign, kernels):
        with pytest.raises(TypeError, match=r"^first_dense_float_sign: x must be a float32 numpy "
                                            r"array, got float64$"):
            ops.first_dense_float_sign(np.zeros((2, 70)), w, 70, b, t, f)
        with pytest.raises(ValueError, match=r"^first_dense_float_sign: x must have k=70 columns"):
            ops.first_dense_float_sign(np.zeros((2, 69), F32), w, 70, b, t, f)
        with pytest.raises(ValueError, match=r"^first_dense_float_sign: bias must have shape"):
            ops.first_dense_float_sign(np.zeros((2, 70), F32), w, 70, np.zeros(4, F32), t, f)
        with pytest.raises(ValueError, match=r"^first_dense_float_sign: thresh must not contain "
                                             r"NaN$"):
            ops.first_dense_float_sign(np.zeros((2, 70), F32), w, 70, b,
                                       np.full(3, np.nan, F32), f)
        with pytest.raises(TypeError, match=r"^first_dense_float_sign: flip must be a bool"):
            ops.first_dense_float_sign(np.zeros((2, 70), F32), w, 70, b, t, np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"^first_dense_float_sign: buffer panels holds"):
        from binarynet.engine import _core
        _core.first_dense_float_sign(np.zeros((2, 70), F32), w, b, t, f.view(np.uint8), 2, 3, 70,
                                     np.zeros((2, 1), np.uint64), b"\0" * 8)
