"""Training and evaluation pairs: seeded paired patches, the batch sampler, whole-image pairs.

Sampling contract (between this loader and :mod:`harness.train`, chosen so a resume is
exact and 1 process == 2-process DDP): :class:`PairedPatches` is a map-style dataset over
an unbounded sample number ``k``; ``ds[k]`` derives the image, the crop and the
augmentation only from ``numpy.random.default_rng([seed, k])``. Iteration ``it`` with
global batch ``B`` uses samples ``it*B .. it*B+B-1``; DDP rank ``r`` of ``W`` takes the
contiguous slice starting at ``it*B + r*(B//W)`` (:func:`batch_sampler`). Worker
processes of a DataLoader change nothing: a sample depends on ``(seed, k)`` only.

Per sample, the draws are, in this order: image index (uniform), LR crop top, LR crop
left (uniform over valid positions), then three coin flips for horizontal flip,
vertical flip and transpose (BasicSR's ``augment(hflip, rotation)``: ``rot90`` =
transpose of H and W; the flips and the transpose together give all 8 dihedral
transforms). The coins are drawn even when ``augment=False`` so crops are identical
with and without augmentation. The HR crop is the LR crop times the scale (BasicSR
``paired_random_crop``).

Images are decoded on first use and kept in a per-process LRU cache bounded by
``cache_mb`` (the smoke sets fit whole; DF2K sub-images stream from disk, see
:func:`train_dirs`), which only affects speed, never the samples.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from harness.data.images import ImageError, read_png_rgb

__all__ = ["PairedPatches", "BatchSampler", "batch_sampler", "load_pairs", "read_pairs", "list_pairs", "train_dirs"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
EFFECTIVELY_INFINITE = 2 ** 62


def _png_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: unreadable image ({e})") from None
    return h, w


def list_pairs(hr_dir: str | Path, lr_dir: str | Path, require_manifest: bool = True) -> list[tuple[str, Path, Path]]:
    """``(name, lr_path, hr_path)`` of every LR PNG in ``lr_dir`` with its HR twin, sorted by name.

    Args:
        hr_dir: ``data/hr/<dataset>`` (or ``data/lr/<dataset>/sub_hr_x<s>``).
        lr_dir: ``data/lr/<dataset>/x<s>/<codec>_<level>`` (or its ``sub/``).
        require_manifest: refuse an ``lr_dir`` without the ``manifest.json`` that ``csrbench degrade``
            writes last (i.e. an unfinished or foreign folder); when present, its image list must
            match the PNGs exactly.

    Raises:
        FileNotFoundError: missing folder, manifest or HR twin (names it).
        ValueError: manifest and folder disagree, or no images.
    """
    hr_dir, lr_dir = Path(hr_dir), Path(lr_dir)
    for d in (hr_dir, lr_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: folder not found (run csrbench prepare / degrade)")
    names = sorted(p.stem for p in lr_dir.glob("*.png"))
    man = lr_dir / MANIFEST
    if man.is_file():
        from harness.provenance import read_json
        listed = sorted((read_json(man).get("images") or {}))
        if listed != names:
            extra, missing = sorted(set(names) - set(listed)), sorted(set(listed) - set(names))
            raise ValueError(f"{lr_dir}: PNGs and {MANIFEST} disagree (missing {missing[:5]}, unlisted {extra[:5]}); "
                             "rerun csrbench degrade")
    elif require_manifest:
        raise FileNotFoundError(f"{lr_dir}: no {MANIFEST}, so the degrade output is incomplete; rerun csrbench degrade")
    if not names:
        raise ValueError(f"{lr_dir}: no LR images")
    out = []
    for n in names:
        hr = hr_dir / f"{n}.png"
        if not hr.is_file():
            raise FileNotFoundError(f"{hr}: HR image of {lr_dir / (n + '.png')} not found")
        out.append((n, lr_dir / f"{n}.png", hr))
    return out


def _scale_of(lr_hw: tuple[int, int], hr_hw: tuple[int, int], what: str) -> int:
    s = hr_hw[0] // lr_hw[0] if lr_hw[0] else 0
    ok = s >= 1 and all(0 <= hr_hw[i] - s * lr_hw[i] < s for i in (0, 1))
    if not ok:
        raise ValueError(f"{what}: HR {hr_hw[0]}x{hr_hw[1]} is not an integer multiple of LR {lr_hw[0]}x{lr_hw[1]}")
    return s


def load_pairs(hr_dir: str | Path, lr_dir: str | Path, limit: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Whole-image pairs for evaluation / validation, sorted by name.

    Args:
        hr_dir, lr_dir: see :func:`list_pairs`.
        limit: only the first ``limit`` pairs by name are read (:func:`harness.config.first_n`; 0 = all).

    Returns:
        ``[(name, lr, hr)]``: HxWx3 uint8 RGB arrays; ``hr`` is cropped at the bottom / right to
        exactly ``scale x`` the LR size (the HR of ``data/hr`` is mod-cropped to ``degrade.scale``,
        which differs from the scale of an x2 / x3 run).

    Raises:
        FileNotFoundError / ValueError / ImageError: see :func:`list_pairs`; sizes that do not match.
    """
    from harness.config import first_n
    return read_pairs(first_n(list_pairs(hr_dir, lr_dir), limit))


