"""Fused output transforms (bconv2d_transform, bgemm_transform) and sign_pack: the numpy
reference against hand-computed float32 values, and every compiled backend against the reference
bit for bit (odd channel counts, strides, padding modes, dilation, batches, negative and zero
scales, every step kind in random orders, residual add, sign ties, flips, both outputs)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import kernels, reference

from engine_fixtures import assert_same_bits, pm1

BACKENDS = kernels.available_backends()
MODULES = [reference, kernels]
PAD_MODES = ["zero", "one", "minus_one"]
F32 = np.float32


pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest




def channels(rng, o, zero_share=0.2):
    """float32 (o,) of both signs, some exactly zero, some small integers (ties are likely)."""
    v = np.where(rng.random(o) < 0.5, rng.standard_normal(o), rng.integers(-3, 4, o))
    return np.where(rng.random(o) < zero_share, 0.0, v).astype(F32)


def random_steps(rng, o, count, with_add):
    steps = []
    for _ in range(count):
        kind = rng.choice(["relu", "scale_shift", "prelu"])
        steps.append((str(kind),) + tuple(channels(rng, o) for _ in range(
            reference.TRANSFORM_STEPS[str(kind)])))
    if with_add:
        steps.insert(int(rng.integers(0, len(steps) + 1)), ("add",))
    return tuple(steps)


def tie_thresholds(rng, y_flat):
    """Per-channel thresholds, about half of them equal to some output value (a tie)."""
    o = y_flat.shape[-1]
    rows = rng.integers(0, y_flat.shape[0], o)
    t = np.where(rng.random(o) < 0.5, y_flat[rows, np.arange(o)], rng.standard_normal(o))
    t = np.where(rng.random(o) < 0.1, rng.choice([np.inf, -np.inf], o), t)
    return t.astype(F32)


def check_all_backends(fn, args, kwargs):
    want = getattr(reference, fn)(*args, **kwargs)
    for name in BACKENDS:
        kernels.set_backend(name)
        assert_same_bits(getattr(kernels, fn)(*args, **kwargs), want, nan_payloads=False)
    return want


# ----------------------------------------------------------------------------------------------
# the reference's semantics, by hand
# ----------------------------------------------------------------------------------------------
def test_reference_applies_each_step_in_float32_in_order():
    a = reference.pack(np.array([[1.0, -1.0, 1.0]]))
    w = reference.pack(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, 1.0]]))
    # sums s = [1, -1, 3]
    scale, shift = np.array([2, -1, 0.5], F32), np.array([0.5, 1, -1.5], F32)  # [2.5, 2, 0]
    steps = (("prelu", np.array([-3, -3, -1], F32), np.array([0.25, 2, 1], F32),
              np.array([0, 1, 0], F32)),  # z = [-0.5, -1, -1] -> [-0.125, -1, -1]
             ("relu",),  # [0, 0, 0]
             ("scale_shift", np.ones(3, F32), np.array([1, -2, 0], F32)),  # [1, -2, 0]
             ("add",))
    residual = np.array([[0.5, 0.5, -0.0]], F32)  # [1.5, -1.5, 0]
    thresh = np.array([1.5, -1.5, 0.0], F32)  # every output ties
    y, bits = reference.bgemm_transform(a, w, 3, scale, shift, steps=steps, residual=residual,
                                        sign_thresh=thresh, sign_flip=np.array([0, 1, 0], bool))
    np.testing.assert_array_equal(y, [[1.5, -1.5, 0.0]])
    assert bits.tolist() == [[0b111]]  # ties give 1, flipped or not
    y, bits = reference.bgemm_transform(a, w, 3, scale, shift, sign_thresh=np.array([4.5, 2.5, 3], F32),
                                        sign_flip=np.array([1, 0, 1], bool), float_out=False)
    assert y is None and bits.tolist() == [[0b101]]  # y = [2.5, 2, 0]


def test_relu_maps_negative_zero_and_keeps_nan_like_numpy():
    a = reference.pack(np.ones((1, 4)))
    w = reference.pack(np.array([[1.0, 1, 1, 1], [-1, -1, -1, -1]]))  # s = [4, -4]
    scale, shift = np.array([-0.0, np.inf], F32), np.array([-0.0, 1], F32)  # [-0, -inf]
    for ops in MODULES:
        for name in BACKENDS if ops is kernels else ["numpy"]:
            if ops is kernels:
                kernels.set_backend(name)
            y, _ = ops.bgemm_transform(a, w, 4, scale, shift, steps=(("relu",),))
            assert y.tolist() == [[0.0, 0.0]] and not np.signbit(y).any()
            y, bits = ops.bgemm_transform(a, w, 4, np.array([np.inf, 0], F32), np.zeros(2, F32),
                                          steps=(("scale_shift", np.zeros(2, F32), np.zeros(2, F32)),
                                                 ("relu",)),
                                          sign_thresh=np.array([-np.inf, -np.inf], F32))
            assert np.isnan(y[0, 0]) and y[0, 1] == 0  # inf * 0 = NaN, kept by relu
            assert bits.tolist() == [[0b10]]  # NaN >= -inf is False


# ----------------------------------------------------------------------------------------------
# compiled backends vs the reference
# ----------------------------------------------------------------------------------------------
def transform_kwargs(rng, o, y_flat, shape):
    steps = random_steps(rng, o, int(rng.integers(0, 4)), with_add=rng.random() < 0.4)
    kwargs = {"steps": steps}
    if any(step[0] == "add" for step in steps):
        kwargs["residual"] = (rng.standard_normal(shape) * 4).astype(F32)
    mode = rng.integers(0, 3)  # 0: y only, 1: bits only, 2: both
    if mode >= 1:
        kwargs["sign_thresh"] = tie_thresholds(rng, y_flat)
        if rng.random() < 0.8:
            kwargs["sign_flip"] = rng.random(o) < 0.5
    kwargs["float_out"] = mode != 1
    return kwargs


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 70), n=st.integers(1, 140), k=st.integers(1, 400),
       seed=st.integers(0, 2**32 - 1))
def test_property_bgemm_transform_all_backends(m, n, k, seed):
    rng = np.random.default_rng(seed)
    a, w = reference.pack(pm1(rng, (m, k))), reference.pack(pm1(rng, (n, k)))
    scale, shift = channels(rng, n), channels(rng, n)
    y0, _ = reference.bgemm_transform(a, w, k, scale, shift)
    kwargs = transform_kwargs(rng, n, y0, (m, n))
    check_all_backends("bgemm_transform", (a, w, k, scale, shift), kwargs)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 2), c=st.integers(1, 140), o=st.integers(1, 80),
       h=st.integers(1, 7), wd=st.integers(1, 7), kernel=st.sampled_from([1, 2, 3]),
       stride=st.integers(1, 2), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       pad_mode=st.sampled_from(PAD_MODES), seed=st.integers(0, 2**32 - 1))
def test_property_bconv2d_transform_all_backends(batch, c, o, h, wd, kernel, stride, padding,
                                                 dilation, pad_mode, seed):
    span = dilation * (kernel - 1) + 1
    if h + 2 * padding < span or wd + 2 * padding < span:
        return  # the kernel does not fit: the geometry errors are tested with bconv2d
    rng = np.random.default_rng(seed)
    x, w = reference.pack(pm1(rng, (batch, h, wd, c))), reference.pack(pm1(rng, (o, kernel, kernel, c)))
    scale, shift = channels(rng, o), channels(rng, o)
    geometry = {"stride": (stride, stride), "padding": (padding, padding),
                "dilation": (dilation, dilation), "pad_mode": pad_mode}
    y0, _ = reference.bconv2d_transform(x, w, c, scale, shift, **geometry)
    kwargs = transform_kwargs(rng, o, y0.reshape(-1, o), y0.shape)
    check_all_backends("bconv2d_transform", (x, w, c, scale, shift), {**kwargs, **geometry})


SPECIAL = np.array([-0.0, 0.0, 1.0, -1.0, 0.5, -2.0, 3.0, np.inf, -np.inf], F32)


def special_thresholds(rng, y_flat):
    """Ties with outputs, +-inf and +-0.0 (NaN outputs, from inf * 0, become -0.0: NaN is no
    valid threshold)."""
    t = tie_thresholds(rng, np.where(np.isnan(y_flat), F32(-0.0), y_flat))
    zeros = rng.random(t.size) < 0.2
    t[zeros] = rng.choice(np.array([-0.0, 0.0], F32), int(zeros.sum()))
    return t


@pytest.mark.parametrize("m,n", [(1, 1), (2, 7), (3, 65), (5, 4), (4, 8), (7, 13)])
def test_every_step_order_on_special_values_all_backends(m, n):
    """The four step kinds in all 24 orders on -0.0, +-inf (and the NaN of inf * 0), with ties
    and flips, on odd output counts and row counts: the AVX2 kernel's 2-row x 4-output lanes
    (2 x 4 tiles), its 8-output lanes (1 x 8 tiles of a last odd row) and their partial tails."""
    rng = np.random.default_rng(m * 100 + n)
    a, w = reference.pack(pm1(rng, (m, 4))), reference.pack(pm1(rng, (n, 4)))  # sums 0, +-2, +-4
    for order in itertools.permutations(reference.TRANSFORM_STEPS):
        steps = tuple((kind,) + tuple(rng.choice(SPECIAL, n) for _ in range(
            reference.TRANSFORM_STEPS[kind])) for kind in order)
        args = (a, w, 4, rng.choice(SPECIAL, n), rng.choice(SPECIAL, n))
        kwargs = {"steps": steps, "residual": rng.choice(SPECIAL, (m, n))}
        y0, _ = reference.bgemm_transform(*args, **kwargs)
        kwargs.update(sign_thresh=special_thresholds(rng, y0), sign_flip=rng.random(n) < 0.5)
        check_all_backends("bgemm_transform", args, kwargs)
        check_all_backends("bgemm_transform", args, {**kwargs, "float_out": False})


@pytest.mark.parametrize("o", [1, 7, 65])
def test_bconv2d_transform_odd_outputs_all_backends(o):
    """15 output pixels (7 row pairs and a last odd row) x odd output counts, residual add and
    PReLU between ReLUs, ties, flips, both outputs and bits alone."""
    rng = np.random.default_rng(o)
    x, w = reference.pack(pm1(rng, (1, 5, 3, 70))), reference.pack(pm1(rng, (o, 3, 3, 70)))
    scale, shift = channels(rng, o), channels(rng, o)
    steps = (("relu",), ("add",), ("prelu",) + tuple(channels(rng, o) for _ in range(3)), ("relu",))
    residual = rng.choice(SPECIAL, (1, 5, 3, o))
    y0, _ = reference.bconv2d_transform(x, w, 70, scale, shift, steps=steps, residual=residual,
                                        padding=(1, 1))
    kwargs = {"steps": steps, "residual": residual, "padding": (1, 1),
              "sign_thresh": special_thresholds(rng, y0.reshape(-1, o)), "sign_flip": rng.random(o) < 0.5}
    for float_out in (True, False):
        check_all_backends("bconv2d_transform", (x, w, 70, scale, shift), {**kwargs, "float_out": float_out})


@pytest.mark.parametrize("rows", [3, 40])  # wide tiles, AVX-512 panel path (>= 32 pixels)
def test_bconv2d_transform_is_bconv2d_then_float32_ops(rows):
    """The reference twin is bconv2d followed by plain numpy float32 arithmetic."""
    rng = np.random.default_rng(rows)
    x, w = reference.pack(pm1(rng, (1, rows, 3, 70))), reference.pack(pm1(rng, (67, 3, 3, 70)))
    scale, shift, slope, t = (channels(rng, 67) for _ in range(4))
    residual = rng.standard_normal((1, rows, 3, 67)).astype(F32)
    s = reference.bconv2d(x, w, 70, 1, 1).astype(F32)
    z = s * scale + shift + residual
    want = np.where(z > 0, z, slope * z)
    flip = rng.random(67) < 0.5
    args = (x, w, 70, scale, shift)
    kwargs = {"steps": (("add",), ("prelu", np.zeros(67, F32), slope, np.zeros(67, F32))),
              "residual": residual, "sign_thresh": t, "sign_flip": flip, "padding": (1, 1)}
    y, bits = check_all_backends("bconv2d_transform", args, kwargs)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(bits, reference.pack(np.where(flip, want <= t, want >= t) - 0.5))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_transforms_on_the_thread_pool(threads):
    """Sizes past the inline threshold: tasks split the outputs, each owns whole packed words."""
    rng = np.random.default_rng(threads)
    previous = kernels.get_num_threads()
    try:
        kernels.set_num_threads(threads)
        a, w = reference.pack(pm1(rng, (300, 1280))), reference.pack(pm1(rng, (200, 1280)))
        scale, shift, t = channels(rng, 200), channels(rng, 200), channels(rng, 200) * F32(9)
        kwargs = {"steps": (("relu",),), "sign_thresh": t, "sign_flip": rng.random(200) < 0.5}
        check_all_backends("bgemm_transform", (a, w, 1280, scale, shift), kwargs)
        x, wc = reference.pack(pm1(rng, (2, 16, 16, 130))), reference.pack(pm1(rng, (150, 3, 3, 130)))
        scale, shift, t = channels(rng, 150), channels(rng, 150), channels(rng, 150) * F32(9)
        kwargs = {"sign_thresh": t, "sign_flip": rng.random(150) < 0.5, "padding": (1, 1)}
        check_all_backends("bconv2d_transform", (x, wc, 130, scale, shift), kwargs)
    finally:
        kernels.set_num_threads(previous)


@pytest.mark.parametrize("geometry", [
    # a 33-wide kernel has no border-class table: its border pixels take the scalar epilogue,
    # and the panel path hands the transform the runs of rows between them (5 interior pixels
    # in each output row of 37, so the runs start and end inside tiles of 8 rows)
    {"x": (1, 3, 37, 70), "w": (37, 1, 33, 70), "padding": (0, 16)},
    # 700 channels: a span of 32 outputs per panel sweep, so a row's sign words are filled by
    # several calls, and row tiles end in partial groups of rows
    {"x": (1, 6, 7, 700), "w": (100, 3, 3, 700), "padding": (1, 1)},
], ids=["scalar-border-rows", "short-spans"])
def test_bconv2d_transform_panel_path_row_runs_and_spans(geometry):
    rng = np.random.default_rng(len(geometry["x"]))
    c, o = geometry["x"][-1], geometry["w"][0]
    x, w = reference.pack(pm1(rng, geometry["x"])), reference.pack(pm1(rng, geometry["w"]))
    scale, shift = channels(rng, o), channels(rng, o)
    y0, _ = reference.bconv2d_transform(x, w, c, scale, shift, padding=geometry["padding"])
    kwargs = {"steps": (("relu",), ("add",), ("prelu",) + tuple(channels(rng, o) for _ in range(3))),
              "residual": (rng.standard_normal(y0.shape) * 4).astype(F32),
              "sign_thresh": tie_thresholds(rng, y0.reshape(-1, o)),
              "sign_flip": rng.random(o) < 0.5, "padding": geometry["padding"]}
    y, bits = check_all_backends("bconv2d_transform", (x, w, c, scale, shift), kwargs)
    assert y.shape[0] * y.shape[1] * y.shape[2] >= 32  # the panel path (AVX-512)
    assert bits is not None


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=0, max_size=2), c=st.integers(1, 200),
       seed=st.integers(0, 2**32 - 1))
def test_property_sign_pack_all_backends(shape, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([-1.5, -0.0, 0.0, 0.5, 2.0, np.nan, np.inf, -np.inf], F32),
                   size=tuple(shape) + (c,))
    thresh = rng.choice(np.array([-0.0, 0.0, 0.5, 2.0, -np.inf, np.inf], F32), c)
    flip = rng.random(c) < 0.5
    want = reference.sign_pack(x, thresh, flip)
    bits = np.where(flip, x <= thresh, x >= thresh)
    np.testing.assert_array_equal(reference.unpack(want, c), np.where(bits, 1, -1))
    for name in BACKENDS:
        kernels.set_backend(name)
        np.testing.assert_array_equal(kernels.sign_pack(x, thresh, flip), want)


def test_sign_pack_accepts_non_contiguous_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 140)).astype(F32)[::2, :70]
    thresh, flip = np.zeros(70, F32), rng.random(70) < 0.5
    np.testing.assert_array_equal(kernels.sign_pack(x, thresh, flip),
                                  reference.sign_pack(x, thresh, flip))


# ----------------------------------------------------------------------------------------------
# errors: one set of rules and messages in both implementations
# ----------------------------------------------------------------------------------------------
@pytest.fixture(params=MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def ops(request):
    return request.param


def dense_operands(o=3, m=2, k=70):
    rng = np.random.default_rng(0)
    return (reference.pack(pm1(rng, (m, k))), reference.pack(pm1(rng, (o, k))), k,
            np.ones(o, F32), np.zeros(o, F32))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"float_out": False}, ValueError, r"nothing to return: set float_out or give sign_thresh"),
    ({"float_out": 1}, TypeError, r"float_out must be a bool, got int"),
    ({"steps": [("relu")]}, ValueError, r"steps\[0\] must be a tuple starting with one of"),
    ({"steps": "relu"}, TypeError, r"steps must be a tuple of step tuples, got str"),
    ({"steps": (("tanh",),)}, ValueError, r"steps\[0\] must be a tuple starting with one of"),
    ({"steps": (("relu", np.ones(3, F32)),)}, ValueError, r"steps\[0\] 'relu' takes 0 tensors, got 1"),
    ({"steps": (("prelu", np.ones(3, F32)) + (np.ones(3),) * 2,)}, TypeError,
     r"steps\[0\] tensor 1 must be a float32 numpy array, got float64"),
    ({"steps": (("scale_shift", np.ones(3, F32), np.ones(4, F32)),)}, ValueError,
     r"steps\[0\] tensor 1 must have shape \(3,\), got \(4,\)"),
    ({"steps": (("add",),)}, ValueError, r"residual must be given exactly when there is an 'add'"),
    ({"residual": np.zeros((2, 3), F32)}, ValueError, r"residual must be given exactly when"),
    ({"steps": (("add",), ("add",)), "residual": np.zeros((2, 3), F32)}, ValueError,
     r"at most one 'add' step, got 2"),
    ({"steps": (("add",),), "residual": np.zeros((3, 2), F32)}, ValueError,
     r"residual must have the output's shape \(2, 3\), got \(3, 2\)"),
    ({"steps": (("add",),), "residual": np.zeros((2, 3))}, TypeError,
     r"residual must have dtype float32, got float64"),
    ({"steps": (("add",),), "residual": np.zeros((2, 6), F32)[:, ::2]}, ValueError,
     r"residual must be C-contiguous"),
    ({"sign_flip": np.zeros(3, bool)}, ValueError, r"sign_flip given without sign_thresh"),
    ({"sign_thresh": np.array([0, np.nan, 0], F32)}, ValueError, r"sign_thresh must not contain NaN"),
    ({"sign_thresh": np.zeros(3, np.int32)}, TypeError, r"sign_thresh must be a float32 numpy array"),
    ({"sign_thresh": np.zeros(3, F32), "sign_flip": np.zeros(3, np.uint8)}, TypeError,
     r"sign_flip must be a bool numpy array, got uint8"),
    ({"sign_thresh": np.zeros(3, F32), "sign_flip": np.zeros(2, bool)}, ValueError,
     r"sign_flip must have shape \(3,\), got \(2,\)"),
    ({"steps": (("relu",),) * 64}, ValueError, r"at most 63 steps, got 64"),
])
def test_transform_errors_name_the_argument(ops, kwargs, error, message):
    with pytest.raises(error, match=r"^bgemm_transform: " + message):
        ops.bgemm_transform(*dense_operands(), **kwargs)


def test_transform_scale_and_operand_errors(ops):
    a, w, k, scale, shift = dense_operands()
    with pytest.raises(TypeError, match=r"^bgemm_transform: scale must be a float32 numpy array, "
                                        r"got float64$"):
        ops.bgemm_transform(a, w, k, scale.astype(np.float64), shift)
    with pytest.raises(ValueError, match=r"^bgemm_transform: shift must have shape \(3,\)"):
        ops.bgemm_transform(a, w, k, scale, shift[:2])
    with pytest.raises(ValueError, match=r"^bgemm_transform: a has pad bits set"):
        ops.bgemm_transform(a | np.uint64(1 << 63), w, k, scale, shift)
    x, wc = reference.pack(np.ones((1, 4, 4, 5))), reference.pack(np.ones((3, 3, 3, 5)))
    with pytest.raises(ValueError, match=r"^bconv2d_transform: residual must have the output's "
                                         r"shape \(1, 2, 2, 3\)"):
        ops.bconv2d_transform(x, wc, 5, scale, shift, steps=(("add",),),
                              residual=np.zeros((1, 4, 4, 3), F32))
    with pytest.raises(ValueError, match=r"^bconv2d_transform: pad_mode"):
        ops.bconv2d_transform(x, wc, 5, scale, shift, pad_mode="reflect")
    with pytest.raises(TypeError, match=r"^sign_pack: x must be a float32 numpy array, got float64"):
        ops.sign_pack(np.zeros((2, 3)), np.zeros(3, F32), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"^sign_pack: thresh must have shape \(3,\), got \(2,\)"):
        ops.sign_pack(np.zeros((2, 3), F32), np.zeros(2, F32), np.zeros(3, bool))
    with pytest.raises(TypeError, match=r"^sign_pack: flip must be a bool numpy array"):
        ops.sign_pack(np.zeros((2, 3), F32), np.zeros(3, F32), None)


def test_transform_kernels_are_in_the_dispatch_table():
    table = kernels.kernel_table()
    assert table["portable"]["transform"] == "portable"
    if "avx2" in table:
        assert table["avx2"]["transform"] == "avx2"
    if "avx512" in table:
        assert table["avx512"]["transform"] == "avx512f"


# ----------------------------------------------------------------------------------------------
# float-input first dense layer
# ----------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 11), n=st.integers(1, 100), k=st.integers(1, 300),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_property_first_dense_float_all_backends(m, n, k, dtype, seed):
    """Within 1e-9 of float64 numpy (relative to the sum of |x|), exact for integer inputs."""
    rng = np.random.default_rng(seed)
    w = pm1(rng, (n, k))
    wp = reference.pack(w)
    x = (rng.standard_normal((m, k)) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
    x_int = rng.integers(-255, 256, (m, k)).astype(dtype)
    want = x.astype(np.float64) @ w.T
    scale = np.abs(x.astype(np.float64)).sum(1, keepdims=True) + 1e-300
    np.testing.assert_allclose(reference.first_dense_float(x, wp, k), want, rtol=0,
                               atol=1e-12 * scale.max())
    for name in BACKENDS:
        kernels.set_backend(name)
        got = kernels.first_dense_float(x, wp, k)
        assert got.dtype == np.float64 and got.shape == (m, n)
        assert np.all(np.abs(got - want) <= 1e-9 * scale)
        np.testing.assert_array_equal(kernels.first_dense_float(x_int, wp, k),
                                      x_int.astype(np.float64) @ w.T)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_first_dense_float_on_the_thread_pool(threads):
    """The paper MLP's first layer shape at batches 1 and 9: outputs split across tasks."""
    rng = np.random.default_rng(threads)
    w = pm1(rng, (4096, 784))
    wp = reference.pack(w)
    previous = kernels.get_num_threads()
    try:
        kernels.set_num_threads(threads)
        for m in [1, 9]:
            x = rng.integers(-255, 256, (m, 784)).astype(F32)
            want = x.astype(np.float64) @ w.T
            for name in BACKENDS:
                kernels.set_backend(name)
                np.testing.assert_array_equal(kernels.first_dense_float(x, wp, 784), want)
    finally:
        kernels.set_num_threads(previous)


