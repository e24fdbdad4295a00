"""kernels.prepare: a kernel with its constant operands bound and checked on the first call per
input shape, as the graph runner calls it. Prepared calls give the public functions' results bit
for bit on every backend, refuse a wrong input with the public function's own error, and the
runner stops re-checking a model's constant tensors on every predict."""
import numpy as np
import pytest

from binarynet.engine import kernels, reference

from dag_fixtures import residual_net
from engine_fixtures import assert_same_bits, pm1

BACKENDS = kernels.available_backends()
C, O = 70, 67  # pad bits in the input's and the output's last word

pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest


def _cases():
    """name -> (x of batch n, operands after x, options, residual of batch n or None)."""
    rng = np.random.default_rng(0)
    words = reference.words_for(C)
    w_dense, w_conv = reference.pack(pm1(rng, (O, C))), reference.pack(pm1(rng, (O, 3, 3, C)))
    thresh = rng.integers(-20, 20, O).astype(np.int32)
    flip = rng.random(O) < 0.5
    f32 = [rng.standard_normal(O).astype(np.float32) for _ in range(4)]

    def dense_x(n):
        return reference.pack(pm1(np.random.default_rng(n), (n, C)))

    def conv_x(n):
        return reference.pack(pm1(np.random.default_rng(n), (n, 5, 6, C)))

    def residual(n):
        return np.random.default_rng(n + 9).standard_normal((n, 5, 6, O)).astype(np.float32)
    assert conv_x(1).shape[-1] == words
    return {
        "bgemm": (dense_x, (w_dense, C), {}, None),
        "bgemm_threshold": (dense_x, (w_dense, C, thresh, flip), {}, None),
        "bconv2d_threshold": (conv_x, (w_conv, C, thresh, flip),
                              dict(stride=(1, 2), padding=(1, 1), pad_mode="one"), None),
        "bconv2d_threshold_maxpool": (conv_x, (w_conv, C, thresh, flip, (2, 2), (2, 1)),
                                      dict(padding=(1, 1)), None),
        "bmaxpool2d": (conv_x, ((2, 2), (1, 2), rng.random(C) < 0.5, C), {}, None),
        "bconv2d_transform": (conv_x, (w_conv, C, f32[0], f32[1]), dict(
            steps=(("relu",), ("add",)), sign_thresh=f32[2], sign_flip=flip, padding=(1, 1)),
            residual),
        "bgemm_transform": (dense_x, (w_dense, C, f32[0], f32[1]), dict(
            steps=(("prelu", f32[1], f32[2], f32[3]),), sign_thresh=f32[3], float_out=False),
            None),
        "sign_pack": (lambda n: np.random.default_rng(n).standard_normal((n, 3, O)).astype(
            np.float32), (f32[2], flip), {}, None),
        "int_conv_threshold": (
            lambda n: np.random.default_rng(n).integers(0, 256, (n, 3, 6, 6), dtype=np.uint8),
            (reference.pack(pm1(rng, (O, 27))), (3, 3),
             rng.integers(-900, 900, (2, 3, O)).astype(np.int32), flip,
             np.array([0, 1, 1, 1, 1, 0], np.int32), np.array([2, 1, 1, 1, 1, 0], np.int32)),
            dict(padding=(1, 1)), None),
    }


CASES = _cases()


def public(name, x, residual=None):
    """The public function's result for ``x`` with the case's operands."""
    _, operands, options, _ = CASES[name]
    extra = {} if residual is None else {"residual": residual}
    return getattr(kernels, name)(x, *operands, **options, **extra)


