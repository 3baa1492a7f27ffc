"""Published figures: the supplementary VVC Table 5 beside Table 1, as data and in the report."""
from harness import paper_tables as pt
from harness.report import render


def test_table5_vvc_has_table1_columns_and_every_row():
    t1, t5 = pt.table1(), pt.table5_vvc()
    assert list(t5[0]) == list(t1[0])
    assert len(t5) == 18 and {r["codec"] for r in t5} == {"vvc"}
    assert sorted({r["level"] for r in t5}) == [32, 37, 42]
    for level in (32, 37, 42):
        assert [r["model"] for r in t5 if r["level"] == level] == list(pt.TABLE1_ROW.values())
    mambacsr37 = next(r for r in t5 if r["model"] == "MambaCSR" and r["level"] == 37)
    assert (mambacsr37["set5_psnr"], mambacsr37["set5_ssim"], mambacsr37["div2k_psnr"]) == (27.30, 0.783, 27.06)


def test_illegible_cells_are_none_and_flagged():
    rows = [r for r in pt.table5_vvc() if r["div2k_psnr"] is None]
    assert rows, "the transcription has illegible DIV2K PSNR cells"
    assert all("illegible" in (r["note"] or "") for r in rows)
    assert all(r["div2k_ssim"] is not None for r in rows)


def test_compression_table_tags_each_row_with_its_table():
    rows = pt.compression_table()
    assert {(r["codec"], r["table"]) for r in rows} == {("jpeg", 1), ("hevc", 1), ("vvc", 5)}
    assert len(rows) == len(pt.table1()) + len(pt.table5_vvc())


def _metrics(model, codec, level, dataset, psnr, ssim, profile="paper"):
    return {(model, 4, codec, level): {"model": model, "scale": 4, "codec": codec, "level": level,
                                       "profile": profile, "iterations": 300000,
                                       "datasets": {dataset: {"psnr_y": psnr, "ssim_y": ssim}}}}


def test_report_shows_our_vvc_results_beside_table5():
    metrics = _metrics("mambacsr", "vvc", 37, "set5", 27.5, 0.79)
    sec = render.table1_section(metrics, None, scale=4)
    vvc = {(b["codec"], b["level"]): b for b in sec["blocks"] if b["codec"] == "vvc"}
    assert set(vvc) == {("vvc", 32), ("vvc", 37), ("vvc", 42)}
    b = vvc[("vvc", 37)]
    assert b["table"] == 5 and b["in_paper"] and b["any_ours"]
    assert not vvc[("vvc", 32)]["any_ours"]
    row = next(r for r in b["rows"] if r["model"] == "MambaCSR")
    psnr, ssim = row["cells"][b["datasets"].index("set5")]
    assert (psnr["paper"], psnr["ours"], psnr["delta"]) == ("27.30", "27.50", "+0.20")
    assert (ssim["paper"], ssim["ours"]) == ("0.7830", "0.7900")
    jpeg = next(b for b in sec["blocks"] if b["codec"] == "jpeg")
    assert jpeg["table"] == 1
