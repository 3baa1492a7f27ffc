"""Stage ``erf``: effective receptive field maps, as in the MambaIR analysis (its Fig. 1 / MambaCSR Fig. 4).

For each model and each of ``erf.num_images`` LR crops x (1, 3, c, c) in [0, 1]:
the scalar s = sum over channels of the output pixel at the centre of the SR
output, (s*c//2, s*c//2); its gradient w.r.t. the input, ``|dS/dx|`` (or
``relu(dS/dx)``, ``mode="relu"``, as RepLKNet's script does), summed over the
3 input channels, gives a (c, c) map. The maps are averaged over the crops.

Figures show ``(m / max m) ** 0.25`` (the MambaIR figures' contrast), in [0, 1].
Scalars: for q in 20 / 50 / 99 % the fraction of the input area covered by the
smallest square, centred on the input pixel under the centre output pixel, that
holds q of the averaged gradient mass (RepLKNet's "high-contribution area ratio",
computed on the raw averaged map, before the power and the normalisation).

Weights: ``<checkpoints>/<model>/x<scale>_<tag>/final.pt`` (the ablation
degradation's tag; EMA weights, key ``state_dict`` as ``csrbench train`` writes it,
or ``model``) or, when absent, a seeded random initialisation, labelled
``random init`` in the JSON and on the figures. Crops: LR images of the first test
set in ``<data>/lr/<dataset>/x<scale>/<tag>/`` (the paper used Urban100 LR crops),
falling back to MATLAB-bicubic downscaled HR images from ``<data>/hr/<dataset>/``;
crop k takes image ``k mod n`` at an offset drawn from ``numpy.random.default_rng([seed, k])``.

Outputs: ``<out>/erf.png`` (one panel per model, like Fig. 4), ``<out>/<model>.png``
and ``<out>/erf.json``, all written atomically.

References: RepLKNet ``erf/analyze_erf.py`` and ``visualize_erf.py`` (DingXiaoH/RepLKNet-pytorch,
MIT), the MambaIR paper's ERF figure (csguoh/MambaIR, Apache-2.0). No code copied.
"""
from __future__ import annotations

import importlib
import io
import logging
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from harness.provenance import write_bytes, write_json

__all__ = ["run", "erf_map", "area_ratio", "normalise", "load_crops", "load_weights", "THRESHOLDS"]

log = logging.getLogger("csrbench.erf")

THRESHOLDS = (0.2, 0.5, 0.99)
DEFAULT_BUILD = "harness.models:build"


# ----------------------------------------------------------------------------- maps

def erf_map(model: nn.Module, crops: Sequence[torch.Tensor], mode: Literal["abs", "relu"] = "abs") -> np.ndarray:
    """Mean over crops of the channel-summed input gradient of the centre output pixel.

    Args:
        model: maps (1, 3, h, w) in [0, 1] to (1, C, s*h, s*w); put in eval mode here.
        crops: (3, h, w) float tensors in [0, 1], all the same size, on the model's device.
        mode: ``abs`` takes ``|grad|``, ``relu`` takes ``max(grad, 0)``.

    Returns:
        (h, w) float64 array, the averaged map (not normalised).
    """
    if mode not in ("abs", "relu"):
        raise ValueError(f"erf mode must be 'abs' or 'relu', got {mode!r}")
    if not crops:
        raise ValueError("erf_map needs at least one crop")
    model.eval()
    acc = None
    for x in crops:
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"crop must be (3, h, w), got {tuple(x.shape)}")
        x = x.detach().unsqueeze(0).clone().requires_grad_(True)
        y = model(x)
        centre = y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum()
        (grad,) = torch.autograd.grad(centre, x)
        g = grad[0].abs() if mode == "abs" else grad[0].clamp_min(0)
        m = g.sum(0).double().cpu().numpy()
        acc = m if acc is None else acc + m
    return acc / len(crops)


