"""The first layer with weights prepared once (kernels.prepare("first_layer", w, k, mode=...)):
bit for bit the reference on every ISA row, safe bindings, and the runner
preparing each first dense layer once."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import binarynet as bn
from binarynet import engine
from binarynet.engine import _core, kernels, reference
from binarynet.export import export

from engine_fixtures import pm1

BACKENDS = kernels.available_backends()
MODES = ["bitplane", "int"]


def _case(rng, m, n, k):
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    x[0] = 255  # the largest sums
    w = reference.pack(pm1(rng, (n, k)))
    return x, w, reference.int_gemm(x, w, k)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 40).map(lambda v: 2 * v - 1),
       k=st.one_of(st.sampled_from([1, 63, 65, 784]), st.integers(1, 300)),
       seed=st.integers(0, 2**32 - 1))
def test_property_prepared_first_layer_all_backends(m, n, k, seed):
    """Small M (the panel path from one input row on AVX-512), odd N, K tails; prepared on one
    ISA row and run on each (int weights made for other lanes are unpacked per call)."""
    rng = np.random.default_rng(seed)
    x, w, want = _case(rng, m, n, k)
    x_float = (rng.standard_normal((m, k)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    previous = kernels.get_backend()
    try:
        for made in BACKENDS:
            kernels.set_backend(made)
            prepared = {mode: kernels.prepare("first_layer", w, k, mode=mode) for mode in MODES}
            for name in BACKENDS:
                kernels.set_backend(name)
                want_float = kernels.first_dense_float(x_float, w, k)
                for mode in MODES:
                    np.testing.assert_array_equal(prepared[mode](x), want)
                    # the prepared panels instead of gathers (M < 4): the same sums, same order
                    np.testing.assert_array_equal(
                        prepared[mode](x_float), want_float)
                    np.testing.assert_array_equal(prepared[mode](x.astype(np.float64)), want)
    finally:
        kernels.set_backend(previous)


@pytest.mark.parametrize("m,n,k", [(1, 4096, 784), (9, 131, 65), (67, 300, 784), (2, 33, 3072)])
def test_prepared_first_layer_on_every_thread_count(m, n, k):
    """The MNIST layer at batch 1 and shapes past the inline bound, on 1-3 threads."""
    x, w, want = _case(np.random.default_rng(m + n), m, n, k)
    threads = kernels.get_num_threads()
    try:
        for t in [1, 2, 3]:
            kernels.set_num_threads(t)
            for mode in MODES:
                np.testing.assert_array_equal(
                    kernels.prepare("first_layer", w, k, mode=mode)(x), want)
            np.testing.assert_array_equal(kernels.bitplane_gemm(x, w, k), want)
    finally:
        kernels.set_num_threads(threads)


def test_int_weights_follow_the_isa_row(monkeypatch):
    """Quads are laid out for one ISA row's lanes: after a backend change they are made again
    for the new row (not unpacked on every call)."""
    x, w, want = _case(np.random.default_rng(2), 2, 40, 90)
    prepared = kernels.prepare("first_layer", w, 90, mode="int")
    made = []
    real = _core.int_prepare
    monkeypatch.setattr(_core, "int_prepare", lambda *a: made.append(a) or real(*a))
    previous = kernels.get_backend()
    try:
        for name in BACKENDS * 2:
            kernels.set_backend(name)
            np.testing.assert_array_equal(prepared(x), want)
    finally:
        kernels.set_backend(previous)
    assert len(made) == len(BACKENDS)


def test_prepared_weights_keep_their_own_copy():
    rng = np.random.default_rng(1)
    x, w, want = _case(rng, 3, 17, 100)
    prepared = [kernels.prepare("first_layer", w, 100, mode=mode) for mode in MODES]
    w[:] = 0
    for p in prepared:
        np.testing.assert_array_equal(p(x), want)


def test_prepared_first_layer_errors():
    w = reference.pack(np.ones((3, 70)))
    for mode in ("float", None):
        with pytest.raises(ValueError, match=r"prepare: first_layer mode must be 'bitplane' or "
                           r"'int', got " + repr(mode)):
            kernels.prepare("first_layer", w, 70, mode=mode)
    with pytest.raises(ValueError, match=r"bitplane_gemm: w last axis must hold ceil\(k/64\) = 4 "
                       r"words for k=200, got 2"):
        kernels.prepare("first_layer", w, 200)
    with pytest.raises(ValueError, match=r"int_gemm: k must be <= 8421504"):
        kernels.prepare("first_layer", w, 8421505, mode="int")
    bad = w.copy()
    bad[0, -1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match=r"int_gemm: w has pad bits set beyond k=70"):
        kernels.prepare("first_layer", bad, 70, mode="int")
    prepared = kernels.prepare("first_layer", w, 70)
    with pytest.raises(ValueError, match=r"bitplane_gemm: x_u8 must have k=70 columns"):
        prepared(np.zeros((2, 71), np.uint8))
    with pytest.raises(TypeError, match=r"bitplane_gemm: x_u8 must have dtype uint8, got int32"):
        prepared(np.zeros((2, 70), np.int32))
    with pytest.raises(ValueError, match=r"first_dense_float: x must have k=70 columns"):
        prepared(np.zeros((2, 69), np.float32))
    # a shape already checked: a later input that differs (here: not contiguous) is checked
    # again in full, not handed to the C core
    np.testing.assert_array_equal(prepared(np.zeros((2, 70), np.uint8)), 0)
    with pytest.raises(ValueError, match=r"bitplane_gemm: x_u8 must be C-contiguous"):
        prepared(np.zeros((2, 140), np.uint8)[:, ::2])


def test_core_checks_prepared_buffers():
    """The bindings refuse prepared data of the wrong size whatever they are called with."""
    w = reference.pack(np.ones((5, 100)))
    x, out = np.zeros((2, 100), np.uint8), np.empty((2, 5), np.int32)
    wpop, panels = _core.bitplane_prepare(w, 5, 100)
    assert len(wpop) == 5 * 4 and len(panels) == 16 * 2 * 8
    with pytest.raises(ValueError, match=r"^bitplane_gemm: buffer wpop holds 16 bytes, "
                       r"expected 20$"):
        _core.bitplane_gemm(x, w, 2, 5, 100, out, wpop[:16], panels)
    with pytest.raises(ValueError, match=r"^bitplane_gemm: buffer panels holds 248 bytes"):
        _core.bitplane_gemm(x, w, 2, 5, 100, out, wpop, panels[:-8])
    with pytest.raises(ValueError, match=r"^bitplane_gemm: panels need wpop$"):
        _core.bitplane_gemm(x, w, 2, 5, 100, out, None, panels)
    with pytest.raises(ValueError, match=r"^bitplane_prepare: buffer w holds 80 bytes, "
                       r"expected 160$"):
        _core.bitplane_prepare(w, 5, 200)
    lanes, quads = _core.int_prepare(w, 5, 100)
    with pytest.raises(ValueError, match=r"^int_gemm: bad lanes 3$"):
        _core.int_gemm(x, w, 2, 5, 100, out, 3, quads)
    with pytest.raises(ValueError, match=r"^int_gemm: buffer quads holds"):
        _core.int_gemm(x, w, 2, 5, 100, out, lanes, quads[:-1])
    _core.int_gemm(x, w, 2, 5, 100, out, lanes, quads)
    np.testing.assert_array_equal(out, 0)
    with pytest.raises(ValueError, match=r"^first_dense_float: buffer panels holds 248 bytes"):
        _core.first_dense_float(x.astype(np.float32), False, w, 2, 5, 100,
                                np.empty((2, 5)), panels[:-8])


@pytest.mark.parametrize("mode", MODES)
def test_runner_prepares_the_first_dense_once(mode, monkeypatch):
    """uint8 and float input to a first dense layer: its weights are prepared at the first call
    and kept (not re-derived per batch), with the reference runner's logits."""
    torch.manual_seed(4)
    model = bn.models.get("mnist_mlp", hidden=70, depth=2, in_shape=(1, 6, 6)).eval()
    x = torch.randint(0, 256, (7, 1, 6, 6), dtype=torch.uint8)
    packed = export(model, x, input_scale=2 / 255, input_offset=-1.0, first_layer=mode)
    made = []
    real = kernels.prepare

    def spy(name, *operands, **options):
        if name == "first_layer":
            made.append(options)
        return real(name, *operands, **options)
    monkeypatch.setattr(kernels, "prepare", spy)
    x = x.numpy()
    want = engine.PackedModel(packed.graph, packed.tensors, reference=True).predict(x)
    fresh = engine.PackedModel(packed.graph, packed.tensors)  # export has run its model once
    for batch_size in (1, 3, 7):
        np.testing.assert_array_equal(fresh.predict(x, batch_size=batch_size), want)
    x_float = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(
        fresh.predict(x_float, batch_size=2),
        engine.PackedModel(packed.graph, packed.tensors, reference=True).predict(x_float),
        rtol=1e-6, atol=1e-6)
    assert made == [{"mode": mode}]
