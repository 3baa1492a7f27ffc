"""The published figures csrbench compares against, loaded from ``harness/paper/*.csv``.

The CSVs are transcriptions of the MambaCSR paper (Ren et al. 2024,
arXiv:2408.11758; Tables 1-4 and the supplementary VVC Table 5) and of the MambaIR paper (Guo et al., ECCV 2024,
arXiv:2402.15648; Table 1, classic x2), shipped as package data (see
``harness/paper/README.md`` for what was transcribed and which cells are
flagged). They are *published* numbers, never results of this project: the
report shows them in the "paper" column only.

Empty cells are unknown, not zero: they load as ``None``.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "PAPER_DIR", "TABLE1_ROW", "SWAPPED_COMPLEXITY_ROWS", "SWAPPED_ROWS_NOTE", "DATASET_COLUMN", "ABLATION_MODELS", "CLASSIC_X2_ROW", "load_csv",
    "table1", "table1_row", "table5_vvc", "compression_table", "ablations", "classic_x2", "base_name", "ablation_rows_of", "paper_row_of", "dataset_column",
]

PAPER_DIR = Path(__file__).parent / "paper"

# csrbench model name (paper size, no ``_smoke``) -> the Table 1 row named after it.
TABLE1_ROW: dict[str, str] = {
    "swinir": "SwinIR", "swin2sr": "Swin2SR", "hst": "HST", "hat": "HAT", "mambair": "MambaIR",
    "mambacsr": "MambaCSR",
}

# Table 1 prints each of these rows' Params / GFLOPs in the other's row: the one place this fact is stored
# (complexity.py compares each model with the row holding its figures; the report labels both rows).
SWAPPED_COMPLEXITY_ROWS: dict[str, str] = {"SwinIR": "Swin2SR", "Swin2SR": "SwinIR"}

SWAPPED_ROWS_NOTE = (
    "Table 1 appears to print the SwinIR and Swin2SR complexity rows swapped: its 'SwinIR 8.72 M / 37.17 G' is "
    "thop's count of Swin2SR (classical x4, 8.727 M / 37.18 G) and its 'Swin2SR 11.67 M / 52.96 G' thop's count "
    "of SwinIR (real_sr x4, 11.667 M / 52.96 G), as measured on the official code.")

# Test-set keys of harness.data.registry -> column prefixes of the CSVs (a test checks every key is registered).
DATASET_COLUMN: dict[str, str] = {
    "set5": "set5", "set14": "set14", "bsd100": "bsd100", "urban100": "urban100", "manga109": "manga109",
    "div2k_valid": "div2k",
}

# Rows of mambacsr_ablations.csv -> csrbench models (paper size) that realise them, preferred first.
# Table 2's "no cross-scale", Table 3's "hierarchical + h2v" and Table 4's "window 8x8" are one network
# (the printed scores are identical), so mambacsr_wo_cross stands in where the dedicated name is absent.
ABLATION_MODELS: dict[tuple[int, str], tuple[str, ...]] = {
    (2, "no cross-scale scanning (dual-interleaved only)"): ("mambacsr_wo_cross",),
    (2, "position-aligned cross-scale scanning"): ("mambacsr",),
    (2, "simple sequential cross-scale scanning"): ("mambacsr_sequential_cross",),
    (3, "neither hierarchical nor horizontal-to-vertical"): ("mambacsr_t3_plain",),
    (3, "hierarchical only"): ("mambacsr_t3_hier",),
    (3, "horizontal-to-vertical only"): ("mambacsr_t3_h2v",),
    (3, "hierarchical + horizontal-to-vertical"): ("mambacsr_t3_both", "mambacsr_wo_cross"),
    (4, "window 4x4"): ("mambacsr_win4",),
    (4, "window 8x8"): ("mambacsr_win8", "mambacsr_wo_cross"),
    (4, "window 16x16"): ("mambacsr_win16",),
    (4, "window 32x32"): ("mambacsr_win32",),
    (4, "window 64x64"): ("mambacsr_win64",),
}


def ablation_rows_of(model: str) -> list[tuple[int, str]]:
    """Ablation rows a model realises, rows where it is the preferred model first."""
    base = base_name(model)
    first = [k for k, v in ABLATION_MODELS.items() if v[0] == base]
    return first + [k for k, v in ABLATION_MODELS.items() if base in v[1:]]


# MambaIR classic x2 rows our classic_x2 models are compared with.
CLASSIC_X2_ROW: dict[str, str] = {
    "mambair_x2": "MambaIR", "swinir_classical_x2": "SwinIR", "mambair_light_x2": "MambaIR-light (reproduced)",
}


def _value(text: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        return text


@lru_cache(maxsize=None)
def _load(name: str) -> tuple[dict[str, Any], ...]:
    path = PAPER_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: published-figures CSV missing from the package")
    with path.open(newline="") as f:
        rows = [{k: (v if k in ("note", "variant", "model", "codec") else _value(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]
    for r in rows:  # text columns keep "" -> None
        for k in ("note",):
            if k in r and (r[k] is None or r[k].strip() == ""):
                r[k] = None
    return tuple(rows)


def load_csv(name: str) -> list[dict[str, Any]]:
    """Rows of ``harness/paper/<name>`` as dicts; empty cells are ``None``, numbers are int/float."""
    return [dict(r) for r in _load(name)]


def table1() -> list[dict[str, Any]]:
    """MambaCSR Table 1: codec, level, model, params_m, gflops, <dataset>_psnr/_ssim, note."""
    return load_csv("mambacsr_table1.csv")


def table1_row(model_row: str, codec: str = "jpeg", level: int = 10) -> dict[str, Any] | None:
    """The Table 1 row of ``model_row`` (e.g. ``"MambaCSR"``) at one degradation, or ``None``."""
    for r in table1():
        if r["model"] == model_row and r["codec"] == codec and int(r["level"]) == int(level):
            return r
    return None


def table5_vvc() -> list[dict[str, Any]]:
    """MambaCSR supplementary Table 5 (VVC QP 32/37/42): the same columns as Table 1."""
    return load_csv("mambacsr_table5_vvc.csv")


def compression_table() -> list[dict[str, Any]]:
    """Table 1 (JPEG, HEVC) and Table 5 (VVC) rows together, each with ``table`` (1 or 5) added."""
    return [{**r, "table": 1} for r in table1()] + [{**r, "table": 5} for r in table5_vvc()]


def ablations() -> list[dict[str, Any]]:
    """MambaCSR Tables 2-4 (JPEG QF 10): table, variant, gflops, manga109/urban100 psnr/ssim, note."""
    return load_csv("mambacsr_ablations.csv")


def classic_x2() -> list[dict[str, Any]]:
    """MambaIR Table 1 (classic bicubic x2) plus two reproduced rows."""
    return load_csv("mambair_classic_sr_x2.csv")


def base_name(model: str) -> str:
    """``mambacsr_smoke`` -> ``mambacsr``: the paper-size model a name stands for."""
    return model[: -len("_smoke")] if model.endswith("_smoke") else model


def paper_row_of(model: str) -> str | None:
    """Table 1 row named after a csrbench model (``swinir_smoke`` -> ``SwinIR``), or ``None``."""
    return TABLE1_ROW.get(base_name(model))


def dataset_column(dataset: str) -> str | None:
    """Column prefix in the CSVs for a test-set key (``div2k_valid`` -> ``div2k``), or ``None``."""
    return DATASET_COLUMN.get(dataset)
