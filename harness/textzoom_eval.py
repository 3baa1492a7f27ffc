"""Score an x2 text-SR model on TextZoom's test splits: PSNR/SSIM (Y) and recognition accuracy.

For every split in ``easy``, ``medium``, ``hard`` under the TextZoom root
(``textzoom.root``, or the embedded rendered set when it is ``""``), three
inputs go through the same metrics and the same recogniser (``textzoom.recognizer``), for the
first ``evaluate.max_images`` crops of each split (0 = all; ``n`` of ``available`` are scored):

- ``sr``: the model's output on the 64x16 LR, clamped to [0, 1] and rounded to uint8;
- ``bicubic``: the LR upsampled to 128x32 with PIL bicubic (TextZoom's resize);
- ``hr``: the 128x32 HR itself, the recogniser's upper bound (no PSNR/SSIM: identical).

PSNR/SSIM are :func:`harness.metrics.psnr_y` / :func:`harness.metrics.ssim_y` with
``crop_border`` 0 (text crops are 32 px high; TextZoom crops nothing). Accuracy is
:func:`harness.recognition.accuracy` (TextZoom's ``str_filt`` exact match). The
``average`` row weights splits by their sample counts, as TextZoom's table does.

Output: ``results/textzoom/<model>.json`` = {provenance, model, checkpoint, trained, profile,
recognizer, root, crop_border, max_images, splits: {<split>: {n, available, sr: {psnr_y, ssim_y, accuracy},
bicubic: {psnr_y, ssim_y, accuracy}, hr: {accuracy}, words: [{label, sr, bicubic, hr}]}},
average: {...}}.

Reference for the protocol: JasonBoy1/TextZoom @ f5b887b3be7c94db85a2687824c9c8eb06b4b6c3,
``src/interfaces/super_resolution.py`` (``eval``); no license file. Written anew here.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from harness import metrics
from harness.checkpoint import FINAL_NAME
from harness.config import first_n
from harness.data import textzoom as tz
from harness.provenance import write_json
from harness.recognition import Recognizer, accuracy, build_recognizer

__all__ = ["run", "evaluate_split", "load_checkpoint", "CROP_BORDER"]

log = logging.getLogger(__name__)

CROP_BORDER = 0


def load_checkpoint(net: nn.Module, checkpoint: Path) -> tuple[Path, Any]:
    """Load weights into ``net`` from a checkpoint file, or a folder's ``final.pt`` (else its newest ``*.pt``).

    The file may be a bare state dict or a training checkpoint dict; ``ema`` weights are
    preferred over ``model`` when present (evaluation uses EMA weights).

    Returns:
        the file actually loaded, and its contents (for the training facts ``final.pt`` carries).
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir() and (checkpoint / FINAL_NAME).is_file():
        checkpoint = checkpoint / FINAL_NAME   # what `csrbench train` writes last (EMA weights)
    elif checkpoint.is_dir():
        cands = sorted(checkpoint.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise FileNotFoundError(f"{checkpoint}: no *.pt checkpoint in this folder")
        checkpoint = cands[-1]
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = obj
    if isinstance(obj, dict):
        for key in ("ema", "model", "state_dict", "params_ema", "params"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"{checkpoint}: weights do not fit the model: {e}") from None
    return checkpoint, obj


def _to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [0, 1] -> list of HxWx3 uint8 (clamp, x255, round, as BasicSR's tensor2img)."""
    a = (x.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return [im.transpose(1, 2, 0) for im in a]


def _bicubic(lr: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(lr).resize(tz.HR_SIZE, Image.BICUBIC))


def _scores(outs: list[np.ndarray], hrs: list[np.ndarray], preds: list[str], labels: list[str]) -> dict[str, float]:
    return {
        "psnr_y": float(np.mean([metrics.psnr_y(o, h, CROP_BORDER) for o, h in zip(outs, hrs)])),
        "ssim_y": float(np.mean([metrics.ssim_y(o, h, CROP_BORDER) for o, h in zip(outs, hrs)])),
        "accuracy": accuracy(preds, labels),
    }


@torch.no_grad()
def evaluate_split(net: nn.Module, ds: tz.TextZoomPairs, recognizer: Recognizer, batch_size: int,
                   device: torch.device, limit: int = 0) -> dict[str, Any]:
    """Scores of one split (see the module docstring for the keys).

    Args:
        net: maps (B, 3, 16, 64) in [0, 1] to (B, 3, 32, 128).
        ds: the split.
        recognizer: reads the 128x32 crops.
        batch_size: LR crops per forward pass.
        device: where ``net`` runs.
        limit: score only the first ``limit`` crops of the split (``evaluate.max_images``); 0 = all.
    """
    srs: list[np.ndarray] = []
    bics: list[np.ndarray] = []
    hrs: list[np.ndarray] = []
    labels: list[str] = []
    scored = first_n(range(len(ds)), limit)
    t0 = time.perf_counter()
    for start in range(0, len(scored), batch_size):
        items = [ds[i] for i in scored[start:start + batch_size]]
        lr = torch.stack([it[0] for it in items]).to(device)
        sr = net(lr)
        want = (lr.shape[0], 3, tz.HR_SIZE[1], tz.HR_SIZE[0])
        if tuple(sr.shape) != want:
            raise ValueError(f"{ds.path}: model output is {tuple(sr.shape)}, expected {want} (an x2 model)")
        srs += _to_uint8(sr)
        bics += [_bicubic(x) for x in _to_uint8(lr)]
        hrs += _to_uint8(torch.stack([it[1] for it in items]))
        labels += [it[2] for it in items]
    sr_seconds = time.perf_counter() - t0
    p_sr, p_bic, p_hr = recognizer.recognize(srs), recognizer.recognize(bics), recognizer.recognize(hrs)
    return {
        "n": len(labels),
        "available": len(ds),
        "sr": _scores(srs, hrs, p_sr, labels),
        "bicubic": _scores(bics, hrs, p_bic, labels),
        "hr": {"accuracy": accuracy(p_hr, labels)},
        "sr_seconds": sr_seconds,
        "words": [{"label": t, "sr": a, "bicubic": b, "hr": c} for t, a, b, c in zip(labels, p_sr, p_bic, p_hr)],
    }


def _average(splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    n = sum(s["n"] for s in splits.values())
    out: dict[str, Any] = {"n": n}
    for kind, keys in (("sr", ("psnr_y", "ssim_y", "accuracy")), ("bicubic", ("psnr_y", "ssim_y", "accuracy")),
                       ("hr", ("accuracy",))):
        out[kind] = {k: sum(s[kind][k] * s["n"] for s in splits.values()) / n for k in keys}
    return out


def run(cfg, model: str, checkpoint: Path | None, out: Path, device: torch.device,
        root: Path | None = None) -> Path:
    """Score ``model`` on TextZoom easy/medium/hard and write ``out/<model>.json``.

    Args:
        cfg: the loaded config (reads ``textzoom.*``, ``data.root`` for the embedded set).
        model: a ``harness.models`` name of an x2 model (e.g. ``mambair_x2_smoke``).
        checkpoint: weights file or checkpoint folder; ``None`` scores the untrained
            network (recorded as ``"checkpoint": null``).
        out: results folder (``results/textzoom``), or the ``.json`` file itself.
        device: where the model runs.
        root: TextZoom root; defaults to :func:`harness.data.textzoom.resolve_root` of ``cfg``.

    Returns:
        the JSON file written.
    """
    from harness import models  # imported here: model files land separately

    root = Path(root) if root is not None else tz.resolve_root(cfg)
    device = torch.device(device)
    recognizer = build_recognizer(cfg.textzoom.recognizer, cfg.textzoom.recognizer_weights, str(device))
    net = models.build(model)
    loaded, meta = load_checkpoint(net, checkpoint) if checkpoint is not None else (None, None)
    trained: dict[str, Any] = {}
    if loaded is None:
        log.warning("textzoom: no checkpoint for %s: scoring the untrained network", model)
    else:  # what `csrbench textzoom-train` recorded in final.pt (absent in foreign weights files)
        if isinstance(meta, dict) and isinstance(meta.get("fingerprint"), dict):
            fp = meta["fingerprint"]
            trained = {"iterations": meta.get("iterations"), "data": fp.get("data"),
                       "loss": fp.get("train", {}).get("loss"), "batch_size": fp.get("train", {}).get("batch_size")}
    net = net.to(device).eval()
    splits = {}
    for split in tz.TEST_SPLITS:
        ds = tz.TextZoomPairs(tz.split_path(root, split))
        splits[split] = evaluate_split(net, ds, recognizer, cfg.textzoom.batch_size, device, cfg.evaluate.max_images)
        s = splits[split]
        log.info("textzoom %s %s: n=%d acc sr %.3f bicubic %.3f hr %.3f, psnr_y sr %.2f bicubic %.2f", model, split,
                 s["n"], s["sr"]["accuracy"], s["bicubic"]["accuracy"], s["hr"]["accuracy"],
                 s["sr"]["psnr_y"], s["bicubic"]["psnr_y"])
    out = Path(out)
    path = out if out.suffix == ".json" else out / f"{model}.json"
    payload = {
        "model": model,
        "checkpoint": str(loaded) if loaded is not None else None,
        "trained": trained or None,   # iterations, training data, loss, batch of the checkpoint (csrbench's own)
        "profile": cfg.profile,
        "recognizer": cfg.textzoom.recognizer,
        "recognizer_crashes": getattr(recognizer, "crashes", 0),  # crops read as "" after an engine crash
        "root": str(root),
        "embedded": root == tz.embedded_root(cfg),
        "crop_border": CROP_BORDER,
        "max_images": cfg.evaluate.max_images,
        "splits": splits,
        "average": _average(splits),
    }
    return write_json(path, payload, cfg=cfg, device=device)
