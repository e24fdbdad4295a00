"""Fixtures shared by several test files."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def load_script():
    """``load_script("benchmarks/bench_train.py")``: a script of the repository imported as a
    module (its ``main`` not run), for tests of its functions."""

    def load(relative: str):
        path = ROOT / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the tensors of small training runs are tiny, and extra
    threads only add synchronisation (badly so on a busy shared 2-core machine)."""
    import torch  # here, not at module level: engine tests must also run where torch is absent

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kernel_settings_restored():
    """The engine's kernel backend and thread count as they were before the test."""
    from binarynet.engine import kernels

    backend, threads = kernels.get_backend(), kernels.get_num_threads()
    yield
    kernels.set_backend(backend)
    kernels.set_num_threads(threads)