def test_first_dense_float_errors(ops):
    w = reference.pack(np.ones((3, 70)))
    with pytest.raises(TypeError, match=r"^first_dense_float: x must be a float32 or float64 "
                                        r"numpy array, got uint8$"):
        ops.first_dense_float(np.zeros((2, 70), np.uint8), w, 70)
    with pytest.raises(ValueError, match=r"^first_dense_float: x must have k=70 columns, got "
                                         r"shape \(2, 69\)$"):
        ops.first_dense_float(np.zeros((2, 69), F32), w, 70)
    with pytest.raises(ValueError, match=r"^first_dense_float: x must be C-contiguous"):
        ops.first_dense_float(np.zeros((2, 140), F32)[:, ::2], w, 70)
    with pytest.raises(ValueError, match=r"^first_dense_float: w has pad bits set"):
        ops.first_dense_float(np.zeros((2, 70), F32), w | np.uint64(1 << 63), 70)
    with pytest.raises(ValueError, match=r"^first_dense_float: x must be 2-D"):
        ops.first_dense_float(np.zeros(70, F32), w, 70)


# ----------------------------------------------------------------------------------------------
# fused uint8 first conv with border-class thresholds
# ----------------------------------------------------------------------------------------------
def conv_sums_u8(x, w_pm1, kernel, stride, padding, dilation):
    """Integer conv of uint8 NCHW images with zero padding, by plain loops over the taps."""
    n, c, h, wd = x.shape
    kh, kw = kernel
    o = w_pm1.shape[0]
    wt = w_pm1.reshape(o, kh, kw, c).astype(np.int64)
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding), np.int64)
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, ho, wo, o), np.int64)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dilation:i * dilation + stride * (ho - 1) + 1:stride,
                     j * dilation:j * dilation + stride * (wo - 1) + 1:stride]
            out += np.einsum("nchw,oc->nhwo", tap, wt[:, i, j])
    return out


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 4), h=st.integers(2, 9), wd=st.integers(2, 9),
       o=st.integers(1, 140), kernel=st.sampled_from([1, 2, 3]), stride=st.integers(1, 2),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
