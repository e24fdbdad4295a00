"""Loader of the 1-bit tensor-core GEMM (``bmma.cu``): nvcc builds it at first use; ctypes calls it.

The CUDA source is compiled into a small shared library (no torch headers, so it builds in seconds)
for the compute capability of the current GPU, cached under ``$BINARYNET_CACHE_DIR`` (default
``~/.cache/binarynet``) by a hash of the source, the architecture and the nvcc version, and loaded
with ctypes. Kernels run on torch's current CUDA stream.

The kernel computes ``dot = k - 2 (pa + pb) + 4 popc(a AND b)`` with ``mma...b1.b1.s32.and.popc``
(see bmma.cu); this module computes the row popcounts pa, pb and pads the word axis to a multiple
of 4 words (16-byte copies) when needed. Like ``triton_kernels``, it takes int32 word views and
does no argument checking: ``binarynet.gpu.backend`` is the public API.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("bmma.cu")
MIN_CAPABILITY = (8, 0)  # m16n8k256 b1 MMA: Ampere and later
WORD_ALIGN = 4           # the kernel copies 16-byte chunks: rows must hold a multiple of 4 words

_lock = threading.Lock()
_libraries: dict[str, ctypes.CDLL] = {}
_supported: dict[str, bool] = {}


class BuildError(RuntimeError):
    """nvcc is missing or failed to compile bmma.cu."""


def find_nvcc() -> str | None:
    """Path of nvcc: $CUDA_HOME/bin/nvcc, else the one on PATH, else None."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").is_file():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cache_dir() -> Path:
    """Where built libraries are kept: $BINARYNET_CACHE_DIR or ~/.cache/binarynet."""
    return Path(os.environ.get("BINARYNET_CACHE_DIR", Path.home() / ".cache" / "binarynet"))


def compile_command(nvcc: str, arch: str, output: str | os.PathLike) -> list[str]:
    """The nvcc command that builds bmma.cu for ``arch`` (e.g. "sm_90") into a shared library."""
    return [nvcc, "-O3", "-std=c++17", f"-arch={arch}", "-shared", "-Xcompiler", "-fPIC",
            "-o", str(output), str(SOURCE)]


def build(arch: str) -> Path:
    """Compile bmma.cu for ``arch`` unless a cached build exists; returns the library path."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found (set CUDA_HOME or put nvcc on PATH) to build bmma.cu")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + arch.encode() + version.encode()).hexdigest()[:16]
    target = cache_dir() / f"libbmma_{arch}_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        result = subprocess.run(compile_command(nvcc, arch, partial), capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise BuildError(f"nvcc failed to build {SOURCE.name} for {arch}:\n{result.stderr}")
        os.replace(partial, target)  # atomic: concurrent builders never load a partial file
    return target


def _arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def load(device: torch.device | str | None = None) -> ctypes.CDLL:
    """The compiled library for ``device``'s architecture (built on first use)."""
    device = torch.device("cuda" if device is None else device)
    arch = _arch(device)
    with _lock:
        if arch not in _libraries:
            lib = ctypes.CDLL(str(build(arch)))
            p, i = ctypes.c_void_p, ctypes.c_int
            lib.bmma_row_popcount.argtypes = [i, p, i, i, p, p]
            lib.bmma_gemm.argtypes = [i, i, p, p, p, p, i, i, i, i, p, p]
            lib.bmma_gemm_threshold.argtypes = [i, i, p, p, p, p, i, i, i, i, p, p, p, i, p]
            lib.bmma_peak.argtypes = [i, i, i, p, p]
            lib.bmma_error_string.argtypes = [i]
            lib.bmma_error_string.restype = ctypes.c_char_p
            _libraries[arch] = lib
        return _libraries[arch]


