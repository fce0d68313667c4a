"""The CuPy calls behind the CUDA path exist in the installed CuPy (no GPU needed)."""

import pytest

from torch_cases import torch

from invconv_cupy.torch import _cuda

cupy = pytest.importorskip("cupy")


def test_external_stream_wraps_the_given_handle():
    stream = _cuda._cupy_stream(cupy, 0x1234, 0)
    assert isinstance(stream, cupy.cuda.Stream) and stream.ptr == 0x1234


def test_allocator_is_a_cupy_allocator_built_once():
    allocator = _cuda._torch_allocator()
    assert allocator == _cuda._torch_allocator()
    with cupy.cuda.using_allocator(allocator):
        assert cupy.cuda.get_allocator() == allocator


def test_empty_allocations_never_reach_torch(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch's allocator was called")

    monkeypatch.setattr(torch.cuda, "caching_allocator_alloc", refuse)
    monkeypatch.setattr(torch.cuda, "caching_allocator_delete", refuse)
    assert _cuda._torch_malloc(0, 0) == 0
    _cuda._torch_free(0, 0)


def test_cpu_tensors_need_no_launch_context():
    with _cuda.torch_launch_context(torch.device("cpu")):
        assert cupy.cuda.get_allocator() != _cuda._torch_allocator()
