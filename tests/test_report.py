"""harness.report.render from fixture results written in tmp_path (no trained models needed)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from harness import complexity as cx
from harness import erf, visual
from harness.config import Degradation, load
from harness.provenance import read_json, write_csv, write_json
from harness.report import render

ROOT = Path(__file__).resolve().parents[1]


class TinySR(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 48, 3, padding=1)
        self.up = nn.PixelShuffle(4)

    def forward(self, x):
        return self.up(self.conv(x)).clamp(0, 1)


def build_standin(name: str) -> nn.Module:
    torch.manual_seed(0)
    return TinySR()


def smoke_cfg():
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    return dataclasses.replace(cfg, erf=dataclasses.replace(cfg.erf, crop=16, num_images=1,
                                                            models=("mambacsr_smoke",)),
                               report=dataclasses.replace(cfg.report, visual_images=1, crop=32))


def _metrics(results: Path, model: str, scale: int, codec: str, level: int, scores: dict, iterations=200,
             profile="smoke") -> None:
    write_json(results / "metrics" / model / f"x{scale}_{codec}_{level}.json", {
        "model": model, "scale": scale, "codec": codec, "level": level, "profile": profile,
        "iterations": iterations, "tile": {"size": 0, "overlap": 16},
        "datasets": {ds: {"psnr_y": p, "ssim_y": s, "images": {}} for ds, (p, s) in scores.items()}})


@pytest.fixture()
def fixture_tree(tmp_path):
    cfg = smoke_cfg()
    results, data, models = tmp_path / "results", tmp_path / "data", tmp_path / "models"
    _metrics(results, "mambacsr_smoke", 4, "jpeg", 10, {"set5": (24.5, 0.70), "skimage_test": (21.0, 0.55)},
             iterations=100)
    _metrics(results, "swinir_smoke", 4, "jpeg", 10, {"set5": (25.5, 0.73)})
    _metrics(results, "mambacsr_wo_cross_smoke", 4, "jpeg", 10, {"urban100": (22.0, 0.60)})
    _metrics(results, "mambair_x2_smoke", 2, "none", 0, {"set5": (38.0, 0.96)})
    rec = cx.count_model(TinySR(), 16)
    rec.update(cx.compare_table1("mambacsr", rec))
    rec["latency"] = {"mambacsr_smoke": {"model": "mambacsr_smoke", "device": "cpu", "median_s": 0.01,
                                         "peak_memory_bytes": 3 * 2**20, "memory_method": "VmHWM - VmRSS"}}
    write_json(results / "complexity.json", {"input": [1, 3, 16, 16], "unit_note": "MACs", "scan_backend": "numba",
                                             "torch_threads": 1, "scan_mac_rule": "4BDLN", "counted_paper_size": True,
                                             "models": {"mambacsr": rec}}, cfg=cfg)
    write_csv(results / "curves" / "mambacsr_smoke" / "x4_jpeg_10.csv", ["iteration", "loss", "lr", "val_psnr_y"],
              [[20, 0.2, 2e-4, ""], [40, 0.1, 2e-4, ""], [100, 0.08, 1e-4, 20.5]])
    write_json(results / "bench" / "scan.json", {"forward": {"speedup": 31.5, "fast_s": 0.1}}, cfg=cfg)
    # data: one LR/HR pair and a manifest; ERF reads the same folder
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)
    lr_dir = data / "lr" / cfg.data.test[0] / "x4" / "jpeg_10"
    (data / "hr" / cfg.data.test[0]).mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    cv2.imwrite(str(data / "hr" / cfg.data.test[0] / "astro.png"), hr)
    cv2.imwrite(str(lr_dir / "astro.png"), cv2.resize(hr, (18, 16), interpolation=cv2.INTER_AREA))
    write_json(lr_dir / "manifest.json", {"images": {"astro": {"bpp": 0.5, "psnr_y": 30.0, "psnr_rgb": 29.0}}})
    ck = models / "mambacsr_smoke" / "x4_jpeg_10"
    ck.mkdir(parents=True)
    torch.save({"state_dict": build_standin("x").state_dict(), "iterations": 100}, ck / "final.pt")
    erf.run(cfg, None, models, data, results / "erf", "cpu", build="test_report:build_standin")
    # the evaluate stage's visual crops of one model (the report only reads them)
    visual.save_crops(cfg, build_standin("mambacsr_smoke").eval(), "mambacsr_smoke", cfg.data.test[0],
                      Degradation("jpeg", 10), 4, data, torch.device("cpu"),
                      results / "visual" / "mambacsr_smoke" / "x4_jpeg_10", extra={"iterations": 100})
    return cfg, results, data, models


def _render(fixture_tree):
    cfg, results, data, models = fixture_tree
    out = render.run(cfg, results, data, results / "report" / "index.html")
    return out.read_text()


def test_every_table_present_with_smoke_banner(fixture_tree):
    page = _render(fixture_tree)
    assert "SMOKE PROFILE — not paper figures" in page
    assert page.count('<table class="table1"') == 9                 # JPEG 10/20/30, HEVC 32/37/42, VVC (Table 5)
    for cls in ("ablation", "classic", "complexity", "erf", "codecs", "bench", "versions", "provenance"):
        assert f'<table class="{cls}"' in page, cls
    assert page.count('<table class="ablation"') == 3
    assert "appear swapped" in page or "appears to print" in page
    # self-contained: images are data URIs, nothing fetched
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert page.count('src="data:image/png;base64,') >= 4            # ERF, curves, LR, SR, HR


def test_cells_compare_paper_and_ours(fixture_tree):
    page = _render(fixture_tree)
    jpeg10 = page[page.index('data-codec="jpeg" data-level="10"'):page.index('data-codec="jpeg" data-level="20"')]
    # MambaCSR set5 PSNR: paper 25.20, ours 24.50 -> -0.70, red
    assert ('<td class="cmp neg"><span class="p" title="paper">25.20</span><span class="o" title="ours">24.50</span>'
            '<span class="d" title="ours - paper">-0.70</span></td>') in jpeg10
    # SwinIR set5 PSNR: 25.10 vs 25.50 -> +0.40 green
    assert '<span class="p" title="paper">25.10</span><span class="o" title="ours">25.50</span>' in jpeg10
    assert 'title="ours - paper">+0.40' in jpeg10
    # HAT has no results of ours: dashes, no colour
    hat = jpeg10[jpeg10.index("<th>HAT"):jpeg10.index("<th>MambaIR")]
    assert '<span class="o" title="ours">—</span>' in hat and "cmp pos" not in hat and "cmp neg" not in hat
    # a smoke dataset without a paper column gets its own column with the paper side empty
    assert "<th colspan=\"2\">skimage_test</th>" in jpeg10
    assert '<span class="p" title="paper">—</span><span class="o" title="ours">21.00</span>' in jpeg10
    # badges: smoke everywhere, unfinished for a run short of the profile's iterations
    assert 'class="badge smoke"' in jpeg10 and "unfinished 100/200 it" in jpeg10   # smoke preset: 200 iterations
    assert "mambacsr_wo_cross_smoke" in page and "mambair_x2_smoke" in page


def test_complexity_erf_codecs_visual_rendered(fixture_tree):
    page = _render(fixture_tree)
    comp = page[page.index('<table class="complexity"'):page.index('</table>', page.index('<table class="complexity"'))]
    assert "MambaCSR" in comp and "19.69" in comp and "76.03" in comp
    assert "selective scan" in comp or "thop" in comp                   # reasons of the >1 % deltas
    assert "mambacsr_smoke (cpu): 10.0 ms, 3.0 MiB" in comp
    assert "0.500" in page and "30.00" in page                         # codec manifest row
    vis = page[page.index('id="visual"'):page.index('id="bench"')]
    assert "PSNR-Y" in vis and "HR" in vis and "mambacsr_smoke (100 it)" in vis
    cfg, results, _, _ = fixture_tree
    folder = results / "visual" / "mambacsr_smoke" / "x4_jpeg_10"
    for png in sorted(folder.glob("astro_*.png")):                     # the saved crops, embedded as they are
        assert render._data_uri(png.read_bytes()) in vis, png.name
    psnr = read_json(folder / "crops.json")["images"]["astro"]["psnr_y"]
    assert f"PSNR-Y {psnr:.2f} dB" in vis
    assert "no crops (produced by `csrbench evaluate --model swinir_smoke" in vis   # other models: dash + why
    erf_part = page[page.index('id="erf"'):page.index('id="curves"')]
    assert "random init" not in erf_part and "(100 it)" in erf_part   # trained checkpoint, labelled so


def test_unreadable_results_file_is_named_on_the_page(fixture_tree):
    cfg, results, _, _ = fixture_tree
    bad = results / "metrics" / "hat_smoke" / "x4_jpeg_10.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"model": "hat_smoke", "datasets": ')                # a truncated write
    page = _render(fixture_tree)
    note = page[page.index("Left out of this page"):].split("</p>")[0]
    assert "metrics/hat_smoke/x4_jpeg_10.json: JSONDecodeError" in note
    assert "complexity.json" not in note                                   # readable files are not listed


def test_empty_results_render_dashes_and_stage_notes(tmp_path):
    cfg = smoke_cfg()
    out = render.run(cfg, tmp_path / "results", tmp_path / "data", tmp_path / "r" / "index.html")
    page = out.read_text()
    assert "SMOKE PROFILE" in page
    for stage in ("csrbench complexity", "csrbench erf", "csrbench train", "csrbench degrade", "csrbench bench"):
        assert stage in page, stage
    assert page.count('<table class="table1"') == 9                 # Table 1 (6) + Table 5 VVC (3)
    assert '<span class="o" title="ours">21' not in page
    assert page.count('title="ours">—</span>') > 100


def test_paper_profile_results_have_no_smoke_banner(tmp_path):
    cfg = dataclasses.replace(smoke_cfg(), profile="paper")
    _metrics(tmp_path / "results", "mambacsr", 4, "jpeg", 10, {"set5": (25.21, 0.7212)}, iterations=300000,
             profile="paper")
    page = render.run(cfg, tmp_path / "results", tmp_path / "data", tmp_path / "index.html").read_text()
    assert "SMOKE PROFILE" not in page and "unfinished" not in page.split("<main>")[1].split("</nav>")[0]
    assert '<span class="o" title="ours">25.21</span><span class="d" title="ours - paper">+0.01</span>' in page


def test_rehearsal_results_are_labelled_as_such(tmp_path):
    cfg = dataclasses.replace(smoke_cfg(), profile="rehearsal")
    _metrics(tmp_path / "results", "mambacsr", 4, "jpeg", 10, {"set5": (9.87, 0.1)}, iterations=3,
             profile="rehearsal")
    page = render.run(cfg, tmp_path / "results", tmp_path / "data", tmp_path / "index.html").read_text()
    assert "REHEARSAL PROFILE" in page and "SMOKE PROFILE" not in page
    assert '<span class="badge smoke">rehearsal</span>' in page


def test_textzoom_table_and_curves(fixture_tree):
    cfg, results, data, models = fixture_tree
    split = {"n": 4, "sr": {"psnr_y": 21.5, "ssim_y": 0.81, "accuracy": 0.75},
             "bicubic": {"psnr_y": 20.25, "ssim_y": 0.7, "accuracy": 0.5}, "hr": {"accuracy": 1.0}}
    write_json(results / "textzoom" / "mambair_x2_smoke.json", {
        "model": "mambair_x2_smoke", "checkpoint": "models/textzoom/mambair_x2_smoke/final.pt", "profile": "smoke",
        "trained": {"iterations": 40, "loss": "charbonnier"}, "recognizer": "tesseract", "embedded": True,
        "root": "data/raw/textzoom_embedded", "splits": {s: split for s in ("easy", "medium", "hard")},
        "average": {"n": 12, **{k: split[k] for k in ("sr", "bicubic", "hr")}}}, cfg=cfg)
    write_csv(results / "curves" / "textzoom" / "mambair_x2_smoke.csv", ["iteration", "loss", "lr", "val_psnr_y"],
              [[20, 0.2, 2e-4, ""], [40, 0.1, 2e-4, 19.0]])
    page = _render(fixture_tree)
    tzp = page[page.index('<section id="textzoom">'):page.index('<section id="complexity">')]
    assert '<table class="textzoom"' in tzp and tzp.count("<tr>") == 2 + 4        # header rows + 4 splits
    assert "<b>0.750</b>" in tzp and ">0.500<" in tzp and ">1.000<" in tzp and "<b>21.50</b>" in tzp
    assert "40 it charbonnier" in tzp and "embedded rendered set" in tzp
    assert "unfinished 40/" in tzp and 'class="badge smoke"' in tzp               # short of textzoom.iterations
    curves = page[page.index('id="curves"'):page.index('id="codecs"')]
    assert "textzoom" in curves and "mambair_x2_smoke" in curves


def test_no_textzoom_results_say_which_stage_makes_them(tmp_path):
    page = render.run(smoke_cfg(), tmp_path / "results", tmp_path / "data", tmp_path / "index.html").read_text()
    tzp = page[page.index('<section id="textzoom">'):page.index('<section id="complexity">')]
    assert "csrbench textzoom-train" in tzp and '<table class="textzoom"' not in tzp


def test_a_rehearsal_benchmark_is_badged_and_does_not_label_the_results(tmp_path):
    cfg = smoke_cfg()
    results = tmp_path / "results"
    _metrics(results, "swinir_smoke", 4, "jpeg", 10, {"set5": (24.0, 0.7)})
    rehearsal = dataclasses.replace(cfg, profile="rehearsal")
    nested = {f"group{i}": {"a": i, "b": i, "c": i, "d": i, "e": i} for i in range(20)}   # 100 nested values
    write_json(results / "bench" / "rehearsal.json",
               {"first_repro_seconds": 3248.0, "groups": nested, "goal_met": False}, cfg=rehearsal)
    page = render.run(cfg, results, tmp_path / "data", tmp_path / "index.html").read_text()
    assert "SMOKE PROFILE" in page and "REHEARSAL PROFILE" not in page      # no rehearsal result in the tables
    bench = page[page.index('id="bench"'):]
    assert '<b>rehearsal</b><span class="badge smoke">rehearsal</span>' in bench
    # the top-level figures come before the nested ones, so the 80-value cut does not hide them
    assert bench.index("<code>goal_met</code>") < bench.index("<code>groups.group0.a</code>")
    assert "first 80 values shown; see results/bench/rehearsal.json." in bench
