"""The float-input first conv on conv2d_float's tiles (kernels.conv2d_float_sign): every ISA row
bit for bit equal to the numpy twin (float_conv_sign) over float32 / float64, NHWC / NCHW input,
pad values 0 and +-1, ties, infinite thresholds, flips and more than 64 channels; the twin equal
to the im2col float path where the float64 sums are exact; the graph runner takes a one-group
float first conv through it (float and per-channel uint8 input) and keeps the generic path for
groups; strict argument checks, hostile core calls; the float32 FMA probe."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import binarynet as bn
from binarynet.engine import _core, float_conv, float_conv_sign, kernels
from binarynet.export import export

BACKENDS = kernels.available_backends()
F32 = np.float32

pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest


def operands(rng, n, h, w, c, o, k, f64=False):
    x = rng.standard_normal((n, h, w, c))
    weight = np.where(rng.random((o, k, k, c)) < 0.5, -1, 1).astype(F32)
    if not f64:
        x, weight = x.astype(F32), (weight * rng.random((o, k, k, c))).astype(F32)
    return x, weight, rng.standard_normal(o).astype(F32)


def sums_z(x, weight, bias, stride, padding, dilation, pad_value):
    """float32(sum) + bias of the twin's sums, NHWC x (to place ties)."""
    (n, h, w, c), (ph, pw) = x.shape, padding
    padded = np.full((n, h + 2 * ph, w + 2 * pw, c), float(pad_value))
    padded[:, ph:ph + h, pw:pw + w] = x
    ho = (h + 2 * ph - dilation[0] * (weight.shape[1] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pw - dilation[1] * (weight.shape[2] - 1) - 1) // stride[1] + 1
    s = float_conv.float64_sums(padded, weight, 0.0, stride, dilation, (ho, wo), 1)
    return s.astype(F32) + bias


def assert_every_row_equals_the_twin(x, weight, bias, thresh, flip, *geometry, **kwargs):
    want = float_conv_sign.conv2d_float_sign(x, weight, bias, thresh, flip, *geometry, **kwargs)
    for name in BACKENDS:
        kernels.set_backend(name)
        got = kernels.conv2d_float_sign(x, weight, bias, thresh, flip, *geometry, **kwargs)
        assert got.dtype == np.uint64 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    return want


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 4),
       o=st.sampled_from([1, 7, 8, 33, 64, 65, 136]), k=st.integers(1, 3),
       stride=st.tuples(*[st.integers(1, 2)] * 2), padding=st.tuples(*[st.integers(0, 2)] * 2),
       dilation=st.tuples(*[st.integers(1, 2)] * 2), pad_value=st.sampled_from([0.0, 1.0, -1.0]),
       nchw=st.booleans(), f64=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_property_every_row_equals_the_twin(n, h, w, c, o, k, stride, padding, dilation,
                                            pad_value, nchw, f64, seed):
    if any(size + 2 * p < d * (k - 1) + 1 for size, p, d in zip((h, w), padding, dilation)):
        return
    rng = np.random.default_rng(seed)
    x, weight, bias = operands(rng, n, h, w, c, o, k, f64)
    z = sums_z(x, weight, bias, stride, padding, dilation, pad_value)
    thresh = rng.standard_normal(o).astype(F32)
    ties = rng.random(o) < 0.3  # thresholds equal to one output's z: exact ties
    thresh[ties] = z.reshape(-1, o)[rng.integers(0, z.size // o), ties]
    thresh[rng.random(o) < 0.1] = np.inf
    thresh[rng.random(o) < 0.1] = -np.inf
    flip = rng.random(o) < 0.5
    xin = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nchw else x
    assert_every_row_equals_the_twin(xin, weight, bias, thresh, flip, stride, padding, dilation,
                                     pad_value=pad_value, nchw=nchw)


@pytest.mark.parametrize("shape", [
    # (n, h, c, o, k, stride, padding): the paper ConvNet's first conv, a stem, odd widths
    (2, 32, 3, 128, 3, 1, 1),
    (1, 30, 3, 64, 7, 2, 3),
    (3, 9, 1, 200, 3, 1, 1),
])
def test_first_conv_shapes_and_the_im2col_path(shape):
    """Dyadic inputs (exact float64 sums): the im2col + float64 product path agrees bit for bit."""
    n, h, c, o, k, s, p = shape
    rng = np.random.default_rng(sum(shape))
    x = (rng.integers(-256, 256, (n, c, h, h)) / 128).astype(F32)  # NCHW, as the model takes
    weight = np.where(rng.random((o, k, k, c)) < 0.5, -1, 1).astype(F32)
    bias = (rng.integers(-64, 64, o) / 16).astype(F32)
    thresh, flip = (rng.integers(-64, 64, o) / 8).astype(F32), rng.random(o) < 0.5
    got = assert_every_row_equals_the_twin(x, weight, bias, thresh, flip, (s, s), (p, p),
                                           nchw=True)
    padded = np.pad(x.transpose(0, 2, 3, 1).astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    ho = (h + 2 * p - k) // s + 1
    patches = np.stack([padded[:, i:i + s * ho:s, j:j + s * ho:s] for i in range(k)
                        for j in range(k)], 3).reshape(n * ho * ho, -1)
    z = (patches @ weight.reshape(o, -1).T.astype(np.float64)).astype(F32) + bias
    bits = np.where(flip, z <= thresh, z >= thresh).reshape(n, ho, ho, o)
    np.testing.assert_array_equal(got, kernels.pack(bits.astype(np.int8) * 2 - 1))


def test_float32_sums_are_proven_or_summed_again_in_float64():
    """The AVX-512 row sums float32 input in float32 and must still give the float64 sums'
    bits: a pixel whose float32 sum loses ten 1s next to 2^25 (exact sum 10, float32 sum 0)
    against thresholds half a unit either side; inputs with inf / NaN (the float64 path);
    products that underflow float32 (tiny inputs and weights), ties included."""
    x = np.ones((1, 1, 3, 4), F32)  # NHWC, one output pixel of a 1x3 kernel
    x[0, 0, 0, 0], x[0, 0, 2, 3] = 2.0 ** 25, -(2.0 ** 25)
    weight = np.ones((4, 1, 3, 4), F32)
    bias = np.zeros(4, F32)
    thresh = np.array([9.5, 10.5, 10.0, 0.5], F32)
    flip = np.array([False, False, True, False])
    got = assert_every_row_equals_the_twin(x, weight, bias, thresh, flip)
    np.testing.assert_array_equal(kernels.unpack(got.reshape(1, -1), 4)[0], [1, -1, 1, 1])
    rng = np.random.default_rng(11)
    x, weight, bias = operands(rng, 2, 6, 6, 3, 40, 3)
    x[0, 1, 2, 0], x[1, 3, 3, 2] = np.inf, np.nan
    thresh, flip = rng.standard_normal(40).astype(F32), rng.random(40) < 0.5
    assert_every_row_equals_the_twin(x, weight, bias, thresh, flip, (1, 1), (1, 1))
    tiny_x = (rng.standard_normal((1, 6, 6, 3)) * 1e-38).astype(F32)
    tiny_w = (weight * 1e-6).astype(F32)
    z = sums_z(tiny_x, tiny_w, np.zeros(40, F32), (1, 1), (1, 1), (1, 1), 0.0)
    thresh = z.reshape(-1, 40)[7].copy()  # ties with one pixel's z
    assert_every_row_equals_the_twin(tiny_x, tiny_w, np.zeros(40, F32), thresh, flip, (1, 1),
                                     (1, 1))


def test_the_runner_takes_a_float_first_conv_through_the_tiles(monkeypatch):
    """Float input and uint8 with per-channel scales: conv2d_float_sign; the logits equal the
    generic im2col path's (dyadic inputs: exact sums). Groups > 1 keep the generic path."""
    torch.manual_seed(4)
    model = bn.models.get("cifar10_vgg", widths=(8, 16), fc=(16,), image_size=8).eval()
    x = torch.randint(-128, 128, (5, 3, 8, 8)) / 64.0
    packed = export(model, x)
    calls = []
    real = kernels.conv2d_float_sign
    monkeypatch.setattr(kernels, "conv2d_float_sign",
                        lambda *a, **kw: calls.append(a[0].dtype) or real(*a, **kw))
    fast = packed.predict(x.numpy())
    monkeypatch.delattr(kernels, "conv2d_float_sign")
    generic = bn.engine.PackedModel(packed.graph, packed.tensors).predict(x.numpy())
    np.testing.assert_array_equal(fast, generic)
    assert calls == [np.float32]
    # uint8 with one scale per channel: normalised to float64, then the tiles
    scaled = export(model, torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8),
                    input_scale=[1 / 64, 1 / 32, 1 / 16], input_offset=[-2.0, -4.0, -8.0])
    x8 = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8)).astype(np.uint8)
    monkeypatch.setattr(kernels, "conv2d_float_sign",
                        lambda *a, **kw: calls.append(a[0].dtype) or real(*a, **kw),
                        raising=False)
    fast = scaled.predict(x8)
    monkeypatch.delattr(kernels, "conv2d_float_sign")
    generic = bn.engine.PackedModel(scaled.graph, scaled.tensors).predict(x8)
    np.testing.assert_array_equal(fast, generic)
    assert calls == [np.float32, np.float64]