def test_property_int_conv_threshold_all_backends(n, c, h, wd, o, kernel, stride, padding,
                                                  dilation, seed):
    span = dilation * (kernel - 1) + 1
    if h + 2 * padding < span or wd + 2 * padding < span:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, c, h, wd), dtype=np.uint8)
    w = pm1(rng, (o, kernel * kernel * c))
    s = conv_sums_u8(x, w, (kernel, kernel), stride, padding, dilation)
    _, ho, wo, _ = s.shape
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    row_class = rng.integers(0, rows, ho).astype(np.int32)
    col_class = rng.integers(0, cols, wo).astype(np.int32)
    # thresholds near the sums, some equal to one of them (ties)
    thresh = rng.integers(-300, 300, (rows, cols, o)).astype(np.int32)
    thresh.flat[::3] = rng.choice(s.ravel(), thresh.flat[::3].size)
    flip = rng.random(o) < 0.5
    t = thresh[row_class[:, None], col_class[None, :]]
    want = reference.pack(np.where(flip, s <= t, s >= t) - 0.5)
    args = (x, reference.pack(w), kernel, thresh, flip, row_class, col_class, stride, padding,
            dilation)
    np.testing.assert_array_equal(reference.int_conv_threshold(*args), want)
    for name in BACKENDS:
        kernels.set_backend(name)
        np.testing.assert_array_equal(kernels.int_conv_threshold(*args), want)