def read_pairs(rows: list[tuple[str, Path, Path]]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Decode ``(name, lr_path, hr_path)`` rows of :func:`list_pairs` as :func:`load_pairs` returns them."""
    out = []
    for name, lp, hp in rows:
        lr, hr = read_png_rgb(lp), read_png_rgb(hp)
        s = _scale_of(lr.shape[:2], hr.shape[:2], str(lp))
        out.append((name, lr, np.ascontiguousarray(hr[: s * lr.shape[0], : s * lr.shape[1]])))
    return out


def train_dirs(data: str | Path, dataset: str, scale: int, tag: str, sub_images: bool) -> tuple[Path, Path]:
    """``(hr_dir, lr_dir)`` for :class:`PairedPatches` of one training run.

    ``sub_images=False``: ``data/hr/<dataset>``, ``data/lr/<dataset>/x<s>/<tag>``.
    ``sub_images=True``: the BasicSR-style crops written by ``csrbench degrade``:
    ``data/lr/<dataset>/sub_hr_x<s>``, ``data/lr/<dataset>/x<s>/<tag>/sub``.
    """
    base = Path(data) / "lr" / dataset / f"x{scale}"
    if sub_images:
        return Path(data) / "lr" / dataset / f"sub_hr_x{scale}", base / tag / "sub"
    return Path(data) / "hr" / dataset, base / tag


class PairedPatches(torch.utils.data.Dataset):
    """Seeded paired random patches, sample ``k`` -> ``(lr, hr)``.

    Args:
        hr_dir: HR folder (``data/hr/<dataset>`` or ``sub_hr_x<s>``).
        lr_dir: LR folder (``data/lr/<dataset>/x<s>/<tag>`` or its ``sub``); must hold the degrade manifest.
        scale: SR factor; every pair must satisfy HR = scale x LR (HR may exceed by < scale rows / cols).
        patch_size: LR patch side ``p`` (HR patch ``scale * p``).
        seed: sampling seed (``train.seed``).
        augment: random flips and transpose.
        cache_mb: per-process bound of decoded images kept in memory (LRU).

    Returns (``ds[k]``):
        ``(lr, hr)``: float32 tensors (3, p, p) and (3, s*p, s*p), RGB, range [0, 1].

    Raises:
        ValueError: an image smaller than the patch, or sizes that do not match the scale (names the file).
    """

    def __init__(self, hr_dir: str | Path, lr_dir: str | Path, scale: int, patch_size: int, seed: int,
                 augment: bool = True, *, cache_mb: int = 4096):
        if scale < 1 or patch_size < 1:
            raise ValueError(f"scale and patch_size must be >= 1, got {scale}, {patch_size}")
        self.scale, self.patch_size, self.seed, self.augment = int(scale), int(patch_size), int(seed), bool(augment)
        self.pairs = list_pairs(hr_dir, lr_dir)
        self.sizes = []
        for name, lp, hp in self.pairs:
            lh, lw = _png_size(lp)
            hh, hw = _png_size(hp)
            if _scale_of((lh, lw), (hh, hw), str(lp)) != self.scale:
                raise ValueError(f"{lp}: LR {lh}x{lw} and HR {hh}x{hw} are not at scale {self.scale}")
            if lh < patch_size or lw < patch_size:
                raise ValueError(f"{lp}: LR image {lh}x{lw} is smaller than the patch {patch_size}x{patch_size}; "
                                 "lower data.patch_size or drop the image from the dataset")
            self.sizes.append((lh, lw))
        self.cache_bytes = int(cache_mb) << 20
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached = 0

    def __len__(self) -> int:
        return EFFECTIVELY_INFINITE

    def _images(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        _, lp, hp = self.pairs[i]
        lr = read_png_rgb(lp)
        hr = read_png_rgb(hp)
        s = self.scale
        hr = np.ascontiguousarray(hr[: s * lr.shape[0], : s * lr.shape[1]])
        self._cache[i] = (lr, hr)
        self._cached += lr.nbytes + hr.nbytes
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, (a, b) = self._cache.popitem(last=False)
            self._cached -= a.nbytes + b.nbytes
        return lr, hr

    def draw(self, k: int) -> tuple[int, int, int, bool, bool, bool]:
        """The random choices of sample ``k``: (image index, top, left, hflip, vflip, transpose)."""
        rng = np.random.default_rng([self.seed, int(k)])
        i = int(rng.integers(len(self.pairs)))
        h, w = self.sizes[i]
        top = int(rng.integers(h - self.patch_size + 1))
        left = int(rng.integers(w - self.patch_size + 1))
        hflip, vflip, rot = (bool(c) for c in rng.random(3) < 0.5)
        if not self.augment:
            hflip = vflip = rot = False
        return i, top, left, hflip, vflip, rot

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k < 0:
            raise IndexError(f"sample number must be >= 0, got {k}")
        i, top, left, hflip, vflip, rot = self.draw(k)
        lr, hr = self._images(i)
        p, s = self.patch_size, self.scale
        lr = lr[top:top + p, left:left + p]
        hr = hr[s * top:s * (top + p), s * left:s * (left + p)]
        out = []
        for a in (lr, hr):
            if hflip:
                a = a[:, ::-1]
            if vflip:
                a = a[::-1]
            if rot:
                a = a.transpose(1, 0, 2)
            out.append(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div_(255.0))
        return out[0], out[1]


class BatchSampler:
    """Sample-number lists of iterations ``start_iteration, start_iteration + 1, ...`` (unbounded).

    Iteration ``it`` yields ``[it*B + r*(B//W), ..., it*B + (r+1)*(B//W) - 1]`` for rank ``r`` of ``W``.
    Each ``iter()`` restarts at ``start_iteration``.
    """

    def __init__(self, start_iteration: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if start_iteration < 0 or batch_size < 1:
            raise ValueError(f"start_iteration must be >= 0 and batch_size >= 1, got {start_iteration}, {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by world size {world_size}")
        self.start, self.batch, self.rank, self.world = start_iteration, batch_size, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        per = self.batch // self.world
        it = self.start
        while True:
            base = it * self.batch + self.rank * per
            yield list(range(base, base + per))
            it += 1


def batch_sampler(start_iteration: int, batch_size: int, rank: int = 0, world_size: int = 1) -> BatchSampler:
    """The contract's batch sampler (use as ``DataLoader(ds, batch_sampler=...)``); see :class:`BatchSampler`."""
    return BatchSampler(start_iteration, batch_size, rank, world_size)
