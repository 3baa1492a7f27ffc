"""Stage ``report``: every result of ``results/`` on one self-contained HTML page.

``csrbench report`` reads (never computes) the stage outputs and renders
``harness/report/templates/index.html.j2`` into ``results/report/index.html``;
images are embedded as base64 ``data:`` URIs so the page is one file that opens
offline. Sections:

* Table 1 (MambaCSR paper, x4 compressed SR): per degradation and model, every
  PSNR / SSIM cell shows paper, ours and ours - paper, green when ours is at
  least the paper's, red when below; Params / GFLOPs cells compare the paper's
  counting method (``results/complexity.json``) with the printed figures.
* Ablation Tables 2-4 and the MambaIR classic x2 table, the same way.
* Complexity: true vs paper-method vs printed counts with the delta and reason
  per entry, latency and peak memory, the note that Table 1's SwinIR and
  Swin2SR rows appear swapped.
* ERF grid (``results/erf``), training curves (``results/curves/**.csv``), the
  codec table (bpp / PSNR of the LR images from ``data/lr/**/manifest.json``),
  visual crops (compressed LR, each model's SR, HR) that ``csrbench evaluate``
  saved under ``results/visual`` (:mod:`harness.visual`), benchmark figures
  (``results/bench/*.json``) and a provenance block gathered from the results'
  provenance blocks.

Honesty rules the page keeps: published numbers come only from
``harness/paper/*.csv`` (:mod:`harness.paper_tables`); a figure from the smoke
profile carries a "smoke" badge and the page a banner ("SMOKE PROFILE — not
paper figures"); a run trained for fewer iterations than its profile asks is
badged "unfinished"; anything missing renders as "—" with the stage that
produces it. Nothing here raises on a missing or partial result.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import platform
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from harness import paper_tables as pt
from harness.config import Config
from harness.provenance import write_text

__all__ = ["run", "gather", "render_html", "DASH"]

log = logging.getLogger("csrbench.report")
# Profiles whose numbers are never paper figures: each row gets a badge with the profile's name.
NOT_PAPER_FIGURES = ("smoke", "rehearsal")

DASH = "—"
MEGA, GIGA = 1e6, 1e9  # parameters are shown in M, MACs in G, as in the paper's tables
TEMPLATES = Path(__file__).parent / "templates"
PAPER_MODELS = ("SwinIR", "Swin2SR", "HST", "HAT", "MambaIR", "MambaCSR")


# ----------------------------------------------------------------------------- small helpers

def _json_error(path: Path) -> str | None:
    """Why ``path`` is not a readable JSON object, or None when it is (listed on the page by :func:`gather`)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None if isinstance(data, dict) else f"not a JSON object but {type(data).__name__}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError) as e:
        log.warning("report: skipping %s (%s)", path, e)
        return None


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@lru_cache(maxsize=None)
def _profile_iterations(profile: str, section: str = "train") -> int | None:
    """``<section>.iterations`` of a shipped preset (the target a finished run reached)."""
    from harness.config import ConfigError, load, profile_path
    try:
        return getattr(load(profile_path(profile)), section).iterations
    except ConfigError:  # a profile name that is not a shipped preset gets no target
        return None


def _profile_of(rec: dict[str, Any]) -> str | None:
    return rec.get("profile") or (rec.get("provenance") or {}).get("profile")


def badges_of(rec: dict[str, Any] | None, iterations: Any = None, section: str = "train") -> list[dict[str, str]]:
    """Labels a result row carries: ``smoke`` and/or ``unfinished`` (with the iteration count).

    ``iterations`` defaults to the record's own; ``section`` names the params section whose
    ``iterations`` is the target (``textzoom`` for text SR runs).
    """
    if not rec:
        return []
    out = []
    profile = _profile_of(rec)
    if profile in NOT_PAPER_FIGURES:
        out.append({"cls": "smoke", "text": profile})
    it = rec.get("iterations") if iterations is None else iterations
    target = _profile_iterations(profile, section) if profile else None
    if isinstance(it, int) and target and it < target:
        out.append({"cls": "unfinished", "text": f"unfinished {it}/{target} it"})
    return out


def _cell(paper: Any, ours: Any, digits: int, *, higher_is_better: bool = True) -> dict[str, Any]:
    """A comparison cell: paper, ours, ours - paper, and the colour class of the difference."""
    p, o = _num(paper), _num(ours)
    d = None if p is None or o is None else o - p
    cls = "" if d is None else ("pos" if (d >= 0) == higher_is_better else "neg")
    f = (lambda v: DASH if v is None else f"{v:.{digits}f}")
    return {"paper": f(p), "ours": f(o), "delta": DASH if d is None else f"{d:+.{digits}f}", "cls": cls,
            "has_ours": o is not None}


