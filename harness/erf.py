"""Stage ``erf``: effective receptive field maps, as in the MambaIR analysis (its Fig. 1 / MambaCSR Fig. 4).

For each model and each of ``erf.num_images`` LR crops x (1, 3, c, c) in [0, 1], one at a time:
the scalar s = sum over channels of the output pixel at the centre of the SR
output, (s*c//2, s*c//2); its gradient w.r.t. the input, ``|dS/dx|`` (or
``relu(dS/dx)``, ``mode="relu"``, as RepLKNet's script does), summed over the
3 input channels, gives a (c, c) map. The maps are averaged over the crops.

Figures show ``(m / max m) ** 0.25`` (the MambaIR figures' contrast), in [0, 1].
Scalars: for q in 20 / 50 / 99 % the fraction of the input area covered by the
smallest square, centred on the input pixel under the centre output pixel, that
holds q of the averaged gradient mass (RepLKNet's "high-contribution area ratio",
computed on the raw averaged map, before the power and the normalisation).

Memory: the backward of a paper-size network at the paper's crop (120 px LR, 480 px SR)
keeps every block's activations; MambaCSR's went past 23 GB. :func:`erf_map` therefore
freezes the weights (no weight gradients, and autograd saves only what the input
gradient needs) and runs each block of the network's deepest ``nn.ModuleList`` s (the
residual groups' blocks) under ``torch.utils.checkpoint``: the backward keeps one
tensor per block boundary and recomputes one block at a time, for one crop at a time.
Same gradient (the recomputation repeats the same operations), about one extra forward
of time. The peak is recorded in ``erf.json`` (``peak_rss_bytes`` on the CPU).

Weights: ``<checkpoints>/<model>/x<scale>_<tag>/final.pt`` (the ablation
degradation's tag; EMA weights, key ``state_dict`` as ``csrbench train`` writes it,
or ``model``), read with ``torch.load(weights_only=True)`` through
:func:`harness.checkpoint.load_checkpoint`, or, when absent, a seeded random
initialisation, labelled ``random init`` in the JSON and on the figures.

Crops: from every test set of ``data.test`` in turn (round robin over the data sets,
then over their sorted images), so they come from many images rather than the one
image of Set5 that is at least 120 px: LR images in
``<data>/lr/<dataset>/x<scale>/<tag>/`` (the paper used Urban100 LR crops), or,
for a data set without them, MATLAB-bicubic downscaled HR images from
``<data>/hr/<dataset>/``. Images smaller than the crop are skipped; crop k takes
the (k mod n)-th usable image at an offset drawn from
``numpy.random.default_rng([seed, k])``.

Outputs: ``<out>/erf.png`` (one panel per model, like Fig. 4), ``<out>/<model>.png``
and ``<out>/erf.json``, written together at the end: into a sibling folder that then
replaces ``<out>``, so a killed run leaves the previous complete set, never PNGs
without their ``erf.json``.

References: RepLKNet ``erf/analyze_erf.py`` and ``visualize_erf.py`` (DingXiaoH/RepLKNet-pytorch,
MIT), the MambaIR paper's ERF figure (csguoh/MambaIR, Apache-2.0). No code copied.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from harness.checkpoint import load_checkpoint
from harness.complexity import reset_rss_peak, rss_kib
from harness.config import Config
from harness.provenance import write_bytes, write_json

__all__ = ["run", "erf_map", "area_ratio", "normalise", "load_crops", "load_weights", "checkpointed_blocks",
           "peak_rss_bytes", "THRESHOLDS"]

log = logging.getLogger("csrbench.erf")

THRESHOLDS = (0.2, 0.5, 0.99)
DEFAULT_BUILD = "harness.models:build"


# ----------------------------------------------------------------------------- maps

def _blocks(model: nn.Module) -> list[nn.Module]:
    """Members of the deepest ``nn.ModuleList`` s: the transformer / Mamba blocks of every model here."""
    return [m for ml in model.modules() if isinstance(ml, nn.ModuleList) for m in ml
            if not any(isinstance(c, nn.ModuleList) for c in m.modules())]


@contextlib.contextmanager
def checkpointed_blocks(model: nn.Module) -> Iterator[int]:
    """Run each block of :func:`_blocks` under ``torch.utils.checkpoint`` (non-reentrant) while inside.

    The backward then holds one saved input per block instead of every block's activations, and
    recomputes a block's forward when its gradient is needed. Yields the number of blocks wrapped.
    """
    from torch.utils.checkpoint import checkpoint
    blocks = _blocks(model)
    for b in blocks:
        b.forward = functools.partial(checkpoint, type(b).forward.__get__(b), use_reentrant=False)
    try:
        yield len(blocks)
    finally:
        for b in blocks:
            del b.forward  # back to the class's forward


def erf_map(model: nn.Module, crops: Sequence[torch.Tensor], mode: Literal["abs", "relu"] = "abs", *,
            checkpoint_blocks: bool = True) -> np.ndarray:
    """Mean over crops of the channel-summed input gradient of the centre output pixel.

    One crop at a time; the weights are frozen for the call (only the input needs a gradient) and,
    with ``checkpoint_blocks``, the blocks are recomputed in the backward (:func:`checkpointed_blocks`),
    which bounds the memory of paper-size networks at the paper's crop without changing the map.

    Args:
        model: maps (1, 3, h, w) in [0, 1] to (1, C, s*h, s*w); put in eval mode here.
        crops: (3, h, w) float tensors in [0, 1], all the same size, on the model's device.
        mode: ``abs`` takes ``|grad|``, ``relu`` takes ``max(grad, 0)``.
        checkpoint_blocks: recompute blocks in the backward instead of keeping their activations.

    Returns:
        (h, w) float64 array, the averaged map (not normalised).
    """
    if mode not in ("abs", "relu"):
        raise ValueError(f"erf mode must be 'abs' or 'relu', got {mode!r}")
    if not crops:
        raise ValueError("erf_map needs at least one crop")
    model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    acc = None
    try:
        for p in trainable:
            p.requires_grad_(False)
        with checkpointed_blocks(model) if checkpoint_blocks else contextlib.nullcontext():
            for x in crops:
                if x.ndim != 3 or x.shape[0] != 3:
                    raise ValueError(f"crop must be (3, h, w), got {tuple(x.shape)}")
                x = x.detach().unsqueeze(0).clone().requires_grad_(True)
                y = model(x)
                centre = y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum()
                del y  # only the graph (and the block inputs it saved) stays alive
                (grad,) = torch.autograd.grad(centre, x)
                g = grad[0].abs() if mode == "abs" else grad[0].clamp_min(0)
                m = g.sum(0).double().cpu().numpy()
                acc = m if acc is None else acc + m
                del centre, grad, g, x
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return acc / len(crops)


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (``VmHWM`` of ``/proc/self/status``), or None."""
    kib = rss_kib("VmHWM")
    return None if kib is None else kib * 1024


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


