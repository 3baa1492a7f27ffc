"""harness.optim.Adam against torch.optim.Adam: bit-identical updates and interchangeable state dicts."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from harness.optim import Adam, make_adam


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 3, padding=1))
        self.unused = nn.Linear(2, 2)  # never gets a gradient: no state, as in torch

    def forward(self, x):
        return self.body(x)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _Net()


def _steps(net: nn.Module, opt, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(i)
        x = torch.rand(2, 3, 8, 8, generator=g)
        for group in opt.param_groups:
            group["lr"] = 1e-2 * 0.5 ** (i // 3)  # the loop sets the lr before each step
        loss = (net(x) - x).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_update_is_bit_identical_to_torch(weight_decay):
    ours, theirs = _net(), _net()
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=weight_decay)
    o1, o2 = Adam(ours.parameters(), **kw), torch.optim.Adam(theirs.parameters(), **kw)
    _steps(ours, o1, 7)
    _steps(theirs, o2, 7)
    assert not _same(ours, _net())  # it trained
    assert _same(ours, theirs)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["param_groups"][0].keys() == s2["param_groups"][0].keys()
    assert s1["param_groups"][0]["params"] == s2["param_groups"][0]["params"]
    assert s1["state"].keys() == s2["state"].keys() and len(s1["state"]) == 4  # `unused` has none
    for i in s1["state"]:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(s1["state"][i][k], s2["state"][i][k]), (i, k)


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours"])
def test_state_dict_resumes_under_the_other_optimiser(direction):
    make_first, make_second = (Adam, torch.optim.Adam) if direction == "ours->torch" else (torch.optim.Adam, Adam)
    kw = dict(lr=1e-2, betas=(0.9, 0.99))
    straight = _net()
    ref = torch.optim.Adam(straight.parameters(), **kw)
    _steps(straight, ref, 6)
    net = _net()
    first = make_first(net.parameters(), **kw)
    _steps(net, first, 3)
    sd = first.state_dict()
    net2 = _net(seed=1)  # other weights: everything must come from the copies below
    net2.load_state_dict(net.state_dict())
    second = make_second(net2.parameters(), **kw)
    second.load_state_dict(sd)
    _steps(net2, second, 3, start=3)
    assert _same(net2, straight)


def test_load_state_dict_names_a_mismatch():
    opt = Adam(_net().parameters())
    other = torch.optim.Adam(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="does not match"):
        opt.load_state_dict(other.state_dict())


def test_make_adam_picks_ours_on_cpu():
    net = _net()
    assert type(make_adam(net.parameters(), torch.device("cpu"), lr=1e-3)) is Adam
    assert type(make_adam(net.parameters(), torch.device("meta"), lr=1e-3)) is torch.optim.Adam


def test_a_cpu_training_step_does_not_import_dynamo():
    """The point of the class: torch.optim's import of torch._dynamo (1.3 s per training process)."""
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from harness.optim import make_adam\n"
        "net = nn.Linear(4, 4)\n"
        "opt = make_adam(net.parameters(), torch.device('cpu'), lr=1e-3)\n"
        "net(torch.rand(2, 4)).sum().backward(); opt.step(); opt.zero_grad(); opt.state_dict()\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
