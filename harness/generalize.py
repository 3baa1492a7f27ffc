"""Stage ``generalize``: codec generalization, evaluation only (no training).

The question the MambaCSR paper ends on: does a model trained on one codec still
help on another? ``csrbench generalize`` takes every trained run of ``runs.models``
x ``runs.degradations`` (``<checkpoints>/<model>/x<s>_<codec>_<level>/final.pt``)
and scores it on every test set of ``data.test`` compressed by each codec of
:data:`TEST_CODECS`: the paper's three (JPEG, HEVC, VVC) and two it never trained
on, WebP (libwebp) and AVC / H.264 (libx264), all through
:mod:`harness.data.codecs` (same BT.601 4:2:0 planes, same ffmpeg as HEVC / VVC).

Matched bits per pixel. The test image is the clean x``s`` bicubic LR compressed by
the test codec at the level whose mean bpp over the dataset's images is closest to
the mean bpp of the training codec at its training level on the same images (read
from ``data/lr/<dataset>/x<s>/<codec>_<level>/manifest.json``). The training codec
itself is tested at its own level on the very LR images ``csrbench evaluate`` used
(the in-distribution diagonal). The level is searched by bisection, bpp being
monotone in the level (decreasing in QP, increasing in quality); both bpp values are
recorded, and ``at_range_end`` flags a target outside the test codec's reach (e.g.
JPEG headers alone exceed a very low bpp on tiny images).

Output, one file per trained run: ``<out>/<model>/x<s>_<codec>_<level>.json``::

    {provenance, model, scale, profile, iterations, trained_on: {codec, level},
     checkpoint: {path, sha256}, test_codecs, matching,
     datasets: {<dataset>: {train_bpp, codecs: {<codec>: {level, bpp, train_bpp, bpp_ratio,
        at_range_end, in_distribution, lr_psnr_y, psnr_y, ssim_y,
        images: {<image>: {bpp, psnr_y, ssim_y}}}}}}}

``lr_psnr_y`` is the compressed LR against the clean LR (how hard the input is), the
other PSNR / SSIM are the SR output against HR with ``evaluate.crop_border``, as
:mod:`harness.evaluate` computes them (tiles and self-ensemble per ``evaluate``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from harness.config import Config, EvaluateConfig
from harness.data import codecs
from harness.data.degrade import MANIFEST, bicubic_downscale, lr_dir, process_pool
from harness.metrics import psnr_y

if TYPE_CHECKING:  # annotations only
    import torch
    from torch import nn

__all__ = ["run", "TEST_CODECS", "LEVEL_RANGE", "BITS_GROW_WITH_LEVEL", "match_level", "Encoder", "plan_dataset",
           "result_path"]

log = logging.getLogger(__name__)

#: Codecs every trained run is tested on (training codecs first, then the unseen ones).
TEST_CODECS: tuple[str, ...] = ("jpeg", "hevc", "vvc", "webp", "avc")
#: Levels each test codec accepts: JPEG / WebP quality, HEVC / VVC / AVC QP.
LEVEL_RANGE: dict[str, tuple[int, int]] = {"jpeg": (1, 100), "webp": codecs.WEBP_QUALITY_RANGE, **codecs.QP_RANGE}
#: True where a higher level spends more bits (quality), False where fewer (QP).
BITS_GROW_WITH_LEVEL: dict[str, bool] = {"jpeg": True, "webp": True, "hevc": False, "vvc": False, "avc": False}


def result_path(out: Path, model: str, scale: int, codec: str, level: int) -> Path:
    """``<out>/<model>/x<scale>_<codec>_<level>.json``."""
    return Path(out) / model / f"x{scale}_{codec}_{level}.json"


def match_level(mean_bpp: Callable[[int], float], lo: int, hi: int, grows: bool, target: float) -> int:
    """The level in ``lo..hi`` whose ``mean_bpp`` is closest to ``target``, by bisection.

    Args:
        mean_bpp: level -> mean bits per pixel (monotone: increasing if ``grows``, else decreasing).
        lo, hi: the codec's level range, inclusive.
        grows: whether bpp grows with the level.
        target: the bpp to match.

    Returns:
        The closest level (the lower one on a tie); ``lo`` or ``hi`` when the target is out of reach.
    """
    if lo > hi:
        raise ValueError(f"empty level range {lo}..{hi}")

    def more_bits_than_target(level: int) -> bool:
        return mean_bpp(level) > target

    # find the first level (in the direction of growing bpp) that exceeds the target
    order = range(lo, hi + 1) if grows else range(hi, lo - 1, -1)
    a, b = 0, len(order)            # answer index in [a, b]; b = none exceeds
    while a < b:
        m = (a + b) // 2
        if more_bits_than_target(order[m]):
            b = m
        else:
            a = m + 1
    candidates = [order[i] for i in (a - 1, a) if 0 <= i < len(order)]
    return min(candidates, key=lambda lv: (abs(mean_bpp(lv) - target), lv))


def _encode(job: tuple[np.ndarray, str, int, dict[str, str], str]) -> tuple[np.ndarray, int]:
    img, codec, level, enc, what = job
    r = codecs.compress(img, codec, level, what=what, **enc)
    return r.decoded, r.bitstream_bytes


class Encoder:
    """One dataset's clean LR images through the test codecs, each (codec, level) encoded once.

    Args:
        clean: image name -> HxWx3 uint8 clean LR.
        encoders: ``hevc_encoder`` / ``vvc_encoder`` / ``hm_path`` / ``vtm_path`` (``degrade`` params).
        workers: processes encoding the images of one level in parallel (1 = in this process).
        what: label for errors (the dataset).
    """

    def __init__(self, clean: dict[str, np.ndarray], encoders: dict[str, str], workers: int = 1,
                 what: str = "") -> None:
        self.clean, self.encoders, self.workers, self.what = clean, encoders, workers, what
        self._cache: dict[tuple[str, int], dict[str, tuple[np.ndarray, float]]] = {}
        self._bpp: dict[tuple[str, int], float] = {}
        self._pool = None

    def __enter__(self) -> "Encoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def images(self, codec: str, level: int) -> dict[str, tuple[np.ndarray, float]]:
        """name -> (decoded LR, bpp) at ``codec`` / ``level``."""
        key = (codec, level)
        if key not in self._cache:
            names = sorted(self.clean)
            jobs = [(self.clean[n], codec, level, self.encoders, f"{self.what}/{n} ({codec} {level})") for n in names]
            if self.workers > 1 and len(jobs) > 1:
                if self._pool is None:
                    self._pool = process_pool(min(self.workers, len(jobs)))
                res = list(self._pool.map(_encode, jobs))
            else:
                res = [_encode(j) for j in jobs]
            self._cache[key] = {n: (dec, nbytes * 8.0 / (dec.shape[0] * dec.shape[1]))
                                for n, (dec, nbytes) in zip(names, res)}
        return self._cache[key]

    def mean_bpp(self, codec: str, level: int) -> float:
        """Mean bpp over the images at ``codec`` / ``level`` (remembered after :meth:`prune`)."""
        if (codec, level) not in self._bpp:
            self._bpp[(codec, level)] = float(np.mean([bpp for _, bpp in self.images(codec, level).values()]))
        return self._bpp[(codec, level)]

    def prune(self, keep: set[tuple[str, int]]) -> None:
        """Drop the decoded images of every (codec, level) not in ``keep`` (their mean bpp stays)."""
        for key in [k for k in self._cache if k not in keep]:
            del self._cache[key]


def _training_images(data: Path, dataset: str, scale: int, codec: str, level: int, ev: EvaluateConfig
                     ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The LR images ``csrbench degrade`` wrote for the training degradation and their bpp: the
    ``evaluate.max_images`` first in name order (all when 0), as ``csrbench evaluate`` scores."""
    from harness.data.images import read_png_rgb
    from harness.provenance import read_json
    folder = lr_dir(data, dataset, scale, f"{codec}_{level}")
    man = folder / MANIFEST
    if not man.is_file():
        raise FileNotFoundError(f"{man}: missing; run `csrbench degrade` for {dataset} {codec}_{level} first")
    images = read_json(man).get("images") or {}
    if not images:
        raise ValueError(f"{man}: lists no images")
    names = ev.first_images(images)
    return ({n: read_png_rgb(folder / f"{n}.png") for n in names}, {n: float(images[n]["bpp"]) for n in names})


