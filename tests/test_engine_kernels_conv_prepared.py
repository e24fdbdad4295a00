"""Binary convs and denses with their weight tables made once (csrc/conv_plan.c: panels, tap
popcount prefix sums, border ks; ``_core.conv_prepare``), as ``kernels.prepare`` calls keep
them: bit for bit the unprepared kernels on every ISA row (tables made on one row, run on each)
and 1-3 threads, the bindings checking every prepared buffer's size on every call, and the
runner preparing each layer once."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import binarynet as bn
from binarynet import engine
from binarynet.engine import _core, kernels, reference
from binarynet.export import export

from engine_fixtures import assert_same_bits, pm1

BACKENDS = kernels.available_backends()
PAD_MODES = ["zero", "one", "minus_one"]
_MODES = {"zero": _core.PAD_ZERO, "one": _core.PAD_ONE, "minus_one": _core.PAD_MINUS_ONE}


@pytest.fixture(autouse=True)
def restore_settings(kernel_settings_restored):
    yield


def operands(rng, n, h, w, c, o, kernel):
    x = reference.pack(pm1(rng, (n, h, w, c)))
    wt = reference.pack(pm1(rng, (o, kernel[0], kernel[1], c)))
    thresh = rng.integers(-6, 7, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    scale = rng.standard_normal(o).astype(np.float32)
    shift = rng.standard_normal(o).astype(np.float32)
    return x, wt, thresh, flip, scale, shift


def calls(rng, x, wt, c, thresh, flip, scale, shift, geometry):
    """(name, operands after x, options, residual) of each prepare-able conv on these operands."""
    ho, wo = reference.bconv2d(x, wt, c, **geometry).shape[1:3]
    out = [("bconv2d_threshold", (wt, c, thresh, flip), geometry, None)]
    for pool in [(2, 2), (1, 2)]:
        if ho >= pool[0] and wo >= pool[1]:
            out.append(("bconv2d_threshold_maxpool", (wt, c, thresh, flip, pool, pool), geometry,
                        None))
    residual = rng.standard_normal((x.shape[0], ho, wo, wt.shape[0])).astype(np.float32)
    out.append(("bconv2d_transform", (wt, c, scale, shift),
                dict(geometry, steps=(("add",), ("relu",)), sign_thresh=shift, sign_flip=flip),
                residual))
    out.append(("bconv2d_transform", (wt, c, scale, shift), dict(geometry, float_out=False,
                                                                  sign_thresh=shift,
                                                                  sign_flip=flip), None))
    return out


def check_prepared(x, prepared_calls, threads=(1,)):
    """Each prepared call (made on the current row, its first run there) against its public
    function on every ISA row and thread count, twice (the second run reuses the tables)."""
    made = [(kernels.prepare(name, *ops, **options), name, ops, options, residual)
            for name, ops, options, residual in prepared_calls]
    for prepared, _, _, _, residual in made:  # the tables made on this row
        prepared(x) if residual is None else prepared(x, residual)
    for backend in BACKENDS:
        kernels.set_backend(backend)
        for t in threads:
            kernels.set_num_threads(t)
            for prepared, name, ops, options, residual in made:
                extra = {} if residual is None else {"residual": residual}
                want = getattr(kernels, name)(x, *ops, **options, **extra)
                for _ in range(2):
                    assert_same_bits(prepared(x) if residual is None else prepared(x, residual), want)


@settings(max_examples=50, deadline=None)
@given(made_on=st.sampled_from(BACKENDS), n=st.sampled_from([1, 2]),
       hw=st.sampled_from([(1, 1), (2, 3), (3, 2), (5, 7), (6, 6)]),
       c=st.sampled_from([1, 63, 65, 130]), o=st.sampled_from([1, 17, 63, 65, 130]),
       kernel=st.sampled_from([(1, 1), (3, 3), (2, 3)]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), pad_mode=st.sampled_from(PAD_MODES),
       seed=st.integers(0, 2**16))
def test_property_prepared_convs_match_unprepared(made_on, n, hw, c, o, kernel, stride, padding,
                                                  pad_mode, seed):
    """Odd channel counts, 1x1 and 2x3 maps, stride 2, each pad mode, pool on and off, the
    transform; maps of up to 72 pixels (the panel path and its border table on AVX-512)."""
    h, w = hw
    if h + 2 * padding < kernel[0] or w + 2 * padding < kernel[1]:
        return
    rng = np.random.default_rng(seed)
    x, wt, thresh, flip, scale, shift = operands(rng, n, h, w, c, o, kernel)
    geometry = dict(stride=(stride, stride), padding=(padding, padding), pad_mode=pad_mode)
    kernels.set_backend(made_on)
    check_prepared(x, calls(rng, x, wt, c, thresh, flip, scale, shift, geometry))
    want = reference.bconv2d_threshold(x, wt, c, thresh, flip, **geometry)
    np.testing.assert_array_equal(kernels.prepare("bconv2d_threshold", wt, c, thresh, flip,
                                                  **geometry)(x), want)


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("shape", [(8, 8, 256, 200), (16, 16, 64, 70), (9, 7, 65, 260)])
def test_prepared_convs_on_every_thread_count(shape, pad_mode):
    """Layers large enough for the pool: an 8x8 map split by outputs (each thread preparing
    its own block when unprepared), a 16x16 map split by pixels, a 9x7 map (odd sizes)."""
    h, w, c, o = shape
    rng = np.random.default_rng(h * o)
    x, wt, thresh, flip, scale, shift = operands(rng, 1, h, w, c, o, (3, 3))
    geometry = dict(stride=(1, 1), padding=(1, 1), pad_mode=pad_mode)
    check_prepared(x, calls(rng, x, wt, c, thresh, flip, scale, shift, geometry), (1, 2, 3))


@settings(max_examples=30, deadline=None)
@given(made_on=st.sampled_from(BACKENDS), m=st.sampled_from([1, 31, 32, 70]),
       n=st.sampled_from([1, 17, 65, 130]), k=st.sampled_from([1, 63, 65, 300]),
       seed=st.integers(0, 2**16))
def test_property_prepared_denses_match_unprepared(made_on, m, n, k, seed):
    """bgemm, bgemm_threshold and bgemm_transform with their panels made once (AVX-512, from 32
    rows): below and above that bound, odd sizes, 1-3 threads."""
    rng = np.random.default_rng(seed)
    a, w = reference.pack(pm1(rng, (m, k))), reference.pack(pm1(rng, (n, k)))
    thresh, flip = rng.integers(-6, 7, n).astype(np.int32), rng.random(n) < 0.5
    scale, shift = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    residual = rng.standard_normal((m, n)).astype(np.float32)
    kernels.set_backend(made_on)
    check_prepared(a, [("bgemm", (w, k), {}, None),
                       ("bgemm_threshold", (w, k, thresh, flip), {}, None),
                       ("bgemm_transform", (w, k, scale, shift),
                        dict(steps=(("add",),), sign_thresh=shift, sign_flip=flip), residual)],
                   (1, 2, 3))


def _geometry(n, h, w, c, o, k, pad):
    return (n, h, w, c, o, k, k, 1, 1, pad, pad, 1, 1)


@pytest.mark.skipif("avx512" not in BACKENDS, reason="the panel path is AVX-512's")
def test_conv_prepare_makes_the_tables_the_call_would():
    """On the AVX-512 row an 8x8 map with zero padding has all three tables; on a row without
    panels only the prefix sums; without padding none (nothing to prepare)."""
    wt = reference.pack(np.ones((70, 3, 3, 100)))
    kernels.set_backend("avx512")
    wpre, panels, kvec = _core.conv_prepare(wt, _geometry(1, 8, 8, 100, 70, 3, 1), _MODES["zero"])
    assert len(wpre) == 70 * 16 * 4 and len(panels) == 80 * 9 * 2 * 8
    assert len(kvec) == 9 * 70 * 4  # 3 x 3 border classes
    kernels.set_backend("portable")
    assert [t is None for t in _core.conv_prepare(
        wt, _geometry(1, 8, 8, 100, 70, 3, 1), _MODES["zero"])] == [False, True, True]
    assert _core.conv_prepare(wt, _geometry(1, 8, 8, 100, 70, 3, 0), _MODES["zero"]) == (
        None, None, None)


def test_core_checks_prepared_buffers():
    """The bindings refuse prepared tables of the wrong size whatever they are called with, and
    a border table of another class count (made for another geometry)."""
    rng = np.random.default_rng(3)
    x, wt, thresh, flip, scale, shift = operands(rng, 1, 8, 8, 100, 70, (3, 3))
    geometry = _geometry(1, 8, 8, 100, 70, 3, 1)
    out = np.empty((1, 8, 8, 2), np.uint64)
    kernels.set_backend(BACKENDS[-1])
    wpre, panels, kvec = _core.conv_prepare(wt, geometry, _MODES["zero"])
    args = (x, wt, geometry, _MODES["zero"], thresh, flip.view(np.uint8))
    with pytest.raises(ValueError, match=r"^bconv2d_threshold: buffer wpre holds 4476 bytes, "
                       r"expected 4480$"):
        _core.bconv2d_threshold(*args, out, wpre[:-4], panels, kvec)
    if panels is not None:
        with pytest.raises(ValueError, match=r"^bconv2d_threshold_maxpool: buffer panels holds "):
            _core.bconv2d_threshold_maxpool(*args, (2, 2, 2, 2), np.empty((1, 4, 4, 2), np.uint64),
                                            wpre, panels[:-8], kvec)
        with pytest.raises(ValueError, match=r"^bconv2d_threshold: buffer kvec holds 2518 bytes"):
            _core.bconv2d_threshold(*args, out, wpre, panels, kvec[:-2])
        # the 3x3 classes of a padded 8x8 map against the 1 x 3 of a 1-row map
        small = _core.conv_prepare(wt, _geometry(1, 1, 40, 100, 70, 3, 1), _MODES["zero"])[2]
        if small is not None:
            with pytest.raises(ValueError, match=r"^bconv2d_threshold: prepared kvec was made "
                               r"for another geometry$"):
                _core.bconv2d_threshold(*args, out, wpre, panels, small)
    # a dense of 64 rows, k = 100, 70 outputs: panels of 80 x 2 words
    a, dense_w = x.reshape(64, 2), np.ascontiguousarray(wt[:, 0, 0])
    dense = _core.conv_prepare(dense_w, (64, 1, 1, 100, 70, 1, 1, 1, 1, 0, 0, 1, 1),
                               _MODES["zero"])
    assert dense[0] is None and dense[2] is None
    with pytest.raises(ValueError, match=r"^bgemm: buffer panels holds 1272 bytes, expected "
                       r"1280$"):
        _core.bgemm(a, dense_w, 64, 70, 100, np.empty((64, 70), np.int32), b"\0" * 1272)
    with pytest.raises(ValueError, match=r"^conv_prepare: buffer w holds"):
        _core.conv_prepare(wt[:-1], geometry, _MODES["zero"])
    _core.bconv2d_threshold(*args, out, wpre, panels, kvec)
    np.testing.assert_array_equal(out, reference.bconv2d_threshold(
        x, wt, 100, thresh, flip, padding=(1, 1)))


def test_runner_prepares_each_layer_once(monkeypatch):
    """A ConvNet's binary convs (plain and with the fused pool) and denses make their tables at
    the first batch and keep them for the next ones, with the reference runner's logits."""
    torch.manual_seed(5)
    model = bn.models.get("cifar10_vgg", widths=(64, 64), fc=(32,), image_size=8)
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():  # batch-norm statistics of real activations: few near-ties at export
        model(x.float() * (2 / 255) - 1)
    model.eval()
    packed = export(model, x, input_scale=2 / 255, input_offset=-1.0)
    made = []
    real = _core.conv_prepare
    monkeypatch.setattr(_core, "conv_prepare", lambda *a: made.append(a[1]) or real(*a))
    x = x.numpy()
    want = engine.PackedModel(packed.graph, packed.tensors, reference=True).predict(x)
    fresh = engine.PackedModel(packed.graph, packed.tensors)
    for _ in range(3):
        np.testing.assert_array_equal(fresh.predict(x, batch_size=1), want)
    ops = [op["op"] for op in packed.graph["ops"]]
    assert ops.count("conv") >= 2 and ops.count("dense") + ops.count("dense_logits") >= 2
    # a dense is prepared as the 1x1 conv of its rows (geometry (m, 1, 1, k, n, 1, 1, ...))
    assert sorted(g[5] for g in made) == [1] * (ops.count("dense") + ops.count("dense_logits")) \
        + [3] * ops.count("conv")
    assert all(g[0] == 1 for g in made)  # batch 1
