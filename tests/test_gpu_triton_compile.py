"""The Triton kernels compile for an H100/H200 (sm_90) without a GPU, with hardware popcounts.

The interpreter tests check what the kernels compute but never compile them; this compiles the
fused GEMM, the zero-padded fused conv and the bfloat16 packer for sm_90 with triton's bundled
ptxas, in a subprocess without TRITON_INTERPRET, and checks that the PTX uses ``popc.b32``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = r"""
import os, shutil, sys
import triton
from triton.backends.compiler import GPUTarget
bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
if not (os.path.isfile(bundled) or os.environ.get("TRITON_PTXAS_PATH") or shutil.which("ptxas")):
    print("NO_PTXAS: no bundled ptxas, TRITON_PTXAS_PATH or ptxas on PATH")
    sys.exit(0)
from binarynet.gpu import triton_kernels as tk

def compile_(fn, signature, constants, warps):
    signature = dict(signature, **{name: "constexpr" for name in constants})
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    return kernel.asm["ptx"]

i32 = lambda names: {n: "i32" for n in names.split()}
gemm = compile_(tk._bgemm_kernel,
                {"a_ptr": "*i32", "w_ptr": "*i32", "out_ptr": "*i32", "thresh_ptr": "*i32",
                 "flip_ptr": "*i8", **i32("M N WORDS K OUT_COLS")},
                {"BM": 64, "BN": 64, "BK": 4, "THRESHOLD": True, "HW_POPC": True}, 4)
conv = compile_(tk._bconv_kernel,
                {"x_ptr": "*i32", "w_ptr": "*i32", "out_ptr": "*i32", "thresh_ptr": "*i32",
                 "flip_ptr": "*i8", **i32("H W Ho Wo M O CWORDS C KH KW stride_h stride_w pad_h "
                                          "pad_w dil_h dil_w OUT_COLS")},
                {"PAD_MODE": 0, "BM": 64, "BN": 64, "BK": 4, "THRESHOLD": True, "HW_POPC": True}, 4)
pack = compile_(tk._pack_kernel, {"x_ptr": "*bf16", "out_ptr": "*i32", **i32("M K WORDS")},
                {"BLOCK_M": tk.PACK_BLOCK_M, "BLOCK_W": tk.PACK_BLOCK_W}, 4)
print("POPC", "popc.b32" in gemm, "popc.b32" in conv, ".entry" in pack)
"""


def test_gpu_triton_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + sys.path)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if result.stdout.startswith("NO_PTXAS"):
        pytest.skip(f"triton has no CUDA toolchain here: {result.stdout.strip()}")
    assert result.stdout.strip().splitlines()[-1] == "POPC True True True", result.stdout
