"""Benchmark ``csrbench bench rehearsal``: the rehearsal preset end to end, and where its time goes.

Clones the repository's HEAD into a temporary folder, switches the clone to the ``rehearsal``
preset (``csrbench profile rehearsal``) and times ``dvc repro`` there stage by stage, then runs
``dvc repro`` again (it must be a no-op). The goal of issue 17 is 30 min on 2 CPU cores.

Every csrbench command appends its start, ready (params loaded and checked, so Python, torch
and the models are imported) and end times to a log (``CSRBENCH_TIMING_LOG``, see
:mod:`harness.cli`). That splits each stage's seconds into:

- ``imports``: the command's start-up, up to ``ready``;
- ``work``: the rest of the command (data, network building, compute, checkpoints, results);
- ``dvc``: the remainder of the stage, spent by DVC around the command (hashing deps and outs,
  copying outs into its cache, reading and rewriting ``dvc.lock``).

Writes ``results/bench/rehearsal.json``. Takes about 50 min on 2 CPU cores and needs about
50 GB free where the temporary folder goes (``TMPDIR``): the checkpoints and DVC's copy of them.
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
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.bench.pipeline import timed_stages
from harness.cli import TIMING_ENV
from harness.config import load
from harness.provenance import write_json
from harness.runtime import resolve_device

__all__ = ["run", "split_stages", "by_group", "lock_growth", "fit_line", "GOAL_SECONDS", "FREE_DISK_GB"]

log = logging.getLogger(__name__)

GOAL_SECONDS = 30 * 60
FREE_DISK_GB = 50  # measured at d008774: models/ 23 GB and .dvc/cache 23 GB after the rehearsal


def split_stages(windows: list[tuple[str, float, float]], commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stage's seconds split into the csrbench commands' imports and work, and DVC's remainder.

    Args:
        windows: (stage, start, end) wall-clock times, in the order run (``timed_stages``).
        commands: the timing log's records (``start``, ``ready``, ``end``); a command belongs to
            the stage whose window holds its start.
    """
    rows = []
    for name, start, end in windows:
        inside = [c for c in commands if start <= c["start"] < end]
        command = sum(c["end"] - c["start"] for c in inside)
        imports = sum(c.get("ready", c["end"]) - c["start"] for c in inside)
        rows.append({"stage": name, "seconds": round(end - start, 2), "imports": round(imports, 2),
                     "work": round(command - imports, 2), "dvc": round(end - start - command, 2),
                     "commands": len(inside)})
    return rows


