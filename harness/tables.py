"""Stage ``tables``: every paper table as diffable CSV and Markdown in ``results/tables/``.

Built with pandas from ``results/metrics`` (and ``results/generalization``) and the
published figures of :mod:`harness.paper_tables`. One row per (table key, test set),
with our value, the paper's and ours - paper side by side::

    table1_jpeg_hevc  MambaCSR Table 1: codec, level, model (paper row), dataset
    table5_vvc        MambaCSR supplementary Table 5 (VVC), same layout
    ablations         MambaCSR Tables 2-4 (JPEG QF 10): table, variant, dataset
    classic_x2        MambaIR Table 1 (classic bicubic x2): model, dataset
    generalization    trained run x test codec at matched bpp (no published counterpart:
                      the delta is to the same run on its own training codec)

Paper rows we have no result for keep empty "ours" cells; our results on a test set
the paper does not report (the smoke profile's ``skimage_test``) keep empty "paper"
cells. Rows carry ``ours_model``, ``profile`` and ``iterations`` so a smoke figure is
never mistaken for a paper one. Values are rounded (PSNR 3 decimals, SSIM 4) and rows
sorted in the paper's order, so ``git diff results/tables`` between two commits shows
exactly the cells that moved. ``tables.json`` (with provenance) lists the files and
their row counts.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

from harness import paper_tables as pt
from harness.config import Config

__all__ = ["run", "build_tables", "load_metrics", "to_markdown", "TABLES"]

log = logging.getLogger(__name__)

#: File stem -> title, in the order they are written.
TABLES: dict[str, str] = {
    "table1_jpeg_hevc": "MambaCSR Table 1: x4 compressed SR, JPEG and HEVC",
    "table5_vvc": "MambaCSR supplementary Table 5: x4 compressed SR, VVC",
    "ablations": "MambaCSR Tables 2-4: ablations (JPEG QF 10, x4)",
    "classic_x2": "MambaIR Table 1: classic bicubic x2 SR",
    "generalization": "Codec generalization: trained on one codec, tested on each at matched bpp",
}
DATASET_ORDER = ("set5", "set14", "bsd100", "urban100", "manga109", "div2k")
PSNR_DIGITS, SSIM_DIGITS, BPP_DIGITS = 3, 4, 4
_META = ("ours_model", "profile", "iterations")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("tables: skipping unreadable %s (%s)", path, e)
        return None


def load_metrics(results: Path) -> list[dict[str, Any]]:
    """One row per (metrics file, test set): model (its folder name), scale, codec, level, dataset column,
    profile, iterations, psnr_y, ssim_y."""
    rows = []
    for path in sorted((Path(results) / "metrics").glob("*/x*_*_*.json")):
        rec = _read(path)
        if not rec:
            continue
        try:
            scale, codec, level = int(rec["scale"]), str(rec["codec"]), int(rec["level"])
        except (KeyError, TypeError, ValueError):
            log.warning("tables: %s has no scale / codec / level, skipped", path)
            continue
        for ds, v in (rec.get("datasets") or {}).items():
            if isinstance(v, dict):
                rows.append({"model": path.parent.name, "scale": scale, "codec": codec, "level": level,
                             "dataset": pt.dataset_column(ds) or ds, "profile": rec.get("profile"),
                             "iterations": rec.get("iterations"), "psnr_y": v.get("psnr_y"),
                             "ssim_y": v.get("ssim_y")})
    return rows


def _paper_long(rows: Iterable[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Wide paper rows (``<dataset>_psnr`` / ``_ssim`` columns) -> one row per dataset."""
    out = []
    for r in rows:
        for col in DATASET_ORDER:
            if f"{col}_psnr" in r or f"{col}_ssim" in r:
                out.append({**{k: r[k] for k in keys}, "dataset": col, "psnr_paper": r.get(f"{col}_psnr"),
                            "ssim_paper": r.get(f"{col}_ssim"), "note": r.get("note")})
    return out


