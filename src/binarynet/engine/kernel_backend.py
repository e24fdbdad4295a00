"""The compiled kernels' backend and threads: which row of the C core's one ISA dispatch table
(csrc/dispatch.c) runs, and on how many threads. Re-exported by :mod:`binarynet.engine.kernels`
(``kernels.set_backend`` etc.); here so that the kernel-wrapper modules (``kernels``,
``kernels_first``, ``kernels_real``) share one ``after_environment`` without importing each other.

The row holds for every op (popcount tiles, packing, bit planes, threshold rows, integer first
layer) the variant an instruction set allows: ``avx512`` (AVX-512 VPOPCNTDQ), ``avx2``
(nibble-LUT vpshufb popcount) or ``portable`` (plain C, the reference the others are tested
against). By default the best row the CPU supports runs; the environment variable
``BINARYNET_KERNEL`` names another, read on first use (so a bad value is a
:class:`KernelChoiceError` the CLI prints as one line, not an import failure), and
:func:`set_backend` changes it at run time.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from binarynet.engine import _core
from binarynet.errors import KernelChoiceError

__all__ = ["BACKENDS", "ENVIRONMENT_VARIABLE", "KernelChoiceError", "available_backends",
           "after_environment", "set_backend", "get_backend", "kernel_table",
           "xor_popcount_probe", "set_num_threads", "get_num_threads", "cpu_features"]

BACKENDS = {"portable": _core.PORTABLE, "avx2": _core.AVX2, "avx512": _core.AVX512}
_BACKEND_NAMES = {code: name for name, code in BACKENDS.items()}
ENVIRONMENT_VARIABLE = "BINARYNET_KERNEL"
_environment_read = False  # BINARYNET_KERNEL applied (or overridden by set_backend)


def available_backends() -> list[str]:
    """Backends this CPU can run, slowest first (``portable`` is always there)."""
    return [name for name, code in BACKENDS.items() if _core.backend_supported(code)]


def _select(name, source: str) -> None:
    if name not in BACKENDS:
        raise KernelChoiceError(f"{source} must be one of {sorted(BACKENDS)}, got {name!r}")
    if not _core.backend_supported(BACKENDS[name]):
        raise KernelChoiceError(f"{source} {name!r}: this CPU cannot run it "
                                f"(available: {available_backends()})")
    _core.set_backend(BACKENDS[name])


def _apply_environment() -> None:
    """Select the row BINARYNET_KERNEL names; raises (on every call) while it is invalid."""
    global _environment_read
    name = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if name:
        _select(name, ENVIRONMENT_VARIABLE)
    _environment_read = True


def after_environment(fn):
    """Run ``fn`` with the backend BINARYNET_KERNEL names (the first call applies it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _environment_read:
            _apply_environment()
        return fn(*args, **kwargs)
    return wrapper


def set_backend(name: str) -> None:
    """Force a backend: ``"portable"``, ``"avx2"`` or ``"avx512"`` (:class:`KernelChoiceError`,
    a ValueError, if unknown or unsupported). Takes precedence over ``BINARYNET_KERNEL``."""
    global _environment_read
    _select(name, "set_backend: backend")
    _environment_read = True


@after_environment
def get_backend() -> str:
    """Name of the backend in use."""
    return _BACKEND_NAMES[_core.get_backend()]


def kernel_table() -> dict:
    """The C core's dispatch table for this CPU: ``{backend: {op: kernel variant}}`` for every
    supported backend, ops ``tiles``, ``pack``, ``planes``, ``threshold``, ``int_gemm``,
    ``transform`` (the fused output transforms and sign_pack), ``probe`` (the instructions
    :func:`xor_popcount_probe` measures: ``avx512vpopcntdq``, else the scalar ``popcnt``),
    ``first_dense_float``, ``conv2d_float``, ``pool_float`` (the real stream's pools)."""
    table = {}
    for name in available_backends():
        row = _core.kernel_table(BACKENDS[name])
        del row["isa"]
        table[name] = row
    return table


@after_environment
def xor_popcount_probe(iterations: int, threads: int) -> int:
    """Run the in-register XOR + popcount + add microbenchmark and return the bit-MACs it did.

    No memory traffic: on the AVX-512 row, ``vpxorq`` + ``vpopcntq`` + ``vpaddq`` on 12
    independent zmm accumulators; on rows without AVX-512 VPOPCNTDQ, the scalar popcnt
    instruction on 64-bit registers (the best they have; ``kernel_table()[row]["probe"]`` names
    it). ``threads`` tasks of ``iterations`` steps each run on the engine's thread pool. Time the
    call (``binarynet.timing``) and divide: that is the peak rate the bit-GEMM kernels are
    measured against (docs/performance.md).
    """
    for name, value in (("iterations", iterations), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"xor_popcount_probe: {name} must be a positive int, got {value!r}")
    return _core.xor_popcount_probe(int(iterations), int(threads))


def set_num_threads(n) -> None:
    """Number of threads the kernels use (default: OMP_NUM_THREADS if set, else the usable cores)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads the kernels use."""
    return _core.get_num_threads()


@after_environment
def cpu_features() -> dict:
    """What the CPU offers and what runs: ``{"avx2", "avx512_vpopcntdq", "backend", "threads"}``."""
    return {
        "avx2": bool(_core.backend_supported(_core.AVX2)),
        "avx512_vpopcntdq": bool(_core.backend_supported(_core.AVX512)),
        "backend": get_backend(),
        "threads": get_num_threads(),
    }