def test_a_grouped_float_first_conv_keeps_the_generic_path(monkeypatch):
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        bn.nn.BinaryConv2d(3, 6, 3, groups=3, padding=1), torch.nn.BatchNorm2d(6), bn.nn.Sign(),
        torch.nn.Flatten(), bn.nn.BinaryLinear(6 * 8 * 8, 10), torch.nn.BatchNorm1d(10)).eval()
    x = torch.randn(3, 3, 8, 8)
    packed = export(model, x)
    assert packed.graph["ops"][0]["op"] == "first_conv" and packed.graph["ops"][0]["groups"] == 3
    monkeypatch.setattr(kernels, "conv2d_float_sign", None)  # a call would raise TypeError
    reference = bn.engine.PackedModel(packed.graph, packed.tensors, reference=True)
    np.testing.assert_allclose(packed.predict(x.numpy()), reference.predict(x.numpy()),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ops", [float_conv_sign, kernels])
def test_argument_errors(ops):
    rng = np.random.default_rng(0)
    x, weight, bias = operands(rng, 1, 5, 5, 3, 6, 3)
    thresh, flip = np.zeros(6, F32), np.zeros(6, bool)
    f = ops.conv2d_float_sign
    with pytest.raises(TypeError, match=r"^conv2d_float_sign: x must be a float32 or float64"):
        f(x.astype(np.int32), weight, bias, thresh, flip)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: float64 x needs \+-1 weights"):
        f(x.astype(np.float64), weight, bias, thresh, flip)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: weight must have 5 input "):
        f(x, weight, bias, thresh, flip, nchw=True)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: pad_value must be a finite"):
        f(x, weight, bias, thresh, flip, pad_value=np.nan)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: thresh must not contain NaN"):
        f(x, weight, bias, np.full(6, np.nan, F32), flip)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: flip must have shape \(6,\)"):
        f(x, weight, bias, thresh, flip[:5])
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: kernel 3x3 .* does not fit"):
        f(x[:, :2], weight, bias, thresh, flip)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: panels must have shape"):
        f(x, weight, bias, thresh, flip, panels=np.zeros((1, 3, 3, 2, 8)))


def test_hostile_core_calls_are_refused_before_memory_is_touched():
    x, b = np.zeros((1, 5, 5, 4), F32), np.zeros(6, F32)
    w = kernels.conv2d_float_sign_panels(np.ones((6, 3, 3, 4), F32))
    flip, out = np.zeros(6, np.uint8), np.empty((1, 3, 3, 1), np.uint64)
    geometry = (1, 5, 5, 4, 6, 3, 3, 1, 1, 0, 0, 1, 1, 1)
    _core.conv2d_float_sign(x, False, False, 0.0, w, geometry, b, b, flip, out)  # well-formed
    assert (out == 0b111111).all()  # z = 0 >= 0: bits 0..5 set, the pad bits clear
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: needs groups = 1"):
        _core.conv2d_float_sign(x, False, False, 0.0, w, geometry[:-1] + (2,), b, b, flip, out)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: needs groups = 1 and a finite"):
        _core.conv2d_float_sign(x, False, False, np.inf, w, geometry, b, b, flip, out)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: buffer x holds 400 bytes, "
                                         r"expected 800$"):  # float64 x
        _core.conv2d_float_sign(x, True, False, 0.0, w, geometry, b, b, flip, out)
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: buffer out holds 64 bytes, "
                                         r"expected 72$"):
        _core.conv2d_float_sign(x, False, False, 0.0, w, geometry, b, b, flip, out.ravel()[:8])
    with pytest.raises(ValueError, match=r"^conv2d_float_sign: buffer flip holds 5 bytes"):
        _core.conv2d_float_sign(x, False, False, 0.0, w, geometry, b, b, flip[:5], out)
    with pytest.raises(OverflowError, match=r"^conv2d_float_sign: the size of x overflows"):
        _core.conv2d_float_sign(x, False, True, 0.0, w, (2**40, 2**40) + geometry[2:], b, b,
                                flip, out)


def test_fma_probe():
    for name in BACKENDS:
        kernels.set_backend(name)
        per_step = 12 * 16 if kernels.kernel_table()[name]["conv2d_float"] == "avx512f" else 8
        assert kernels.fma_probe(1000, 2) == 2 * 1000 * per_step
    with pytest.raises(ValueError, match=r"^fma_probe: threads must be a positive int"):
        kernels.fma_probe(10, 0)
    with pytest.raises(ValueError, match=r"^fma_probe: iterations must be in"):
        _core.fma_probe(0, 1)