def _sources(data: Path, dataset: str, scale: int, tag: str) -> tuple[list[Path], dict[str, str]]:
    """Image files of one test set: its ``tag`` LR images, else its HR images (downscaled on read)."""
    lr = Path(data) / "lr" / dataset / f"x{scale}" / tag
    hr = Path(data) / "hr" / dataset
    files = sorted(lr.glob("*.png")) if lr.is_dir() else []
    if files:
        return files, {"folder": str(lr), "kind": f"LR {tag}"}
    files = sorted(hr.glob("*.png")) if hr.is_dir() else []
    return files, {"folder": str(hr), "kind": f"HR bicubic x1/{scale} (no {tag} LR found)"}


def load_crops(data: Path, datasets: Sequence[str], scale: int, tag: str, crop: int, num: int, seed: int
               ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``num`` LR crops (crop x crop x 3 uint8 RGB) from several images of ``datasets``, and where they came from.

    Images are taken round robin over the data sets (then in sorted order within each), skipping those
    smaller than ``crop``, until ``num`` images are found (or none is left); crop k comes from the
    (k mod n)-th of the n images found, at an offset drawn from ``numpy.random.default_rng([seed, k])``.

    Raises:
        FileNotFoundError: no data set has LR or HR images.
        ValueError: every image is smaller than ``crop``.
    """
    from harness.data.degrade import bicubic_downscale
    per: dict[str, tuple[list[Path], dict[str, str]]] = {ds: _sources(data, ds, scale, tag) for ds in datasets}
    if not any(files for files, _ in per.values()):
        looked = ", ".join(f"{Path(data) / 'lr' / ds / f'x{scale}' / tag} or {Path(data) / 'hr' / ds}"
                           for ds in datasets)
        raise FileNotFoundError(f"erf: no LR or HR images in {looked} "
                                "(run `csrbench prepare` and `csrbench degrade`)")
    order = [(ds, files[i]) for i in range(max(len(files) for files, _ in per.values()))
             for ds, (files, _) in per.items() if i < len(files)]
    images: list[tuple[str, str, np.ndarray]] = []
    small = 0
    for ds, path in order:
        if len(images) >= num:
            break
        im = _read_rgb(path)
        if per[ds][1]["kind"].startswith("HR"):
            im = bicubic_downscale(im, scale)
        if im.shape[0] < crop or im.shape[1] < crop:
            small += 1
            continue
        images.append((ds, path.stem, im))
    if not images:
        raise ValueError(f"erf: every image of {', '.join(info['folder'] for _, info in per.values())} "
                         f"is smaller than erf.crop={crop}")
    crops, used = [], []
    for k in range(num):
        ds, name, im = images[k % len(images)]
        rng = np.random.default_rng([seed, k])
        y = int(rng.integers(0, im.shape[0] - crop + 1))
        x = int(rng.integers(0, im.shape[1] - crop + 1))
        crops.append(im[y:y + crop, x:x + crop])
        used.append({"dataset": ds, "image": name, "y": y, "x": x})
    used_ds = list(dict.fromkeys(c["dataset"] for c in used))
    source = {"dataset": ", ".join(used_ds), "kind": "; ".join(dict.fromkeys(per[ds][1]["kind"] for ds in used_ds)),
              "datasets": {ds: info for ds, (files, info) in per.items() if files},
              "distinct_images": len(images), "skipped_smaller_than_crop": small, "crops": used}
    return crops, source


def load_weights(model: nn.Module, path: Path) -> dict[str, Any] | None:
    """Load ``final.pt``'s weights into ``model`` (strict); ``None`` when the file is absent.

    Read with ``weights_only=True`` (:func:`harness.checkpoint.load_checkpoint`: no pickled code runs).
    Accepts the ``state_dict`` key (``csrbench train``) or ``model`` (nanoGPT style).

    Raises:
        CheckpointError: unreadable file, or neither key present (names the file).
        RuntimeError: the weights do not fit the model (names the file).
    """
    from harness.checkpoint import CheckpointError
    path = Path(path)
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path)
    key = "state_dict" if "state_dict" in ckpt else "model" if "model" in ckpt else None
    if key is None:
        raise CheckpointError(f"{path}: checkpoint has neither 'state_dict' nor 'model' (keys: {sorted(ckpt)})")
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

def _reset_peak(dev: torch.device) -> bool:
    """Reset the peak-memory counter this stage reports (CUDA allocator, or the process's VmHWM)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return True
    return reset_rss_peak()


def _peak(dev: torch.device, reset: bool) -> dict[str, Any]:
    if dev.type == "cuda":
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(dev)), "method": "torch.cuda.max_memory_allocated"}
    return {"peak_bytes": peak_rss_bytes(), "method": "VmHWM of /proc/self/status (whole process, reset per model "
            "via /proc/self/clear_refs)" if reset else "VmHWM of /proc/self/status (whole process, not reset)"}