def supported(device: torch.device | str | None = None) -> bool:
    """True when ``device`` is a CUDA GPU with the 1-bit MMA (sm_80+) and the kernel builds.

    The answer is kept per architecture: a failed build is reported once (a warning naming
    nvcc's error) and not retried on every call.
    """
    if not torch.cuda.is_available():
        return False
    device = torch.device("cuda" if device is None else device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < MIN_CAPABILITY:
        return False
    arch = _arch(device)
    if arch not in _supported:
        try:
            load(device)
            _supported[arch] = True
        except (BuildError, OSError) as err:
            warnings.warn(f"binarynet.gpu: the tensor-core kernel is unavailable ({err}); "
                          "dense layers run on Triton", RuntimeWarning)
            _supported[arch] = False
    return _supported[arch]


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _check(lib: ctypes.CDLL, code: int, what: str) -> None:
    if code != 0:
        raise RuntimeError(f"{what}: CUDA error {code}: {lib.bmma_error_string(code).decode()}")


def _aligned_words(x: torch.Tensor) -> torch.Tensor:
    """x int32 (rows, words) contiguous, with words padded by zero words to a multiple of 4 and a
    16-byte aligned start (a copy only when either is not already so)."""
    words = x.shape[1]
    padded = -(-words // WORD_ALIGN) * WORD_ALIGN
    if padded != words:
        x = torch.nn.functional.pad(x, (0, padded - words))
    if x.data_ptr() % 16:
        x = x.clone()
    return x


def row_popcounts(x: torch.Tensor) -> torch.Tensor:
    """int32 (rows,) popcounts of the rows of an int32 (rows, words) CUDA tensor."""
    lib = load(x.device)
    pop = torch.empty(x.shape[0], dtype=torch.int32, device=x.device)
    stream = torch.cuda.current_stream(x.device).cuda_stream
    code = lib.bmma_row_popcount(_index(x.device), x.data_ptr(), x.shape[0], x.shape[1],
                                 pop.data_ptr(), stream)
    _check(lib, code, "bmma_row_popcount")
    return pop


# bmma.cu's Tile: large 128x128, medium 64x64, small 16x64, huge 256x128 (only on request)
TILES = {"auto": 0, "large": 1, "medium": 2, "small": 3, "huge": 4}


def bgemm_words(a: torch.Tensor, w: torch.Tensor, k: int, thresh: torch.Tensor | None = None,
                flip: torch.Tensor | None = None, w_popcounts: torch.Tensor | None = None,
                tile: str = "auto") -> torch.Tensor:
    """Tensor-core binary GEMM on int32 word views: a (M, WORDS), w (N, WORDS) -> int32 dot (M, N),
    or with thresh (int32 (N,)) and flip (int8 (N,)) the packed bits as int32 (M, 2 ceil(N/64)).

    ``w_popcounts`` (int32 (N,), from :func:`row_popcounts`) may be passed to skip recounting fixed
    weights on every call. ``tile`` forces a tile shape (the benchmark compares them); "auto"
    takes the largest that still gives every multiprocessor a block.
    """
    lib = load(a.device)
    a = _aligned_words(a)
    w = _aligned_words(w)
    m, words = a.shape
    n = w.shape[0]
    pop_a = row_popcounts(a)
    pop_w = row_popcounts(w) if w_popcounts is None else w_popcounts
    stream = torch.cuda.current_stream(a.device).cuda_stream
    if thresh is None:
        out = torch.empty((m, n), dtype=torch.int32, device=a.device)
        code = lib.bmma_gemm(_index(a.device), TILES[tile], a.data_ptr(), w.data_ptr(),
                             pop_a.data_ptr(), pop_w.data_ptr(), m, n, words, k, out.data_ptr(),
                             stream)
    else:
        out_cols = 2 * (-(-n // 64))
        out = torch.empty((m, out_cols), dtype=torch.int32, device=a.device)
        code = lib.bmma_gemm_threshold(_index(a.device), TILES[tile], a.data_ptr(), w.data_ptr(),
                                       pop_a.data_ptr(), pop_w.data_ptr(), m, n, words, k,
                                       thresh.data_ptr(), flip.data_ptr(), out.data_ptr(), out_cols,
                                       stream)
    _check(lib, code, "bmma_gemm")
    return out


PEAK_WARPS_PER_BLOCK = 4
PEAK_MMAS_PER_ITERATION = 8
MMA_BIT_MACS = 16 * 8 * 256


def peak_probe(device: torch.device | str | None = None, blocks: int | None = None,
               iterations: int = 4096):
    """Launcher of the register-only MMA throughput probe on torch's current stream.

    Returns (run, bit_macs): ``run()`` launches it once; it performs ``bit_macs`` 1-bit
    multiply-accumulates (2 ops each when quoted as TOPS). Default grid: 8 blocks per SM.
    """
    device = torch.device("cuda" if device is None else device)
    lib = load(device)
    if blocks is None:
        blocks = 8 * torch.cuda.get_device_properties(device).multi_processor_count
    sink = torch.zeros(blocks, dtype=torch.int32, device=device)

    def run():
        stream = torch.cuda.current_stream(device).cuda_stream
        _check(lib, lib.bmma_peak(_index(device), blocks, iterations, sink.data_ptr(), stream),
               "bmma_peak")

    bit_macs = blocks * PEAK_WARPS_PER_BLOCK * iterations * PEAK_MMAS_PER_ITERATION * MMA_BIT_MACS
    return run, bit_macs
