"""Fixtures shared by several test files."""
import pytest


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the tensors of small training runs are tiny, and extra
    threads only add synchronisation (badly so on a busy shared 2-core machine)."""
    import torch  # here, not at module level: engine tests must also run where torch is absent

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
