"""benchmarks/bench_train.py: its FLOP count of the paper's networks, and a --quick run."""
import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_train.py")


def test_flops_per_training_sample_of_the_paper_networks(bench):
    import binarynet as bn

    # 6 x multiply-adds: 3.70 GFLOP per CIFAR-10 image (issue 10's 3.7), 0.22 per MNIST image.
    assert bench.training_flops_per_sample(bn.models.cifar10_vgg(), (3, 32, 32)) == 3_701_796_864
    assert bench.training_flops_per_sample(bn.models.mnist_mlp(), (1, 28, 28)) == 220_839_936


def test_float_twin_has_the_binary_networks_shape(bench):
    import torch

    import binarynet as bn

    binary = bn.models.cifar10_vgg(widths=(4, 8, 8), fc=(16, 16))
    twin = bench.float_twin(binary)
    assert [p.shape for p in twin.parameters()] == [p.shape for p in binary.parameters()]
    assert not any(isinstance(m, (bn.nn.BinaryLayer, bn.nn.Sign)) for m in twin.modules())
    assert twin(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_gpu_peak_table(bench):
    assert bench.gpu_peak_tflops("NVIDIA H200")[0] == 989.0
    assert bench.gpu_peak_tflops("NVIDIA H100 PCIe")[0] == 756.0
    assert bench.gpu_peak_tflops("Some GPU")[0] is None


def test_quick_run_prints_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--devices", "cpu", "--threads", "1",
                           "--cpu-peak-gflops", "100", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "paper ConvNet (cifar10_vgg) on cpu" in done.stdout and "binary / float" in done.stdout
    results = json.loads(out.read_text())["results"]
    assert [r["network"] for r in results] == ["paper MLP (mnist_mlp)", "paper ConvNet (cifar10_vgg)"]
    for result in results:
        assert result["peak_flops"] == 100e9 and result["peak_source"] == "--cpu-peak-gflops"
        for row in result["rows"].values():
            assert row["samples_per_s"] > 0 and 0 < row["share_of_peak"] and row["epoch_s"] > 0
