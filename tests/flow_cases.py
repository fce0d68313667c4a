"""Shared by the flow tests: skip without the flows extra; run torch on one thread."""

import pytest

torch = pytest.importorskip("torch")
nf = pytest.importorskip("normflows", reason="the flows extra (normflows) is not installed")


@pytest.fixture(autouse=True)
def one_thread():
    """The tests' tensors are tiny: torch's intra-op threads would only add overhead and contend on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
