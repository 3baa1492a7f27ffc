"""Stage `textzoom_train`: train an x2 model for text SR on TextZoom's training LMDBs.

``csrbench textzoom-train --model NAME`` runs the one training loop of :mod:`harness.train`
(same optimiser, lr schedule, EMA, checkpoints, resume, NaN guard) with three changes, all read
from the ``textzoom`` section of params.yaml:

- data: :class:`harness.data.textzoom.TextZoomTrain`, whole 64x16 -> 128x32 crops of ``train1``
  (+ ``train2``) under ``textzoom.root`` (``""``: the embedded rendered set), no augmentation;
  validation on the first ``train.val_images`` crops of ``test/easy``;
- ``train.iterations``, ``train.batch_size`` and ``train.loss`` are replaced by
  ``textzoom.iterations``, ``textzoom.batch_size`` and ``textzoom.loss`` (Charbonnier by default,
  eps ``train.charbonnier_eps``); every other ``train`` key is shared with the image runs.

Outputs (defaults): ``models/textzoom/<model>/`` (checkpoints, ``final.pt``, ``train.json``) and
``results/curves/textzoom/<model>.csv``. ``csrbench textzoom`` then scores ``final.pt``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
import torch

from harness import train
from harness.config import Config, Degradation
from harness.data import textzoom as tz

__all__ = ["run", "text_config", "textzoom_data"]

SCALE = 2  # TextZoom: LR 64x16 -> HR 128x32
NO_CODEC = Degradation("none", 0)  # TextZoom's LR are real captures, not re-encoded


def text_config(cfg: Config) -> Config:
    """``cfg`` with ``train.iterations`` / ``batch_size`` / ``loss`` taken from ``textzoom``."""
    tzc = cfg.textzoom
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, iterations=tzc.iterations, batch_size=tzc.batch_size, loss=tzc.loss))


def textzoom_data(cfg: Config, root: Path) -> train.TrainData:
    """The :class:`harness.train.TrainData` of a TextZoom root (fingerprint: root and split sizes)."""
    stream = tz.TextZoomTrain(root, cfg.train.seed)  # reads the split sizes; says where TextZoom comes from
    sizes = {split.path.name: n for split, n in zip(stream.splits, stream.counts)}
    return train.TrainData(
        dataset=lambda: stream,
        val_pairs=lambda: tz.as_uint8_pairs(tz.TextZoomPairs(tz.split_path(root, "easy")), cfg.train.val_images),
        fingerprint={"textzoom": str(root), "train_splits": sizes},
    )


def run(cfg: Config, model: str, out: Path, curves: Path, resume: bool = True,
        device: torch.device | str = "cpu", root: Path | None = None) -> Path:
    """Train ``model`` (an x2 model name) on TextZoom; returns the ``final.pt`` path.

    Args:
        cfg: the loaded config.
        model: ``harness.models`` name (x2).
        out: checkpoint folder (``models/textzoom/<model>``).
        curves: loss / validation CSV.
        resume: continue from the newest valid checkpoint in ``out``.
        device: torch device.
        root: TextZoom root; default :func:`harness.data.textzoom.resolve_root` of ``cfg``.
    """
    root = Path(root) if root is not None else tz.resolve_root(cfg)
    tcfg = text_config(cfg)
    return train.run(tcfg, model=model, degradation=NO_CODEC, scale=SCALE, out=Path(out), curves=Path(curves),
                     data=root, resume=resume, device=device, train_data=textzoom_data(tcfg, root))