def _count_cell(paper: Any, ours: Any, digits: int = 2) -> dict[str, Any]:
    """A count cell (params / GFLOPs): the delta in percent; green within 1 %, red beyond."""
    p, o = _num(paper), _num(ours)
    d = None if p is None or o is None or p == 0 else (o - p) / p * 100
    f = (lambda v: DASH if v is None else f"{v:.{digits}f}")
    return {"paper": f(p), "ours": f(o), "delta": DASH if d is None else f"{d:+.1f} %",
            "cls": "" if d is None else ("pos" if abs(d) <= 1 else "neg"), "has_ours": o is not None}


# ----------------------------------------------------------------------------- metrics

def load_metrics(results: Path) -> dict[tuple[str, int, str, int], dict[str, Any]]:
    """``results/metrics/<model>/x<s>_<codec>_<level>.json`` by (model, scale, codec, level)."""
    out: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    for path in sorted((Path(results) / "metrics").glob("*/x*_*_*.json")):
        rec = _read_json(path)
        if rec is None:
            continue
        try:
            key = (rec.get("model") or path.parent.name, int(rec["scale"]), str(rec["codec"]), int(rec["level"]))
        except (KeyError, TypeError, ValueError):
            stem = path.stem.split("_")
            try:
                key = (path.parent.name, int(stem[0][1:]), stem[1], int(stem[2]))
            except (IndexError, ValueError):
                log.warning("report: %s has no scale/codec/level", path)
                continue
        rec["_path"] = str(path)
        out[key] = rec
    return out


