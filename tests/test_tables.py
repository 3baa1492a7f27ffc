"""results/tables: every paper table as CSV + Markdown, ours / paper / delta side by side, diffable."""
import csv
import io

import pytest

from harness import config, tables
from harness.provenance import read_json, write_json


def _metric(results, model, scale, codec, level, datasets, profile="paper", iterations=300000):
    write_json(results / "metrics" / model / f"x{scale}_{codec}_{level}.json",
               {"model": model, "scale": scale, "codec": codec, "level": level, "profile": profile,
                "iterations": iterations,
                "datasets": {ds: {"psnr_y": p, "ssim_y": s, "images": {}} for ds, (p, s) in datasets.items()}})


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    _metric(r, "mambacsr", 4, "jpeg", 10, {"set5": (25.5, 0.72), "skimage_test": (24.0, 0.6)})
    _metric(r, "mambacsr", 4, "vvc", 37, {"set5": (27.25, 0.78)})
    _metric(r, "swinir_smoke", 4, "hevc", 37, {"skimage_test": (22.123456, 0.612345)}, profile="smoke", iterations=200)
    _metric(r, "mambacsr_wo_cross_smoke", 4, "jpeg", 10, {"manga109": (23.0, 0.7)}, profile="smoke", iterations=200)
    _metric(r, "mambair_x2", 2, "none", 0, {"set5": (38.0, 0.96)})
    write_json(r / "generalization" / "swinir_smoke" / "x4_hevc_37.json", {
        "model": "swinir_smoke", "scale": 4, "profile": "smoke", "iterations": 200,
        "trained_on": {"codec": "hevc", "level": 37}, "test_codecs": ["jpeg", "hevc", "webp"],
        "datasets": {"skimage_test": {"train_bpp": 0.8, "codecs": {
            "jpeg": {"level": 1, "bpp": 1.8, "train_bpp": 0.8, "at_range_end": True, "in_distribution": False,
                     "lr_psnr_y": 23.5, "psnr_y": 21.0, "ssim_y": 0.5},
            "hevc": {"level": 37, "bpp": 0.8, "train_bpp": 0.8, "at_range_end": False, "in_distribution": True,
                     "lr_psnr_y": 34.0, "psnr_y": 22.5, "ssim_y": 0.6},
            "webp": {"level": 16, "bpp": 0.79, "train_bpp": 0.8, "at_range_end": False, "in_distribution": False,
                     "lr_psnr_y": 32.7, "psnr_y": 22.25, "ssim_y": 0.58}}}}})
    return r


def _cfg():
    return config.load(config.profile_path("smoke"), names=False)


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _one(rows, **key):
    hits = [r for r in rows if all(r[k] == str(v) for k, v in key.items())]
    assert len(hits) == 1, (key, hits)
    return hits[0]


def test_every_table_is_written_as_csv_and_markdown(results, tmp_path):
    out = tables.run(_cfg(), results=results, out=tmp_path / "tables")
    for name in tables.TABLES:
        csv_rows = _rows(out / f"{name}.csv")
        md = (out / f"{name}.md").read_text().splitlines()
        assert md[0] == f"# {tables.TABLES[name]}"
        body = [ln for ln in md if ln.startswith("| ")]
        assert len(body) == len(csv_rows) + 1          # header + one line per row
    index = read_json(out / "tables.json")
    assert "provenance" in index and set(index["tables"]) == set(tables.TABLES)
    assert index["tables"]["table5_vvc"]["rows_with_ours"] == 1


def test_ours_paper_and_delta_side_by_side(results, tmp_path):
    out = tables.run(_cfg(), results=results, out=tmp_path / "tables")
    t1 = _rows(out / "table1_jpeg_hevc.csv")
    r = _one(t1, codec="jpeg", level=10, model="MambaCSR", dataset="set5")
    assert (r["psnr_ours"], r["psnr_paper"], r["psnr_delta"]) == ("25.5", "25.2", "0.3")
    assert r["ours_model"] == "mambacsr" and r["profile"] == "paper"
    # a test set the paper does not report: ours only, labelled with its profile
    r = _one(t1, codec="hevc", level=37, model="SwinIR", dataset="skimage_test")
    assert (r["psnr_ours"], r["psnr_paper"], r["ssim_ours"]) == ("22.123", "", "0.6123")
    assert r["profile"] == "smoke" and r["iterations"] == "200"
    # paper rows we have not run keep empty ours
    r = _one(t1, codec="hevc", level=42, model="HAT", dataset="set14")
    assert r["psnr_ours"] == "" and r["psnr_paper"] != ""
    t5 = _rows(out / "table5_vvc.csv")
    r = _one(t5, codec="vvc", level=37, model="MambaCSR", dataset="set5")
    assert (r["psnr_ours"], r["psnr_paper"], r["psnr_delta"], r["ssim_delta"]) == ("27.25", "27.3", "-0.05", "-0.003")
    assert {row["codec"] for row in t5} == {"vvc"}
    abl = _rows(out / "ablations.csv")
    r = _one(abl, table=2, variant="no cross-scale scanning (dual-interleaved only)", dataset="manga109")
    assert (r["psnr_ours"], r["psnr_paper"], r["ours_model"]) == ("23.0", "23.53", "mambacsr_wo_cross_smoke")
    x2 = _rows(out / "classic_x2.csv")
    r = _one(x2, model="MambaIR", dataset="set5")
    assert r["psnr_ours"] == "38.0" and r["psnr_paper"] != ""
    gen = _rows(out / "generalization.csv")
    assert [g["test_codec"] for g in gen] == ["jpeg", "hevc", "webp"]
    r = _one(gen, test_codec="webp")
    assert (r["test_level"], r["train_bpp"], r["test_bpp"], r["psnr_delta_vs_own_codec"]) == ("16", "0.8", "0.79", "-0.25")
    assert _one(gen, test_codec="jpeg")["at_range_end"] == "True"


def test_tables_are_deterministic_and_a_moved_cell_changes_one_line(results, tmp_path):
    a = tables.run(_cfg(), results=results, out=tmp_path / "a")
    b = tables.run(_cfg(), results=results, out=tmp_path / "b")
    for name in tables.TABLES:
        for ext in ("csv", "md"):
            assert (a / f"{name}.{ext}").read_bytes() == (b / f"{name}.{ext}").read_bytes()
    _metric(results, "mambacsr", 4, "vvc", 37, {"set5": (27.40, 0.78)})
    c = tables.run(_cfg(), results=results, out=tmp_path / "c")
    for name in tables.TABLES:
        old, new = (a / f"{name}.csv").read_text().splitlines(), (c / f"{name}.csv").read_text().splitlines()
        assert len(old) == len(new)
        changed = [(x, y) for x, y in zip(old, new) if x != y]
        assert len(changed) == (1 if name == "table5_vvc" else 0), name
    new5 = _rows(c / "table5_vvc.csv")
    assert _one(new5, level=37, model="MambaCSR", dataset="set5")["psnr_delta"] == "0.1"


def test_empty_results_give_paper_only_tables(tmp_path):
    out = tables.run(_cfg(), results=tmp_path / "none", out=tmp_path / "tables")
    t5 = _rows(out / "table5_vvc.csv")
    assert len(t5) == 18 * 5 and all(r["psnr_ours"] == "" for r in t5)
    assert _rows(out / "generalization.csv") == []
