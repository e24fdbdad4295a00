"""Layering and install rules: benchmarks and library speed figures use the one timing module,
the Makefile's demo installs only what it uses. (That library code never imports the CLI is
checked, with the other import rules, in test_architecture.py.)"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "binarynet"

def test_speed_figures_come_from_the_timing_module():
    """No second stopwatch: benchmarks and the library's speed code time through
    binarynet.timing (warm-up, interleaving, medians), never with their own clock loops."""
    files = [*sorted((ROOT / "benchmarks").glob("*.py")),
             *(PACKAGE / name for name in ("speed.py", "report.py", "demo.py"))]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if re.search(r"perf_counter|elapsed_time|cuda\.Event", p.read_text())]
    assert offenders == []


def dry_run(target, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_installs_no_test_or_gpu_extras(tmp_path):
    demo = dry_run("demo", tmp_path)
    assert "pip install -q -e ." in demo and "binarynet demo" in demo
    assert "[test]" not in demo and "triton" not in demo and "[gpu]" not in demo
    assert "-e '.[test]'" in dry_run("test", tmp_path)  # the suite still gets its extras


def test_make_fuzz_and_asan_targets(tmp_path):
    assert "scripts/fuzz_models.py --files 20000" in dry_run("fuzz", tmp_path)
    assert "bash scripts/asan_test.sh" in dry_run("asan-test", tmp_path)
