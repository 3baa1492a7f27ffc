"""Stage ``degrade``: HR -> MATLAB bicubic x1/s -> uint8 -> JPEG / HEVC / VVC -> ``data/lr``.

For every (dataset, codec, level) the stage reads ``data/hr/<dataset>/<image>.png``,
mod-crops it to the scale, downsizes it with :func:`imresize` (MATLAB ``imresize(img,
1/s, 'bicubic')`` with antialiasing), rounds to uint8 as MATLAB does for uint8 images,
compresses with :mod:`harness.data.codecs`, and writes

``data/lr/<dataset>/x<s>/<codec>_<level>/<image>.png``   (lossless PNG, atomic)
``data/lr/<dataset>/x<s>/<codec>_<level>/manifest.json`` (per image: bpp, PSNR RGB / Y
of the compressed LR against the clean LR, sha256 of the PNG and of its HR; codec
settings and encoder version).

Idempotent: a folder whose manifest matches the current settings, lists every HR image
with the HR's sha256 and whose PNGs all match their sha256 is skipped. Anything else is a
partial output and is redone from scratch (the stale manifest is removed first, so a
crash mid-way never leaves a manifest describing a mix of old and new images). Images
run in parallel over ``degrade.workers`` processes, each image once per
pending degradation so its clean LR is computed once.

With ``data.train_images: N`` (N > 0; a length knob, the rehearsal profile) only the first N
training images in name order are degraded; test sets are always degraded whole.

With ``data.sub_images: true`` the training set is also cut into BasicSR-style
sub-images (``extract_subimages.py``: HR crop 480, step 240, thresh 0, and the matching
LR crops 480/s, step 240/s): ``data/lr/<dataset>/sub_hr_x<s>/`` (outside the
``x<s>/<tag>/`` pattern that the report scans for codec manifests) and
``data/lr/<dataset>/x<s>/<codec>_<level>/sub/``, each with its own manifest (see
:func:`harness.data.loader.train_dirs`).

:func:`imresize` follows MATLAB's ``imresize.m`` (``contributions``, ``cubic``,
symmetric boundary by index folding) as transcribed in BasicSR
(``basicsr/utils/matlab_functions.py``, XPixelGroup/BasicSR commit 8d56e3a, Apache-2.0),
re-written here in float64 numpy as banded per-axis sums (BasicSR computes in float32).
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import shutil
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.config import Config, Degradation
from harness.data import codecs
from harness.data.images import read_png_rgb, sha256_file, write_png
from harness.metrics import psnr_y

__all__ = [
    "imresize", "cubic", "contributions", "mod_crop", "bicubic_downscale", "quantize", "psnr",
    "degrade_image", "subimage_positions", "process_pool", "run", "default_degradations", "lr_dir", "MANIFEST",
]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SUB_CROP, SUB_STEP, SUB_THRESH = 480, 240, 0  # BasicSR extract_subimages.py (HR side)


# ----------------------------------------------------------------------------- MATLAB bicubic

def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize`` ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def contributions(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: per output sample, its input indices (0-based) and weights.

    Output pixel ``x`` (1-based) sits at input coordinate ``u = x / scale + 0.5 (1 - 1/scale)``;
    when shrinking with antialiasing the kernel is stretched by ``1/scale`` (``h(x) = scale *
    cubic(scale * x)``, width ``4/scale``). Weights are normalised to sum to 1 per output, and
    out-of-range indices fold back symmetrically (``aux = [1:n, n:-1:1]``), so border pixels are
    mirrored including the edge pixel.

    Returns:
        ``(indices, weights)``: int64 and float64 arrays of shape (out_length, P).
    """
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * cubic(dist * scale) if (scale < 1 and antialiasing) else cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    folded = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_length)]  # MATLAB: aux(mod(indices-1, 2n) + 1), 1-based
    keep = np.any(w != 0, axis=0)                                  # MATLAB drops all-zero columns
    return folded[:, keep], w[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float, antialiasing: bool) -> np.ndarray:
    idx, w = contributions(img.shape[axis], out_length, scale, antialiasing)
    shape = [1] * img.ndim
    shape[axis] = out_length
    out = np.zeros(img.shape[:axis] + (out_length,) + img.shape[axis + 1:], dtype=np.float64)
    for j in range(idx.shape[1]):               # banded sum: one tap at a time
        out += np.take(img, idx[:, j], axis=axis) * w[:, j].reshape(shape)
    return out


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')``, antialiased when shrinking.

    Args:
        img: HxWxC (or HxW) float64 image, range [0, 1] (any float works; nothing is clipped).
        scale: one factor for both axes; ``< 1`` downsizes (``0.25`` = x4 down).
        antialiasing: MATLAB's default ``true`` (the kernel widens by ``1/scale`` when shrinking).

    Returns:
        float64 array of ``ceil(H * scale) x ceil(W * scale) [x C]``, not rounded or clipped.
        Rows are resized first, then columns (MATLAB's order for equal scales).
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize needs HxW or HxWxC, got shape {img.shape}")
    if not scale > 0:
        raise ValueError(f"imresize scale must be > 0, got {scale}")
    x = img.astype(np.float64, copy=False)
    h, w = x.shape[:2]
    out_h, out_w = int(math.ceil(h * scale - 1e-9)), int(math.ceil(w * scale - 1e-9))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize: {h}x{w} at scale {scale} gives an empty image")
    x = _resize_axis(x, 0, out_h, scale, antialiasing)
    return _resize_axis(x, 1, out_w, scale, antialiasing)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom / right so H and W are multiples of ``scale`` (BasicSR ``mod_crop``)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def quantize(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 by ``round(255 x)`` half up, clipped (MATLAB's uint8 cast)."""
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """Clean LR: mod-crop, MATLAB bicubic x1/``scale``, uint8. ``hr``: HxWx3 uint8 RGB."""
    hr = mod_crop(hr, scale)
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise ValueError(f"image {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    return quantize(imresize(hr.astype(np.float64) / 255.0, 1.0 / scale))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays on all channels (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


# ----------------------------------------------------------------------------- one image

@dataclass(frozen=True)
class _Job:
    hr_path: str
    name: str
    scale: int
    outputs: tuple[tuple[str, int, str], ...]       # (codec, level, png path)
    encoders: tuple[str, str, str, str]             # hevc_encoder, vvc_encoder, hm_path, vtm_path


def degrade_image(hr: np.ndarray, scale: int, codec: str, level: int, *, hevc_encoder: str = "ffmpeg",
                  vvc_encoder: str = "ffmpeg", hm_path: str = "", vtm_path: str = "",
                  what: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """Whole degradation of one HR image.

    Args:
        hr: HxWx3 uint8 RGB.
        scale: SR factor (2, 3, 4).
        codec, level: ``none``/0, ``jpeg``/QF, ``hevc``/QP, ``vvc``/QP.

    Returns:
        ``(lr, clean_lr, bitstream_bytes)``: compressed and clean LR (h x w x 3 uint8, h = H // scale).
    """
    clean = bicubic_downscale(hr, scale)
    r = codecs.compress(clean, codec, level, hevc_encoder=hevc_encoder, vvc_encoder=vvc_encoder,
                        hm_path=hm_path, vtm_path=vtm_path, what=what)
    return r.decoded, clean, r.bitstream_bytes


def _work(job: _Job) -> tuple[str, list[dict[str, Any]]]:
    """Worker: one HR image through every pending degradation; returns one record per output."""
    import cv2
    cv2.setNumThreads(1)
    hr = read_png_rgb(job.hr_path)
    clean = bicubic_downscale(hr, job.scale)
    h, w = clean.shape[:2]
    he, ve, hm, vtm = job.encoders
    records = []
    for codec, level, png in job.outputs:
        r = codecs.compress(clean, codec, level, hevc_encoder=he, vvc_encoder=ve, hm_path=hm, vtm_path=vtm,
                            what=f"{job.hr_path} ({codec} {level})")
        sha = write_png(png, r.decoded)
        records.append({
            "codec": codec, "level": level, "name": job.name,
            "lr_size": [h, w], "hr_size": [h * job.scale, w * job.scale],
            "bitstream_bytes": r.bitstream_bytes if codec != "none" else None,
            "bpp": (r.bitstream_bytes * 8.0 / (h * w)) if codec != "none" else None,
            "psnr_rgb": psnr(r.decoded, clean), "psnr_y": psnr_y(r.decoded, clean, crop_border=0), "sha256": sha,
        })
    return job.name, records


# ----------------------------------------------------------------------------- folders and manifests

def lr_dir(data: Path, dataset: str, scale: int, tag: str) -> Path:
    """``data/lr/<dataset>/x<scale>/<tag>``."""
    return Path(data) / "lr" / dataset / f"x{scale}" / tag


def default_degradations(cfg: Config) -> list[Degradation]:
    """``runs.degradations`` plus ``runs.ablation_degradation``, without duplicates, in order."""
    out: list[Any] = []
    for d in (*cfg.runs.degradations, cfg.runs.ablation_degradation):
        if d not in out:
            out.append(d)
    return out


def _hr_images(data: Path, dataset: str) -> dict[str, tuple[Path, str]]:
    """HR images of a prepared dataset: name -> (png path, sha256), from its prepare manifest."""
    from harness.provenance import read_json
    folder = Path(data) / "hr" / dataset
    man = folder / MANIFEST
    if not man.is_file():
        raise FileNotFoundError(f"{folder}: dataset {dataset!r} is not prepared (no {MANIFEST}); "
                                f"run `csrbench prepare --dataset {dataset}` first")
    images = read_json(man).get("images") or {}
    out = {}
    for name, rec in sorted(images.items()):
        p = folder / f"{name}.png"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: listed in {man} but missing; rerun `csrbench prepare --dataset {dataset}`")
        out[name] = (p, rec["sha256"])
    if not out:
        raise ValueError(f"{man}: lists no images")
    return out


def _manifest_key(dataset: str, scale: int, settings: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "scale": scale, "resize": "MATLAB bicubic, antialiased (harness.data.degrade.imresize)",
            "quantize": "round half up to uint8", "settings": settings}


def _is_complete(folder: Path, key: dict[str, Any], hr: dict[str, tuple[Path, str]]) -> bool:
    from harness.provenance import read_json
    man = folder / MANIFEST
    if not man.is_file():
        return False
    try:
        m = read_json(man)
    except ValueError:
        return False
    if {k: m.get(k) for k in key} != key:
        return False
    images = m.get("images") or {}
    if set(images) != set(hr):
        return False
    for name, rec in images.items():
        png = folder / f"{name}.png"
        if rec.get("hr_sha256") != hr[name][1] or not png.is_file() or sha256_file(png) != rec.get("sha256"):
            return False
    return True


def _clear(folder: Path, keep: Iterable[str] = ()) -> None:
    """Remove a stale manifest and PNGs not in ``keep`` (they belong to an older HR set)."""
    (folder / MANIFEST).unlink(missing_ok=True)
    keep = set(keep)
    for p in folder.glob("*.png"):
        if p.stem not in keep:
            log.info("%s: removing stale image", p)
            p.unlink()


def _summary(images: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def mean(k: str) -> float | None:
        v = [r[k] for r in images.values() if r[k] is not None and math.isfinite(r[k])]
        return float(np.mean(v)) if v else None
    return {"count": len(images), "bpp": mean("bpp"), "psnr_rgb": mean("psnr_rgb"), "psnr_y": mean("psnr_y")}


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for image jobs: ``fork`` on Linux (cheap; the jobs use no threads or torch),
    ``spawn`` elsewhere."""
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _execute(jobs: list[_Job], workers: int, desc: str) -> dict[str, list[dict[str, Any]]]:
    from tqdm import tqdm
    results: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=None, leave=False)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                name, recs = _work(job)
                results[name] = recs
                bar.update()
            return results
        with process_pool(min(workers, len(jobs))) as ex:
            futures = {ex.submit(_work, j): j for j in jobs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if exc is not None:
                        for p in pending:
                            p.cancel()
                        raise exc
                    name, recs = f.result()
                    results[name] = recs
                    bar.update()
        return results
    finally:
        bar.close()


# ----------------------------------------------------------------------------- sub-images

def subimage_positions(length: int, crop: int = SUB_CROP, step: int = SUB_STEP, thresh: int = SUB_THRESH) -> list[int]:
    """Start offsets along one axis as BasicSR ``extract_subimages.py`` (a last crop flush with the end
    when more than ``thresh`` pixels remain). An axis shorter than ``crop`` gives one crop at 0 that is
    the whole axis (BasicSR would fail there)."""
    if length <= crop:
        return [0]
    pos = list(range(0, length - crop + 1, step))
    if length - (pos[-1] + crop) > thresh:
        pos.append(length - crop)
    return pos


def _sub_work(args: tuple[str, str, int, int, int]) -> list[tuple[str, str]]:
    """Worker: cut one image into sub-images on the HR grid of ``hr_h x hr_w``, divided by ``div``.

    ``div`` is 1 for the HR image and the scale for its LR; both share the same crops, named
    ``<image>_s001.png ...`` row by row (BasicSR's order). Returns (sub name, sha256) per crop.
    """
    src, out_dir, div, hr_h, hr_w = args
    img = read_png_rgb(src)[: hr_h // div, : hr_w // div]
    name = Path(src).stem
    ch, cw = min(SUB_CROP, hr_h), min(SUB_CROP, hr_w)
    out = []
    i = 0
    for top in subimage_positions(hr_h):
        for left in subimage_positions(hr_w):
            i += 1
            sub = f"{name}_s{i:03d}"
            t, l_ = top // div, left // div
            crop = img[t:t + ch // div, l_:l_ + cw // div]
            out.append((sub, write_png(Path(out_dir) / f"{sub}.png", np.ascontiguousarray(crop))))
    return out


def _sub_folder(cfg: Config, folder: Path, key: dict[str, Any], jobs: list[tuple[str, str, int, int, int]],
                workers: int) -> None:
    """(Re)write one sub-image folder unless its manifest matches ``key`` and every sha256."""
    from harness.provenance import read_json, write_json
    man = folder / MANIFEST
    if man.is_file():
        try:
            m = read_json(man)
        except ValueError:
            m = {}
        if {k: m.get(k) for k in key} == key and m.get("images") and all(
                (folder / f"{n}.png").is_file() and sha256_file(folder / f"{n}.png") == r["sha256"]
                for n, r in m["images"].items()):
            log.info("%s: sub-images up to date, skipped", folder)
            return
    if folder.is_dir():
        _clear(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(jobs) > 1:
        with process_pool(min(workers, len(jobs))) as ex:
            res = list(ex.map(_sub_work, jobs))
    else:
        res = [_sub_work(j) for j in jobs]
    images = {sub: {"source": Path(j[0]).stem, "sha256": sha} for j, crops in zip(jobs, res) for sub, sha in crops}
    write_json(man, {**key, "images": images}, cfg=cfg)
    log.info("%s: %d sub-images from %d images", folder, len(images), len(jobs))


def _extract_subimages(cfg: Config, data: Path, dataset: str, scale: int, tags: Sequence[str], workers: int) -> None:
    """BasicSR-style sub-images of the training set: ``sub_hr_x<s>`` once, ``x<s>/<tag>/sub`` per tag."""
    from harness.provenance import read_json
    if SUB_CROP % scale or SUB_STEP % scale:
        raise ValueError(f"sub-images: crop {SUB_CROP} / step {SUB_STEP} are not multiples of the scale {scale}")
    base = Path(data) / "lr" / dataset / f"x{scale}"
    hr_sub = Path(data) / "lr" / dataset / f"sub_hr_x{scale}"
    hr_man = read_json(Path(data) / "hr" / dataset / MANIFEST)["images"]
    geometry = {"crop": SUB_CROP, "step": SUB_STEP, "thresh": SUB_THRESH, "scale": scale}
    sizes: dict[str, tuple[int, int]] | None = None
    for tag in tags:
        src_man = read_json(base / tag / MANIFEST)["images"]
        lr_sizes = {n: (r["lr_size"][0] * scale, r["lr_size"][1] * scale) for n, r in src_man.items()}
        if sizes is None:
            sizes = lr_sizes
            key = {"dataset": dataset, **geometry, "source": {n: hr_man[n]["sha256"] for n in sorted(sizes)}}
            jobs = [(str(Path(data) / "hr" / dataset / f"{n}.png"), str(hr_sub), 1, *sizes[n])
                    for n in sorted(sizes)]
            _sub_folder(cfg, hr_sub, key, jobs, workers)
        key = {"dataset": dataset, "tag": tag, **geometry, "source": {n: r["sha256"] for n, r in src_man.items()}}
        jobs = [(str(base / tag / f"{n}.png"), str(base / tag / "sub"), scale, *lr_sizes[n]) for n in sorted(lr_sizes)]
        _sub_folder(cfg, base / tag / "sub", key, jobs, workers)


# ----------------------------------------------------------------------------- stage

def run(cfg: Config, datasets: list[str] | None = None, degradations: list[Degradation] | None = None,
        scale: int | None = None, data: Path = Path("data")) -> Path:
    """``csrbench degrade``: write ``data/lr/<dataset>/x<scale>/<codec>_<level>/`` for every pair.

    Args:
        cfg: the run's :class:`harness.config.Config` (reads ``degrade.*``, ``data.train``,
            ``data.test``, ``data.sub_images``, ``runs.degradations``, ``runs.ablation_degradation``,
            ``runs.classic_x2``).
        datasets: dataset names; default ``data.train`` + ``data.test`` (each must be prepared).
        degradations: :class:`harness.config.Degradation` list. Default: :func:`default_degradations`
            at ``scale``, plus ``none_0`` at x2 when ``runs.classic_x2`` lists models (the bicubic x2
            study; its HR is the same ``data/hr``, mod-cropped to ``degrade.scale``, hence also mod 2).
        scale: SR factor; default ``degrade.scale``.
        data: the data folder (holds ``hr/``; ``lr/`` is written).

    Returns:
        ``data/lr``, the folder written.

    Raises:
        FileNotFoundError: a dataset is not prepared.
        ImageError / EncoderError / OSError: an unreadable HR image, a missing or failing encoder,
            a failed write (each names the file); finished folders are kept, the failing one has no
            manifest and is redone next time.
    """
    from harness.config import Degradation
    data = Path(data)
    dc = cfg.degrade
    scale = scale or dc.scale
    datasets = list(datasets) if datasets else list(dict.fromkeys([cfg.data.train, *cfg.data.test]))
    if degradations:
        plan = [(scale, list(degradations))]
    else:
        plan = [(scale, default_degradations(cfg))]
        if cfg.runs.classic_x2:
            none = Degradation("none", 0)
            if scale == 2:
                plan[0][1].extend([none] if none not in plan[0][1] else [])
            else:
                plan.append((2, [none]))
    enc = (dc.hevc_encoder, dc.vvc_encoder, dc.hm_path, dc.vtm_path)
    for _, degs in plan:   # a missing encoder fails before any folder is touched
        for d in degs:
            codecs.check_tools(d.codec, hevc_encoder=enc[0], vvc_encoder=enc[1], hm_path=enc[2], vtm_path=enc[3])
    for s, degs in plan:
        _run_scale(cfg, data, datasets, degs, s, enc)
    return data / "lr"


def _run_scale(cfg: Config, data: Path, datasets: list[str], degradations: list[Degradation], scale: int,
               enc: tuple[str, str, str, str]) -> None:
    from harness.provenance import write_json
    dc = cfg.degrade
    settings = {d.tag: codecs.codec_settings(d.codec, d.level, hevc_encoder=enc[0], vvc_encoder=enc[1],
                                             hm_path=enc[2], vtm_path=enc[3]) for d in degradations}
    for dataset in datasets:
        hr = _hr_images(data, dataset)
        if dataset == cfg.data.train and cfg.data.train_images:
            keep = cfg.data.first_train_images(hr)
            log.info("%s: the first %d of %d images in name order (data.train_images)", dataset, len(keep), len(hr))
            hr = {n: hr[n] for n in keep}
        pending: list[Any] = []
        created: list[Path] = []  # folders this run made: removed again if it fails, never left empty
        for d in degradations:
            folder = lr_dir(data, dataset, scale, d.tag)
            if _is_complete(folder, _manifest_key(dataset, scale, settings[d.tag]), hr):
                log.info("%s: complete (%d images, sha256 verified), skipped", folder, len(hr))
                continue
            if folder.is_dir():
                log.info("%s: incomplete or outdated, redoing", folder)
                _clear(folder, keep=hr)
            else:
                created.append(folder)
            folder.mkdir(parents=True, exist_ok=True)
            pending.append(d)
        if pending:
            log.info("degrade %s x%d: %d images -> %s (%d workers)", dataset, scale, len(hr),
                     ", ".join(d.tag for d in pending), dc.workers)
            jobs = [_Job(str(p), name, scale, tuple((d.codec, d.level, str(lr_dir(data, dataset, scale, d.tag)
                                                                           / f"{name}.png")) for d in pending), enc)
                    for name, (p, _) in hr.items()]
            try:
                results = _execute(jobs, dc.workers, f"degrade {dataset}")
            except BaseException:
                for folder in created:  # no manifest yet: nothing finished in them
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            for d in pending:
                images = {}
                for name in hr:
                    rec = next(r for r in results[name] if (r["codec"], r["level"]) == (d.codec, d.level))
                    images[name] = {k: v for k, v in rec.items() if k not in ("codec", "level", "name")}
                    images[name]["hr_sha256"] = hr[name][1]
                folder = lr_dir(data, dataset, scale, d.tag)
                payload = {**_manifest_key(dataset, scale, settings[d.tag]), "codec": d.codec, "level": d.level,
                           "tag": d.tag, "summary": _summary(images), "images": images}
                write_json(folder / MANIFEST, payload, cfg=cfg)
                s = payload["summary"]
                log.info("%s: %d images, mean bpp %s, mean PSNR-Y vs clean LR %s dB", folder, s["count"],
                         "n/a" if s["bpp"] is None else f"{s['bpp']:.3f}",
                         "inf" if s["psnr_y"] is None else f"{s['psnr_y']:.2f}")
        if cfg.data.sub_images and dataset == cfg.data.train:
            _extract_subimages(cfg, data, dataset, scale, [d.tag for d in degradations], dc.workers)

