"""benchmarks/bench_bgemm.py: it names the machine, and a figure is only printed for a kernel
call whose full output was checked (a kernel that skipped work would look faster than the
CPU's peak)."""

import numpy as np
import pytest

from binarynet import timing
from binarynet.engine import kernels



@pytest.fixture
def bench_bgemm(load_script):
    return load_script("benchmarks/bench_bgemm.py")


def test_a_timed_call_with_a_wrong_row_is_refused(bench_bgemm, monkeypatch):
    real = kernels.bgemm

    def skips_the_last_row(a, w, k):
        out = real(a, w, k)
        if len(out) > 8:
            out[-1] = 0  # as if the tasks of the last rows never ran
        return out

    monkeypatch.setattr(kernels, "bgemm", skips_the_last_row)
    with pytest.raises(SystemExit, match="bgemm disagrees with the fp32 reference"):
        bench_bgemm.bench_shape(64, 128, 64, 1, 0.0, np.random.default_rng(0))


def test_threshold_and_conv_outputs_are_checked_in_full(bench_bgemm):
    rng = np.random.default_rng(1)
    rates = bench_bgemm.bench_shape(40, 200, 70, 1, 0.0, rng)  # K and N not multiples of 64
    assert set(rates) == {"torch", "bgemm", "bgemm_threshold"}
    assert set(bench_bgemm.bench_conv(1, 5, 4, 70, 65, 1, 0.0, rng)) == set(rates)


def test_header_names_cpu_and_threads(bench_bgemm, monkeypatch, capsys):
    monkeypatch.setattr(bench_bgemm, "QUICK_SHAPES", [(8, 128, 64, None)])
    monkeypatch.setattr(bench_bgemm, "QUICK_CONV", (1, 4, 4, 64, 64))
    bench_bgemm.main(["--quick", "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert out.startswith(f"CPU: {timing.cpu_description()}; 1 thread for torch")
