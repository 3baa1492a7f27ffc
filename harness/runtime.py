"""Small run-time helpers shared by the stages: device choice, seeding, logging set-up."""
from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "setup_logging"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Under torchrun, ``cuda`` means the rank's own GPU (``LOCAL_RANK``). Otherwise, on a machine
    with several visible GPUs, the one with the most free memory: so the runs that
    ``dvc queue start -j N`` starts side by side spread over the GPUs (``CUDA_VISIBLE_DEVICES``
    still restricts the choice).
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch.cuda.is_available() is False "
                           f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    if "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    n = torch.cuda.device_count()
    if n <= 1:
        return torch.device("cuda", 0)
    free = [torch.cuda.mem_get_info(i)[0] for i in range(n)]
    return torch.device("cuda", max(range(n), key=lambda i: (free[i], -i)))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(verbosity: int = 0) -> None:
    """Logs go to stderr; results go to files."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(stream=sys.stderr, level=level, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
