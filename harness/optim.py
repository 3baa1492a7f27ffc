"""Adam for CPU training: torch.optim.Adam's update, without torch.optim's import of torch._dynamo.

``torch.optim.Optimizer``'s constructor (``add_param_group`` is wrapped by ``torch._disable_dynamo``) and
``step`` (``_use_grad_for_differentiable``) import ``torch._dynamo``: 1.3 s of a 2-core CPU in each training process,
which is most of a smoke or rehearsal training's fixed cost (23 and 69 training processes per
``dvc repro``). `Adam` here is the plain update of ``torch.optim.adam._single_tensor_adam`` (the path
torch itself takes for CPU tensors: no foreach, fused, capturable, amsgrad or maximize), written out
op for op so the trained weights are bit-identical (tests/test_optim.py). `make_adam` returns it on
CPU and ``torch.optim.Adam`` (foreach / fused kernels) on other devices; both have the same
``state_dict`` layout, so a checkpoint resumes under either.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Adam", "make_adam"]


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` (L2 weight decay, amsgrad off), one group.

    Duck-types what the training loop and ``torch.amp.GradScaler`` use: ``param_groups``, ``state``,
    ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict``.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid Adam settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        # the keys of torch.optim.Adam's param group, so state_dict() loads into either optimiser
        self.param_groups: list[dict[str, Any]] = [{
            "params": params, "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
            "fused": None, "decoupled_weight_decay": False}]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("Adam does not support sparse gradients")
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                step_t += 1
                if wd != 0:
                    grad = grad.add(p, alpha=wd)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Load a state dict of this class or of ``torch.optim.Adam`` (same parameters, same order)."""
        groups = sd["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, self.param_groups)):
            raise ValueError("optimizer state dict does not match the model's parameters "
                             f"({[len(g['params']) for g in groups]} saved, "
                             f"{[len(g['params']) for g in self.param_groups]} here)")
        by_index = {}
        for g, mine in zip(groups, self.param_groups):
            for key in ("lr", "betas", "eps", "weight_decay"):
                mine[key] = tuple(g[key]) if key == "betas" else g[key]
            by_index.update(zip(g["params"], mine["params"]))
        self.state = {}
        for i, s in sd["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: (v.to(torch.float32) if k == "step" else v.to(device=p.device, dtype=p.dtype))
                             for k, v in s.items()}


def make_adam(params: Iterable[Tensor], device: torch.device, **kwargs: Any) -> Adam | torch.optim.Adam:
    """`Adam` on CPU (no torch._dynamo import, same update), ``torch.optim.Adam`` on other devices."""
    return Adam(params, **kwargs) if torch.device(device).type == "cpu" else torch.optim.Adam(params, **kwargs)