def _pick(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Prefer a paper-profile result over a smoke one, then a longer training."""
    if not recs:
        return None
    return sorted(recs, key=lambda r: (_profile_of(r) == "paper", r.get("iterations") or 0))[-1]


def _dataset_score(rec: dict[str, Any] | None, column: str, metric: str) -> float | None:
    """Our mean ``psnr_y`` / ``ssim_y`` for the dataset whose CSV column prefix is ``column``."""
    if not rec:
        return None
    for ds, v in (rec.get("datasets") or {}).items():
        if (pt.dataset_column(ds) or ds) == column and isinstance(v, dict):
            return _num(v.get(metric))
    return None


def _extra_datasets(recs: Iterable[dict[str, Any] | None], known: Sequence[str]) -> list[str]:
    extra: list[str] = []
    for r in recs:
        for ds in (r or {}).get("datasets") or {}:
            col = pt.dataset_column(ds) or ds
            if col not in known and col not in extra:
                extra.append(col)
    return extra


def _rows_by_paper_model(metrics: dict, scale: int, codec: str, level: int,
                         mapper: Callable[[str], str | None]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, s, c, lv), rec in metrics.items():
        row = mapper(model)
        if row and s == scale and c == codec and lv == level:
            grouped[row].append(rec)
    return {row: _pick(recs) for row, recs in grouped.items()}


def _complexity_by_row(complexity: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out = {}
    for name, rec in ((complexity or {}).get("models") or {}).items():
        row = pt.paper_row_of(name)
        if row:
            out[row] = rec
    return out


_SWAP_ROW_NOTE = {row: f"Params / GFLOPs printed here are {other}'s (rows swapped, see the note)"
                  for row, other in pt.SWAPPED_COMPLEXITY_ROWS.items()}


#: Networks of released checkpoints -> the Table 1 row they stand beside (Swin2SR: its AIM 2022 JPEG x4 release).
RELEASED_TABLE1_ROW: dict[str, str] = {
    "mambacsr": "MambaCSR", "swin2sr_compressed_x4": "Swin2SR", "hst": "HST", "hat": "HAT", "mambair": "MambaIR",
    "swinir": "SwinIR",
}


def _released_recs(metrics: dict, scale: int, codec: str, level: int,
                   row_of: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``csrbench released`` metrics (model ``<network>_released``) at one degradation, by the paper row
    their network stands for in ``row_of``."""
    out: dict[str, dict[str, Any]] = {}
    for (model, s, c, lv), rec in metrics.items():
        row = row_of.get(rec.get("network") or "") if model.endswith("_released") else None
        if row and (s, c, lv) == (scale, codec, level):
            out[row] = rec
    return out


def released_rows(recs: dict[str, dict[str, Any]], paper_rows: Sequence[dict[str, Any]],
                  datasets: Sequence[str]) -> list[dict[str, Any]]:
    """Rows "<row> — released weights, scored here": the official checkpoint scored by this code,
    beside the paper's figures (same row layout as Table 1 and the classic x2 table)."""
    rows = []
    for row, rec in recs.items():
        prow = next((r for r in paper_rows if r["model"] == row), {})
        rel = rec.get("released") or {}
        note = (f"{Path(rel.get('file') or '?').name}, sha256 {(rel.get('sha256') or '?')[:12]}, "
                f"{rel.get('fidelity')} behaviour, weights from {rel.get('params_key') or 'a bare state dict'}")
        rows.append({
            "model": f"{row} — released weights, scored here", "ours_model": rec.get("model"),
            "badges": badges_of(rec), "mapped": True, "missing": False, "released": True,
            "params": _count_cell(prow.get("params_m"), None), "gflops": _count_cell(prow.get("gflops"), None),
            "cells": [(_cell(prow.get(f"{d}_psnr"), _dataset_score(rec, d, "psnr_y"), 2),
                       _cell(prow.get(f"{d}_ssim"), _dataset_score(rec, d, "ssim_y"), 4)) for d in datasets],
            "note": note,
        })
    return rows


def table1_section(metrics: dict, complexity: dict[str, Any] | None, scale: int = 4) -> dict[str, Any]:
    """Table 1 blocks, one per degradation: paper rows with our cells beside them."""
    paper = pt.compression_table()   # Table 1 (JPEG, HEVC) + supplementary Table 5 (VVC)
    degs: list[tuple[str, int]] = []
    for r in paper:
        if (r["codec"], int(r["level"])) not in degs:
            degs.append((r["codec"], int(r["level"])))
    for (model, s, c, lv) in metrics:
        if s == scale and c != "none" and pt.paper_row_of(model) and (c, lv) not in degs:
            degs.append((c, lv))
    cols = ["set5", "set14", "manga109", "urban100", "div2k"]
    comp = _complexity_by_row(complexity)
    blocks = []
    for codec, level in degs:
        ours = _rows_by_paper_model(metrics, scale, codec, level, pt.paper_row_of)
        released = _released_recs(metrics, scale, codec, level, RELEASED_TABLE1_ROW)
        datasets = cols + _extra_datasets([*ours.values(), *released.values()], cols)
        rows = []
        for model in PAPER_MODELS:
            prow = next((r for r in paper if r["model"] == model and r["codec"] == codec
                         and int(r["level"]) == level), {})
            rec = ours.get(model)
            crec = comp.get(model) or {}
            pm = crec.get("paper_method") or {}
            rows.append({
                "model": model,
                "ours_model": (rec or {}).get("model"),
                "badges": badges_of(rec),
                "params": _count_cell(prow.get("params_m"), None if pm.get("params") is None else pm["params"] / MEGA),
                "gflops": _count_cell(prow.get("gflops"), None if pm.get("macs") is None else pm["macs"] / GIGA),
                "cells": [(_cell(prow.get(f"{d}_psnr"), _dataset_score(rec, d, "psnr_y"), 2),
                           _cell(prow.get(f"{d}_ssim"), _dataset_score(rec, d, "ssim_y"), 4)) for d in datasets],
                "note": "; ".join(x for x in (prow.get("note"), _SWAP_ROW_NOTE.get(model)) if x) or None,
                "missing": rec is None,
            })
        rows += released_rows(released, [r for r in paper if r["codec"] == codec and int(r["level"]) == level],
                              datasets)
        blocks.append({"codec": codec, "level": level, "datasets": datasets, "rows": rows,
                       "table": next((r["table"] for r in paper if r["codec"] == codec), None),
                       "any_ours": any(not r["missing"] for r in rows),
                       "in_paper": any(r["codec"] == codec and int(r["level"]) == level for r in paper)})
    return {"blocks": blocks, "swap_note": pt.SWAPPED_ROWS_NOTE}


def generalization_section(results: Path) -> dict[str, Any] | None:
    """Codec generalization (``results/generalization``): per test set, trained runs x test codecs.

    A cell is PSNR-Y / SSIM-Y at the matched level, the test bpp beside the training bpp, and the
    PSNR difference to the same run on its own training codec (the in-distribution diagonal).
    """
    recs = [r for p in sorted((Path(results) / "generalization").glob("*/x*_*_*.json")) if (r := _read_json(p))]
    if not recs:
        return None
    order = {c: i for i, c in enumerate(("none", "jpeg", "hevc", "vvc", "webp", "avc"))}
    recs.sort(key=lambda r: (str(r.get("model")), order.get((r.get("trained_on") or {}).get("codec"), len(order)),
                             (r.get("trained_on") or {}).get("level") or 0))
    codecs_: list[str] = []
    for r in recs:
        codecs_ += [c for c in r.get("test_codecs") or [] if c not in codecs_]
    blocks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        tr = r.get("trained_on") or {}
        for ds, v in (r.get("datasets") or {}).items():
            per = v.get("codecs") or {}
            own = _num((per.get(tr.get("codec")) or {}).get("psnr_y"))
            cells = []
            for c in codecs_:
                t = per.get(c)
                if not t:
                    cells.append(None)
                    continue
                p, s_ = _num(t.get("psnr_y")), _num(t.get("ssim_y"))
                d = None if p is None or own is None or t.get("in_distribution") else p - own
                cells.append({"level": t.get("level"), "bpp": _num(t.get("bpp")), "train_bpp": _num(t.get("train_bpp")),
                              "psnr": DASH if p is None else f"{p:.2f}", "ssim": DASH if s_ is None else f"{s_:.4f}",
                              "delta": DASH if d is None else f"{d:+.2f}", "cls": "" if d is None else
                              ("pos" if d >= 0 else "neg"), "own": bool(t.get("in_distribution")),
                              "at_end": bool(t.get("at_range_end"))})
            blocks[ds].append({"model": r.get("model"), "trained": f"{tr.get('codec')}_{tr.get('level')}",
                               "badges": badges_of(r), "cells": cells})
    return {"codecs": codecs_, "blocks": [{"dataset": ds, "rows": rows} for ds, rows in blocks.items()]}


def ablation_section(metrics: dict, complexity: dict[str, Any] | None, scale: int, codec: str,
                     level: int) -> dict[str, Any]:
    """Tables 2-4 with our ablation runs (preferred model of each row first)."""
    comp = (complexity or {}).get("models") or {}
    by_base: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, s, c, lv), rec in metrics.items():
        if s == scale and c == codec and lv == level:
            by_base[pt.base_name(model)].append(rec)
    rows = list(pt.ablations())
    datasets = ["manga109", "urban100"]
    chosen = []
    for r in rows:
        rec, cand = None, None
        for cand in pt.ABLATION_MODELS.get((int(r["table"]), r["variant"]), ()):
            rec = _pick(by_base.get(cand, []))
            if rec is not None:
                break
        chosen.append((r, rec, cand))
    datasets += _extra_datasets((c[1] for c in chosen), datasets)
    tables: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r, rec, cand in chosen:
        cands = pt.ABLATION_MODELS.get((int(r["table"]), r["variant"]), ())
        crec = next((comp[c] for c in cands if c in comp), None)
        macs = ((crec or {}).get("paper_method") or {}).get("macs")
        tables[int(r["table"])].append({
            "variant": r["variant"], "ours_model": (rec or {}).get("model") or (cands[0] if cands else None),
            "badges": badges_of(rec), "missing": rec is None,
            "gflops": _count_cell(r["gflops"], None if macs is None else macs / GIGA),
            "cells": [(_cell(r.get(f"{d}_psnr"), _dataset_score(rec, d, "psnr_y"), 2),
                       _cell(r.get(f"{d}_ssim"), _dataset_score(rec, d, "ssim_y"), 4)) for d in datasets],
            "note": r.get("note"),
        })
    return {"tables": [{"number": n, "rows": tables[n]} for n in sorted(tables)], "datasets": datasets,
            "tag": f"x{scale}_{codec}_{level}"}


