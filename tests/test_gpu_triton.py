"""GPU backend (Triton kernels) against the numpy reference of the engine, bit for bit.

Without a CUDA GPU the kernels run in Triton's interpreter on CPU tensors (this module sets
TRITON_INTERPRET=1 before triton is first imported); on a GPU machine the same tests run the
compiled kernels.
Shapes are tiny because the interpreter executes every program in numpy.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_setup import torch_and_triton

torch, ON_GPU = torch_and_triton()

from binarynet.engine import reference as ref  # noqa: E402
from binarynet.gpu import backend, triton_kernels  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
INT32_MIN, INT32_MAX = ref.INT32_MIN, ref.INT32_MAX

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:triton"),
    pytest.mark.skipif(not ON_GPU and not triton_kernels.INTERPRETED,
                       reason="no CUDA GPU, and TRITON_INTERPRET was set to 0 before the tests"),
]


@pytest.fixture(autouse=True)
def _triton_gemm(monkeypatch):
    """These tests check the Triton kernels, also where the GPU would pick the tensor cores."""
    monkeypatch.setenv("BINARYNET_GPU_GEMM", "triton")


def to_device(a: np.ndarray) -> torch.Tensor:
    """numpy -> torch on DEVICE; uint64 travels as its int64 bit pattern."""
    if a.dtype == np.uint64:
        return torch.from_numpy(a.view(np.int64).copy()).to(DEVICE).view(torch.uint64)
    return torch.from_numpy(a.copy()).to(DEVICE)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.uint64:
        return t.view(torch.int64).cpu().numpy().view(np.uint64)
    return t.cpu().numpy()


def packed(rng, shape) -> np.ndarray:
    """Random +-1 rows of shape[-1] bits, packed by the reference."""
    return ref.pack(rng.integers(0, 2, size=shape) * 2 - 1)


# ----------------------------------------------------------------------------------------------
# pack / unpack
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 31, 63, 64, 65, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int64])
def test_triton_pack_matches_reference(k, dtype):
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((2, 3, k)) * 50).astype(dtype)
    x[0, 0, 0] = 0  # sign(0) = +1
    got = backend.pack(to_device(x))
    assert got.dtype == torch.uint64 and tuple(got.shape) == (2, 3, ref.words_for(k))
    np.testing.assert_array_equal(to_numpy(got), ref.pack(x))


def test_triton_pack_signed_zero_and_nan():
    x = np.array([[-0.0, 0.0, np.nan, -np.inf, np.inf, -1e-30]], dtype=np.float32)
    got = to_numpy(backend.pack(to_device(x)))
    assert got[0, 0] == 0b010011  # -0.0, 0.0 and inf are +1
    np.testing.assert_array_equal(got, ref.pack(x))


def test_triton_pack_bfloat16():
    x = torch.tensor([[-2.0, 0.0, 3.0, -0.5, -1e-30, 1e30]], dtype=torch.bfloat16, device=DEVICE)
    assert to_numpy(backend.pack(x))[0, 0] == 0b100110


@pytest.mark.parametrize("k", [1, 64, 65, 130])
def test_triton_unpack_inverts_pack(k):
    p = packed(np.random.default_rng(k), (4, k))
    got = backend.unpack(to_device(p), k)
    assert got.dtype == torch.int8
    np.testing.assert_array_equal(to_numpy(got), ref.unpack(p, k))


# ----------------------------------------------------------------------------------------------
# binary GEMM
# ----------------------------------------------------------------------------------------------
GEMM_SHAPES = [(1, 1, 1), (3, 5, 63), (7, 9, 64), (5, 3, 65), (17, 33, 200), (2, 70, 784),
               (65, 66, 129)]


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_triton_bgemm_matches_reference(m, n, k):
    rng = np.random.default_rng(m * 1000 + k)
    a, w = packed(rng, (m, k)), packed(rng, (n, k))
    got = backend.bgemm(to_device(a), to_device(w), k)
    assert got.dtype == torch.int32 and tuple(got.shape) == (m, n)
    np.testing.assert_array_equal(to_numpy(got), ref.bgemm(a, w, k))


def test_triton_bgemm_equals_float_matmul_of_signs():
    rng = np.random.default_rng(7)
    xa, xw = rng.standard_normal((6, 100)), rng.standard_normal((4, 100))
    signs = lambda v: np.where(v >= 0, 1.0, -1.0)  # noqa: E731
    got = backend.bgemm(backend.pack(to_device(xa)), backend.pack(to_device(xw)), 100)
    np.testing.assert_array_equal(to_numpy(got), (signs(xa) @ signs(xw).T).astype(np.int32))


@pytest.mark.parametrize("tile", [triton_kernels.TileConfig(16, 32, 4, 1),
                                  triton_kernels.TileConfig(32, 64, 2, 2),
                                  triton_kernels.LARGE_TILE])
def test_triton_bgemm_tiles(tile):
    rng = np.random.default_rng(3)
    a, w = packed(rng, (37, 190)), packed(rng, (45, 190))
    words = triton_kernels.bgemm_words(to_device(a).view(torch.int32),
                                       to_device(w).view(torch.int32), 190, tile=tile)
    np.testing.assert_array_equal(to_numpy(words), ref.bgemm(a, w, 190))


def thresholds(rng, dot: np.ndarray):
    """Thresholds hitting every case: exact ties with an actual dot value, INT32 extremes
    (constant channels), zero, random; flips mixed."""
    n = dot.shape[1]
    thresh = rng.integers(-40, 41, n).astype(np.int32)
    thresh[::4] = dot[0, ::4]  # ties on row 0
    thresh[1::7] = INT32_MIN
    thresh[2::7] = INT32_MAX
    thresh[3::9] = 0
    flip = rng.random(n) < 0.5
    return thresh, flip


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 63, 64), (5, 64, 65), (9, 65, 200), (4, 130, 100),
                                   (20, 7, 33)])
def test_triton_bgemm_threshold_matches_reference(m, n, k):
    rng = np.random.default_rng(n * 100 + k)
    a, w = packed(rng, (m, k)), packed(rng, (n, k))
    thresh, flip = thresholds(rng, ref.bgemm(a, w, k))
    got = backend.bgemm_threshold(to_device(a), to_device(w), k, to_device(thresh), to_device(flip))
    assert got.dtype == torch.uint64 and tuple(got.shape) == (m, ref.words_for(n))
    np.testing.assert_array_equal(to_numpy(got), ref.bgemm_threshold(a, w, k, thresh, flip))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 200),
       seed=st.integers(0, 2**31 - 1))
def test_triton_bgemm_threshold_property(m, n, k, seed):
    """Random shapes (tile edges, partial words) and thresholds around the dot products."""
    rng = np.random.default_rng(seed)
    a, w = packed(rng, (m, k)), packed(rng, (n, k))
    dot = ref.bgemm(a, w, k)
    thresh = (dot[rng.integers(0, m)] + rng.integers(-2, 3, n)).astype(np.int32)
    flip = rng.random(n) < 0.5
    got = backend.bgemm_threshold(to_device(a), to_device(w), k, to_device(thresh), to_device(flip))
    np.testing.assert_array_equal(to_numpy(got), ref.bgemm_threshold(a, w, k, thresh, flip))


def test_triton_bgemm_threshold_constant_channels():
    rng = np.random.default_rng(0)
    a, w = packed(rng, (3, 50)), packed(rng, (70, 50))
    thresh = np.where(np.arange(70) % 2 == 0, INT32_MIN, INT32_MAX).astype(np.int32)
    flip = np.zeros(70, dtype=bool)
    got = to_numpy(backend.bgemm_threshold(to_device(a), to_device(w), 50, to_device(thresh),
                                           to_device(flip)))
    bits = ref.unpack(got, 70)
    np.testing.assert_array_equal(bits, np.broadcast_to(np.where(np.arange(70) % 2 == 0, 1, -1),
                                                        (3, 70)))


# ----------------------------------------------------------------------------------------------
# binary convolution
# ----------------------------------------------------------------------------------------------
CONV_CASES = [  # (c, kh, kw, stride, padding, dilation, h, w)
    (1, 1, 1, 1, 0, 1, 3, 4),
    (3, 3, 3, 1, 1, 1, 5, 6),
    (64, 3, 3, 2, 1, 1, 7, 5),
    (65, 3, 3, 1, 2, 2, 6, 7),
    (130, 2, 3, (2, 1), (1, 0), (1, 2), 5, 8),
]


@pytest.mark.parametrize("pad_mode", ["zero", "one", "minus_one"])
@pytest.mark.parametrize("c,kh,kw,stride,padding,dilation,h,wd", CONV_CASES)
def test_triton_bconv2d_matches_reference(c, kh, kw, stride, padding, dilation, h, wd, pad_mode):
    rng = np.random.default_rng(c * 10 + kh)
    x, w = packed(rng, (2, h, wd, c)), packed(rng, (5, kh, kw, c))
    args = (stride, padding, dilation, pad_mode)
    got = backend.bconv2d(to_device(x), to_device(w), c, *args)
    expected = ref.bconv2d(x, w, c, *args)
    assert got.dtype == torch.int32 and tuple(got.shape) == expected.shape
    np.testing.assert_array_equal(to_numpy(got), expected)


@pytest.mark.parametrize("pad_mode", ["zero", "one", "minus_one"])
@pytest.mark.parametrize("o", [1, 66])
def test_triton_bconv2d_threshold_matches_reference(pad_mode, o):
    rng = np.random.default_rng(o)
    c = 70
    x, w = packed(rng, (2, 5, 4, c)), packed(rng, (o, 3, 3, c))
    args = ((1, 1), (1, 1), (1, 1), pad_mode)
    thresh, flip = thresholds(rng, ref.bconv2d(x, w, c, *args).reshape(-1, o))
    got = backend.bconv2d_threshold(to_device(x), to_device(w), c, to_device(thresh),
                                    to_device(flip), *args)
    expected = ref.bconv2d_threshold(x, w, c, thresh, flip, *args)
    assert got.dtype == torch.uint64 and tuple(got.shape) == expected.shape
    np.testing.assert_array_equal(to_numpy(got), expected)


def test_triton_bconv2d_equals_torch_conv_of_signs():
    """Cross-check with torch's float conv on +-1 values (zero padding = padded taps add 0)."""
    rng = np.random.default_rng(11)
    xs = np.where(rng.standard_normal((1, 6, 6, 5)) >= 0, 1.0, -1.0)
    ws = np.where(rng.standard_normal((4, 3, 3, 5)) >= 0, 1.0, -1.0)
    expected = torch.nn.functional.conv2d(torch.from_numpy(xs).permute(0, 3, 1, 2),
                                          torch.from_numpy(ws).permute(0, 3, 1, 2), padding=1)
    got = backend.bconv2d(to_device(ref.pack(xs)), to_device(ref.pack(ws)), 5, padding=1)
    np.testing.assert_array_equal(to_numpy(got), expected.permute(0, 2, 3, 1).numpy())


