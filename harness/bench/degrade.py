"""Benchmark ``csrbench bench degrade``: images per second of the degrade step, per codec.

On the embedded ``skimage_test`` HR images (3 crops, LR 48x64 at x4) it times, for
``none``, ``jpeg 10``, ``hevc 37`` and ``vvc 37``:

- ``serial``: :func:`harness.data.degrade.degrade_image` image by image in this process
  (bicubic + codec round trip, no PNG write), best of ``repeats`` passes after a warm-up;
- ``stage``: :func:`harness.data.degrade.run` from scratch with ``workers`` processes
  (process start-up, PNG writes, sha256 and the manifest included).

Writes ``results/bench/degrade.json`` (via :func:`harness.provenance.write_json`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.config import Config, Degradation
from harness.data import codecs, degrade, prepare
from harness.data.images import read_png_rgb

__all__ = ["run", "CODECS"]

log = logging.getLogger(__name__)
CODECS = (Degradation("none", 0), Degradation("jpeg", 10), Degradation("hevc", 37), Degradation("vvc", 37))


def run(cfg: Config, out: Path = Path("results/bench/degrade.json"), device: Any = None, *, repeats: int = 3,
        workers: int = 2, dataset: str = "skimage_test") -> Path:
    """Time the degrade step per codec; returns the JSON path written.

    Args:
        cfg: the run's Config (``degrade`` encoders; scale is ``degrade.scale``).
        out: JSON file to write.
        device: unused (the step runs on CPU); recorded in the provenance.
        repeats: serial passes, the best is kept.
        workers: processes of the ``stage`` timing.
        dataset: registry dataset to time on (an embedded one needs no download).
    """
    scale = cfg.degrade.scale
    dc = cfg.degrade
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="csrbench-bench-degrade-") as tmp:
        tmp = Path(tmp)
        bcfg = dataclasses.replace(cfg, degrade=dataclasses.replace(dc, workers=workers))
        prepare.run(bcfg, datasets=[dataset], out=tmp)
        hr_paths = sorted((tmp / "hr" / dataset).glob("*.png"))
        hrs = [read_png_rgb(p) for p in hr_paths]
        pixels = [int(h.shape[0] // scale * (h.shape[1] // scale)) for h in hrs]
        for d in CODECS:
            codecs.codec_settings(d.codec, d.level, hevc_encoder=dc.hevc_encoder, vvc_encoder=dc.vvc_encoder,
                                  hm_path=dc.hm_path, vtm_path=dc.vtm_path)   # version probes, outside timings
            kw = dict(hevc_encoder=dc.hevc_encoder, vvc_encoder=dc.vvc_encoder, hm_path=dc.hm_path,
                      vtm_path=dc.vtm_path)
            degrade.degrade_image(hrs[0], scale, d.codec, d.level, **kw)       # warm-up
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for h in hrs:
                    degrade.degrade_image(h, scale, d.codec, d.level, **kw)
                best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            degrade.run(bcfg, datasets=[dataset], degradations=[d], scale=scale, data=tmp)
            stage = time.perf_counter() - t0
            rows[d.tag] = {
                "codec": d.codec, "level": d.level, "images": len(hrs),
                "serial_seconds": best, "serial_images_per_s": len(hrs) / best,
                "serial_lr_megapixels_per_s": sum(pixels) / best / 1e6,
                "stage_seconds": stage, "stage_images_per_s": len(hrs) / stage, "stage_workers": workers,
            }
            log.info("%s: serial %.1f img/s, stage (%d workers) %.1f img/s", d.tag,
                     rows[d.tag]["serial_images_per_s"], workers, rows[d.tag]["stage_images_per_s"])
    payload = {"benchmark": "degrade", "dataset": dataset, "scale": scale,
               "lr_sizes": sorted({f"{h.shape[0] // scale}x{h.shape[1] // scale}" for h in hrs}),
               "cpu_count": os.cpu_count(),
               "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
               "repeats": repeats, "codecs": rows}
    from harness.provenance import write_json
    return write_json(out, payload, cfg=cfg, device=device)
