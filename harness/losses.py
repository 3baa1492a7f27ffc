"""Pixel losses of the shared training loop: L1 (every paper in the benchmark) and Charbonnier.

``charbonnier(pred, target, eps) = mean(sqrt((pred - target)^2 + eps^2))`` with
``eps = 1e-3`` (Lai et al., LapSRN, 2017; the MPRNet/Restormer form). Note that
BasicSR's ``charbonnier_loss`` adds ``eps`` itself, not ``eps^2``, under the
square root (its default eps 1e-12 = (1e-6)^2); ``train.charbonnier_eps`` here is
the eps of the textbook form. Both reduce by the mean over (B, C, H, W).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["l1", "charbonnier", "build_loss"]


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (BasicSR ``L1Loss``, reduction mean, weight 1).

    Args:
        pred: (B, C, H, W) network output.
        target: (B, C, H, W) ground truth, same shape.

    Returns:
        0-dim tensor.
    """
    return torch.nn.functional.l1_loss(pred, target)


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1-like) loss ``mean(sqrt(d^2 + eps^2))``.

    Args:
        pred: (B, C, H, W) network output.
        target: (B, C, H, W) ground truth, same shape.
        eps: smoothing constant (1e-3 in LapSRN/MPRNet).

    Returns:
        0-dim tensor.
    """
    d = pred - target
    return torch.sqrt(d * d + eps * eps).mean()


def build_loss(name: str, charbonnier_eps: float = 1e-3) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function named by ``train.loss``.

    Args:
        name: ``l1`` or ``charbonnier``.
        charbonnier_eps: ``train.charbonnier_eps``.

    Returns:
        ``fn(pred, target) -> 0-dim tensor``.
    """
    if name == "l1":
        return l1
    if name == "charbonnier":
        return lambda pred, target: charbonnier(pred, target, charbonnier_eps)
    raise ValueError(f"train.loss: unknown loss {name!r}; choose l1 or charbonnier")
