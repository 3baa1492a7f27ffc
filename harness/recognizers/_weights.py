"""Shared by crnn.py, aster.py, moran.py: strict loading of a released weights file, batched reading."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np

import torch
from torch import nn

__all__ = ["load_weights", "BatchRecognizer"]


def _state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: a bare state dict, or under ``state_dict``; ``module.`` prefixes dropped."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(net: nn.Module, path: Path) -> nn.Module:
    """Load ``path`` into ``net`` strictly (BatchNorm's ``num_batches_tracked`` may be absent, as in old files).

    Raises:
        ValueError: the file is not a state dict, or its keys / shapes do not fit ``net`` (names them).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        raise ValueError(f"{path}: not a torch checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    state = _state_dict(obj, path)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: weights do not fit {type(net).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    net.load_state_dict({**own, **state})
    return net


class BatchRecognizer:
    """``recognize(images)``: ``decode(net(prepare(batch)))`` over batches, eval mode, no grad."""

    def __init__(self, net: nn.Module, prepare: Callable[[list[np.ndarray]], torch.Tensor],
                 decode: Callable[[torch.Tensor], list[str]], device: torch.device | str = "cpu",
                 batch_size: int = 64):
        self.net, self.device, self.batch_size = net.to(device).eval(), torch.device(device), batch_size
        self.prepare, self.decode = prepare, decode

    @torch.no_grad()
    def recognize(self, images: list[np.ndarray]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            out += self.decode(self.net(self.prepare(images[i:i + self.batch_size]).to(self.device)))
        return out