def _compare(paper: list[dict[str, Any]], ours: list[dict[str, Any]], keys: list[str]):
    """Outer join of paper and our rows on ``keys + [dataset]``, with deltas, in the paper's order."""
    import pandas as pd
    on = keys + ["dataset"]
    p = pd.DataFrame(paper, columns=on + ["psnr_paper", "ssim_paper", "note"])
    o = pd.DataFrame(ours, columns=on + list(_META) + ["psnr_ours", "ssim_ours"])
    group = {k: i for i, k in enumerate(dict.fromkeys(map(tuple, p[keys].astype(str).values.tolist())))}
    df = p.merge(o, on=on, how="outer")
    ds_rank = {d: i for i, d in enumerate(DATASET_ORDER)}
    # the paper's row order; our rows on other test sets sit under their paper row, new keys at the end
    df["_order"] = [group.get(k, len(group)) for k in map(tuple, df[keys].astype(str).values.tolist())]
    df["_ds"] = df["dataset"].map(lambda d: ds_rank.get(d, len(ds_rank)))
    df = df.sort_values(["_order"] + keys + ["_ds", "dataset", "ours_model"], na_position="first", kind="stable")
    for m in ("psnr", "ssim"):
        df[f"{m}_ours"] = pd.to_numeric(df[f"{m}_ours"], errors="coerce")
        df[f"{m}_paper"] = pd.to_numeric(df[f"{m}_paper"], errors="coerce")
        df[f"{m}_delta"] = df[f"{m}_ours"] - df[f"{m}_paper"]
    cols = on + list(_META) + ["psnr_ours", "psnr_paper", "psnr_delta", "ssim_ours", "ssim_paper", "ssim_delta",
                               "note"]
    return _rounded(df[cols].reset_index(drop=True))


def _rounded(df):
    for c in df.columns:
        if c.startswith("psnr") or c.endswith("psnr_y"):
            df[c] = df[c].round(PSNR_DIGITS)
        elif c.startswith("ssim") or c.endswith("ssim_y"):
            df[c] = df[c].round(SSIM_DIGITS)
        elif "bpp" in c:
            df[c] = df[c].round(BPP_DIGITS)
        if c.startswith(("psnr", "ssim")) or c.endswith(("psnr_y", "ssim_y")) or "bpp" in c:
            df[c] = df[c] + 0.0   # -0.0 -> 0.0
    if "iterations" in df.columns:
        df["iterations"] = df["iterations"].astype("Int64")
    return df


