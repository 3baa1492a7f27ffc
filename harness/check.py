"""Stage ``check``: fail when PSNR / SSIM regress against a baseline.

The baseline is either the committed reference folder of the profile
(``check.reference``, ``results/reference/<profile>``, same layout as
``results/metrics``) or the metrics committed at a git revision (``csrbench check
--against REV``). Every (model, scale, codec, level, dataset) of the baseline must
still exist, and its ``psnr_y`` may drop by at most ``check.psnr_drop_db`` dB and
``ssim_y`` by at most ``check.ssim_drop``. Figures of different profiles (smoke vs
paper) are never compared: a reference holding another profile's rows is an error.

A profile without a reference yet (the first paper run) is reported as such, in
one line, and ``check.missing_reference`` decides: ``fail`` exits 1, ``pass``
exits 0. Either way the line says to run ``csrbench check --update`` once the
figures are trusted.

Exit code 0: no regression (or no reference and ``missing_reference: pass``);
1: regression or a baseline row missing now (each named with model, dataset,
codec, level, old and new value), or no reference and ``missing_reference: fail``.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["Row", "Finding", "collect", "collect_at_revision", "compare", "run", "update_reference"]

log = logging.getLogger(__name__)

METRICS = {"psnr_y": "psnr_drop_db", "ssim_y": "ssim_drop"}  # metric -> params key of its allowed drop


@dataclass(frozen=True)
class Row:
    model: str
    scale: int
    codec: str
    level: int
    dataset: str
    profile: str | None
    psnr_y: float | None
    ssim_y: float | None

    @property
    def key(self) -> tuple:
        return (self.model, self.scale, self.codec, self.level, self.dataset)

    def where(self) -> str:
        return f"model={self.model} dataset={self.dataset} codec={self.codec} level={self.level} x{self.scale}"


@dataclass(frozen=True)
class Finding:
    row: Row
    metric: str
    old: float | None
    new: float | None
    limit: float

    def __str__(self) -> str:
        if self.new is None and self.old is not None:
            return f"MISSING {self.row.where()}: {self.metric} was {self.old:.4f}, no result now"
        return (f"REGRESSION {self.row.where()}: {self.metric} {self.old:.4f} -> {self.new:.4f} "
                f"({self.new - self.old:+.4f}, allowed -{self.limit})")


def _rows(text: str, source: str) -> list[Row]:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e})") from None
    try:
        profile = d.get("profile") or (d.get("provenance") or {}).get("profile")
        return [Row(d["model"], int(d["scale"]), d["codec"], int(d["level"]), ds, profile,
                    m.get("psnr_y"), m.get("ssim_y")) for ds, m in d["datasets"].items()]
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{source}: not a metrics file (missing {e})") from None


def collect(folder: Path) -> dict[tuple, Row]:
    """Every row of every ``<model>/<tag>.json`` below ``folder``."""
    rows: dict[tuple, Row] = {}
    for p in sorted(Path(folder).glob("*/*.json")):
        for r in _rows(p.read_text(), str(p)):
            rows[r.key] = r
    return rows


def collect_at_revision(rev: str, folder: str = "results/metrics", repo: Path = Path(".")) -> dict[tuple, Row]:
    """The rows of the metrics committed at git revision ``rev``."""
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if r.returncode:
            raise ValueError(f"git {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout
    git("rev-parse", "--verify", f"{rev}^{{commit}}")
    rows: dict[tuple, Row] = {}
    for path in git("ls-tree", "-r", "--name-only", rev, "--", folder).split():
        if path.endswith(".json") and path.count("/") == folder.count("/") + 2:
            for r in _rows(git("show", f"{rev}:{path}"), f"{rev}:{path}"):
                rows[r.key] = r
    return rows


def compare(old: dict[tuple, Row], new: dict[tuple, Row], psnr_drop_db: float, ssim_drop: float) -> list[Finding]:
    """Regressions and vanished rows of ``new`` against ``old`` (rows only in ``new`` are fine)."""
    limits = {"psnr_y": psnr_drop_db, "ssim_y": ssim_drop}
    findings = []
    for key, o in sorted(old.items()):
        n = new.get(key)
        if n is not None and o.profile and n.profile and o.profile != n.profile:
            raise ValueError(f"{o.where()}: baseline is profile {o.profile!r}, current is {n.profile!r}; "
                             "figures of different profiles are not comparable")
        for metric, limit in limits.items():
            ov = getattr(o, metric)
            nv = getattr(n, metric) if n is not None else None
            if ov is None:
                continue
            if nv is None or nv < ov - limit - 1e-12:
                findings.append(Finding(o if n is None else n, metric, ov, nv, limit))
    return findings


def update_reference(results: Path, reference: Path) -> Path:
    """Copy the current metrics to the reference folder (after a deliberate change)."""
    src = Path(results) / "metrics"
    if not any(src.glob("*/*.json")):
        raise FileNotFoundError(f"{src}: no metrics files to make a reference from (run `dvc repro` first)")
    tmp = Path(f"{reference}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(reference, ignore_errors=True)
    tmp.replace(reference)
    return Path(reference)


def _print(findings: Iterable[Finding], n_rows: int, baseline: str) -> None:
    findings = list(findings)
    for f in findings:
        print(f)
    status = "FAIL" if findings else "OK"
    print(f"check {status}: {n_rows} baseline rows from {baseline}, {len(findings)} problem(s)")


def _no_reference(cfg, folder: Path) -> int:
    """No reference rows for this profile: say so, and pass or fail as ``check.missing_reference`` says."""
    verdict = "SKIPPED (check.missing_reference: pass)" if cfg.check.missing_reference == "pass" \
        else "FAIL (check.missing_reference: fail)"
    print(f"check {verdict}: no reference for profile {cfg.profile!r} in {folder}; once these figures are "
          f"trusted, run `csrbench check --update` and commit {folder}")
    return 0 if cfg.check.missing_reference == "pass" else 1


def run(cfg, results: Path, against: str | None = None, baseline: Path | None = None,
        update: bool = False) -> int:
    """Compare ``results/metrics`` with the baseline; returns the process exit code."""
    if update:
        path = update_reference(results, Path(baseline or cfg.check.reference))
        print(f"reference updated: {path}")
        return 0
    new = collect(Path(results) / "metrics")
    if against is not None:
        old, source = collect_at_revision(against), f"git revision {against}"
        if not old:
            raise ValueError(f"{source}: holds no metrics rows to compare against")
    else:
        folder = Path(baseline or cfg.check.reference)
        old = collect(folder) if folder.is_dir() else {}
        source = str(folder)
        if not old:
            return _no_reference(cfg, folder)
        other = sorted({r.profile for r in old.values() if r.profile and r.profile != cfg.profile})
        if other:
            raise ValueError(f"{folder}: reference holds profile {', '.join(map(repr, other))} figures, the params "
                             f"profile is {cfg.profile!r}; point check.reference at results/reference/{cfg.profile}")
    findings = compare(old, new, cfg.check.psnr_drop_db, cfg.check.ssim_drop)
    _print(findings, len(old), source)
    return 1 if findings else 0
