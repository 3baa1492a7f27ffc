"""Visual crops for the report, made by the evaluate stage from the SR output the metrics score.

``csrbench evaluate`` calls :func:`save_crops` after scoring a model: the first
``report.visual_images`` images (sorted by name) of the first test set are each
super-resolved whole through :func:`harness.evaluate.super_resolve` (tiles, overlap
and self-ensemble as for the metrics; the SR images that scoring already made are
passed in and reused), then the centre ``report.crop`` HR pixels
(a multiple of the scale, at most the image) are cut out of the SR, the HR and the
compressed LR (enlarged by nearest-neighbour so the three line up). Written into
``<out>/`` (``results/visual/<model>/x<s>_<codec>_<level>/``)::

    <image>_sr.png  <image>_lr.png  <image>_hr.png   the three crops, HxWx3 8-bit RGB
    crops.json      {model, dataset, scale, codec, level, crop, iterations,
                     images: {<image>: {box: [y, x, side] in HR pixels, psnr_y (SR vs HR crop, no border)}}}

:mod:`harness.report.render` only reads these files.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from harness.config import Config, Degradation
from harness.metrics import psnr_y

if TYPE_CHECKING:  # the report imports this module for its file names only
    import torch
    from torch import nn

__all__ = ["CROPS_JSON", "crop_box", "save_crops", "crop_paths"]

CROPS_JSON = "crops.json"


def crop_box(lr_shape: tuple[int, ...], scale: int, crop: int) -> tuple[int, int, int]:
    """Centre crop of an LR image of ``lr_shape`` (H, W, ...): ``(y, x, side)`` in HR pixels.

    ``side`` is ``crop`` rounded down to a multiple of ``scale`` and bounded by the image (at least
    ``scale``); ``y`` and ``x`` are multiples of ``scale``, so the LR crop is exact.
    """
    h, w = lr_shape[0], lr_shape[1]
    side = max(scale, min(crop, h * scale, w * scale) // scale * scale)
    ls = side // scale
    return (h - ls) // 2 * scale, (w - ls) // 2 * scale, side


def crop_paths(folder: Path, image: str) -> dict[str, Path]:
    """``{"lr", "sr", "hr"}`` -> the crop PNG paths of ``image`` in ``folder``."""
    return {k: Path(folder) / f"{image}_{k}.png" for k in ("lr", "sr", "hr")}


def save_crops(cfg: Config, net: nn.Module, model: str, dataset: str, degradation: Degradation, scale: int,
               data: Path, device: torch.device, out: Path, extra: dict[str, Any] | None = None,
               sr_of: Mapping[str, np.ndarray] | None = None) -> Path:
    """Super-resolve the first ``report.visual_images`` test images of ``dataset``; save the centre crops.

    Args:
        cfg: the run's config: ``report.visual_images``, ``report.crop`` and the inference settings
            ``evaluate.tile``, ``tile_overlap``, ``self_ensemble`` (as for the metrics).
        net: network in eval mode on ``device``.
        model: its name (goes into ``crops.json``).
        dataset: test set under ``<data>/hr`` and ``<data>/lr/<dataset>/x<scale>/<degradation.tag>``.
        degradation, scale: which LR images.
        data: the data folder.
        device: torch device.
        out: the folder written.
        extra: more keys for ``crops.json`` (e.g. ``iterations``).
        sr_of: image name -> its SR output, already made by the metrics' forward (``csrbench evaluate``
            passes those it scored); the images not in it are super-resolved here, the same way.

    Returns:
        The path of ``crops.json``.
    """
    from harness.data.images import write_png
    from harness.data.loader import load_pairs
    from harness.evaluate import super_resolve
    from harness.provenance import write_json

    ev, crop = cfg.evaluate, cfg.report.crop
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a smaller report.visual_images leaves no stale crops behind
        old.unlink()
    pairs = load_pairs(Path(data) / "hr" / dataset, Path(data) / "lr" / dataset / f"x{scale}" / degradation.tag,
                       cfg.report.visual_images)
    records: dict[str, Any] = {}
    for name, lr, hr in pairs:
        sr = sr_of[name] if sr_of and name in sr_of else super_resolve(
            net, lr, scale, ev.tile, ev.tile_overlap, ev.self_ensemble, device)
        y, x, side = crop_box(lr.shape, scale, crop)
        ly, lx, ls = y // scale, x // scale, side // scale
        crops = {"sr": sr[y:y + side, x:x + side], "hr": hr[y:y + side, x:x + side],
                 "lr": np.repeat(np.repeat(lr[ly:ly + ls, lx:lx + ls], scale, 0), scale, 1)}
        for k, path in crop_paths(out, name).items():
            write_png(path, np.ascontiguousarray(crops[k]))
        records[name] = {"box": [y, x, side], "psnr_y": psnr_y(crops["sr"], crops["hr"], crop_border=0)}
    return write_json(out / CROPS_JSON, {
        "model": model, "dataset": dataset, "scale": scale, "codec": degradation.codec, "level": degradation.level,
        "crop": crop, "tile": {"size": ev.tile, "overlap": ev.tile_overlap}, "self_ensemble": ev.self_ensemble,
        **(extra or {}), "images": records}, cfg=cfg, device=device)
