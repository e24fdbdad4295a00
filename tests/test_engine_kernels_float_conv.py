"""conv2d_float, the real-valued stream's convolution in C (csrc/float_conv.c): every ISA row
bit for bit equal to the numpy twin (float32 fused multiply-adds in one fixed order; the twin's
fma correctly rounded, also where float64 sums round twice), the twin within a float32 tolerance of float_ops.conv_real (the graph's numpy semantics), odd channels, groups (1, 2,
depthwise with and without a channel multiplier), stride, padding, dilation, batches, the shapes
of BNN stems / BlurPool / 1x1 transitions / dense heads, the thread pool, strict argument checks
in both modules and hostile calls of the core; the graph runner takes conv_real and dense_real
through it."""
import types
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import _core, float_conv, float_ops, kernels, reference
from binarynet.engine.runner_float import FloatStreamOps
from binarynet.engine.runner import Runner

BACKENDS = kernels.available_backends()
F32 = np.float32


pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest


def operands(rng, n, h, w, c, o, kh, kw, groups):
    x = rng.standard_normal((n, h, w, c)).astype(F32)
    weight = rng.standard_normal((o, kh, kw, c // groups)).astype(F32)
    return x, weight, rng.standard_normal(o).astype(F32)


def assert_every_row_equals_reference(x, weight, bias, *geometry):
    want = reference.conv2d_float(x, weight, bias, *geometry)
    for name in BACKENDS:
        kernels.set_backend(name)
        got = kernels.conv2d_float(x, weight, bias, *geometry)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    return want


def assert_close_to_numpy_semantics(got, x, weight, bias, *geometry):
    """|got - conv_real| <= 1e-5 * (sum of |terms|), per output (a float32 tolerance)."""
    want = float_ops.conv_real(x, weight, bias, *geometry)
    terms = float_ops.conv_real(np.abs(x).astype(np.float64), np.abs(weight).astype(np.float64),
                                np.abs(bias).astype(np.float64), *geometry)
    assert np.all(np.abs(got.astype(np.float64) - want) <= 1e-5 * terms + 1e-30)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       cg=st.integers(1, 7), og=st.integers(1, 19), groups=st.sampled_from([1, 2, 3, "dw"]),
       kh=st.integers(1, 3), kw=st.integers(1, 3), stride=st.tuples(*[st.integers(1, 2)] * 2),
       padding=st.tuples(*[st.integers(0, 2)] * 2), dilation=st.tuples(*[st.integers(1, 2)] * 2),
       seed=st.integers(0, 2**31 - 1))
def test_property_every_row_equals_the_reference_and_the_numpy_semantics(
        n, h, w, cg, og, groups, kh, kw, stride, padding, dilation, seed):
    if groups == "dw":  # depthwise: one input channel per group, og = the channel multiplier
        groups, cg = cg + 1, 1
    c, o = cg * groups, og * groups
    if any(size + 2 * p < d * (k - 1) + 1
           for size, p, d, k in zip((h, w), padding, dilation, (kh, kw))):
        return  # the kernel does not fit: the error cases are tested below
    x, weight, bias = operands(np.random.default_rng(seed), n, h, w, c, o, kh, kw, groups)
    geometry = (stride, padding, dilation, groups)
    got = assert_every_row_equals_reference(x, weight, bias, *geometry)
    assert_close_to_numpy_semantics(got, x, weight, bias, *geometry)


@pytest.mark.parametrize("shape", [
    # (n, h, w, c, o, k, stride, padding, groups): a BNN's real-valued layers, smaller maps
    (1, 24, 24, 3, 8, 3, 2, 1, 1),      # QuickNet stem
    (1, 5, 50, 3, 8, 3, 1, 1, 1),       # wide rows: interior tiles (offset table) and borders
    (2, 17, 17, 3, 32, 3, 2, 1, 1),     # wider stem, odd map
    (1, 22, 22, 3, 64, 7, 2, 3, 1),     # ResNet-18 stem
    (1, 12, 12, 32, 32, 3, 2, 1, 32),   # depthwise 3x3 stride 2 (BlurPool)
    (1, 9, 9, 24, 48, 3, 1, 1, 24),     # depthwise with multiplier 2
    (1, 7, 7, 96, 200, 1, 1, 0, 1),     # 1x1 transition (odd outputs: masked tail vectors)
    (1, 1, 1, 512, 1000, 1, 1, 0, 1),   # dense 512 -> 1000 as a 1x1 conv on a 1x1 map
    (3, 1, 1, 77, 10, 1, 1, 0, 1),      # dense, batch 3
    (2, 1, 1, 3, 9, 1, 1, 0, 1),        # dense, fewer inputs than one pass of 4
])
def test_bnn_layer_shapes(shape):
    n, h, w, c, o, k, s, p, g = shape
    x, weight, bias = operands(np.random.default_rng(sum(shape)), n, h, w, c, o, k, k, g)
    geometry = ((s, s), (p, p), (1, 1), g)
    got = assert_every_row_equals_reference(x, weight, bias, *geometry)
    assert_close_to_numpy_semantics(got, x, weight, bias, *geometry)


def test_on_the_thread_pool_the_result_is_the_same():
    x, weight, bias = operands(np.random.default_rng(3), 2, 32, 30, 64, 136, 1, 1, 1)
    want = reference.conv2d_float(x, weight, bias)
    for name in BACKENDS:
        kernels.set_backend(name)
        for threads in (1, 3):  # 17M multiply-adds: enough work to wake the pool
            kernels.set_num_threads(threads)
            np.testing.assert_array_equal(kernels.conv2d_float(x, weight, bias), want)


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(["dense", "1x1 short row", "depthwise"]), n=st.integers(1, 3),
       odd=st.integers(0, 40).map(lambda i: 2 * i + 1), stride=st.integers(1, 2),
       threads=st.integers(2, 3), seed=st.integers(0, 2**31 - 1))