def by_group(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Sums per stage group (the name before ``@``: ``train``, ``evaluate``, ...), in the order first run."""
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"stages": 0, "seconds": 0.0, "imports": 0.0,
                                                               "work": 0.0, "dvc": 0.0})
    for r in rows:
        g = groups[r["stage"].split("@")[0]]
        g["stages"] += 1
        for k in ("seconds", "imports", "work", "dvc"):
            g[k] += r[k]
    return {name: {k: round(v, 1) for k, v in g.items()} for name, g in groups.items()}


_LOCK_STAGE = re.compile(r"^  ['\"]?([^\s'\":][^'\":]*)['\"]?:\s*$")


def _entry_bytes(lock_text: str) -> dict[str, int]:
    """Bytes of each stage's entry in a ``dvc.lock`` text."""
    sizes: dict[str, int] = {}
    name = None
    for line in lock_text.splitlines(keepends=True):
        m = _LOCK_STAGE.match(line)
        if m:
            name = m.group(1)
        if name is not None:
            sizes[name] = sizes.get(name, 0) + len(line.encode())
    return sizes


def lock_growth(before: str, after: str, order: list[str]) -> list[int]:
    """Bytes of ``dvc.lock`` before each stage of ``order`` ran, from the lock before and after the run.

    DVC writes a stage's entry when the stage ends: before stage i the lock holds the new entries of
    the stages run before it and the old entries (``before``) of the others.
    """
    old, new = _entry_bytes(before), _entry_bytes(after)
    header = len(before.encode()) - sum(old.values())
    out, done = [], set()
    for stage in order:
        out.append(header + sum(new.get(s, 0) for s in done) + sum(b for s, b in old.items() if s not in done))
        done.add(stage)
    return out


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys on xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(out: Path = Path("results/bench/rehearsal.json"), device=None) -> Path:
    """``device`` is not used: the stages run where the rehearsal preset says (``device: auto``)."""
    root = Path.cwd()
    tmp = Path(tempfile.mkdtemp(prefix="csrbench-rehearsal-"))
    try:
        free_gb = shutil.disk_usage(tmp).free / 1e9
        if free_gb < FREE_DISK_GB:
            raise RuntimeError(f"bench rehearsal: {tmp} has {free_gb:.0f} GB free, the rehearsal needs about "
                               f"{FREE_DISK_GB} GB (set TMPDIR to a folder on a larger disk)")
        repo = tmp / "repo"
        subprocess.run(["git", "clone", "-q", str(root), str(repo)], check=True)
        env = dict(os.environ, PYTHONPATH=str(repo))
        subprocess.run([sys.executable, "-m", "harness.cli", "profile", "rehearsal"], cwd=repo, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        log.info("fresh clone in %s, rehearsal preset: dvc repro (about 50 min on 2 CPU cores)", repo)
        timing = tmp / "timing.jsonl"
        lock_before = (repo / "dvc.lock").read_text() if (repo / "dvc.lock").is_file() else ""
        load_before = os.getloadavg()
        first, windows = timed_stages(["dvc", "repro"], repo, **{TIMING_ENV: str(timing)})
        load_after = os.getloadavg()
        second, windows2 = timed_stages(["dvc", "repro"], repo)
        commands = _read_log(timing)
        rows = split_stages(windows, commands)
        lock_after = (repo / "dvc.lock").read_text()
        kb = [b / 1e3 for b in lock_growth(lock_before, lock_after, [r["stage"] for r in rows])]
        for r, k in zip(rows, kb):
            r["lock_kb_before"] = round(k, 1)
        intercept, slope = fit_line(kb[1:], [r["dvc"] for r in rows[1:]])  # the first also starts DVC up
        total = {k: round(sum(r[k] for r in rows), 1) for k in ("imports", "work", "dvc")}
        cfg = load(repo / "params.yaml")
        payload = {
            "what": "git clone of HEAD into a temporary folder, `csrbench profile rehearsal`, then `dvc repro` "
                    "twice, with this interpreter's packages and the clone's code; each stage's seconds split "
                    "into the csrbench command's imports (to params loaded and checked) and work, and DVC's "
                    "remainder",
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "first_repro_seconds": round(first, 1),
            "goal_seconds": GOAL_SECONDS,
            "goal_met": first <= GOAL_SECONDS,
            "stages_run": len(rows),
            "commands_failed": sum(1 for c in commands if c.get("rc") != 0),
            "seconds_before_the_first_stage": round(first - sum(r["seconds"] for r in rows), 1),
            "total": total,
            "work_alone_meets_goal": total["work"] <= GOAL_SECONDS,
            "groups": by_group(rows),
            "dvc_seconds_per_stage_vs_lock": {
                "fit": "least squares over every stage but the first: dvc = intercept + slope * dvc.lock KB",
                "intercept_s": round(intercept, 2), "s_per_100_kb": round(100 * slope, 2),
                "lock_kb_at_end": round(len(lock_after.encode()) / 1e3, 1)},
            "second_repro_seconds": round(second, 1),
            "second_repro_was_noop": not windows2,
            "second_repro_stages_run": sorted(name for name, _, _ in windows2),
            "report_written": (repo / "results" / "report" / "index.html").is_file(),
            "stages": rows,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return write_json(out, payload, cfg=cfg, device=resolve_device(cfg.device))
