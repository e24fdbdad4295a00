"""The preamble of the GPU test modules: torch and triton, with Triton's interpreter on a machine
without a CUDA GPU.

Triton picks the interpreter when a kernel is defined (its own helpers at `import triton`) and
checks the knob again at launch, so TRITON_INTERPRET=1 is set before triton is first imported and
stays set. Called at import time of a test module; skips that module where this cannot work.
"""
import os
import sys

import pytest


def torch_and_triton():
    """``(torch, on_gpu)``; skips the calling module without torch or triton, or when triton was
    imported before the interpreter could be chosen."""
    torch = pytest.importorskip("torch")
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no CUDA GPU, and triton was imported before TRITON_INTERPRET=1 could be set "
                        "(run with TRITON_INTERPRET=1)", allow_module_level=True)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    return torch, on_gpu
