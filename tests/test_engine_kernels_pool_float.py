"""The real-valued stream's pools in C (csrc/pool_float.c: maxpool2d_float, avgpool2d_float,
global_avgpool_float): every ISA row bit for bit equal to float_ops (maxpool_real, avgpool,
global_avgpool), signed zeros, infinities and NaN included, over odd channel counts, strides,
padding, ceil_mode, count_include_pad, kernels wider than the stride, batches and tiny maps; the
thread pool; strict argument checks and hostile calls of the core; the graph runner takes the
pools through the kernels where they have them."""
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import _core, float_ops, kernels
from binarynet.engine.runner_float import FloatStreamOps

from engine_fixtures import assert_same_bits

BACKENDS = kernels.available_backends()
F32 = np.float32


pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest


def values(rng, shape, special=0.0):
    """float32 of both signs, many ties (small integers, +0 and -0), and a share ``special`` of
    +-inf and NaN."""
    x = np.where(rng.random(shape) < 0.5, rng.standard_normal(shape), rng.integers(-2, 3, shape))
    x = np.where(rng.random(shape) < 0.15, np.copysign(0.0, rng.random(shape) - 0.5), x)
    x = np.where(rng.random(shape) < special, rng.choice([np.inf, -np.inf, np.nan], shape), x)
    return x.astype(F32)


def assert_every_row_equals_float_ops(x, kernel, stride, padding, ceil_mode, count_include_pad):
    geometry = (kernel, stride, padding, ceil_mode)
    with np.errstate(invalid="ignore"):  # inf - inf in a sum: NaN, in both
        want_max = float_ops.maxpool_real(x, *geometry)
        want_avg = float_ops.avgpool(x, *geometry, count_include_pad)
        want_mean = float_ops.global_avgpool(x)
    for name in BACKENDS:
        kernels.set_backend(name)
        assert_same_bits(kernels.maxpool2d_float(x, *geometry), want_max)
        assert_same_bits(kernels.avgpool2d_float(x, *geometry, count_include_pad), want_avg,
                           nan_payloads=False)
        assert_same_bits(kernels.global_avgpool_float(x), want_mean, nan_payloads=False)


@settings(max_examples=80, deadline=None)
@given(n=st.sampled_from([1, 3]), h=st.integers(1, 9), w=st.integers(1, 9),
       c=st.sampled_from([1, 2, 3, 8, 16, 17, 33, 65, 130]),
       kernel=st.tuples(*[st.integers(1, 4)] * 2), stride=st.tuples(*[st.integers(1, 3)] * 2),
       pad=st.tuples(*[st.integers(0, 2)] * 2), ceil_mode=st.booleans(),
       count_include_pad=st.booleans(), special=st.sampled_from([0.0, 0.0, 0.05]),
       seed=st.integers(0, 2**31 - 1))