# ----------------------------------------------------------------------------------------------
# clear errors
# ----------------------------------------------------------------------------------------------
def test_gpu_backend_rejects_bad_operands():
    rng = np.random.default_rng(0)
    a, w = to_device(packed(rng, (2, 70))), to_device(packed(rng, (3, 70)))
    with pytest.raises(TypeError, match="bgemm: a must have dtype torch.uint64"):
        backend.bgemm(a.view(torch.int64), w, 70)
    with pytest.raises(ValueError, match=r"ceil\(k/64\) = 1 words for k=64"):
        backend.bgemm(a, w, 64)
    with pytest.raises(TypeError, match="bgemm: k must be an int"):
        backend.bgemm(a, w, 70.0)
    with pytest.raises(ValueError, match="must be contiguous"):
        backend.bgemm(to_device(packed(rng, (2, 200)))[:, :2], w[:, :2].contiguous(), 128)
    with pytest.raises(TypeError, match="must be a torch tensor"):
        backend.bgemm(to_numpy(a), w, 70)
    thresh = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    flip = torch.zeros(3, dtype=torch.bool, device=DEVICE)
    with pytest.raises(TypeError, match="thresh must be an int32"):
        backend.bgemm_threshold(a, w, 70, thresh.to(torch.int64), flip)
    with pytest.raises(ValueError, match=r"flip must have shape \(3,\)"):
        backend.bgemm_threshold(a, w, 70, thresh, flip[:2])
    with pytest.raises(TypeError, match="flip must be a bool"):
        backend.bgemm_threshold(a, w, 70, thresh, flip.to(torch.int8))
    with pytest.raises(TypeError, match="pack: x must be a real numeric tensor"):
        backend.pack(torch.ones(3, dtype=torch.bool, device=DEVICE))


