"""Benchmark ``csrbench bench evaluate``: CPU seconds to score paper-size MambaCSR and MambaIR.

What is timed: :func:`harness.evaluate.super_resolve` (the function every metrics file is made
with: uint8 in, tiled network, uint8 out) on random LR images of real test-set sizes, x4:

- ``set5``   HR 256 x 256    (LR 64 x 64; Set5's butterfly);
- ``set14``  HR 500 x 480    (LR 125 x 120; Set14's baboon);
- ``1024x768`` HR 1024 x 768 (LR 256 x 192).

Networks: ``mambacsr`` with its released weights' official behaviour (the ``official`` overrides of
``Cross-scale-QF10-x4.pth``: column-major cross un-scan, tiles mirror-padded to a multiple of 64)
and ``mambair`` (classic x4, same width and depth class), random weights: the cost of a forward
pass does not depend on the weight values. Tiling: the MambaCSR release's official settings
(192 px LR tiles, 48 px overlap, centre blend) for both, so they are comparable.

Per network: one untimed warm-up call (numba kernel load, allocator), then one timed call per
size, smallest first, within a time budget (``max_seconds`` per network): a size that would overrun
it is projected from the measured cost per processed pixel instead, and marked so. The first timed
call runs under forward hooks that add up wall time per module type (inclusive: a block's time
contains its SS2D's) and a wrapper around the selective scan: "where the time goes". Each timed
call also records the process CPU seconds (``time.process_time``): on a shared machine wall time
grows with the other jobs, CPU time much less, so ``cpu_seconds / threads`` estimates the wall
time on idle cores (an estimate: threads that spin-wait also burn CPU).

Projection, labelled as such: the whole Set5 + Set14 JPEG QF10 x4 scoring is estimated from the
measured cost per *processed* LR pixel (every tile, after its padding) times the pixels the
19 images would process (their HR sizes are listed in ``SET5_SET14_HR``), plus nothing for
metrics (milliseconds). The goal is <= 15 min on 2 cores. The machine is shared: the load
average before and after is recorded, and every figure is only as good as that load.

Fidelity (:func:`run_fidelity`, ``results/bench/evaluate_fidelity.json``, written by ``run`` too):
the PSNR-Y difference between MambaCSR's official column-major cross un-scan and the true inverse
(``official_cross_unscan`` True / False) with the same weights, everything else equal, on a
non-square test image (skimage's astronaut, HR 256 x 384 crop, bicubic x4 then JPEG QF 10: LR
64 x 96, mirror-padded to 64 x 128, so the 16-px cross windows form a 4 x 8 grid); plus the
paper behaviour (no official overrides at all).

Writes ``results/bench/evaluate.json`` through :func:`harness.provenance.write_json`.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["run", "run_fidelity", "SIZES", "SET5_SET14_HR", "processed_pixels", "module_profile"]

log = logging.getLogger(__name__)

#: name -> HR (height, width) at x4.
SIZES: dict[str, tuple[int, int]] = {"set5": (256, 256), "set14": (480, 500), "1024x768": (768, 1024)}
#: HR (height, width) of Set5 and Set14 as commonly distributed, mod-cropped to 4 (projection only).
SET5_SET14_HR: dict[str, tuple[int, int]] = {
    "set5/baby": (512, 512), "set5/bird": (288, 288), "set5/butterfly": (256, 256), "set5/head": (280, 280),
    "set5/woman": (344, 228),
    "set14/baboon": (480, 500), "set14/barbara": (576, 720), "set14/bridge": (512, 512),
    "set14/coastguard": (288, 352), "set14/comic": (360, 248), "set14/face": (276, 276),
    "set14/flowers": (360, 500), "set14/foreman": (288, 352), "set14/lenna": (512, 512), "set14/man": (512, 512),
    "set14/monarch": (512, 768), "set14/pepper": (512, 512), "set14/ppt3": (656, 528), "set14/zebra": (388, 584),
}
SCALE = 4
MODELS = ("mambacsr", "mambair")
RELEASE_OF = {"mambacsr": "Cross-scale-QF10-x4.pth"}
GOAL_SECONDS = 15 * 60


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def processed_pixels(lr_hw: tuple[int, int], tile: int, overlap: int, pad_multiple: int) -> int:
    """LR pixels the network processes for one image: every tile after its padding to ``pad_multiple``."""
    from harness.tiling import tile_starts
    h, w = lr_hw

    def sides(n: int) -> list[int]:
        if tile <= 0 or (h <= tile and w <= tile):
            return [n]
        return [min(tile, n) for _ in tile_starts(n, tile, overlap)]

    def pad(n: int) -> int:
        return -(-n // pad_multiple) * pad_multiple

    if tile <= 0 or (h <= tile and w <= tile):
        return pad(h) * pad(w)
    return sum(pad(a) * pad(b) for a in sides(h) for b in sides(w))


@contextmanager
def module_profile(net: nn.Module, scan_modules: tuple[Any, ...]) -> Iterator[dict[str, float]]:
    """Add up inclusive wall seconds per module type (forward hooks) and in the selective scan.

    Args:
        net: the network.
        scan_modules: modules whose global ``selective_scan`` is wrapped to time it.

    Yields:
        ``{module type or "selective_scan": seconds}``, filled while the context is open.
    """
    totals: dict[str, float] = defaultdict(float)
    starts: dict[int, list[float]] = defaultdict(list)
    handles = []
    for m in net.modules():
        name = type(m).__name__

        def pre(mod, args, _id=id(m)):
            starts[_id].append(time.perf_counter())

        def post(mod, args, out, _id=id(m), _name=name):
            totals[_name] += time.perf_counter() - starts[_id].pop()

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    saved = []
    for mod in scan_modules:
        fn = mod.selective_scan

        def timed(*a, _fn=fn, **k):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                totals["selective_scan"] += time.perf_counter() - t0

        saved.append((mod, fn))
        mod.selective_scan = timed
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()
        for mod, fn in saved:
            mod.selective_scan = fn


def _network(name: str) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    from harness import models
    from harness.released import releases
    rel = releases().get(RELEASE_OF.get(name, ""))
    overrides = dict(rel.official) if rel else {}
    torch.manual_seed(0)
    net = models.build(name, **overrides).eval()
    ev = dict(releases()["Cross-scale-QF10-x4.pth"].eval)
    return net, overrides, ev


def run(out: Path = Path("results/bench/evaluate.json"), device: str | torch.device = "cpu", *,
        models: tuple[str, ...] = MODELS, sizes: tuple[str, ...] = tuple(SIZES), max_seconds: float = 480.0,
        threads: int | None = None) -> Path:
    """Time tiled evaluation of the paper-size networks; write ``results/bench/evaluate.json``.

    Bounded: per network, the sizes run smallest first; a size whose expected time (measured
    cost per processed pixel x its pixels) would overrun ``max_seconds`` is not run but
    projected, and marked ``"projected": true``. The first timed size runs under the
    module hooks of :func:`module_profile` (their cost is microseconds per module call).

    Args:
        out: JSON file.
        device: torch device (the goal is about 2 CPU cores).
        models: network names (x4).
        sizes: keys of `SIZES`, smallest first.
        max_seconds: time budget per network (warm-up included).
        threads: torch threads (None: as configured; recorded either way).

    Returns:
        ``out``.
    """
    import importlib

    from harness.evaluate import scan_backend, super_resolve
    from harness.provenance import write_json

    device = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    load_before = _loadavg()
    rng = np.random.default_rng(0)
    scan_mods = tuple(importlib.import_module(m) for m in ("mambacsr.model", "baselines.mambair"))
    results: dict[str, Any] = {}
    t_all = time.perf_counter()
    for name in models:
        t_model = time.perf_counter()
        net, overrides, ev = _network(name)
        net = net.to(device)
        tile, overlap = int(ev["tile"]), int(ev["tile_overlap"])
        pad = int(getattr(net.cfg, "pad_multiple", 1))
        # warm-up on the small twin: same kernels (numba load, allocator), a fraction of the cost
        twin = _network(name if name.endswith("_smoke") else f"{name}_smoke")[0].to(device)
        t0 = time.perf_counter()
        super_resolve(twin, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), SCALE, tile, overlap, False, device)
        first = time.perf_counter() - t0
        del twin
        per_size: dict[str, Any] = {}
        profile = None
        cost = cpu_cost = None  # wall / process-CPU seconds per processed LR pixel, from the measured sizes
        for size in sizes:
            hh, ww = SIZES[size]
            lr_hw = (hh // SCALE, ww // SCALE)
            px = processed_pixels(lr_hw, tile, overlap, pad)
            spent = time.perf_counter() - t_model
            if cost is not None and spent + cost * px > max_seconds:
                per_size[size] = {"hr": [hh, ww], "lr": list(lr_hw), "processed_lr_pixels": px,
                                  "seconds": cost * px, "projected": True}
                log.info("bench evaluate: %s %s projected %.1f s (budget %.0f s)", name, size, cost * px, max_seconds)
                continue
            lr = rng.integers(0, 256, (*lr_hw, 3), dtype=np.uint8)
            c0 = time.process_time()
            if profile is None:
                with module_profile(net, scan_mods) as totals:
                    t0 = time.perf_counter()
                    sr = super_resolve(net, lr, SCALE, tile, overlap, False, device)
                    sec = time.perf_counter() - t0
                top = sorted(totals.items(), key=lambda kv: -kv[1])
                profile = {"size": size, "wall_seconds": sec,
                           "inclusive_seconds_by_module_type": dict(top),
                           "share_of_wall": {k: v / sec for k, v in top}}
            else:
                t0 = time.perf_counter()
                sr = super_resolve(net, lr, SCALE, tile, overlap, False, device)
                sec = time.perf_counter() - t0
            cpu = time.process_time() - c0
            assert sr.shape == (hh, ww, 3)
            per_size[size] = {"hr": [hh, ww], "lr": list(lr_hw), "processed_lr_pixels": px, "seconds": sec,
                              "cpu_seconds": cpu, "projected": False, "seconds_per_mpx_processed": sec / px * 1e6,
                              "load_after": _loadavg()}
            measured = [v for v in per_size.values() if not v["projected"]]
            cost = sum(v["seconds"] for v in measured) / sum(v["processed_lr_pixels"] for v in measured)
            cpu_cost = sum(v["cpu_seconds"] for v in measured) / sum(v["processed_lr_pixels"] for v in measured)
            log.info("bench evaluate: %s %s HR %dx%d: %.1f s (load %s)", name, size, hh, ww, sec, _loadavg())
        projection = None
        if cost is not None:
            per_image = {k: cost * processed_pixels((h // SCALE, w // SCALE), tile, overlap, pad)
                         for k, (h, w) in SET5_SET14_HR.items()}
            total = sum(per_image.values())
            px_all = sum(processed_pixels((h // SCALE, w // SCALE), tile, overlap, pad) for h, w in SET5_SET14_HR.values())
            projection = {"projected": True, "seconds_per_processed_lr_pixel": cost,
                          "cpu_seconds_per_processed_lr_pixel": cpu_cost,
                          "set5_set14_cpu_seconds": cpu_cost * px_all,
                          "set5_set14_seconds_if_cpu_split_over_threads": cpu_cost * px_all / torch.get_num_threads(),
                          "set5_set14_seconds": total, "goal_seconds": GOAL_SECONDS,
                          "meets_goal": total <= GOAL_SECONDS, "per_image_seconds": per_image,
                          "how": "measured seconds per processed LR pixel (all measured sizes pooled) x the "
                                 "processed LR pixels (tiles after padding) of the 19 Set5 + Set14 images "
                                 "listed in SET5_SET14_HR"}
        results[name] = {"overrides": overrides, "params": sum(p.numel() for p in net.parameters()),
                         "tile": {"size": tile, "overlap": overlap, "pad_multiple": pad},
                         "first_call_seconds": first, "sizes": per_size, "profile": profile,
                         "set5_set14_projection": projection, "seconds": time.perf_counter() - t_model}
        del net
    payload = {
        "benchmark": "evaluate", "scale": SCALE, "weights": "random (cost does not depend on weight values)",
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "backend": scan_backend(device),
        "max_seconds_per_model": max_seconds,
        "load_average_before": load_before, "load_average_after": _loadavg(),
        "total_seconds": time.perf_counter() - t_all, "models": results,
    }
    write_json(out, payload, device=device, threads=torch.get_num_threads())
    run_fidelity(Path(out).with_name("evaluate_fidelity.json"), device)
    return out


def run_fidelity(out: Path = Path("results/bench/evaluate_fidelity.json"), device: str | torch.device = "cpu", *,
                 model: str = "mambacsr_smoke", seed: int = 0, hr_box: tuple[int, int, int, int] = (64, 64, 256, 384)
                 ) -> Path:
    """PSNR-Y of one set of weights with the official and the true cross un-scan on a non-square image.

    Args:
        out: JSON file.
        device: torch device.
        model: a MambaCSR name; random weights from ``seed`` (the same for every behaviour).
        seed: torch seed of the weights.
        hr_box: (top, left, height, width) of the HR crop of skimage's astronaut (mod 4).

    Returns:
        ``out``.
    """
    from skimage import data as skdata

    from harness import models
    from harness.data.degrade import degrade_image
    from harness.evaluate import super_resolve
    from harness.metrics import psnr_y
    from harness.provenance import write_json
    from harness.released import releases

    device = torch.device(device)
    top, left, h, w = hr_box
    hr = np.ascontiguousarray(skdata.astronaut()[top:top + h, left:left + w, :3])
    lr = degrade_image(hr, SCALE, "jpeg", 10)[0]
    official = dict(releases()["Cross-scale-QF10-x4.pth"].official)
    behaviours = {
        "official": official,                                             # released weights' default
        "true_inverse_unscan": {**official, "official_cross_unscan": False},  # only the un-scan differs
        "paper": {},                                                      # no official overrides at all
    }
    torch.manual_seed(seed)
    state = models.build(model).state_dict()
    outs, rows = {}, {}
    for name, overrides in behaviours.items():
        net = models.build(model, **overrides)
        net.load_state_dict(state, strict=True)
        t0 = time.perf_counter()
        outs[name] = super_resolve(net.eval().to(device), lr, SCALE, 0, 0, False, device)
        rows[name] = {"overrides": overrides, "psnr_y": psnr_y(outs[name], hr, SCALE),
                      "seconds": time.perf_counter() - t0}
    diff = np.abs(outs["official"].astype(np.int16) - outs["true_inverse_unscan"].astype(np.int16))
    payload = {
        "benchmark": "evaluate_fidelity", "model": model, "weights": f"random init, torch seed {seed}",
        "image": {"source": "skimage.data.astronaut", "hr_box": list(hr_box), "lr": list(lr.shape[:2]),
                  "degradation": "bicubic x4, JPEG QF 10"},
        "behaviours": rows,
        "psnr_y_official_minus_true_inverse": rows["official"]["psnr_y"] - rows["true_inverse_unscan"]["psnr_y"],
        "psnr_y_official_minus_paper": rows["official"]["psnr_y"] - rows["paper"]["psnr_y"],
        "max_abs_pixel_difference_official_vs_true_inverse": int(diff.max()),
        "pixels_differing_official_vs_true_inverse": float((diff > 0).mean()),
    }
    return write_json(out, payload, device=device)