def test_property_every_row_equals_float_ops_bit_for_bit(n, h, w, c, kernel, stride, pad,
                                                         ceil_mode, count_include_pad, special,
                                                         seed):
    padding = tuple(min(p, k // 2) for p, k in zip(pad, kernel))
    if any(k > size + 2 * p for k, size, p in zip(kernel, (h, w), padding)):
        return  # the kernel does not fit: the error cases are tested below
    x = values(np.random.default_rng(seed), (n, h, w, c), special)
    assert_every_row_equals_float_ops(x, kernel, stride, padding, ceil_mode, count_include_pad)


@pytest.mark.parametrize("shape, k, s, p, ceil_mode", [
    # (n, h, w, c), kernel, stride, padding: the pools of BNNs and the edge cases
    ((1, 28, 28, 64), 3, 2, 1, False),   # ReActNet / ResNet stem max pool (smaller map)
    ((3, 15, 15, 32), 3, 2, 1, True),    # QuickNet-style, odd map, ceil_mode
    ((1, 14, 14, 65), 2, 2, 0, False),   # ReActNet's downsampling shortcut avg pool, odd channels
    ((3, 7, 9, 3), 3, 3, 0, True),       # stride = kernel, a partial last window
    ((1, 1, 1, 1), 1, 1, 0, False),      # 1x1 map
    ((3, 2, 3, 1), 2, 1, 1, True),       # tiny map, padding all round
    ((1, 2, 3, 130), 3, 2, 1, True),     # kernel larger than the map (padding fills it)
    ((1, 6, 6, 8), 4, 1, 2, False),      # kernel > stride, the widest allowed padding
])
def test_bnn_pool_shapes_and_tiny_maps(shape, k, s, p, ceil_mode):
    x = values(np.random.default_rng(sum(shape)), shape)
    for count_include_pad in (False, True):
        assert_every_row_equals_float_ops(x, (k, k), (s, s), (p, p), ceil_mode,
                                          count_include_pad)


def test_torch_divisors_with_ceil_mode_and_padding():
    """A window that ceil_mode adds past the padded edge divides by the padded part only
    (count_include_pad) or by its inputs: hand-computed, for every row."""
    x = np.arange(1, 7, dtype=F32).reshape(1, 1, 6, 1)  # one row: 1 2 3 4 5 6
    for name in BACKENDS:
        kernels.set_backend(name)
        # windows of 3, stride 2 over [0] 1 .. 6 [0]: from -1, 1, 3, and (ceil_mode) 5, which
        # reaches past the padded edge: 6 and one padding count with count_include_pad
        got = kernels.avgpool2d_float(x, (1, 3), (1, 2), (0, 1), True, True)
        np.testing.assert_array_equal(got.ravel(), [3 / 3, 9 / 3, 15 / 3, 6 / 2])
        got = kernels.avgpool2d_float(x, (1, 3), (1, 2), (0, 1), True, False)
        np.testing.assert_array_equal(got.ravel(), [3 / 2, 9 / 3, 15 / 3, 6 / 1])
        got = kernels.maxpool2d_float(x, (1, 3), (1, 2), (0, 1), True)
        np.testing.assert_array_equal(got.ravel(), [2, 4, 6, 6])
        assert kernels.maxpool2d_float(x, (1, 3), (1, 2), (0, 1), False).shape == (1, 1, 3, 1)


def test_max_propagates_nan_and_breaks_signed_zero_ties_as_numpy():
    """np.maximum(m, t) keeps m's NaN, else takes t unless m > t: the first NaN of a window in
    (row, column) order wins, with its payload; among +0 and -0 the last one does."""
    nan_a = np.array([0x7FC00001], np.uint32).view(F32)[0]
    nan_b = np.array([0xFFC00002], np.uint32).view(F32)[0]
    x = np.zeros((1, 2, 2, 17), F32)
    x[0, :, :, 0] = [[-0.0, 0.0], [0.0, -0.0]]  # last tap -0
    x[0, :, :, 1] = [[-0.0, -0.0], [-0.0, 0.0]]  # last tap +0
    x[0, :, :, 2] = [[1.0, nan_a], [nan_b, 2.0]]  # the first NaN in row-major order
    x[0, :, :, 3] = [[-np.inf, -np.inf], [-np.inf, -np.inf]]
    x[0, :, :, 16] = [[np.inf, nan_b], [3.0, -1.0]]  # the masked tail vector
    want = float_ops.maxpool_real(x, (2, 2), (1, 1), (0, 0), False)
    assert np.signbit(want[0, 0, 0, :2]).tolist() == [True, False]
    assert want[0, 0, 0, 2].view(np.uint32) == 0x7FC00001
    assert want[0, 0, 0, 3] == -np.inf
    for name in BACKENDS:
        kernels.set_backend(name)
        assert_same_bits(kernels.maxpool2d_float(x, (2, 2), (1, 1), (0, 0), False), want)


def test_global_avgpool_sums_in_one_fixed_order():
    """float_ops.global_avgpool: +0, then each value in (h, w) order, over H * W, as the
    kernel; numpy's own mean sums a single channel pairwise and gave other bits."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 30, 31, 1)) * 1000).astype(F32)
    total = np.zeros((2, 1), F32)
    for t in range(30 * 31):
        total += x.reshape(2, -1, 1)[:, t]
    want = (total / F32(30 * 31)).reshape(2, 1, 1, 1)
    assert_same_bits(float_ops.global_avgpool(x), want)
    for name in BACKENDS:
        kernels.set_backend(name)
        assert_same_bits(kernels.global_avgpool_float(x), want)
    minus_zeros = np.full((1, 2, 2, 3), -0.0, F32)  # a sum from +0 is never -0
    assert not np.signbit(float_ops.global_avgpool(minus_zeros)).any()
    assert not np.signbit(kernels.global_avgpool_float(minus_zeros)).any()


def test_on_the_thread_pool_the_result_is_the_same():
    x = values(np.random.default_rng(3), (3, 40, 40, 64))  # 2.8M taps: enough to wake the pool
    want_max = float_ops.maxpool_real(x, (3, 3), (1, 1), (1, 1), False)
    want_avg = float_ops.avgpool(x, (3, 3), (1, 1), (1, 1), False, False)
    for name in BACKENDS:
        kernels.set_backend(name)
        for threads in (1, 3):
            kernels.set_num_threads(threads)
            assert_same_bits(kernels.maxpool2d_float(x, (3, 3), (1, 1), (1, 1), False),
                               want_max)
            assert_same_bits(kernels.avgpool2d_float(x, (3, 3), (1, 1), (1, 1), False, False),
                               want_avg)


def test_argument_errors():
    x = np.zeros((1, 5, 5, 3), F32)
    cases = [
        (TypeError, r"x must have dtype float32, got float64",
         lambda: kernels.maxpool2d_float(x.astype(np.float64), 2, 2, 0, False)),
        (ValueError, r"x must be 4-D", lambda: kernels.maxpool2d_float(x[0], 2, 2, 0, False)),
        (ValueError, r"x must be C-contiguous",
         lambda: kernels.maxpool2d_float(np.zeros((1, 5, 10, 3), F32)[:, :, ::2], 2, 2, 0, False)),
        (ValueError, r"x must not be empty",
         lambda: kernels.maxpool2d_float(np.zeros((0, 5, 5, 3), F32), 2, 2, 0, False)),
        (ValueError, r"stride values must be >= 1",
         lambda: kernels.maxpool2d_float(x, 2, 0, 0, False)),
        (TypeError, r"kernel must be an int or a pair of ints",
         lambda: kernels.maxpool2d_float(x, (2, 2, 2), 2, 0, False)),
        (ValueError, r"padding values must be >= 0",
         lambda: kernels.maxpool2d_float(x, 2, 2, -1, False)),
        (ValueError, r"padding \(2, 1\) must be at most half the kernel \(3, 3\)",
         lambda: kernels.maxpool2d_float(x, 3, 2, (2, 1), False)),
        (ValueError, r"kernel \(8, 2\) is larger than the padded 5x5 input",
         lambda: kernels.maxpool2d_float(x, (8, 2), 2, (1, 1), False)),
        (TypeError, r"ceil_mode must be a bool, got int",
         lambda: kernels.maxpool2d_float(x, 2, 2, 0, 1)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=r"^maxpool2d_float: " + message):
            call()
    with pytest.raises(TypeError, match=r"^avgpool2d_float: count_include_pad must be a bool"):
        kernels.avgpool2d_float(x, 2, 2, 0, False, None)
    with pytest.raises(ValueError, match=r"^avgpool2d_float: kernel \(6, 6\) is larger"):
        kernels.avgpool2d_float(x, 6, 1, 0, True, True)
    with pytest.raises(TypeError, match=r"^global_avgpool_float: x must have dtype float32"):
        kernels.global_avgpool_float(x.astype(np.float16))
    with pytest.raises(ValueError, match=r"^global_avgpool_float: x must be 4-D"):
        kernels.global_avgpool_float(np.zeros((2, 3), F32))


def geometry(n=1, h=5, w=5, c=3, k=3, s=2, p=1):
    return (n, h, w, c, k, k, s, s, p, p)


def test_hostile_core_calls_are_refused_before_memory_is_touched():
    x, out = np.zeros((1, 5, 5, 3), F32), np.empty((1, 3, 3, 3), F32)
    _core.pool2d_float(x, geometry(), True, False, False, out)  # the well-formed call
    _core.pool2d_float(x, geometry(), False, True, True, out)  # ceil_mode adds no window here
    with pytest.raises(ValueError, match=r"^pool2d_float: buffer out holds 104 bytes, "
                                         r"expected 108$"):
        _core.pool2d_float(x, geometry(), True, False, False, np.empty(26, F32))
    _core.pool2d_float(x, geometry(k=2, s=2, p=0), True, True, False, out)  # ceil_mode: 3x3
    with pytest.raises(ValueError, match=r"^pool2d_float: buffer out holds 108 bytes, "
                                         r"expected 48$"):  # without ceil_mode: 2x2
        _core.pool2d_float(x, geometry(k=2, s=2, p=0), True, False, False, out)
    with pytest.raises(ValueError, match=r"^pool2d_float: buffer out holds 108 bytes, "
                                         r"expected 48$"):  # no window starts in the padding
        _core.pool2d_float(x, geometry(k=3, s=3, p=1), True, True, False, out)
    with pytest.raises(ValueError, match=r"^pool2d_float: buffer x holds 300 bytes, "
                                         r"expected 400$"):
        _core.pool2d_float(x, geometry(c=4, k=1, s=1, p=0), True, False, False,
                           np.empty((1, 5, 5, 4), F32))
    with pytest.raises(ValueError, match=r"^pool2d_float: sizes must be >= 1, got 0"):
        _core.pool2d_float(x, geometry(s=0), True, False, False, out)
    with pytest.raises(ValueError, match=r"^pool2d_float: padding must be >= 0"):
        _core.pool2d_float(x, geometry(p=-1), True, False, False, out)
    with pytest.raises(ValueError, match=r"^pool2d_float: padding 2 must be at most half the "
                                         r"kernel 3$"):
        _core.pool2d_float(x, geometry(p=2), True, False, False, out)
    with pytest.raises(ValueError, match=r"^pool2d_float: kernel does not fit the input"):
        _core.pool2d_float(x, geometry(k=8), True, False, False, out)
    with pytest.raises(OverflowError, match=r"^pool2d_float: the padded input height"):
        _core.pool2d_float(x, geometry(k=2**63 - 1, p=2**62 - 1), True, False, False, out)
    huge = np.empty((1, 4, 4, 3), F32)  # windows far wider than the map: each one covers it
    x[0, 2, 3] = [1, -2, 3]
    _core.pool2d_float(x, geometry(k=2**62, s=2, p=2**61), True, True, False, huge)
    np.testing.assert_array_equal(huge, np.broadcast_to(x.max(axis=(1, 2)), huge.shape))
    with pytest.raises(OverflowError, match=r"^pool2d_float: the size of x overflows"):
        _core.pool2d_float(x, geometry(n=2**40, h=2**40), True, False, False, out)
    with pytest.raises(ValueError, match=r"^pool2d_float: buffer x is not aligned"):
        raw = np.zeros(76, F32).view(np.uint8)[1:301]
        _core.pool2d_float(raw, geometry(), True, False, False, out)


class _Host(FloatStreamOps):
    """The runner's side of FloatStreamOps: the CPU backend's float ops and arrays."""
    def __init__(self, kernel_module):
        self.kernels, self.floats = kernel_module, float_ops
        self.xp = types.SimpleNamespace(contiguous=np.ascontiguousarray)


def test_the_runner_takes_the_pools_through_the_kernels_where_they_have_them():
    x = values(np.random.default_rng(5), (2, 9, 9, 5))
    pool = dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True,
                count_include_pad=False)
    calls = []

    def spy(name):
        def call(*args):
            calls.append((name, args[0].shape))
            return getattr(kernels, name)(*args)
        return call

    names = ("maxpool2d_float", "avgpool2d_float", "global_avgpool_float")
    host = _Host(types.SimpleNamespace(**{name: spy(name) for name in names}))
    plain = _Host(types.SimpleNamespace())  # kernels without them (the GPU backend's)
    for runner in (host, plain):
        assert_same_bits(runner._maxpool_real(0, pool, x),
                           float_ops.maxpool_real(x, (3, 3), (2, 2), (1, 1), True))
        assert_same_bits(runner._avgpool(0, pool, x),
                           float_ops.avgpool(x, (3, 3), (2, 2), (1, 1), True, False))
        assert_same_bits(runner._global_avgpool(0, {}, x[:, 1:]), float_ops.global_avgpool(
            np.ascontiguousarray(x[:, 1:])))  # a strided view: made contiguous for the kernel
    assert calls == [(name, shape) for name, shape in zip(names, [x.shape] * 2 + [(2, 8, 9, 5)])]
