"""Benchmark: the whole smoke pipeline on a fresh clone, then a second run (a no-op).

Clones the repository's HEAD into a temporary folder (no data/, no models/: everything
runs), times ``dvc repro`` twice, and compares the metric values it produced with the
ones in this checkout's ``results/metrics`` (the figures of two runs must be identical;
provenance times and per-image seconds are not metrics and are ignored).
Also records each stage's seconds in the first run and the load average around it.
Writes ``results/bench/pipeline.json``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.check import collect
from harness.provenance import write_json

log = logging.getLogger(__name__)


_STAGE = re.compile(r"Running stage '([^']+)'")


def _timed(cmd: list[str], cwd: Path) -> tuple[float, dict[str, float]]:
    """Run ``cmd`` in ``cwd``; returns (seconds, seconds per DVC stage in the order run)."""
    dt, windows = timed_stages(cmd, cwd)
    return dt, {name: round(end - start, 1) for name, start, end in windows}


def timed_stages(cmd: list[str], cwd: Path, **env_extra: str) -> tuple[float, list[tuple[str, float, float]]]:
    """Run ``cmd`` (``dvc repro``) in ``cwd`` with extra environment variables.

    Returns (seconds, [(stage, start, end)]) in the order run, start and end in wall-clock seconds
    (``time.time()``); a stage lasts from DVC's "Running stage" line to the next one (or the end).
    """
    # the clone's own code (not this checkout's editable install), with this interpreter's packages
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(cwd), **env_extra)
    t0, wall0 = time.perf_counter(), time.time()
    lines, starts = [], []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            m = _STAGE.match(line)
            if m:
                starts.append((m.group(1), wall0 + time.perf_counter() - t0))
    dt = time.perf_counter() - t0
    out = "".join(lines)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} after {dt:.0f} s:\n{out[-4000:]}")
    ends = [t for _, t in starts[1:]] + [wall0 + dt]
    return dt, [(name, t, end) for (name, t), end in zip(starts, ends)]


def _textzoom_scores(results: Path) -> dict[str, object]:
    """Accuracy and PSNR/SSIM per model and split from ``results/textzoom/*.json``."""
    out = {}
    for p in sorted((results / "textzoom").glob("*.json")):
        d = json.loads(p.read_text())
        out[p.stem] = {sp: {k: v[k] for k in ("sr", "bicubic", "hr")} for sp, v in d.get("splits", {}).items()}
    return out


def run(cfg, out: Path, device=None) -> Path:
    root = Path.cwd()
    tmp = Path(tempfile.mkdtemp(prefix="csrbench-pipeline-"))
    try:
        subprocess.run(["git", "clone", "-q", str(root), str(tmp / "repo")], check=True)
        repo = tmp / "repo"
        log.info("fresh clone in %s: dvc repro (this is the whole smoke pipeline)", repo)
        load_before = os.getloadavg()
        first, stages = _timed(["dvc", "repro"], repo)
        second, stages2 = _timed(["dvc", "repro"], repo)
        ours, theirs = collect(root / "results" / "metrics"), collect(repo / "results" / "metrics")
        same = {k: (ours[k].psnr_y, ours[k].ssim_y) == (theirs[k].psnr_y, theirs[k].ssim_y)
                for k in ours if k in theirs}
        tz_same = _textzoom_scores(root / "results") == _textzoom_scores(repo / "results")
        payload = {
            "profile": cfg.profile,
            "what": "git clone of HEAD into a temporary folder (no data/, models/, DVC cache or numba cache), "
                    "then `dvc repro` twice, with this interpreter's packages and the clone's code",
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "first_repro_seconds": round(first, 1),
            "first_repro_stage_seconds": stages,
            "second_repro_seconds": round(second, 1),
            "second_repro_was_noop": not stages2,
            "second_repro_stages_run": sorted(stages2),
            "goal_seconds": 600,
            "goal_met": first <= 600,
            "textzoom_scores_identical_to_checkout": tz_same,
            "metrics_rows_compared": len(same),
            "metrics_identical_to_checkout": all(same.values()) and len(same) == len(ours) == len(theirs),
            "differing_rows": [" ".join(map(str, k)) for k, v in same.items() if not v],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return write_json(out, payload, cfg=cfg, device="cpu")