def _hr_images(data: Path, dataset: str, names: Sequence[str], scale: int) -> dict[str, np.ndarray]:
    from harness.data.images import read_png_rgb
    out = {}
    for n in names:
        p = Path(data) / "hr" / dataset / f"{n}.png"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: HR image missing (run `csrbench prepare --dataset {dataset}`)")
        hr = read_png_rgb(p)
        out[n] = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    return out


def plan_dataset(cfg: Config, data: Path, scale: int, dataset: str, encoders: dict[str, str], workers: int
                 ) -> tuple[dict[str, np.ndarray], dict[tuple[str, int], dict[str, Any]]]:
    """For each training degradation: per test codec the matched level and its LR images, on one test set.

    Returns:
        ``(hr, plans)``: HR images by name, and ``{(codec, level): {"train_bpp": float, "tests":
        {test_codec: {"level", "bpp", "at_range_end", "in_distribution", "lr_psnr_y",
        "lr": {name: (LR, bpp)}}}}}``.
    """
    hr: dict[str, np.ndarray] = {}
    clean: dict[str, np.ndarray] = {}
    plans: dict[tuple[str, int], dict[str, Any]] = {}
    enc = None
    try:
        for d in cfg.runs.degradations:
            own, own_bpp = _training_images(data, dataset, scale, d.codec, d.level, cfg.evaluate)
            if enc is None:
                hr = _hr_images(data, dataset, list(own), scale)
                clean = {n: bicubic_downscale(h, scale) for n, h in hr.items()}
                enc = Encoder(clean, encoders, workers, what=dataset)
            if set(own) != set(clean):
                raise ValueError(f"{lr_dir(data, dataset, scale, d.tag)}: images differ from those of the other "
                                 f"training codecs; rerun `csrbench degrade`")
            target = float(np.mean(list(own_bpp.values())))
            tests: dict[str, Any] = {}
            for tc in TEST_CODECS:
                if tc == d.codec:
                    lv, lr = d.level, {n: (own[n], own_bpp[n]) for n in own}
                    at_end, ind = False, True
                else:
                    lo, hi = LEVEL_RANGE[tc]
                    lv = match_level(lambda x, tc=tc: enc.mean_bpp(tc, x), lo, hi, BITS_GROW_WITH_LEVEL[tc], target)
                    lr, at_end, ind = enc.images(tc, lv), lv in (lo, hi), False
                bpp = float(np.mean([b for _, b in lr.values()]))
                tests[tc] = {"level": lv, "bpp": bpp, "at_range_end": at_end, "in_distribution": ind, "lr": lr,
                             "lr_psnr_y": float(np.mean([psnr_y(lr[n][0], clean[n], 0) for n in lr]))}
                log.info("%s: %s_%d (%.3f bpp) -> %s level %d (%.3f bpp)", dataset, d.codec, d.level, target, tc,
                         lv, bpp)
            plans[(d.codec, d.level)] = {"train_bpp": target, "tests": tests}
            enc.prune({(tc, t["level"]) for p in plans.values() for tc, t in p["tests"].items()})
    finally:
        if enc is not None:
            enc.__exit__()
    return hr, plans