def error_of(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepared_calls_equal_the_public_functions_bit_for_bit(name):
    make_x, operands, options, make_residual = CASES[name]
    for backend in BACKENDS:
        kernels.set_backend(backend)
        prepared = kernels.prepare(name, *operands, **options)
        for n in (1, 3, 1, 3):  # a new shape is checked in full, a known one reuses its layout
            x = make_x(n)
            residual = make_residual(n) if make_residual else None
            want = public(name, x, residual)
            assert_same_bits(prepared(x, residual) if residual is not None else prepared(x), want)
            if name in ("bgemm", "bgemm_threshold", "bconv2d_threshold", "sign_pack"):
                assert_same_bits(getattr(reference, name)(x, *operands, **options), want,
                                 nan_payloads=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_wrong_input_after_good_calls_gets_the_public_functions_error(name):
    make_x, operands, options, make_residual = CASES[name]
    prepared = kernels.prepare(name, *operands, **options)
    x = make_x(2)
    residual = make_residual(2) if make_residual else None
    prepared(x, residual)
    bad = {"dtype": x.view(np.int64) if x.dtype == np.uint64 else x.astype(np.float64),
           "shape": x[..., :-1] if x.ndim > 2 else x[:, :1],
           "not an array": x.tolist()}
    if x.dtype == np.uint64:  # a pad bit set beyond the bit length
        bad["pad bits"] = x.copy()
        bad["pad bits"][..., -1] |= np.uint64(1 << 63)
    if x.dtype == np.uint8:
        bad["dtype"] = x.astype(np.int16)
    for what, b in bad.items():
        got = error_of(lambda: prepared(b, residual))
        assert got == error_of(lambda: public(name, b, residual)), what
        assert got[1].startswith(name + ":") or got[1].startswith(("pad", "sign_pack")), got
    assert_same_bits(prepared(x, residual), public(name, x, residual))  # still fine after


def test_a_transform_checks_its_residual_on_every_call():
    make_x, operands, options, make_residual = CASES["bconv2d_transform"]
    prepared = kernels.prepare("bconv2d_transform", *operands, **options)
    x, residual = make_x(2), make_residual(2)
    prepared(x, residual)
    for bad in (None, residual[:1], residual.astype(np.float64), residual[..., ::-1],
                residual.transpose(0, 2, 1, 3)):
        with pytest.raises((ValueError, TypeError), match=r"^bconv2d_transform: residual"):
            prepared(x, bad)
    with pytest.raises(TypeError, match=r"^bgemm_transform: residual must have dtype float32"):
        kernels.prepare("bgemm_transform", *CASES["bgemm_transform"][1], steps=(("add",),))(
            CASES["bgemm"][0](2), np.zeros((2, O)))


def test_unaligned_and_non_contiguous_inputs_are_copied_as_the_public_functions_do():
    make_x, operands, options, _ = CASES["bconv2d_threshold"]
    prepared = kernels.prepare("bconv2d_threshold", *operands, **options)
    x = make_x(3)
    prepared(x)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    raw[1:] = x.view(np.uint8).ravel()
    unaligned = np.frombuffer(raw.data, np.uint64, x.size, 1).reshape(x.shape)
    assert not unaligned.flags.aligned
    assert_same_bits(prepared(unaligned), public("bconv2d_threshold", x))
    values = np.random.default_rng(4).standard_normal((3, 6, O)).astype(np.float32)
    sign = kernels.prepare("sign_pack", *CASES["sign_pack"][1])
    sign(np.ascontiguousarray(values))
    assert_same_bits(sign(values[:, ::2]), public("sign_pack", values[:, ::2]))


def test_prepare_refuses_what_it_cannot_bind():
    with pytest.raises(ValueError, match=r"^prepare: name must be one of \['bconv2d_threshold'"):
        kernels.prepare("conv2d", 1)
    with pytest.raises(TypeError, match=r"^prepare: the residual varies per call"):
        kernels.prepare("bgemm_transform", *CASES["bgemm_transform"][1],
                        residual=np.zeros((1, O), np.float32))
    # the constants are checked on the first call, with the public function's message
    w, c = CASES["bgemm_threshold"][1][:2]
    bad = kernels.prepare("bgemm_threshold", w, c, np.zeros(O, np.float32), np.zeros(O, bool))
    with pytest.raises(TypeError, match=r"^bgemm_threshold: thresh must be an integer array"):
        bad(CASES["bgemm"][0](1))


def test_many_batch_sizes_keep_a_bounded_number_of_layouts():
    make_x, operands, options, _ = CASES["bgemm_threshold"]
    prepared = kernels.prepare("bgemm_threshold", *operands, **options)
    for n in range(1, 20):
        assert_same_bits(prepared(make_x(n)), public("bgemm_threshold", make_x(n)))
    assert len(prepared._shapes) <= prepared._MAX_SHAPES


# -- the graph runner -------------------------------------------------------------------------
def test_the_runner_checks_constant_operands_once_not_on_every_predict(monkeypatch):
    """A fused model's binary steps go through prepared calls: a second predict of the same
    batch size runs none of the operand checks (the first run and each new size do)."""
    g, _ = residual_net(3)
    model, plain = g.model(), g.model(reference=True)
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    counts = {}
    for check in ("_conv_geometry", "_check_dense", "_check_transform", "_check_sign_pack"):
        def counting(*args, _check=getattr(reference, check), _name=check, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _check(*args, **kwargs)
        monkeypatch.setattr(reference, check, counting)
    first = model.predict(x)
    assert counts.get("_check_transform") and counts.get("_check_sign_pack")
    counts.clear()
    np.testing.assert_array_equal(model.predict(x), first)
    assert counts == {}
    for n in (1, 3, 1):
        np.testing.assert_array_equal(model.predict(x[:n]), plain.predict(x[:n]))


def test_a_model_with_prepared_steps_still_refuses_a_wrong_input():
    g, _ = residual_net(4)
    model = g.model()
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.predict(x)
    with pytest.raises(ValueError, match=r"^PackedModel.predict: expected input of shape "
                                         r"\(N, 3, 8, 8\), got \(2, 8, 8, 3\)$"):
        model.predict(x.transpose(0, 2, 3, 1))
    with pytest.raises(TypeError, match=r"x must be uint8 images or floats, got dtype int64"):
        model.predict(x.astype(np.int64))
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), model.predict(x))


def test_profile_labels_every_step_of_the_plan_on_every_run():
    g, _ = residual_net(5)
    model = g.model()
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ops = model.ops
    want = [(ops[s.ops[0]]["name"], "+".join(ops[i]["op"] for i in s.ops))
            for s in model._runner.plan]
    assert any("+" in kind for _, kind in want)  # fused steps are one entry
    for _ in range(2):
        rows = model.profile(x, repeats=2)
        assert [(name, kind) for name, kind, _ in rows] == want
        assert all(seconds >= 0 for _, _, seconds in rows)