def test_paths_of_the_pool_equal_the_reference(kind, n, odd, stride, threads, seed):
    """Enough work to wake the pool: a dense layer (outputs split across tasks), a 1x1 conv on a
    small map (one short row: outputs split), a depthwise conv read in place (interior tiles and
    zero-padded border pixels) with odd channels, stride and padding."""
    if kind == "dense":  # the 1x1 conv of (n, 1, 1, K), odd O: a masked last vector
        shape, geometry = (n, 1, 1, 600, 900 + odd, 1, 1, 1), ((1, 1), (0, 0), (1, 1), 1)
    elif kind == "1x1 short row":  # 5x5 map: 25n pixels < 64
        shape, geometry = (n, 5, 5, 128, 300 + odd, 1, 1, 1), ((1, 1), (0, 0), (1, 1), 1)
    else:  # at least 1.7e5 multiply-adds: above the depthwise bound
        shape, geometry = (1, 50, 49, 32 + odd, 32 + odd, 3, 3, 32 + odd), \
            ((stride, stride), (1, 1), (1, 1), 32 + odd)
    x, weight, bias = operands(np.random.default_rng(seed), *shape)
    kernels.set_num_threads(threads)
    assert_every_row_equals_reference(x, weight, bias, *geometry)


def test_padding_reads_zeros_and_inf_propagates_like_the_reference():
    x = np.ones((1, 3, 3, 2), F32)
    weight = np.ones((1, 3, 3, 2), F32)
    got = kernels.conv2d_float(x, weight, np.zeros(1, F32), padding=(1, 1))
    np.testing.assert_array_equal(got[0, :, :, 0], [[8, 12, 8], [12, 18, 12], [8, 12, 8]])
    x[0, 0, 0, 0] = np.inf
    assert_every_row_equals_reference(x, weight, np.zeros(1, F32), (1, 1), (1, 1), (1, 1), 1)


