"""How the binary convolutions cut their work into tasks at small batches (csrc/conv.c): the
weight tables prepared in parallel per block of outputs, pixel blocks of equal size, and the
fused max pool split over output channels as well as pooled rows. Every split must give the
reference's result bit for bit, on every ISA row and thread count: odd channel counts (a
partial last block, a partial last word), 1x1 and 2x3 maps, stride 2, each pad mode, pooling on
and off, and the fused output transform."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import kernels, reference

from engine_fixtures import pm1

BACKENDS = kernels.available_backends()
PAD_MODES = ["zero", "one", "minus_one"]


@pytest.fixture(autouse=True)
def restore_settings(kernel_settings_restored):
    yield


def operands(rng, n, h, w, c, o, kernel):
    x = reference.pack(pm1(rng, (n, h, w, c)))
    wt = reference.pack(pm1(rng, (o, kernel, kernel, c)))
    thresh = rng.integers(-6, 7, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    return x, wt, thresh, flip


@settings(max_examples=60, deadline=None)
@given(backend=st.sampled_from(BACKENDS), threads=st.sampled_from([1, 2, 3]),
       n=st.sampled_from([1, 2]), hw=st.sampled_from([(1, 1), (2, 3), (3, 2), (4, 4), (5, 7)]),
       c=st.sampled_from([1, 63, 65, 130]), o=st.sampled_from([1, 17, 63, 65, 130, 200]),
       kernel=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), pad_mode=st.sampled_from(PAD_MODES),
       seed=st.integers(0, 2**16))
def test_conv_splits_match_reference(backend, threads, n, hw, c, o, kernel, stride, padding,
                                     pad_mode, seed):
    kernels.set_backend(backend)
    kernels.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    h, w = hw
    if h + 2 * padding < kernel or w + 2 * padding < kernel:
        return
    x, wt, thresh, flip = operands(rng, n, h, w, c, o, kernel)
    args = ((stride, stride), (padding, padding), (1, 1), pad_mode)
    dot = reference.bconv2d(x, wt, c, *args)
    np.testing.assert_array_equal(kernels.bconv2d(x, wt, c, *args), dot)
    np.testing.assert_array_equal(kernels.bconv2d_threshold(x, wt, c, thresh, flip, *args),
                                  reference.bconv2d_threshold(x, wt, c, thresh, flip, *args))
    for pool in [(1, 1), (2, 2), (1, 2)]:
        if dot.shape[1] >= pool[0] and dot.shape[2] >= pool[1]:
            np.testing.assert_array_equal(
                kernels.bconv2d_threshold_maxpool(x, wt, c, thresh, flip, pool, pool, *args),
                reference.bconv2d_threshold_maxpool(x, wt, c, thresh, flip, pool, pool, *args))
    scale = rng.standard_normal(o).astype(np.float32)
    shift = rng.standard_normal(o).astype(np.float32)
    res = rng.standard_normal(dot.shape).astype(np.float32)
    geo = dict(stride=args[0], padding=args[1], pad_mode=pad_mode)
    got = kernels.bconv2d_transform(x, wt, c, scale, shift, steps=(("add",),), residual=res,
                                    sign_thresh=shift, sign_flip=flip, **geo)
    want = reference.bconv2d_transform(x, wt, c, scale, shift, steps=(("add",),), residual=res,
                                       sign_thresh=shift, sign_flip=flip, **geo)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g.view(np.uint8), e.view(np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pad_mode", PAD_MODES)
def test_conv_splits_on_two_threads_at_batch_one(backend, pad_mode):
    """Layers large enough to run on the pool (several threads at once) at small maps, where
    each thread takes a block of outputs over all pixels (no more pixels than outputs) and
    stages its bits: 8x8 with 200 outputs (blocks of 128 and 72), a 9x7 map at stride 2 with
    260 outputs (192 and 68); and a 4x4 map below the pool's threshold."""
    kernels.set_backend(backend)
    kernels.set_num_threads(2)
    rng = np.random.default_rng(12)
    for h, w, c, o, stride in [(8, 8, 520, 200, 1), (9, 7, 2000, 260, 2), (4, 4, 1000, 200, 1)]:
        x, wt, thresh, flip = operands(rng, 1, h, w, c, o, 3)
        args = ((stride, stride), (1, 1), (1, 1), pad_mode)
        scale = rng.standard_normal(o).astype(np.float32)
        shift = rng.standard_normal(o).astype(np.float32)
        for sign_thresh, float_out in [(shift, True), (shift, False), (None, True)]:
            geo = dict(stride=args[0], padding=args[1], pad_mode=pad_mode,
                       sign_thresh=sign_thresh, float_out=float_out,
                       sign_flip=None if sign_thresh is None else flip)
            got = kernels.bconv2d_transform(x, wt, c, scale, shift, **geo)
            want = reference.bconv2d_transform(x, wt, c, scale, shift, **geo)
            for g, e in zip(got, want):
                assert (g is None) == (e is None)
                if g is not None:
                    np.testing.assert_array_equal(g.view(np.uint8), e.view(np.uint8))
        np.testing.assert_array_equal(kernels.bconv2d(x, wt, c, *args),
                                      reference.bconv2d(x, wt, c, *args))
        np.testing.assert_array_equal(kernels.bconv2d_threshold(x, wt, c, thresh, flip, *args),
                                      reference.bconv2d_threshold(x, wt, c, thresh, flip, *args))
        np.testing.assert_array_equal(
            kernels.bconv2d_threshold_maxpool(x, wt, c, thresh, flip, 2, 2, *args),
            reference.bconv2d_threshold_maxpool(x, wt, c, thresh, flip, 2, 2, *args))