def test_gpu_backend_rejects_bad_conv_arguments():
    rng = np.random.default_rng(0)
    x, w = to_device(packed(rng, (1, 4, 4, 8))), to_device(packed(rng, (2, 3, 3, 8)))
    with pytest.raises(ValueError, match="pad_mode must be one of"):
        backend.bconv2d(x, w, 8, pad_mode="reflect")
    with pytest.raises(ValueError, match="does not fit the 4x4 input"):
        backend.bconv2d(x, w, 8, dilation=3)
    with pytest.raises(ValueError, match="stride values must be >= 1"):
        backend.bconv2d(x, w, 8, stride=0)
    with pytest.raises(ValueError, match="x must be 4-D"):
        backend.bconv2d(x[0], w, 8)


# ----------------------------------------------------------------------------------------------
# the runner's other ops
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 64, 70])
def test_gpu_threshold_pack_matches_reference(n):
    rng = np.random.default_rng(n)
    x = rng.integers(-50, 51, (2, 3, n)).astype(np.int32)
    thresh, flip = thresholds(rng, x.reshape(-1, n))
    got = backend.threshold_pack(to_device(x), to_device(thresh), to_device(flip))
    np.testing.assert_array_equal(to_numpy(got), ref.threshold_pack(x, thresh, flip))


