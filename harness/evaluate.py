"""Stage `evaluate`: PSNR / SSIM on Y of one trained model, every test set, BasicSR's conventions.

``csrbench evaluate --model NAME --codec C --level Q`` loads ``final.pt`` (EMA
weights, written by ``csrbench train``), super-resolves every LR image of every
test set and writes ``results/metrics/<model>/x<s>_<codec>_<level>.json``::

    {provenance, model, scale, codec, level, profile, iterations, ema, backend,
     checkpoint: {path, sha256}, tile: {size, overlap, blend}, self_ensemble, trained_on,
     datasets: {<dataset>: {psnr_y, ssim_y, seconds, images: {<image>: {psnr_y, ssim_y, seconds}}}}}

Per image: LR uint8 RGB -> float32 /255 -> network (tiled per ``evaluate.tile`` /
``evaluate.tile_overlap``, optional x8 self-ensemble) -> clamp to [0, 1] -> *255 ->
round -> uint8 (BasicSR's ``img2tensor`` / ``tensor2img``) -> :func:`harness.metrics.psnr_y`
and :func:`harness.metrics.ssim_y` against the HR image with ``evaluate.crop_border``.
A dataset's figure is the mean of its per-image figures (as BasicSR and the papers);
identical images give PSNR ``inf``, which makes the mean ``inf`` and is stored as JSON
``null`` by :func:`harness.provenance.write_json`. ``seconds`` is wall time per image
(network, tiling and self-ensemble, CUDA synchronised), after one untimed warm-up pass.

Test data: ``<data>/hr/<dataset>/`` with ``<data>/lr/<dataset>/x<scale>/<codec>_<level>/``
for each dataset in ``data.test`` (or ``--dataset``).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.checkpoint import FINAL_NAME, CheckpointError, file_sha256, load_checkpoint
from harness.config import Config, Degradation
from harness.metrics import psnr_y, ssim_y
from harness.tiling import tiled_forward

__all__ = ["run", "score_network", "build_model", "load_final", "super_resolve", "image_to_tensor", "tensor_to_image",
           "self_ensemble_forward", "scan_backend", "TILE_BLEND", "FINAL_KEYS"]

log = logging.getLogger(__name__)

#: How tiles are merged by evaluate and by the training loop's validation (see harness/tiling.py).
TILE_BLEND = "centre"
#: LR side of the untimed warm-up forward before the first timed image (a corner of that image): enough to load
#: the scan kernels and the CUDA context, without a whole extra forward of a large image.
WARMUP_SIDE = 48
#: Keys every final.pt has.
FINAL_KEYS = ("model_name", "model_config", "state_dict", "ema", "iterations", "scale", "degradation",
              "fingerprint")


# ----------------------------------------------------------------------------- models and backend

def _plain(x: Any) -> Any:
    """Tuples -> lists etc., so configs compare equal after a save/load round trip."""
    return json.loads(json.dumps(x, default=str))


def build_model(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """Build a network by params name through ``harness.models``.

    Args:
        name: a name from ``harness.models.list_models()``.

    Returns:
        ``(module, config)``: the network and ``dataclasses.asdict`` of its frozen config.
    """
    models = importlib.import_module("harness.models")
    net = models.build(name)
    mcfg = models.config_of(name)
    config = dataclasses.asdict(mcfg) if dataclasses.is_dataclass(mcfg) else dict(mcfg)
    return net, _plain(config)


def scan_backend(device: torch.device | str | None) -> str:
    """``mambacsr.ops.selective_scan.current_backend(device)``: the scan backend a model runs with.

    The optional kernels (numba, mamba_ssm) are import-guarded inside ``mambacsr.ops``, so an
    error here is a real one (e.g. ``CSRBENCH_SCAN_BACKEND`` naming a backend this device cannot run).
    """
    mod = importlib.import_module("mambacsr.ops.selective_scan")  # the module (mambacsr.ops.selective_scan is
    return str(mod.current_backend(torch.device(device) if device is not None else torch.device("cpu")))  # a function)


def load_final(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a ``final.pt`` and load its (EMA) weights.

    Args:
        path: ``final.pt`` or the folder holding it.
        device: where the network goes.

    Returns:
        ``(network in eval mode, the final.pt dict)``.

    Raises:
        CheckpointError: unreadable file, or the current code's config of that model differs
            from the one it was trained with.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FINAL_NAME
    final = load_checkpoint(path, FINAL_KEYS)
    net, config = build_model(final["model_name"])
    saved = _plain(final["model_config"])
    if config != saved:
        diff = [f"{k}: trained {saved.get(k)!r}, now {config.get(k)!r}"
                for k in sorted(set(config) | set(saved)) if config.get(k) != saved.get(k)]
        raise CheckpointError(f"{path}: model {final['model_name']!r} was trained with another config "
                              f"({'; '.join(diff)}); retrain it or restore the code")
    try:
        net.load_state_dict(final["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {final['model_name']!r}: {e}") from None
    return net.to(device).eval(), final


# ----------------------------------------------------------------------------- one image

def image_to_tensor(img: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1, 3, H, W) float32 in [0, 1] (BasicSR ``img2tensor(img / 255.)``)."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {getattr(img, 'dtype', type(img))} "
                         f"{getattr(img, 'shape', '')}")
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    return x.unsqueeze(0).to(device)


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float -> HxWx3 uint8 RGB: clamp to [0, 1], *255, round (BasicSR ``tensor2img``)."""
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected a (1, 3, H, W) tensor, got {tuple(x.shape)}")
    y = x[0].detach().float().cpu().clamp(0, 1).mul(255.0).round()   # out of place: x is the caller's
    return y.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def self_ensemble_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x8 geometric self-ensemble: mean of ``fn`` over the 4 rotations x 2 flips, each undone.

    Args:
        fn: (B, C, h, w) -> (B, C, s*h, s*w).
        x: (B, C, h, w) input.

    Returns:
        Mean of the 8 outputs, before clamping (BasicSR ``test_selfensemble`` averages raw outputs).
    """
    acc = None
    for k in range(4):
        for flip in (False, True):
            y = torch.rot90(x, k, (2, 3))
            if flip:
                y = y.flip(3)
            o = fn(y)
            if flip:
                o = o.flip(3)
            o = torch.rot90(o, -k, (2, 3))
            acc = o if acc is None else acc + o
    return acc / 8


@torch.no_grad()
def super_resolve(net: nn.Module, lr: np.ndarray, scale: int, tile: int, overlap: int,
                  self_ensemble: bool = False, device: torch.device | str = "cpu") -> np.ndarray:
    """Super-resolve one image the way every number in the benchmark is made.

    Args:
        net: network in eval mode, (B, 3, h, w) in [0, 1] -> (B, 3, s*h, s*w).
        lr: HxWx3 uint8 RGB LR image.
        scale: SR factor.
        tile: LR tile side (0 = whole image); ``overlap``: LR overlap of tiles.
        self_ensemble: average over the 8 flips/rotations.
        device: where the network runs.

    Returns:
        (s*H)x(s*W)x3 uint8 RGB.
    """
    x = image_to_tensor(lr, device)

    def fwd(t: torch.Tensor) -> torch.Tensor:
        return tiled_forward(net, t, scale, tile, overlap, blend=TILE_BLEND)

    y = self_ensemble_forward(fwd, x) if self_ensemble else fwd(x)
    return tensor_to_image(y)


# ----------------------------------------------------------------------------- stage

def _load_pairs(hr_dir: Path, lr_dir: Path, limit: int) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], int]:
    """The first ``limit`` pairs (0 = all; only those are decoded) and how many the test set has."""
    for d, hint in ((hr_dir, "csrbench prepare"), (lr_dir, "csrbench degrade")):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: test images not found (run `{hint}` first)")
    from harness.config import first_n
    from harness.data.loader import list_pairs, read_pairs
    rows = list_pairs(hr_dir, lr_dir)
    if not rows:
        raise FileNotFoundError(f"{hr_dir} / {lr_dir}: no image pairs")
    return read_pairs(first_n(rows, limit)), len(rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_network(net: nn.Module, model: str, datasets: list[str], degradation: Degradation, scale: int, data: Path,
                  tile: int, overlap: int, self_ensemble: bool, border: int, device: torch.device,
                  max_images: int = 0, on_sr: Callable[[str, str, np.ndarray], None] | None = None
                  ) -> dict[str, Any]:
    """PSNR / SSIM on Y of ``net`` on each test set: the ``datasets`` block of a metrics JSON.

    Shared by this stage and ``harness.released`` (released checkpoints), so both score alike.

    Args:
        net: network in eval mode on ``device``.
        model: name for the log lines.
        datasets: test-set names under ``<data>/hr`` and ``<data>/lr/<ds>/x<scale>/<degradation.tag>``.
        degradation, scale: which LR images.
        data: the data folder.
        tile, overlap, self_ensemble: inference settings (see :func:`super_resolve`).
        border: pixels cropped before the metrics.
        device: torch device.
        max_images: score only the first N images of each test set in name order (``evaluate.max_images``);
            0 = all.
        on_sr: called as ``on_sr(dataset, image, sr)`` with each scored SR image (HxWx3 uint8), e.g. to
            keep the report's visual crops without a second forward.

    Returns:
        ``{dataset: {psnr_y, ssim_y, seconds, images_available, images: {image: {psnr_y, ssim_y, seconds}}}}``;
        ``images`` lists those scored, ``images_available`` counts the test set's images.
    """
    results: dict[str, Any] = {}
    warmed = False
    for ds in datasets:
        pairs, available = _load_pairs(Path(data) / "hr" / ds, Path(data) / "lr" / ds / f"x{scale}" / degradation.tag,
                                       max_images)
        if not warmed:  # load / compile the kernels once, untimed, on a corner of the first image
            super_resolve(net, pairs[0][1][:WARMUP_SIDE, :WARMUP_SIDE], scale, tile, overlap, self_ensemble, device)
            warmed = True
        images: dict[str, Any] = {}
        for name, lr, hr in pairs:
            _sync(device)
            t0 = time.perf_counter()
            sr = super_resolve(net, lr, scale, tile, overlap, self_ensemble, device)
            _sync(device)
            secs = time.perf_counter() - t0
            if sr.shape != hr.shape:
                raise ValueError(f"{ds}/{name}: SR output {sr.shape} does not match HR {hr.shape} "
                                 f"(LR {lr.shape}, x{scale}); is the HR mod-cropped?")
            images[name] = {"psnr_y": psnr_y(sr, hr, border), "ssim_y": ssim_y(sr, hr, border),
                            "seconds": secs}
            if on_sr is not None:
                on_sr(ds, name, sr)
        results[ds] = {
            "psnr_y": float(np.mean([v["psnr_y"] for v in images.values()])),
            "ssim_y": float(np.mean([v["ssim_y"] for v in images.values()])),
            "seconds": float(np.mean([v["seconds"] for v in images.values()])),
            "images_available": available,
            "images": images,
        }
        log.info("%s x%d %s on %s: PSNR-Y %.4f dB, SSIM-Y %.5f (%d of %d images)", model, scale, degradation.tag,
                 ds, results[ds]["psnr_y"], results[ds]["ssim_y"], len(images), available)
    return results


def run(cfg: Config, model: str, degradation: Degradation, scale: int, checkpoint: Path, out: Path,
        datasets: list[str] | None, data: Path, device: torch.device, visual: Path | None = None) -> Path:
    """Score one trained model on the test sets and write its metrics JSON.

    Args:
        cfg: the run's :class:`harness.config.Config` (``evaluate`` and ``data.test`` sections).
        model: model name; must be the one ``final.pt`` was trained as.
        degradation: :class:`harness.config.Degradation` of the test LR images.
        scale: SR factor.
        checkpoint: ``final.pt`` or its folder.
        out: metrics JSON path.
        datasets: test sets (default ``cfg.data.test``).
        data: the data folder (``hr/``, ``lr/``).
        device: torch device.
        visual: folder for the report's visual crops of the first test set (:mod:`harness.visual`,
            ``report.visual_images`` images); ``None`` writes none.

    Returns:
        ``out``.
    """
    from harness.provenance import write_json

    device = torch.device(device)
    torch.backends.cudnn.benchmark = False
    ckpt_path = Path(checkpoint) / FINAL_NAME if Path(checkpoint).is_dir() else Path(checkpoint)
    net, final = load_final(ckpt_path, device)
    if final["model_name"] != model:
        raise CheckpointError(f"{ckpt_path}: holds model {final['model_name']!r}, not {model!r}")
    if int(final["scale"]) != scale:
        raise CheckpointError(f"{ckpt_path}: trained for x{final['scale']}, asked to evaluate x{scale}")
    trained_on = dict(final["degradation"])
    if (trained_on.get("codec"), trained_on.get("level")) != (degradation.codec, degradation.level):
        log.warning("%s was trained on %s_%s and is evaluated on %s", ckpt_path, trained_on.get("codec"),
                    trained_on.get("level"), degradation.tag)

    ev = cfg.evaluate
    tile, overlap = ev.tile, ev.tile_overlap
    border = ev.border(scale)
    if border != scale:
        log.warning("evaluate.crop_border is %d but the scale is %d; BasicSR and the papers crop `scale` pixels",
                    border, scale)
    names = list(datasets) if datasets else list(cfg.data.test)
    shown: dict[str, np.ndarray] = {}   # SR of the visual images, kept from scoring (no second forward)

    def keep_visual(ds: str, name: str, sr: np.ndarray) -> None:
        if visual is not None and ds == names[0] and len(shown) < cfg.report.visual_images:
            shown[name] = sr

    results = score_network(net, model, names, degradation, scale, Path(data), tile, overlap, ev.self_ensemble,
                            border, device, ev.max_images, on_sr=keep_visual)
    if visual is not None:
        from harness.visual import save_crops
        save_crops(cfg, net, model, names[0], degradation, scale, Path(data), device, Path(visual),
                   extra={"iterations": int(final["iterations"])}, sr_of=shown)

    backend = scan_backend(device)
    tile_info = {"size": tile, "overlap": overlap, "blend": TILE_BLEND}
    payload = {
        "model": model, "scale": scale, "codec": degradation.codec, "level": degradation.level,
        "profile": cfg.profile, "iterations": int(final["iterations"]), "ema": bool(final["ema"]),
        "backend": backend,
        "checkpoint": {"path": str(ckpt_path), "sha256": file_sha256(ckpt_path)},
        "tile": tile_info, "self_ensemble": ev.self_ensemble, "crop_border": border,
        "max_images": ev.max_images, "trained_on": trained_on,
        "datasets": results,
    }
    return write_json(out, payload, cfg=cfg, device=device, scan_backend=backend, tile=tile_info)