def classic_section(metrics: dict) -> dict[str, Any]:
    """MambaIR classic x2 table with our x2 (codec none) runs on the mapped rows."""
    rev = defaultdict(list)
    for (model, s, c, lv), rec in metrics.items():
        row = pt.CLASSIC_X2_ROW.get(pt.base_name(model))
        if row and s == 2 and c == "none":
            rev[row].append(rec)
    datasets = ["set5", "set14", "bsd100", "urban100", "manga109"]
    ours = {row: _pick(recs) for row, recs in rev.items()}
    released = _released_recs(metrics, 2, "none", 0, pt.CLASSIC_X2_ROW)
    datasets += _extra_datasets([*ours.values(), *released.values()], datasets)
    rows = []
    for r in pt.classic_x2():
        rec = ours.get(r["model"])
        rows.append({"model": r["model"], "ours_model": (rec or {}).get("model"), "badges": badges_of(rec),
                     "mapped": r["model"] in pt.CLASSIC_X2_ROW.values(), "missing": rec is None,
                     "cells": [(_cell(r.get(f"{d}_psnr"), _dataset_score(rec, d, "psnr_y"), 2),
                                _cell(r.get(f"{d}_ssim"), _dataset_score(rec, d, "ssim_y"), 4)) for d in datasets],
                     "note": r.get("note")})
    rows += released_rows(released, list(pt.classic_x2()), datasets)
    return {"rows": rows, "datasets": datasets}


def textzoom_section(results: Path) -> dict[str, Any]:
    """Text SR rows from ``results/textzoom/<model>.json``: per split, recognition accuracy and PSNR/SSIM-Y
    of the model's SR, of bicubic, and the recogniser on HR (its upper bound)."""
    rows = []
    splits = ["easy", "medium", "hard", "average"]
    f = (lambda v, d: DASH if _num(v) is None else f"{_num(v):.{d}f}")
    for path in sorted((Path(results) / "textzoom").glob("*.json")):
        rec = _read_json(path)
        if rec is None or "splits" not in rec:
            continue
        by = {**rec["splits"], "average": rec.get("average", {})}
        trained = rec.get("trained") or {}
        cells = []
        for sp in splits:
            s = by.get(sp) or {}
            sr, bic, hr = s.get("sr", {}), s.get("bicubic", {}), s.get("hr", {})
            cells.append({"n": s.get("n"), "acc_sr": f(sr.get("accuracy"), 3), "acc_bicubic": f(bic.get("accuracy"), 3),
                          "acc_hr": f(hr.get("accuracy"), 3), "psnr_sr": f(sr.get("psnr_y"), 2),
                          "psnr_bicubic": f(bic.get("psnr_y"), 2), "ssim_sr": f(sr.get("ssim_y"), 4),
                          "ssim_bicubic": f(bic.get("ssim_y"), 4)})
        rows.append({"model": rec.get("model", path.stem), "cells": cells, "recognizer": rec.get("recognizer"),
                     "embedded": rec.get("embedded"), "root": rec.get("root"),
                     "trained_iterations": trained.get("iterations"), "loss": trained.get("loss"),
                     "untrained": rec.get("checkpoint") is None,
                     "badges": badges_of(rec, trained.get("iterations"), "textzoom")})
    return {"rows": rows, "splits": splits}


