"""Compiled XNOR-popcount kernels (binarynet.engine._core) behind the reference's API.

Same names, signatures, validation and results as ``binarynet.engine.reference``. Ops not yet
implemented in C use the numpy reference.
"""
from __future__ import annotations

from binarynet.engine import reference as _reference
from binarynet.engine.reference import (  # noqa: F401  (re-exported, same API)
    bconv2d,
    bconv2d_threshold,
    bconv2d_threshold_maxpool,
    bgemm,
    bgemm_threshold,
    bitplane_gemm,
    bmaxpool2d,
    cpu_features,
    get_num_threads,
    int_gemm,
    maxpool2d_int,
    pack,
    set_num_threads,
    unpack,
)

__all__ = [name for name in dir(_reference) if not name.startswith("_") and callable(getattr(_reference, name))]