@pytest.mark.parametrize("ops", [reference, kernels])
def test_argument_errors(ops):
    x, weight, bias = operands(np.random.default_rng(0), 1, 5, 5, 4, 6, 3, 3, 2)
    with pytest.raises(TypeError, match=r"^conv2d_float: x must have dtype float32, got float64"):
        ops.conv2d_float(x.astype(np.float64), weight, bias, groups=2)
    with pytest.raises(ValueError, match=r"^conv2d_float: x must be C-contiguous"):
        ops.conv2d_float(np.zeros((1, 5, 10, 4), F32)[:, :, ::2], weight, bias, groups=2)
    with pytest.raises(ValueError, match=r"^conv2d_float: weight must have C/groups = 4 input "):
        ops.conv2d_float(x, weight, bias)
    with pytest.raises(ValueError, match=r"^conv2d_float: groups = 3 must divide"):
        ops.conv2d_float(x, weight, bias, groups=3)
    with pytest.raises(ValueError, match=r"^conv2d_float: bias must have shape \(6,\)"):
        ops.conv2d_float(x, weight, bias[:5], groups=2)
    with pytest.raises(TypeError, match=r"^conv2d_float: bias must be a float32"):
        ops.conv2d_float(x, weight, bias.astype(np.float64), groups=2)
    with pytest.raises(ValueError, match=r"^conv2d_float: kernel 3x3 .* does not fit"):
        ops.conv2d_float(x[:, :2], weight, bias, groups=2)
    with pytest.raises(ValueError, match=r"^conv2d_float: groups must be in"):
        ops.conv2d_float(x, weight, bias, groups=0)
    with pytest.raises(ValueError, match=r"^conv2d_float: stride values must be >= 1"):
        ops.conv2d_float(x, weight, bias, stride=0, groups=2)


def geometry(n=1, h=5, w=5, c=4, o=6, kh=3, kw=3, s=1, p=0, d=1, g=1):
    return (n, h, w, c, o, kh, kw, s, s, p, p, d, d, g)


def test_hostile_core_calls_are_refused_before_memory_is_touched():
    x, b = np.zeros((1, 5, 5, 4), F32), np.zeros(6, F32)
    w = kernels.conv2d_float_panels(np.zeros((6, 3, 3, 4), F32), 1)  # (1, 3, 3, 4, 16)
    out = np.empty((1, 3, 3, 6), F32)
    _core.conv2d_float(x, w, b, geometry(), out)  # the well-formed call
    with pytest.raises(ValueError, match=r"^conv2d_float: buffer out holds 212 bytes, "
                                         r"expected 216$"):
        _core.conv2d_float(x, w, b, geometry(), np.empty(53, F32))
    with pytest.raises(ValueError, match=r"^conv2d_float: buffer panels holds 2304 bytes, "
                                         r"expected 4608$"):  # 17 outputs: two 16-lane rows
        _core.conv2d_float(x, w, np.zeros(17, F32), geometry(o=17), np.empty(153, F32))
    with pytest.raises(ValueError, match=r"^conv2d_float: buffer panels holds 2304 bytes, "
                                         r"expected 576$"):  # depthwise: (taps, channels)
        _core.conv2d_float(x, w, b[:4], geometry(o=4, g=4), np.empty(36, F32))
    with pytest.raises(ValueError, match=r"^conv2d_float: buffer bias holds"):
        _core.conv2d_float(x, w, b[:5], geometry(), out)
    with pytest.raises(ValueError, match=r"^conv2d_float: groups = 3 must divide c = 4"):
        _core.conv2d_float(x, w, b, geometry(g=3), out)
    with pytest.raises(ValueError, match=r"^conv2d_float: sizes must be >= 1, got 0"):
        _core.conv2d_float(x, w, b, geometry(g=0), out)
    with pytest.raises(ValueError, match=r"^conv2d_float: padding must be >= 0"):
        _core.conv2d_float(x, w, b, geometry(p=-1), out)
    with pytest.raises(ValueError, match=r"^conv2d_float: kernel does not fit the input"):
        _core.conv2d_float(x, w, b, geometry(kh=7), out)
    with pytest.raises(OverflowError, match=r"^conv2d_float: the padded input height"):
        _core.conv2d_float(x, w, b, geometry(p=2**62), out)
    with pytest.raises(OverflowError, match=r"^conv2d_float: the size of x overflows"):
        _core.conv2d_float(x, w, b, geometry(n=2**40, h=2**40), out)
    with pytest.raises(OverflowError, match=r"^conv2d_float: the size of panels overflows"):
        _core.conv2d_float(x, w, b, geometry(kh=2**30, kw=2**30, p=2**30), out)
    with pytest.raises(ValueError, match=r"^conv2d_float: buffer x is not aligned"):
        raw = np.zeros(101, F32).view(np.uint8)[1:401]
        _core.conv2d_float(raw, w, b, geometry(), out)