def _write_all(out: Path, files: dict[str, bytes], payload: dict[str, Any], cfg: Config, dev: torch.device) -> Path:
    """Write every PNG and erf.json into a sibling folder, then put it in place of ``out``."""
    staging = out.parent / f".{out.name}.partial"
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in files.items():
        write_bytes(staging / name, data)
    write_json(staging / "erf.json", payload, cfg=cfg, device=dev)
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out / "erf.json"


def run(cfg: Config, models: Sequence[str] | None, checkpoints: Path, data: Path, out: Path,
        device: torch.device | str, *, build: str = DEFAULT_BUILD, mode: Literal["abs", "relu"] = "abs") -> Path:
    """ERF maps of ``models`` (default ``erf.models``); writes ``out``/erf.png, <model>.png, erf.json.

    Nothing is written until every map is computed; then the whole folder is replaced at once.

    Args:
        cfg: loaded config (reads ``erf.*``, ``data.test``, ``degrade.scale``,
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
    crops_np, source = load_crops(Path(data), cfg.data.test, scale, tag, cfg.erf.crop, cfg.erf.num_images,
                                  cfg.train.seed)
    dev = torch.device(device)
    crops = [torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1).float().div(255).to(dev) for c in crops_np]
    out = Path(out)
    records: dict[str, Any] = {}
    panels: list[tuple[str, np.ndarray]] = []
    files: dict[str, bytes] = {}
    for name in names:
        torch.manual_seed(cfg.train.seed)
        model = builder(name)
        ckpt = Path(checkpoints) / name / f"x{scale}_{tag}" / "final.pt"
        weights = load_weights(model, ckpt)
        model = model.to(dev)
        log.info("erf %s (%s), %d crops of %d px", name, "random init" if weights is None else ckpt, len(crops),
                 cfg.erf.crop)
        reset = _reset_peak(dev)
        m = erf_map(model, crops, mode=mode)
        memory = _peak(dev, reset)
        centre = centre_of(m.shape, scale)
        shown = normalise(m)
        label = _label(name, weights)
        files[f"{name}.png"] = _figure([(label, shown)])
        panels.append((label, shown))
        records[name] = {
            "weights": "checkpoint" if weights is not None else "random init",
            "checkpoint": weights,
            "checkpoint_expected": str(ckpt),
            "area_ratio": {f"{int(round(q * 100))}": area_ratio(m, q, centre) for q in THRESHOLDS},
            "centre": list(centre),
            "png": f"{name}.png",
            "memory": memory,
        }
        del model
    files["erf.png"] = _figure(panels)
    payload = {"mode": mode, "crop": cfg.erf.crop, "num_images": cfg.erf.num_images, "scale": scale, "tag": tag,
               "source": source, "figure": "erf.png", "display": "(m / max m) ** 0.25",
               "memory_note": "one crop at a time, weights frozen, blocks recomputed in the backward "
                              "(torch.utils.checkpoint)",
               "area_ratio_rule": "smallest centred square holding q of the raw averaged gradient mass, "
                                  "as a fraction of the crop area", "models": records}
    return _write_all(out, files, payload, cfg, dev)