def test_int_conv_threshold_cifar_first_layer_on_the_pool():
    """3 -> 128 channels, 3x3, padding 1 at 32x32 (tasks of 64 pixels on 2 threads)."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    w = reference.pack(pm1(rng, (128, 27)))
    thresh = rng.integers(-500, 500, (3, 3, 128)).astype(np.int32)
    classes = np.array([0] + [1] * 30 + [2], np.int32)
    args = (x, w, 3, thresh, rng.random(128) < 0.5, classes, classes, 1, 1)
    previous = kernels.get_num_threads()
    try:
        kernels.set_num_threads(2)
        check_all_backends("int_conv_threshold", args, {})
    finally:
        kernels.set_num_threads(previous)


def test_int_conv_threshold_extreme_thresholds_and_sums():
    """Sums at +-255 k (white images, all-equal weights) against thresholds at, beside and far
    past them (int32's ends): the SIMD tiles compare s >= t + 1 for a flipped channel, clamped
    so that t + 1 cannot overflow and no decision changes."""
    k = 27
    edge = [np.iinfo(np.int32).min, -255 * k - 1, -255 * k, -255 * k + 1, 0, 255 * k - 1,
            255 * k, 255 * k + 1, np.iinfo(np.int32).max]
    cases = [(t, sign, flip) for t in edge for sign in (1, -1) for flip in (False, True)]
    o = len(cases)
    w = np.array([[sign] * k for _, sign, _ in cases], np.float64)
    thresh = np.array([t for t, _, _ in cases], np.int64).astype(np.int32).reshape(1, 1, o)
    flip = np.array([f for _, _, f in cases])
    x = np.full((2, 3, 4, 5), 255, np.uint8)
    x[1, :, 1:3, 1:4] = 0  # some sums in between
    s = conv_sums_u8(x, w, (3, 3), 1, 1, 1)
    want = reference.pack(np.where(flip, s <= thresh[0, 0], s >= thresh[0, 0]) - 0.5)
    classes = [np.zeros(size, np.int32) for size in s.shape[1:3]]
    args = (x, reference.pack(w), 3, thresh, flip, *classes, 1, 1)
    for name in BACKENDS:
        kernels.set_backend(name)
        np.testing.assert_array_equal(kernels.int_conv_threshold(*args), want, err_msg=name)


def test_int_conv_threshold_errors(ops):
    x = np.zeros((1, 3, 5, 5), np.uint8)
    w = reference.pack(np.ones((4, 27)))
    t, f = np.zeros((1, 1, 4), np.int32), np.zeros(4, bool)
    cls = np.zeros(5, np.int32)
    with pytest.raises(TypeError, match=r"^int_conv_threshold: x_u8 must have dtype uint8"):
        ops.int_conv_threshold(x.astype(np.float32), w, 3, t, f, cls, cls, 1, 1)
    with pytest.raises(ValueError, match=r"^int_conv_threshold: w last axis must hold "
                                         r"ceil\(kh \* kw \* c/64\) = 1 words"):
        ops.int_conv_threshold(x, reference.pack(np.ones((4, 65))), 3, t, f, cls, cls, 1, 1)
    with pytest.raises(ValueError, match=r"^int_conv_threshold: row_class values must index "
                                         r"thresh \(0..0\)"):
        ops.int_conv_threshold(x, w, 3, t, f, cls + 1, cls, 1, 1)
    with pytest.raises(ValueError, match=r"^int_conv_threshold: col_class must be int32 of "
                                         r"shape \(5,\)"):
        ops.int_conv_threshold(x, w, 3, t, f, cls, cls[:4], 1, 1)
    with pytest.raises(ValueError, match=r"^int_conv_threshold: thresh must be int32 \(row "
                                         r"classes, column classes, 4\)"):
        ops.int_conv_threshold(x, w, 3, t[0], f, cls, cls, 1, 1)
    with pytest.raises(ValueError, match=r"^int_conv_threshold: kernel 3x3 .* does not fit"):
        ops.int_conv_threshold(np.zeros((1, 3, 2, 5), np.uint8), w, 3, t, f, cls, cls, 1, 0)


def test_int_conv_threshold_with_padding_far_larger_than_the_image():
    """Padding 600 around 2x3 images: a zero-padded copy would be ~1 MiB per image, so the
    kernel gathers the patches from the NCHW input instead (both paths, same bits)."""
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (2, 2, 2, 3), dtype=np.uint8)
    w = pm1(rng, (3, 18))
    s = conv_sums_u8(x, w, (3, 3), 1, 600, 1)
    thresh = rng.integers(-300, 300, (1, 1, 3)).astype(np.int32)
    flip = np.array([False, True, False])
    want = reference.pack(np.where(flip, s <= thresh[0, 0], s >= thresh[0, 0]) - 0.5)
    classes = [np.zeros(size, np.int32) for size in s.shape[1:3]]
    args = (x, reference.pack(w), 3, thresh, flip, *classes, 1, 600)
    for name in BACKENDS:
        kernels.set_backend(name)
        np.testing.assert_array_equal(kernels.int_conv_threshold(*args), want)