def _correctly_rounded_fma(a, b, c) -> np.float32:
    """float32 a * b + c by exact rational arithmetic, rounded to nearest, ties to even."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:  # the sign of zero: float64 has it right (the product is exact)
        return F32(np.float64(a) * np.float64(b) + np.float64(c))
    near = np.float32(float(exact))
    candidates = [np.nextafter(near, F32(-np.inf)), near, np.nextafter(near, F32(np.inf))]
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact),
                                          int(np.asarray(v).view(np.int32)) & 1))


def test_fma32_is_the_correctly_rounded_fused_multiply_add():
    """Each term of a sum is one fused multiply-add, in the kernel (vfmadd, fmaf) and in the
    twin (float_conv.fma32): a 1x1 conv of one channel is y = fma(x, w, bias). Cases where the
    float64 sum lands on a float32 midpoint (a * b = 2^-24 (1 + u^3) beside c = 1, which float64
    rounds to 1 + 2^-24 and then float32 to 1: wrong) and random ones over wide exponents,
    subnormals, zeros of both signs."""
    rng = np.random.default_rng(7)
    a, b, c = [], [], []
    for k in (10, 11, 12):  # u^3 below half a float64 ulp of c, 1 - u + u^2 a float32
        for sign, scale in ((1, 1.0), (-1, 1.0), (1, 2.0**-100), (-1, 2.0**60)):
            u = 2.0**-k
            a.append(1 + u)
            b.append(sign * (1 - u + u * u) * 2.0**-24 * scale)
            c.append(sign * scale)
    a, b, c = (np.array(v, F32) for v in (a, b, c))
    naive = (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(F32)
    hard = len(a)
    a = np.concatenate([a, (rng.standard_normal(400) * 2.0 ** rng.integers(-70, 70, 400)).astype(F32),
                        F32([0.0, -0.0, 1e-40, 3.0])])
    b = np.concatenate([b, (rng.standard_normal(400) * 2.0 ** rng.integers(-70, 70, 400)).astype(F32),
                        F32([-0.0, 0.0, 1e-3, 1e-45])])
    c = np.concatenate([c, (rng.standard_normal(400) * 2.0 ** rng.integers(-140, 70, 400)).astype(F32),
                        F32([-0.0, -0.0, -1e-43, 0.0])])
    want = np.array([_correctly_rounded_fma(*t) for t in zip(a, b, c)], F32)
    twin = float_conv.fma32(a, b, c)
    np.testing.assert_array_equal(twin.view(np.int32), want.view(np.int32))
    assert np.all(naive != want[:hard])  # the cases do round twice in float64
    x = a.reshape(-1, 1, 1, 1)
    for i in range(len(a)):  # one weight per conv: each case as its own 1x1 conv
        ref = reference.conv2d_float(x[i:i + 1], b[i].reshape(1, 1, 1, 1), c[i:i + 1])
        assert ref.view(np.int32)[0, 0, 0, 0] == want.view(np.int32)[i]
    for name in BACKENDS:
        kernels.set_backend(name)
        got = np.array([kernels.conv2d_float(x[i:i + 1], b[i].reshape(1, 1, 1, 1), c[i:i + 1])
                        [0, 0, 0, 0] for i in range(len(a))], F32)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32), err_msg=name)


def test_fma32_overflow_inf_and_nan_as_the_kernel():
    """Past float32's range the fused multiply-add overflows to inf (also where the float64 sum
    would not), inf times 0 and inf - inf give NaN, and finite sums beside inf stay inf."""
    big, inf, nan = F32(3e38), F32(np.inf), F32(np.nan)
    a = F32([big, inf, inf, inf, nan, 1.0, -big, big])
    b = F32([2.0, 0.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0])
    c = F32([0.0, 1.0, 1.0, -inf, 1.0, nan, 0.0, big])
    want = F32([inf, nan, inf, nan, nan, nan, -inf, inf])
    np.testing.assert_array_equal(float_conv.fma32(a, b, c), want)
    for name in BACKENDS:
        kernels.set_backend(name)
        got = [kernels.conv2d_float(a[i].reshape(1, 1, 1, 1), b[i].reshape(1, 1, 1, 1),
                                    c[i:i + 1])[0, 0, 0, 0] for i in range(len(a))]
        np.testing.assert_array_equal(F32(got), want, err_msg=name)


def test_panels_are_checked_and_optional():
    x, weight, bias = operands(np.random.default_rng(1), 1, 6, 6, 4, 10, 3, 3, 2)
    panels = kernels.conv2d_float_panels(weight, 2)
    assert panels.shape == (2, 3, 3, 2, 16) and panels.dtype == np.float32
    np.testing.assert_array_equal(panels[1, 2, 0, 1, :5], weight[5:, 2, 0, 1])
    assert not panels[..., 5:].any()
    np.testing.assert_array_equal(kernels.conv2d_float(x, weight, bias, groups=2, panels=panels),
                                  kernels.conv2d_float(x, weight, bias, groups=2))
    for ops in (reference, kernels):
        with pytest.raises(ValueError, match=r"^conv2d_float: panels must have shape "
                                             r"\(2, 3, 3, 2, 16\)"):
            ops.conv2d_float(x, weight, bias, groups=2, panels=panels[:1])


class _Host(FloatStreamOps):
    """The runner's side of FloatStreamOps: tensors from the op, the CPU backend's arrays."""
    def __init__(self, kernel_module):
        self.kernels, self.floats = kernel_module, float_ops
        self.xp = types.SimpleNamespace(contiguous=np.ascontiguousarray)
        self.cache = {}

    _cached = Runner._cached

    def _t(self, op, role):
        return op["tensors"][role]


def test_the_runner_takes_conv_real_and_dense_real_through_the_kernel():
    rng = np.random.default_rng(5)
    x, weight, bias = operands(rng, 2, 9, 9, 3, 8, 3, 3, 1)
    conv = dict(stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1,
                tensors=dict(weight=weight, bias=bias))
    calls = []

    def spy(*args, panels):
        calls.append((args[0].shape, panels))
        return kernels.conv2d_float(*args, panels=panels)

    host = _Host(types.SimpleNamespace(conv2d_float=spy,
                                       conv2d_float_panels=kernels.conv2d_float_panels))
    y = host._conv_real(0, conv, x)
    np.testing.assert_array_equal(y, reference.conv2d_float(x, weight, bias, (2, 2), (1, 1)))
    xd = rng.standard_normal((3, 20)).astype(F32)
    dense = dict(tensors=dict(weight=rng.standard_normal((7, 20)).astype(F32), bias=bias[:7]))
    yd = host._dense_real(1, dense, xd)
    assert yd.shape == (3, 7) and [(shape, p.shape) for shape, p in calls] == [
        (x.shape, (1, 3, 3, 3, 16)), ((3, 1, 1, 20), (1, 1, 1, 20, 16))]
    host._conv_real(0, conv, x)  # the weight layout is made once per op and kept
    assert len(calls) == 3 and calls[2][1] is calls[0][1]
    np.testing.assert_allclose(yd, float_ops.dense_real(xd, **dense["tensors"]), rtol=1e-5,
                               atol=1e-5)
    # kernels without it (the GPU backend's) keep the float ops
    plain = _Host(types.SimpleNamespace())
    np.testing.assert_array_equal(plain._conv_real(0, conv, x),
                                  float_ops.conv_real(x, weight, bias, (2, 2), (1, 1), (1, 1), 1))
