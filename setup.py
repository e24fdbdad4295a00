"""Build the engine's compiled core (binarynet.engine._core).

Plain C against the CPython API and the buffer protocol, so it needs neither torch nor numpy
headers at build time. SIMD variants (AVX2, AVX-512 VPOPCNTDQ) are compiled with per-function
target attributes and chosen at run time, so one wheel runs on any x86-64 (and builds elsewhere
with the portable path only).
"""
import os
import platform
import sys

from setuptools import Extension, setup

# -ffp-contract=off: the fused output transforms (csrc/transform.c) must round every float32
# multiply and add as numpy does, so no fused multiply-add contraction
extra_compile_args = ["-O3", "-std=c11", "-ffp-contract=off"]
extra_link_args = []
if sys.platform != "win32":
    # the kernels run on their own pthread pool (csrc/threads.c), not OpenMP
    extra_compile_args.append("-pthread")
    extra_link_args.append("-pthread")

csrc = os.path.join("src", "binarynet", "engine", "csrc")
sources = sorted(os.path.join(csrc, f) for f in os.listdir(csrc) if f.endswith(".c"))
headers = sorted(os.path.join(csrc, f) for f in os.listdir(csrc) if f.endswith(".h"))

setup(
    ext_modules=[
        Extension(
            "binarynet.engine._core",
            sources=sources,
            depends=headers,  # a changed header rebuilds the core
            include_dirs=[csrc],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]
)