# ----------------------------------------------------------------------------- complexity / erf / curves

_KIND_LABEL = {("params_m", "true"): "params, true", ("params_m", "paper_method"): "params, paper method",
               ("gmacs", "fvcore_with_scan"): "MACs, fvcore + scan", ("gmacs", "paper_method"): "MACs, paper method"}


def _reasons(deltas: list[dict[str, Any]]) -> list[str]:
    """One line per distinct reason, prefixed with the deltas it explains."""
    by_text: dict[str, list[str]] = {}
    for d in deltas:
        if d.get("reason"):
            label = _KIND_LABEL.get((d.get("quantity"), d.get("kind")), f"{d.get('quantity')}, {d.get('kind')}")
            by_text.setdefault(d["reason"], []).append(label)
    return [f"{' / '.join(labels)}: {text}" for text, labels in by_text.items()]


def complexity_section(complexity: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rows of the complexity table from ``results/complexity.json``."""
    if not complexity:
        return None
    rows = []
    for name, rec in (complexity.get("models") or {}).items():
        fv = rec.get("fvcore") or {}
        pm = rec.get("paper_method") or {}
        printed = rec.get("printed") or {}
        deltas = {(d.get("quantity"), d.get("kind")): d for d in rec.get("deltas") or []}

        def delta(q: str, k: str) -> dict[str, Any]:
            d = deltas.get((q, k))
            if not d:
                return {"text": DASH, "cls": "", "reason": None}
            v = d.get("delta_pct")
            return {"text": DASH if v is None else f"{v:+.1f} %",
                    "cls": "" if v is None else ("pos" if abs(v) <= 1 else "neg"), "reason": d.get("reason")}

        lat = []
        for lname, l in (rec.get("latency") or {}).items():
            med, mem = _num(l.get("median_s")), _num(l.get("peak_memory_bytes"))
            lat.append({"model": lname, "device": l.get("device", DASH),
                        "ms": DASH if med is None else f"{med * 1e3:.1f}",
                        "mb": DASH if mem is None else f"{mem / 2**20:.1f}", "method": l.get("memory_method")})
        m = lambda v, s: DASH if _num(v) is None else f"{v / s:.3f}"  # noqa: E731
        unsupported = fv.get("unsupported_ops") or {}
        rows.append({
            "model": name, "row": printed.get("row", DASH), "source": printed.get("source"),
            "true_params": m(rec.get("true_params"), MEGA), "thop_params": m((rec.get("thop") or {}).get("params"), MEGA),
            "pm_params": m(pm.get("params"), MEGA), "printed_params": DASH if printed.get("params_m") is None
            else f"{printed['params_m']:.2f}",
            "fv_macs": m(fv.get("macs"), GIGA), "fv_9": m(fv.get("macs_with_scan_9bldn"), GIGA),
            "pm_macs": m(pm.get("macs"), GIGA), "printed_gflops": DASH if printed.get("gflops") is None
            else f"{printed['gflops']:.2f}", "method": pm.get("method", DASH),
            "d_true_p": delta("params_m", "true"), "d_pm_p": delta("params_m", "paper_method"),
            "d_fv": delta("gmacs", "fvcore_with_scan"), "d_pm_g": delta("gmacs", "paper_method"),
            "reasons": _reasons(rec.get("deltas") or []),
            "notes": rec.get("notes") or [], "latency": lat,
            "unsupported": len(unsupported), "unjustified": fv.get("unjustified_ops") or [],
            "uncalled": len(fv.get("uncalled_modules") or []),
        })
    return {"rows": rows, "unit_note": complexity.get("unit_note"), "scan_rule": complexity.get("scan_mac_rule"),
            "input": complexity.get("input"), "scan_backend": complexity.get("scan_backend"),
            "threads": complexity.get("torch_threads"), "counted_paper_size": complexity.get("counted_paper_size"),
            "profile": (complexity.get("provenance") or {}).get("profile"), "swap_note": pt.SWAPPED_ROWS_NOTE}


def erf_section(results: Path) -> dict[str, Any] | None:
    folder = Path(results) / "erf"
    rec = _read_json(folder / "erf.json") if (folder / "erf.json").is_file() else None
    if rec is None:
        return None
    img = folder / (rec.get("figure") or "erf.png")
    rows = []
    for name, m in (rec.get("models") or {}).items():
        ar = m.get("area_ratio") or {}
        rows.append({"model": name, "weights": m.get("weights", DASH),
                     "iterations": ((m.get("checkpoint") or {}).get("iterations")),
                     "ratios": [DASH if _num(ar.get(q)) is None else f"{100 * ar[q]:.2f} %" for q in ("20", "50", "99")]})
    return {"image": _data_uri(img.read_bytes()) if img.is_file() else None, "rows": rows,
            "source": rec.get("source") or {}, "mode": rec.get("mode"), "crop": rec.get("crop"),
            "num_images": rec.get("num_images"), "profile": (rec.get("provenance") or {}).get("profile"),
            "any_random": any(r["weights"] != "checkpoint" for r in rows)}


def _read_curve(path: Path) -> dict[str, list[float | None]]:
    cols: dict[str, list[float | None]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                cols[k].append(_num(v) if v not in (None, "") else None)
    return cols


def curves_section(results: Path) -> list[dict[str, Any]]:
    """One PNG per run tag (x<s>_<codec>_<level>): loss and validation PSNR-Y of every model."""
    runs: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for path in sorted((Path(results) / "curves").glob("*/*.csv")):
        # results/curves/<model>/<tag>.csv, and results/curves/textzoom/<model>.csv for text SR
        tag, model = ("textzoom", path.stem) if path.parent.name == "textzoom" else (path.stem, path.parent.name)
        try:
            runs[tag].append((model, _read_curve(path)))
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            log.warning("report: skipping %s (%s)", path, e)
    if not runs:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = []
    for tag, items in sorted(runs.items()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3))
        for model, cols in items:
            it = cols.get("iteration", [])
            for ax, key in ((a1, "loss"), (a2, "val_psnr_y")):
                pts = [(x, y) for x, y in zip(it, cols.get(key, [])) if x is not None and y is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="." if key == "val_psnr_y" else None, label=model, lw=1)
        a1.set_title("training loss", fontsize=9)
        a2.set_title("validation PSNR-Y (dB)", fontsize=9)
        for ax in (a1, a2):
            ax.set_xlabel("iteration", fontsize=8)
            ax.tick_params(labelsize=7)
        if any(ax.get_legend_handles_labels()[0] for ax in (a1,)):
            a1.legend(fontsize=7)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        out.append({"tag": tag, "models": [m for m, _ in items], "image": _data_uri(buf.getvalue())})
    return out


def codec_section(data: Path) -> list[dict[str, Any]]:
    """Mean bpp and PSNR vs clean LR per LR folder, from ``data/lr/<ds>/x<s>/<tag>/manifest.json``."""
    rows = []
    for path in sorted(Path(data).glob("lr/*/x*/*/manifest.json")):
        man = _read_json(path)
        if man is None:
            continue
        images = man.get("images") or {}
        vals = list(images.values()) if isinstance(images, dict) else list(images)

        def mean(k: str) -> float | None:
            xs = [_num(v.get(k)) for v in vals if isinstance(v, dict)]
            xs = [x for x in xs if x is not None]
            return float(np.mean(xs)) if xs else _num((man.get("summary") or {}).get(k))
        f = (lambda v, d: DASH if v is None else f"{v:.{d}f}")
        rows.append({"dataset": path.parts[-4], "scale": path.parts[-3], "tag": path.parts[-2],
                     "count": len(vals), "bpp": f(mean("bpp"), 3), "psnr_y": f(mean("psnr_y"), 2),
                     "psnr_rgb": f(mean("psnr_rgb"), 2)})
    return rows


def train_bench_section(results: Path) -> dict[str, Any] | None:
    """``results/bench/train.json`` (``csrbench bench train``) as table rows, or None when absent.

    One row per model and precision: batch and LR patch measured, harness s/it and images/s, bare s/it,
    overhead ratio, peak memory, projected hours of 300k iterations (at the measured batch/patch and scaled
    to the paper's 32 x 64); a case that failed, was skipped or did not fit shows its reason.
    """
    path = Path(results) / "bench" / "train.json"
    rec = _read_json(path) if path.is_file() else None
    if rec is None or rec.get("benchmark") != "train":
        return None
    st, goals = rec.get("settings") or {}, rec.get("goals") or {}
    limit = _num(goals.get("overhead_max"))

    def fmt(x: Any, digits: int) -> str:
        v = _num(x)
        return DASH if v is None else f"{v:.{digits}f}"

    rows = []
    for model, per in (rec.get("results") or {}).items():
        for precision, r in per.items():
            h, b = r.get("harness") or {}, r.get("bare") or {}
            mem = h.get("memory") or {}
            ov = _num(r.get("overhead"))
            rows.append({
                "model": model, "precision": precision, "batch": r.get("batch_size", DASH),
                "oom": ", ".join(str(o.get("batch_size")) for o in r.get("oom_batches") or []),
                "s_it": fmt(h.get("s_per_it"), 3), "img_s": fmt(h.get("images_per_s"), 2),
                "bare_s_it": fmt(b.get("s_per_it"), 3),
                "overhead": DASH if ov is None else f"{100 * ov:+.1f} %",
                "overhead_cls": "" if ov is None or limit is None else ("pos" if ov <= limit else "neg"),
                "memory": fmt(mem.get("peak_mb"), 0), "memory_kind": mem.get("kind", ""),
                "hours": fmt(r.get("projected_hours_300k"), 1),
                "hours_paper": fmt(r.get("projected_hours_300k_paper_batch_patch"), 1),
                "why": r.get("error") or r.get("skipped"),
            })
    goal = next((v for k, v in goals.items() if k.endswith("_hours_300k")), None)
    ctx = (rec.get("context") or {}).get("official_estimate") or {}
    return {"device": rec.get("device"), "device_name": rec.get("device_name"),
            "profile": (rec.get("provenance") or {}).get("profile"), "complete": rec.get("complete"),
            "smoke": bool(st.get("smoke")), "batch": st.get("batch_size_requested"), "patch": st.get("patch_size"),
            "iterations": st.get("iterations_timed"), "warmup": st.get("warmup"), "scan_backend": st.get("scan_backend"),
            "load": (rec.get("load_average") or {}).get("before"), "rows": rows, "goal": goal,
            "official_hours": ctx.get("h100_hours"), "official_note": ctx.get("note")}


def bench_section(results: Path) -> list[dict[str, Any]]:
    """Each ``results/bench/<name>.json`` as a list of (key path, value) leaves."""
    out = []
    for path in sorted((Path(results) / "bench").glob("*.json")):
        rec = _read_json(path)
        if rec is None:
            continue
        leaves: list[tuple[str, str]] = []

        def walk(x: Any, key: str) -> None:
            if len(leaves) >= 80:
                return
            if isinstance(x, dict):
                for k, v in x.items():
                    walk(v, f"{key}.{k}" if key else str(k))
            elif isinstance(x, list) and len(x) > 8:
                leaves.append((key, f"[{len(x)} values]"))
            elif isinstance(x, list):
                for i, v in enumerate(x):
                    walk(v, f"{key}[{i}]")
            elif isinstance(x, float):
                leaves.append((key, f"{x:.4g}"))
            else:
                leaves.append((key, DASH if x is None else str(x)))
        # top-level figures first, then nested ones: the summary of a long benchmark is not cut off
        top = [(k, v) for k, v in rec.items() if k != "provenance"]
        walk(dict(sorted(top, key=lambda kv: isinstance(kv[1], (dict, list)))), "")
        out.append({"name": path.stem, "leaves": leaves, "truncated": len(leaves) >= 80,
                    "profile": (rec.get("provenance") or {}).get("profile"),
                    "device": (rec.get("provenance") or {}).get("device_name")})
    return out


# ----------------------------------------------------------------------------- visual crops

def _png_uri(path: Path) -> str | None:
    return _data_uri(path.read_bytes()) if path.is_file() else None


def visual_section(cfg: Config, results: Path) -> dict[str, Any]:
    """Compressed LR, each model's SR and HR on the centre crops that ``csrbench evaluate`` saved.

    Reads ``<results>/visual/<model>/x<s>_<tag>/`` (:mod:`harness.visual`: crop PNGs and ``crops.json``
    with the crop box and its PSNR-Y) for the first of ``runs.degradations``; nothing is recomputed
    here. A model without crops shows "—" with the command that makes them.
    """
    from harness.visual import CROPS_JSON, crop_paths
    deg = cfg.runs.degradations[0]
    scale, tag = cfg.degrade.scale, deg.tag
    run_tag = f"x{scale}_{tag}"
    info = {"dataset": cfg.data.test[0], "tag": tag, "scale": scale, "models": list(cfg.runs.model_names),
            "images": [], "note": None}
    crops = {}
    for model in cfg.runs.model_names:
        folder = Path(results) / "visual" / model / run_tag
        crops[model] = (folder, _read_json(folder / CROPS_JSON) if (folder / CROPS_JSON).is_file() else None)
    found = [(folder, rec) for folder, rec in crops.values() if rec is not None]
    if not found:
        info["note"] = (f"no visual crops in {Path(results) / 'visual'}/<model>/{run_tag}/ "
                        f"(produced by `csrbench evaluate`)")
        return info
    first, rec0 = found[0]
    info["dataset"] = rec0.get("dataset", info["dataset"])
    for name, im in (rec0.get("images") or {}).items():
        ref = crop_paths(first, name)
        tiles = [{"label": f"LR {tag} (nearest x{scale})", "image": _png_uri(ref["lr"]), "psnr": None,
                  "why": f"missing {ref['lr']}"}]
        for model in cfg.runs.model_names:
            folder, rec = crops[model]
            mine = None if rec is None else (rec.get("images") or {}).get(name)
            if mine is None:
                why = (f"no crops (produced by `csrbench evaluate --model {model} --codec {deg.codec} "
                       f"--level {deg.level}`): {folder}") if rec is None else f"{folder / CROPS_JSON} has no {name}"
                tiles.append({"label": model, "image": None, "psnr": None, "why": why})
                continue
            sr = crop_paths(folder, name)["sr"]
            p = _num(mine.get("psnr_y"))
            tiles.append({"label": model + ("" if rec.get("iterations") is None else f" ({rec['iterations']} it)"),
                          "image": _png_uri(sr), "psnr": None if p is None else f"{p:.2f} dB",
                          "why": f"missing {sr}"})
        tiles.append({"label": "HR", "image": _png_uri(ref["hr"]), "psnr": None, "why": f"missing {ref['hr']}"})
        info["images"].append({"name": name, "crop": list(im["box"]), "tiles": tiles})
    return info


# ----------------------------------------------------------------------------- provenance

def provenance_section(results: Path, cfg: Config, metrics: dict) -> dict[str, Any]:
    """Who made each result: commit, profile, device, versions, tile settings, scan backend."""
    files = []
    versions: dict[str, set] = defaultdict(set)
    paths = sorted(Path(results).glob("**/*.json"))
    for path in paths:
        if "report" in path.relative_to(results).parts[:1]:
            continue
        rec = _read_json(path)
        if rec is None:
            continue
        prov = rec.get("provenance") or {}
        git = prov.get("git") or {}
        tile = rec.get("tile")
        files.append({"file": str(path.relative_to(results)), "commit": (git.get("commit") or DASH)[:10],
                      "dirty": git.get("dirty"), "profile": prov.get("profile") or DASH,
                      "device": prov.get("device_name") or prov.get("device") or DASH,
                      "backend": prov.get("scan_backend") or rec.get("backend") or rec.get("scan_backend") or DASH,
                      "tile": DASH if tile is None else (json.dumps(tile) if not isinstance(tile, str) else tile),
                      "utc": prov.get("utc") or DASH})
        for k, v in (prov.get("versions") or {}).items():
            if v is not None:
                versions[k].add(str(v))
        host = prov.get("host") or {}
        if host.get("platform"):
            versions["platform"].add(str(host["platform"]))
    datasets = sorted({ds for r in metrics.values() for ds in (r.get("datasets") or {})})
    return {"files": files, "versions": {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())},
            "profiles": sorted({f["profile"] for f in files if f["profile"] != DASH}),
            "commits": sorted({f["commit"] for f in files if f["commit"] != DASH}),
            "datasets": datasets, "config_profile": getattr(cfg, "profile", None),
            "tile": {"tile": cfg.evaluate.tile, "tile_overlap": cfg.evaluate.tile_overlap,
                     "self_ensemble": cfg.evaluate.self_ensemble, "crop_border": cfg.evaluate.crop_border},
            "render_host": platform.platform()}


# ----------------------------------------------------------------------------- page

def gather(cfg: Config, results: Path, data: Path) -> dict[str, Any]:
    """Everything the template shows, as plain dicts (no I/O beyond reading results and data)."""
    results, data = Path(results), Path(data)
    metrics = load_metrics(results)
    cpath = results / "complexity.json"
    complexity = _read_json(cpath) if cpath.is_file() else None
    abl = cfg.runs.ablation_degradation
    ctx = {
        "title": "csrbench report",
        "table1": table1_section(metrics, complexity, scale=cfg.degrade.scale),
        "ablations": ablation_section(metrics, complexity, cfg.degrade.scale, abl.codec, abl.level),
        "classic": classic_section(metrics),
        "generalization": generalization_section(results),
        "textzoom": textzoom_section(results),
        "complexity": complexity_section(complexity),
        "erf": erf_section(results),
        "curves": curves_section(results),
        "codecs": codec_section(data),
        "visual": visual_section(cfg, results),
        "bench": bench_section(results),
        "train_bench": train_bench_section(results),
        "provenance": provenance_section(results, cfg, metrics),
        "n_metrics": len(metrics),
        "dash": DASH,
    }
    # the banners describe the results; a benchmark's profile is shown on the benchmark itself
    profiles = {f["profile"] for f in ctx["provenance"]["files"]
                if f["profile"] != DASH and not f["file"].startswith("bench/")}
    profiles |= {p for r in metrics.values() if (p := _profile_of(r))}
    if getattr(cfg, "profile", None) in NOT_PAPER_FIGURES:
        profiles.add(cfg.profile)
    ctx["smoke"] = "smoke" in profiles
    ctx["rehearsal"] = "rehearsal" in profiles
    # a results file the sections had to skip is named on the page, not only in the log
    ctx["unreadable"] = [f"{p.relative_to(results)}: {why}" for p in sorted(results.glob("**/*.json"))
                         if p.relative_to(results).parts[0] != "report" and (why := _json_error(p))]
    ctx["unfinished"] = sorted({r.get("model") for r in metrics.values()
                                if any(b["cls"] == "unfinished" for b in badges_of(r))})
    return ctx


def render_html(ctx: dict[str, Any]) -> str:
    """Render ``templates/index.html.j2`` (autoescaped) with ``ctx`` from :func:`gather`."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["NOT_PAPER"] = NOT_PAPER_FIGURES
    return env.get_template("index.html.j2").render(**ctx)


def run(cfg: Config, results: Path, data: Path, out: Path) -> Path:
    """Render the report page.

    Args:
        cfg: loaded config (profile, runs, report.*, evaluate.* for the provenance block).
        results: the results folder.
        data: the data folder (codec manifests).
        out: the HTML file, normally ``results/report/index.html``.

    Returns:
        ``out``.
    """
    ctx = gather(cfg, results, data)
    return write_text(out, render_html(ctx))
