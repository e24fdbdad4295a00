"""`binarynet demo`: the end-to-end run on MNIST, and its behaviour without data or network."""
import os
import re
import socket
import subprocess
import sys

import pytest

from binarynet import data
from binarynet.errors import DataError


def run_demo(args, tmp_path, extra_env=None, timeout=300):
    env = {k: v for k, v in os.environ.items()
           if k not in ("BINARYNET_DATA", "BINARYNET_DATA_URL")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # never the user's cache
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "binarynet", "demo", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def mnist_elsewhere(empty_dir) -> bool:
    """True if MNIST would be found without the data dir (a system copy)."""
    try:
        data.locate("mnist", "train", empty_dir)
        return True
    except DataError:
        return False


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: connections are refused


def assert_says_how_to_provide_mnist(stderr):
    assert "binarynet demo: error: MNIST is needed" in stderr
    assert "BINARYNET_DATA=DIR binarynet demo" in stderr
    assert "binarynet demo --data-dir DIR" in stderr
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in stderr
    assert "Traceback" not in stderr


def test_missing_mnist_without_download_says_how_to_provide_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    if mnist_elsewhere(empty):
        pytest.skip("a system copy of MNIST exists on this machine")
    result = run_demo(["--data-dir", str(empty), "--no-download"], tmp_path)
    assert result.returncode == 2
    assert_says_how_to_provide_mnist(result.stderr)
    assert "downloads are off (--no-download)" in result.stderr
    assert list(empty.iterdir()) == []


def test_missing_mnist_with_unreachable_network_fails_cleanly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    if mnist_elsewhere(empty):
        pytest.skip("a system copy of MNIST exists on this machine")
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_demo(["--data-dir", str(empty)], tmp_path, {"BINARYNET_DATA_URL": url},
                      timeout=120)
    assert result.returncode == 2
    assert_says_how_to_provide_mnist(result.stderr)
    assert "could not be downloaded" in result.stderr
    assert "downloading it into" in result.stderr
    leftovers = [p for p in empty.rglob("*") if p.is_file()]
    assert leftovers == []  # no partial or unchecked files


def test_bad_arguments(capsys):
    from binarynet.cli import main

    assert main(["demo", "--epochs", "0", "--no-download"]) == 2
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("BINARYNET_DATA"),
                    reason="needs real MNIST: set BINARYNET_DATA to a folder with mnist/")
def test_tiny_demo_on_mnist(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(["--epochs", "1", "--hidden", "128", "--limit-train", "5000",
                       "--out", str(out), "--threads", "2", "--no-download"], tmp_path,
                      {"BINARYNET_DATA": os.environ["BINARYNET_DATA"]})
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    torch_acc = float(re.search(r"torch accuracy:\s+([\d.]+)% on 10,000 test images", text)[1])
    engine = re.search(r"engine accuracy: ([\d.]+)% \((all predictions identical|(\d+) of "
                       r"10000 predictions differ)\)", text)
    engine_acc = float(engine[1])
    mismatches = int(engine[3]) if engine[3] else 0
    assert torch_acc >= 70.0  # one epoch on 5,000 images of a 3x128 BNN (chance: 10%)
    assert abs(torch_acc - engine_acc) <= 100 * mismatches / 10000 + 1e-9
    assert mismatches <= 10  # export is exact up to float32 near-ties of the first layer
    sizes = re.search(r"file size: float32 state_dict ([\d,]+) B, packed ([\d,]+) B", text)
    packed_bytes = int(sizes[2].replace(",", ""))
    assert packed_bytes == os.path.getsize(out / "model.bnn")
    assert int(sizes[1].replace(",", "")) > 20 * packed_bytes
    assert re.search(r"speed at batch 1: float PyTorch [\d.]+ ms, engine [\d.]+ ms -> engine "
                     r"[\d.]+x (faster|slower)", text)
    assert re.search(r"speed at batch 1000: float PyTorch [\d.]+ ms, engine [\d.]+ ms", text)
    for name in ("best.pt", "last.pt", "config.json", "metrics.jsonl", "model.bnn", "report.md",
                 "loss.png", "error.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "## Exported model (model.bnn)" in report
    assert f"torch accuracy:  {torch_acc:.2f}%" in report
    assert "| BNN (Theano), paper Table 1 | 0.96% |" in report