def centre_of(shape: tuple[int, int], scale: int) -> tuple[int, int]:
    """Input pixel under the centre output pixel (s*h//2, s*w//2) of an x``scale`` model."""
    h, w = shape
    return (scale * h // 2) // scale, (scale * w // 2) // scale


def area_ratio(m: np.ndarray, q: float, centre: tuple[int, int]) -> float:
    """Fraction of the map's area in the smallest square around ``centre`` holding ``q`` of its mass.

    The square has side 2r+1 (r = 0, 1, ...), clipped at the borders; its area is counted as the
    clipped area. Returns 1.0 when even the whole map is needed, 0.0 for an all-zero map.
    """
    total = float(m.sum())
    if total <= 0:
        return 0.0
    h, w = m.shape
    cy, cx = centre
    for r in range(max(h, w)):
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
        if m[y0:y1, x0:x1].sum() >= q * total * (1 - 1e-12):
            return (y1 - y0) * (x1 - x0) / (h * w)
    return 1.0


def normalise(m: np.ndarray, power: float = 0.25) -> np.ndarray:
    """``(m / max m) ** power`` in [0, 1] (all-zero maps stay zero)."""
    peak = float(m.max())
    return np.zeros_like(m) if peak <= 0 else (m / peak) ** power


# ----------------------------------------------------------------------------- inputs

def _read_rgb(path: Path) -> np.ndarray:
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_crops(data: Path, dataset: str, scale: int, tag: str, crop: int, num: int, seed: int
               ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``num`` LR crops (crop x crop x 3 uint8 RGB) and where they came from.

    Raises:
        FileNotFoundError: neither the LR folder nor the HR folder has images.
        ValueError: every image is smaller than ``crop``.
    """
    lr = Path(data) / "lr" / dataset / f"x{scale}" / tag
    hr = Path(data) / "hr" / dataset
    files = sorted(lr.glob("*.png")) if lr.is_dir() else []
    source = {"dataset": dataset, "folder": str(lr), "kind": f"LR {tag}"}
    images: list[tuple[str, np.ndarray]] = [(p.stem, _read_rgb(p)) for p in files]
    if not images:
        hr_files = sorted(hr.glob("*.png")) if hr.is_dir() else []
        if not hr_files:
            raise FileNotFoundError(f"erf: no LR images in {lr} and no HR images in {hr} "
                                    f"(run `csrbench prepare` and `csrbench degrade`)")
        from harness.data.degrade import bicubic_downscale
        images = [(p.stem, bicubic_downscale(_read_rgb(p), scale)) for p in hr_files]
        source = {"dataset": dataset, "folder": str(hr), "kind": f"HR bicubic x1/{scale} (no {tag} LR found)"}
    images = [(n, im) for n, im in images if im.shape[0] >= crop and im.shape[1] >= crop]
    if not images:
        raise ValueError(f"erf: every image of {source['folder']} is smaller than erf.crop={crop}")
    crops, used = [], []
    for k in range(num):
        name, im = images[k % len(images)]
        rng = np.random.default_rng([seed, k])
        y = int(rng.integers(0, im.shape[0] - crop + 1))
        x = int(rng.integers(0, im.shape[1] - crop + 1))
        crops.append(im[y:y + crop, x:x + crop])
        used.append({"image": name, "y": y, "x": x})
    source["crops"] = used
    return crops, source


def load_weights(model: nn.Module, path: Path) -> dict[str, Any] | None:
    """Load ``final.pt``'s weights into ``model`` (strict); ``None`` when the file is absent.

    Accepts the ``state_dict`` key (``csrbench train``) or ``model`` (nanoGPT style).
    """
    path = Path(path)
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: checkpoint must be a dict, got {type(ckpt).__name__}")
    key = "state_dict" if "state_dict" in ckpt else "model" if "model" in ckpt else None
    if key is None:
        raise KeyError(f"{path}: checkpoint has neither 'state_dict' nor 'model' (keys: {sorted(ckpt)})")
    try:
        model.load_state_dict(ckpt[key], strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{path}: weights do not fit the model: {e}") from None
    return {"path": str(path), "iterations": ckpt.get("iterations", ckpt.get("iteration")), "key": key}


# ----------------------------------------------------------------------------- figures

def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _figure(panels: list[tuple[str, np.ndarray]]) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.6, 2.9), squeeze=False)
    im = None
    for ax, (title, m) in zip(axes[0], panels):
        im = ax.imshow(m, cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02)
    data = _png(fig)
    plt.close(fig)
    return data


def _label(name: str, weights: dict[str, Any] | None) -> str:
    if weights is None:
        return f"{name}\n(random init)"
    it = weights.get("iterations")
    return f"{name}\n(trained{'' if it is None else f', {it} it'})"


# ----------------------------------------------------------------------------- stage

def run(cfg: Any, models: Sequence[str] | None, checkpoints: Path, data: Path, out: Path,
        device: torch.device | str, *, build: str = DEFAULT_BUILD, mode: Literal["abs", "relu"] = "abs") -> Path:
    """ERF maps of ``models`` (default ``erf.models``); writes ``out``/erf.png, <model>.png, erf.json.

    Args:
        cfg: loaded config (reads ``erf.*``, ``data.test[0]``, ``degrade.scale``,
            ``runs.ablation_degradation``, ``train.seed``).
        models: model names.
        checkpoints: folder holding ``<model>/x<scale>_<tag>/final.pt``.
        data: data folder (``lr/``, ``hr/``).
        out: output folder (normally ``results/erf``).
        device: where the gradients are computed.
        build: ``module:function`` mapping a name to an nn.Module (tests pass stand-ins).
        mode: ``abs`` or ``relu`` of the gradient.

    Returns:
        Path of ``erf.json``.
    """
    mod_name, _, attr = build.partition(":")
    builder: Callable[[str], nn.Module] = getattr(importlib.import_module(mod_name), attr)
    names = list(models) if models else list(cfg.erf.models)
    scale, tag = cfg.degrade.scale, cfg.runs.ablation_degradation.tag
    dataset = cfg.data.test[0]
    crops_np, source = load_crops(Path(data), dataset, scale, tag, cfg.erf.crop, cfg.erf.num_images, cfg.train.seed)
    dev = torch.device(device)
    crops = [torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1).float().div(255).to(dev) for c in crops_np]
    out = Path(out)
    records: dict[str, Any] = {}
    panels: list[tuple[str, np.ndarray]] = []
    for name in names:
        torch.manual_seed(cfg.train.seed)
        model = builder(name)
        ckpt = Path(checkpoints) / name / f"x{scale}_{tag}" / "final.pt"
        weights = load_weights(model, ckpt)
        model = model.to(dev)
        log.info("erf %s (%s)", name, "random init" if weights is None else ckpt)
        m = erf_map(model, crops, mode=mode)
        centre = centre_of(m.shape, scale)
        shown = normalise(m)
        label = _label(name, weights)
        write_bytes(out / f"{name}.png", _figure([(label, shown)]))
        panels.append((label, shown))
        records[name] = {
            "weights": "checkpoint" if weights is not None else "random init",
            "checkpoint": weights,
            "checkpoint_expected": str(ckpt),
            "area_ratio": {f"{int(round(q * 100))}": area_ratio(m, q, centre) for q in THRESHOLDS},
            "centre": list(centre),
            "png": f"{name}.png",
        }
        del model
    write_bytes(out / "erf.png", _figure(panels))
    payload = {"mode": mode, "crop": cfg.erf.crop, "num_images": cfg.erf.num_images, "scale": scale, "tag": tag,
               "source": source, "figure": "erf.png", "display": "(m / max m) ** 0.25",
               "area_ratio_rule": "smallest centred square holding q of the raw averaged gradient mass, "
                                  "as a fraction of the crop area", "models": records}
    return write_json(out / "erf.json", payload, cfg=cfg, device=dev)
