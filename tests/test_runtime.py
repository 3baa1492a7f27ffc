"""harness.runtime.resolve_device: CPU fallback, errors, and the GPU pick of side-by-side queue workers."""
import pytest
import torch

from harness import runtime


def test_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
        runtime.resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        runtime.resolve_device("gpu")


def test_gpu_with_most_free_memory_unless_torchrun(monkeypatch):
    free = {0: 10, 1: 70, 2: 70, 3: 5}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free[i], 80))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert runtime.resolve_device("auto") == torch.device("cuda", 1)     # most free; ties -> lowest index
    free[3] = 79
    assert runtime.resolve_device("cuda") == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert runtime.resolve_device("cuda") == torch.device("cuda", 2)     # torchrun: the rank's own GPU
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.resolve_device("auto") == torch.device("cuda", 0)