def _score(net: nn.Module, lr_hr: Sequence[tuple[str, np.ndarray, float, np.ndarray]], scale: int,
           ev: EvaluateConfig, device: torch.device | str) -> dict[str, Any]:
    from harness.evaluate import super_resolve
    from harness.metrics import ssim_y
    border = ev.border(scale)
    images = {}
    for name, lr, bpp, hr in lr_hr:
        sr = super_resolve(net, lr, scale, ev.tile, ev.tile_overlap, ev.self_ensemble, device)
        if sr.shape != hr.shape:
            raise ValueError(f"{name}: SR output {sr.shape} does not match HR {hr.shape} (LR {lr.shape}, x{scale})")
        images[name] = {"bpp": bpp, "psnr_y": psnr_y(sr, hr, border), "ssim_y": ssim_y(sr, hr, border)}
    return {"psnr_y": float(np.mean([v["psnr_y"] for v in images.values()])),
            "ssim_y": float(np.mean([v["ssim_y"] for v in images.values()])), "images": images}


def run(cfg: Config, checkpoints: Path, data: Path, out: Path, models: Sequence[str] | None = None,
        datasets: Sequence[str] | None = None, device: torch.device | str = "cpu") -> Path:
    """Score every trained run on every test codec at matched bpp; one JSON per run under ``out``.

    Args:
        cfg: the run's config (``runs``, ``data.test``, ``degrade``, ``evaluate``).
        checkpoints: folder of ``<model>/x<s>_<codec>_<level>/final.pt``.
        data: the data folder (``hr/``, ``lr/``).
        out: results folder, normally ``results/generalization``.
        models: model names (default ``runs.models``).
        datasets: test sets (default ``evaluate.generalize_datasets``, or ``data.test`` when that is empty).
        device: torch device.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: a checkpoint, manifest or HR image is missing (named); files written
            before stay.
    """
    import torch

    from harness.checkpoint import file_sha256
    from harness.evaluate import load_final
    from harness.provenance import write_json

    scale = cfg.degrade.scale
    names = list(models) if models else list(cfg.runs.model_names)
    known = set(cfg.runs.model_names)
    for m in names:
        if m not in known:
            raise ValueError(f"--model {m}: not in runs.models ({', '.join(sorted(known))})")
    sets = list(datasets or cfg.evaluate.generalize_datasets or cfg.data.test)
    ckpts = {(m, d.codec, d.level): Path(checkpoints) / m / f"x{scale}_{d.tag}" / "final.pt"
             for m in names for d in cfg.runs.degradations}
    for p in ckpts.values():   # fail before the encodes, naming the file
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no trained checkpoint (run `csrbench train` for it first)")
    dc = cfg.degrade
    encoders = {"hevc_encoder": dc.hevc_encoder, "vvc_encoder": dc.vvc_encoder, "hm_path": dc.hm_path,
                "vtm_path": dc.vtm_path}
    for tc in TEST_CODECS:
        codecs.check_tools(tc, **encoders)
    device = torch.device(device)
    ev = cfg.evaluate
    results: dict[tuple[str, str, int], dict[str, Any]] = {k: {} for k in ckpts}
    iterations: dict[tuple[str, str, int], int] = {}
    for ds in sets:   # one test set at a time: its images and LR sets are dropped before the next
        hr, plans = plan_dataset(cfg, Path(data), scale, ds, encoders, dc.workers)
        for (model, codec, level), path in ckpts.items():
            net, final = load_final(path, device)
            iterations[(model, codec, level)] = int(final["iterations"])
            plan = plans[(codec, level)]
            per_codec = {}
            for tc, t in plan["tests"].items():
                pairs = [(n, lr, bpp, hr[n]) for n, (lr, bpp) in sorted(t["lr"].items())]
                s = _score(net, pairs, scale, ev, device)
                ratio = t["bpp"] / plan["train_bpp"] if plan["train_bpp"] else math.nan
                per_codec[tc] = {"level": t["level"], "bpp": t["bpp"], "train_bpp": plan["train_bpp"],
                                 "bpp_ratio": ratio, "at_range_end": t["at_range_end"],
                                 "in_distribution": t["in_distribution"], "lr_psnr_y": t["lr_psnr_y"], **s}
            results[(model, codec, level)][ds] = {"train_bpp": plan["train_bpp"], "codecs": per_codec}
            log.info("%s (%s_%d) on %s: %s", model, codec, level, ds,
                     ", ".join(f"{tc} {v['psnr_y']:.2f} dB" for tc, v in per_codec.items()))
    for (model, codec, level), path in ckpts.items():
        payload = {
            "model": model, "scale": scale, "profile": cfg.profile, "iterations": iterations[(model, codec, level)],
            "trained_on": {"codec": codec, "level": level},
            "checkpoint": {"path": str(path), "sha256": file_sha256(path)},
            "test_codecs": list(TEST_CODECS),
            "matching": "test codec level with the mean bpp closest to the training codec's on the same images; "
                        "the training codec at its own level on the images csrbench evaluate used",
            "tile": {"size": ev.tile, "overlap": ev.tile_overlap}, "self_ensemble": ev.self_ensemble,
            "crop_border": ev.border(scale), "max_images": ev.max_images, "datasets": results[(model, codec, level)],
        }
        write_json(result_path(out, model, scale, codec, level), payload, cfg=cfg, device=device)
    return Path(out)
