"""Benchmark: the whole smoke pipeline on a fresh clone, then a second run (a no-op).

Clones the repository's HEAD into a temporary folder (no data/, no models/: everything
runs), times ``dvc repro`` twice, and compares the metric values it produced with the
ones in this checkout's ``results/metrics`` (the figures of two runs must be identical;
provenance times and per-image seconds are not metrics and are ignored).
Writes ``results/bench/pipeline.json``.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.check import collect
from harness.provenance import write_json

log = logging.getLogger(__name__)


def _timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} after {dt:.0f} s:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dt, r.stdout


def run(cfg, out: Path, device=None) -> Path:
    root = Path.cwd()
    tmp = Path(tempfile.mkdtemp(prefix="csrbench-pipeline-"))
    try:
        subprocess.run(["git", "clone", "-q", str(root), str(tmp / "repo")], check=True)
        repo = tmp / "repo"
        log.info("fresh clone in %s: dvc repro (this is the whole smoke pipeline)", repo)
        first, _ = _timed(["dvc", "repro"], repo)
        second, stdout2 = _timed(["dvc", "repro"], repo)
        ours, theirs = collect(root / "results" / "metrics"), collect(repo / "results" / "metrics")
        same = {k: (ours[k].psnr_y, ours[k].ssim_y) == (theirs[k].psnr_y, theirs[k].ssim_y)
                for k in ours if k in theirs}
        payload = {
            "profile": cfg.profile,
            "first_repro_seconds": round(first, 1),
            "second_repro_seconds": round(second, 1),
            "second_repro_was_noop": "Running stage" not in stdout2,
            "goal_seconds": 600,
            "metrics_rows_compared": len(same),
            "metrics_identical_to_checkout": all(same.values()) and len(same) == len(ours) == len(theirs),
            "differing_rows": [" ".join(map(str, k)) for k, v in same.items() if not v],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return write_json(out, payload, cfg=cfg, device="cpu")