def _ours(m: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """One metric row of ours under a table's ``keys``."""
    return {**keys, "dataset": m["dataset"], "ours_model": m["model"], "profile": m["profile"],
            "iterations": m["iterations"], "psnr_ours": m["psnr_y"], "ssim_ours": m["ssim_y"]}


def compression_table(metrics: list[dict[str, Any]], paper_rows: list[dict[str, Any]], codecs: tuple[str, ...]):
    """Table 1 / Table 5 layout: codec, level, model (paper row), dataset; our x4 runs of those codecs."""
    keys = ["codec", "level", "model"]
    paper = _paper_long([r for r in paper_rows if r["codec"] in codecs], tuple(keys))
    ours = [_ours(m, codec=m["codec"], level=m["level"], model=pt.paper_row_of(m["model"])) for m in metrics
            if pt.paper_row_of(m["model"]) and m["scale"] == 4 and m["codec"] in codecs]
    return _compare(paper, ours, keys)


def ablation_table(metrics: list[dict[str, Any]], codec: str = "jpeg", level: int = 10):
    """Tables 2-4: each row's preferred csrbench model (paper size or its ``_smoke`` twin) first."""
    keys = ["table", "variant"]
    paper = _paper_long(pt.ablations(), tuple(keys))
    ours = []
    for m in metrics:
        if m["scale"] != 4 or (m["codec"], m["level"]) != (codec, level):
            continue
        ours += [_ours(m, table=table, variant=variant) for table, variant in pt.ablation_rows_of(m["model"])]
    return _compare(paper, ours, keys)


def classic_table(metrics: list[dict[str, Any]]):
    """MambaIR classic x2 (codec none)."""
    keys = ["model"]
    paper = _paper_long(pt.classic_x2(), tuple(keys))
    ours = []
    for m in metrics:
        row = pt.CLASSIC_X2_ROW.get(pt.base_name(m["model"]))
        if row and m["scale"] == 2 and m["codec"] == "none":
            ours.append(_ours(m, model=row))
    return _compare(paper, ours, keys)


def generalization_table(results: Path):
    """Trained run x test set x test codec, from ``results/generalization``."""
    import pandas as pd
    rows = []
    for path in sorted((Path(results) / "generalization").glob("*/x*_*_*.json")):
        rec = _read(path)
        if not rec:
            continue
        tr = rec.get("trained_on") or {}
        order = {c: i for i, c in enumerate(rec.get("test_codecs") or [])}
        for ds, v in sorted((rec.get("datasets") or {}).items()):
            per = v.get("codecs") or {}
            own = (per.get(tr.get("codec")) or {}).get("psnr_y")
            for c, t in sorted(per.items(), key=lambda kv: order.get(kv[0], len(order))):
                p = t.get("psnr_y")
                rows.append({"model": rec.get("model"), "trained_codec": tr.get("codec"),
                             "trained_level": tr.get("level"), "dataset": pt.dataset_column(ds) or ds,
                             "test_codec": c, "test_level": t.get("level"), "in_distribution": t.get("in_distribution"),
                             "train_bpp": t.get("train_bpp"), "test_bpp": t.get("bpp"),
                             "at_range_end": t.get("at_range_end"), "profile": rec.get("profile"),
                             "iterations": rec.get("iterations"), "lr_psnr_y": t.get("lr_psnr_y"), "psnr_y": p,
                             "ssim_y": t.get("ssim_y"),
                             "psnr_delta_vs_own_codec": None if p is None or own is None else p - own})
    cols = ["model", "trained_codec", "trained_level", "dataset", "test_codec", "test_level", "in_distribution",
            "train_bpp", "test_bpp", "at_range_end", "profile", "iterations", "lr_psnr_y", "psnr_y", "ssim_y",
            "psnr_delta_vs_own_codec"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("lr_psnr_y", "psnr_y", "ssim_y", "train_bpp", "test_bpp", "psnr_delta_vs_own_codec"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    codec_rank = {c: i for i, c in enumerate(("none", "jpeg", "hevc", "vvc", "webp", "avc"))}
    df["_k"] = df["trained_codec"].map(lambda c: codec_rank.get(c, len(codec_rank)))
    df = df.sort_values(["model", "_k", "trained_level", "dataset"], kind="stable").drop(columns="_k")
    return _rounded(df.reset_index(drop=True))


def build_tables(results: Path) -> dict[str, Any]:
    """Every table of :data:`TABLES` as a pandas DataFrame."""
    metrics = load_metrics(results)
    rows = pt.compression_table()
    return {
        "table1_jpeg_hevc": compression_table(metrics, rows, ("jpeg", "hevc")),
        "table5_vvc": compression_table(metrics, rows, ("vvc",)),
        "ablations": ablation_table(metrics),
        "classic_x2": classic_table(metrics),
        "generalization": generalization_table(results),
    }


def _md_cell(v: Any) -> str:
    import pandas as pd
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    return str(v).replace("|", "\\|")


def to_markdown(df, title: str) -> str:
    """A GitHub Markdown table (one line per row, no padding, so a changed cell changes one line)."""
    lines = [f"# {title}", "",
             "Rows with `profile: smoke` are smoke figures (reduced models, tiny data): they check the machinery "
             "and are not comparable with the paper's.", "",
             "| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def run(cfg: Config, results: Path = Path("results"), out: Path = Path("results/tables")) -> Path:
    """Write ``<out>/<table>.csv`` and ``.md`` for every table, and ``<out>/tables.json``.

    Args:
        cfg: the run's config (for the provenance block).
        results: the results folder (``metrics/``, ``generalization/``).
        out: the tables folder.

    Returns:
        ``out``.
    """
    from harness.provenance import write_json, write_text
    out = Path(out)
    index = {}
    for name, df in build_tables(Path(results)).items():
        write_text(out / f"{name}.csv", df.to_csv(index=False, lineterminator="\n"))
        write_text(out / f"{name}.md", to_markdown(df, TABLES[name]))
        ours = [c for c in ("psnr_ours", "psnr_y") if c in df.columns][0]
        index[name] = {"title": TABLES[name], "rows": int(len(df)), "rows_with_ours": int(df[ours].notna().sum()),
                       "csv": f"{name}.csv", "markdown": f"{name}.md"}
        log.info("%s: %d rows, %d with our figures", out / f"{name}.csv", len(df), index[name]["rows_with_ours"])
    write_json(out / "tables.json", {"profile": cfg.profile, "tables": index}, cfg=cfg)
    return out
