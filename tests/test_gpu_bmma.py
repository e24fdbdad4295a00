"""The 1-bit tensor-core GEMM (binarynet/gpu/bmma.cu) against the numpy reference, bit for bit.

The build and the ctypes interface are checked wherever nvcc exists (no GPU needed); the kernel
itself runs only on a CUDA GPU with the b1 MMA (sm_80+), otherwise those tests skip.
"""
import ctypes
import subprocess

import numpy as np
import pytest

from gpu_setup import torch_and_triton

torch, ON_GPU = torch_and_triton()

from binarynet.engine import reference as ref  # noqa: E402
from binarynet.gpu import backend, bmma  # noqa: E402

HAS_BMMA = ON_GPU and torch.cuda.get_device_capability() >= bmma.MIN_CAPABILITY
needs_bmma = pytest.mark.skipif(
    not HAS_BMMA, reason="no CUDA GPU" if not ON_GPU else "GPU lacks the 1-bit MMA (needs sm_80+)")
INT32_MIN, INT32_MAX = ref.INT32_MIN, ref.INT32_MAX


def packed(rng, shape) -> np.ndarray:
    return ref.pack(rng.integers(0, 2, size=shape) * 2 - 1)


def words(a: np.ndarray) -> torch.Tensor:
    """Packed uint64 numpy -> int32 word view on the GPU."""
    return torch.from_numpy(a.view(np.int32).copy()).cuda()


@pytest.mark.skipif(bmma.find_nvcc() is None, reason="nvcc not found")
def test_gpu_bmma_source_builds_with_nvcc_and_exports_its_api(tmp_path):
    """Compiles bmma.cu for sm_90 (Hopper) with the local nvcc and loads the library's C API."""
    library = tmp_path / "libbmma.so"
    result = subprocess.run(bmma.compile_command(bmma.find_nvcc(), "sm_90", library),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lib = ctypes.CDLL(str(library))
    for symbol in ("bmma_row_popcount", "bmma_gemm", "bmma_gemm_threshold"):
        assert hasattr(lib, symbol)
    lib.bmma_error_string.argtypes = [ctypes.c_int]
    lib.bmma_error_string.restype = ctypes.c_char_p
    assert lib.bmma_error_string(0) == b"no error"


# (M, N, K) with the automatic tile; K % 512 != 0 and ceil(K/64) odd exercise the zero-filled
# tail stage and the padding of rows to 4 words.
SHAPES = [(1, 1, 1), (1, 70, 784), (5, 13, 200), (32, 64, 1024), (33, 130, 300), (130, 257, 1100),
          (300, 200, 4096)]


@needs_bmma
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gpu_bmma_bgemm_matches_reference(m, n, k):
    rng = np.random.default_rng(m + n + k)
    a, w = packed(rng, (m, k)), packed(rng, (n, k))
    got = bmma.bgemm_words(words(a), words(w), k)
    np.testing.assert_array_equal(got.cpu().numpy(), ref.bgemm(a, w, k))


@needs_bmma
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gpu_bmma_bgemm_threshold_matches_reference(m, n, k):
    rng = np.random.default_rng(m * n + k)
    a, w = packed(rng, (m, k)), packed(rng, (n, k))
    dot = ref.bgemm(a, w, k)
    thresh = rng.integers(-k // 8 - 1, k // 8 + 2, n).astype(np.int32)
    thresh[::4] = dot[0, ::4]  # exact ties
    thresh[1::7], thresh[2::7] = INT32_MIN, INT32_MAX
    flip = rng.random(n) < 0.5
    got = bmma.bgemm_words(words(a), words(w), k, torch.from_numpy(thresh).cuda(),
                           torch.from_numpy(flip.astype(np.int8)).cuda())
    expected = ref.bgemm_threshold(a, w, k, thresh, flip)
    np.testing.assert_array_equal(got.cpu().numpy().view(np.uint64), expected)


@needs_bmma
@pytest.mark.parametrize("tile", ["large", "medium", "small", "huge"])
@pytest.mark.parametrize("m,n,k", [(1, 3, 64), (70, 130, 1100), (129, 200, 512)])
def test_gpu_bmma_every_tile_matches_reference(tile, m, n, k):
    rng = np.random.default_rng(m + k)
    a, w = packed(rng, (m, k)), packed(rng, (n, k))
    got = bmma.bgemm_words(words(a), words(w), k, tile=tile)
    np.testing.assert_array_equal(got.cpu().numpy(), ref.bgemm(a, w, k))
    thresh = rng.integers(-20, 21, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    got = bmma.bgemm_words(words(a), words(w), k, torch.from_numpy(thresh).cuda(),
                           torch.from_numpy(flip.astype(np.int8)).cuda(), tile=tile)
    np.testing.assert_array_equal(got.cpu().numpy().view(np.uint64),
                                  ref.bgemm_threshold(a, w, k, thresh, flip))


@needs_bmma
def test_gpu_bmma_precomputed_weight_popcounts():
    rng = np.random.default_rng(5)
    a, w = packed(rng, (40, 500)), packed(rng, (24, 500))
    w_words = words(w)
    pop = bmma.row_popcounts(w_words)
    np.testing.assert_array_equal(pop.cpu().numpy(), np.bitwise_count(w).sum(axis=1))
    got = bmma.bgemm_words(words(a), w_words, 500, w_popcounts=pop)
    np.testing.assert_array_equal(got.cpu().numpy(), ref.bgemm(a, w, 500))


@needs_bmma
def test_gpu_backend_uses_tensor_cores_by_default(monkeypatch):
    monkeypatch.delenv("BINARYNET_GPU_GEMM", raising=False)
    assert backend.gemm_engine("cuda") == "tensor_core"
    rng = np.random.default_rng(9)
    a, w = packed(rng, (50, 333)), packed(rng, (20, 333))
    to_gpu = lambda p: torch.from_numpy(p.view(np.int64).copy()).cuda().view(torch.uint64)  # noqa
    got = backend.bgemm(to_gpu(a), to_gpu(w), 333)
    np.testing.assert_array_equal(got.cpu().numpy(), ref.bgemm(a, w, 333))


def test_gpu_gemm_engine_rejects_unknown_choice(monkeypatch):
    monkeypatch.setenv("BINARYNET_GPU_GEMM", "cublas")
    with pytest.raises(ValueError, match="BINARYNET_GPU_GEMM must be one of"):
        backend.gemm_engine()
