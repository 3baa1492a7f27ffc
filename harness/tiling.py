"""Tiled inference: run an SR network on overlapping LR tiles when the whole image does not fit in memory.

``tile`` is the side of the LR tile the network sees and ``tile_overlap`` the LR
pixels two neighbouring tiles share (params ``evaluate.tile`` / ``evaluate.tile_overlap``;
``tile = 0`` runs the whole image). Tiles start every ``tile - tile_overlap`` pixels,
and the last tile of a row/column is shifted back to end at the image edge, so
every tile has the full size ``tile`` (SwinIR's ``main_test_swinir.py`` grid).

Two ways to merge the tiles:

- ``blend="centre"`` (default, used by ``csrbench evaluate``): every output pixel is
  taken from exactly one tile, the one in which it lies furthest from a cut edge;
  the cut between two neighbours lies in the middle of their overlap. This is what
  HAT's / Real-ESRGAN's ``tile_process`` does (``tile_pad`` pixels of context on each
  side, only the centre kept). If the network's LR receptive-field radius is at most
  ``tile_overlap // 2``, the result equals whole-image inference exactly (up to float
  summation order), because no kept pixel sees a tile edge that is not an image edge.
- ``blend="average"``: outputs are summed and divided by the number of tiles covering
  each pixel (SwinIR's ``E.add_(out_patch); W.add_(ones)``); smoother seams, but
  pixels near tile edges contribute, so it is never exact for a network with context.

Transformer/Mamba networks see the whole tile (window shifts, global scans), so for
them tiling changes the numbers slightly; the tile settings are recorded in every
metrics file for that reason.

References (read for conventions, code written anew): JingyunLiang/SwinIR @
6545850fbf8df298df73d81f3e8cba638787c8bd ``main_test_swinir.py`` ``test()`` (Apache-2.0);
XPixelGroup/HAT @ 1638a9a822581657811867bf670717f8371fc3e5 ``hat/models/hat_model.py``
``tile_process`` (Apache-2.0).
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

__all__ = ["tile_starts", "tiled_forward"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis.

    Args:
        length: image side (LR pixels).
        tile: tile side; ``0`` or ``>= length`` gives a single tile.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Increasing offsets; the last tile ends exactly at ``length``.
    """
    if tile <= 0 or length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile={tile}), got {overlap}")
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _cuts(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For centre blending: the [lo, hi) LR range each tile owns (cut in the middle of each overlap)."""
    bounds = [0]
    for a, b in zip(starts[:-1], starts[1:]):
        bounds.append((b + min(a + tile, length)) // 2)
    bounds.append(length)
    return list(zip(bounds[:-1], bounds[1:]))


@torch.no_grad()
def tiled_forward(model: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, scale: int, tile: int,
                  overlap: int, blend: Literal["centre", "average"] = "centre") -> torch.Tensor:
    """Super-resolve ``lr`` tile by tile.

    Args:
        model: maps (B, 3, h, w) in [0, 1] to (B, 3, scale*h, scale*w).
        lr: (B, 3, H, W) LR batch in [0, 1].
        scale: SR factor of ``model``.
        tile: LR tile side; ``0`` (or a tile larger than the image) runs the whole image at once.
        overlap: LR pixels shared by neighbouring tiles.
        blend: ``centre`` (crop to centre, exact for a receptive-field radius <= overlap // 2)
            or ``average`` (SwinIR's mean over overlaps).

    Returns:
        (B, 3, scale*H, scale*W) output of the network, not clamped.

    Raises:
        ValueError: bad tile settings, a 3-D input, or a network whose output is not ``scale`` x its input.
    """
    if lr.ndim != 4:
        raise ValueError(f"tiled_forward: lr must be (B, C, H, W), got shape {tuple(lr.shape)}")
    if blend not in ("centre", "average"):
        raise ValueError(f"tiled_forward: blend must be 'centre' or 'average', got {blend!r}")
    b, _, h, w = lr.shape
    if tile <= 0 or (h <= tile and w <= tile):
        out = model(lr)
        _check_out(out, lr, scale)
        return out
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile={tile}), got {overlap}")
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    s = scale
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    y_own, x_own = _cuts(ys, tile, h), _cuts(xs, tile, w)
    for y0, (ylo, yhi) in zip(ys, y_own):
        for x0, (xlo, xhi) in zip(xs, x_own):
            patch = lr[:, :, y0:y0 + tile, x0:x0 + tile]
            res = model(patch)
            _check_out(res, patch, scale)
            if out is None:
                out = res.new_zeros((b, res.shape[1], s * h, s * w))
                if blend == "average":
                    weight = res.new_zeros((1, 1, s * h, s * w))
            ph, pw = patch.shape[2:]
            if blend == "centre":
                out[:, :, s * ylo:s * yhi, s * xlo:s * xhi] = \
                    res[:, :, s * (ylo - y0):s * (yhi - y0), s * (xlo - x0):s * (xhi - x0)]
            else:
                out[:, :, s * y0:s * (y0 + ph), s * x0:s * (x0 + pw)] += res
                weight[:, :, s * y0:s * (y0 + ph), s * x0:s * (x0 + pw)] += 1
    assert out is not None
    if blend == "average":
        out = out / weight
    return out


def _check_out(out: torch.Tensor, inp: torch.Tensor, scale: int) -> None:
    want = (inp.shape[0], scale * inp.shape[2], scale * inp.shape[3])
    got = (out.shape[0], out.shape[2], out.shape[3])
    if out.ndim != 4 or got != want:
        raise ValueError(f"tiled_forward: the network mapped {tuple(inp.shape)} to {tuple(out.shape)}, "
                         f"expected (B, C, {want[1]}, {want[2]}) for scale {scale}")
