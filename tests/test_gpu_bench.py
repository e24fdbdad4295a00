"""benchmarks/bench_gpu.py --smoke: the benchmark's binary paths give exact results.

Checks, on tiny problems, that every binary GEMM row of the benchmark equals the fp32 product of
the same +-1 matrices and that the binary MNIST MLP (fp32 first layer thresholded into bits, fused
bgemm_threshold layers, bgemm output layer) predicts exactly what the float torch model predicts.
Without a GPU it runs in Triton's interpreter (see gpu_setup.py).
"""
import json

import pytest

from gpu_setup import torch_and_triton

torch, _ = torch_and_triton()



@pytest.mark.filterwarnings("ignore::UserWarning:triton")
def test_gpu_bench_smoke_results_are_exact(tmp_path, capsys, load_script):
    bench_gpu = load_script("benchmarks/bench_gpu.py")

    out = tmp_path / "results.json"
    assert bench_gpu.main(["--smoke", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    binary = [row for rows in results["gemm"].values() for row in rows
              if row["method"].startswith(("triton", "tensor-core"))]
    assert {row["method"] for row in binary} >= {"triton packed", "triton +pack"}
    assert all(row["exact"] is True for row in binary), binary
    mlp = [row for row in results["mlp"] if row["method"].startswith("binary")]
    assert mlp and all(row["same"] is True for row in mlp), results["mlp"]
    assert "Targets at 8192^3" in capsys.readouterr().out