@pytest.mark.parametrize("c,kernel,stride", [(5, 2, 2), (70, 3, 2), (128, (2, 3), (1, 2))])
def test_gpu_bmaxpool2d_matches_reference(c, kernel, stride):
    rng = np.random.default_rng(c)
    x = packed(rng, (2, 7, 6, c))
    flip = rng.random(c) < 0.5
    got = backend.bmaxpool2d(to_device(x), kernel, stride, to_device(flip), c)
    np.testing.assert_array_equal(to_numpy(got), ref.bmaxpool2d(x, kernel, stride, flip, c))


def test_triton_bconv2d_threshold_maxpool_matches_reference():
    rng = np.random.default_rng(4)
    x, w = packed(rng, (1, 6, 5, 20)), packed(rng, (66, 3, 3, 20))
    thresh = rng.integers(-10, 11, 66).astype(np.int32)
    flip = rng.random(66) < 0.5
    args = ((1, 1), (1, 1), (1, 1), "zero")
    got = backend.bconv2d_threshold_maxpool(to_device(x), to_device(w), 20, to_device(thresh),
                                            to_device(flip), 2, (2, 1), *args)
    np.testing.assert_array_equal(
        to_numpy(got), ref.bconv2d_threshold_maxpool(x, w, 20, thresh, flip, 2, (2, 1), *args))


def test_gpu_maxpool2d_int_matches_reference():
    x = np.random.default_rng(0).integers(-2**31, 2**31 - 1, (2, 5, 7, 3)).astype(np.int32)
    got = backend.maxpool2d_int(to_device(x), (2, 3), (2, 2))
    np.testing.assert_array_equal(to_numpy(got), ref.maxpool2d_int(x, (2, 3), (2, 2)))


@pytest.mark.parametrize("k", [1, 65, 784])
def test_gpu_first_layer_gemm_matches_reference(k):
    rng = np.random.default_rng(k)
    x = rng.integers(0, 256, (3, k)).astype(np.uint8)
    x[0] = 255  # the largest sums
    w = packed(rng, (5, k))
    expected = ref.bitplane_gemm(x, w, k)
    for op in (backend.int_gemm, backend.bitplane_gemm):
        np.testing.assert_array_equal(to_numpy(op(to_device(x), to_device(w), k)), expected)
