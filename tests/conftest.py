"""Session-wide test set-up.

torch 2.13.0 on CPU: in about 1 of 6 fresh processes with 2+ threads, the first
call of exp / log / tanh / erf is off by ~1.5e-4 on part of the tensor; later
calls are exact. Call each once before any test so tight tolerances hold.
"""
import pytest
import torch


def _warm_up_transcendentals() -> None:
    for dtype in (torch.float32, torch.float64):
        x = torch.linspace(-4, 4, 65536, dtype=dtype)
        for fn in (torch.exp, torch.log1p, torch.tanh, torch.erf, torch.sigmoid):
            fn(x)
        torch.log(x.abs() + 1)
        torch.nn.functional.softplus(x)
        torch.nn.functional.gelu(x)
        torch.nn.functional.silu(x)


_warm_up_transcendentals()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch at one intra-op thread for a module (small ops: threads only add sync cost, 100x on a
    loaded 2-core box); use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
