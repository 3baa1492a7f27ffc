"""`csrbench bench evaluate`: processed-pixel counts, the module profile, the bounded run and its JSON."""
from __future__ import annotations

import json

import pytest
import torch

from baselines import mambair
from harness import models
from harness.bench import evaluate as bench

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("lr_hw, tile, overlap, pad, want", [
    ((64, 64), 192, 48, 64, 64 * 64),                 # one tile, already a multiple of 64
    ((120, 125), 192, 48, 64, 128 * 128),             # one tile, padded up
    ((192, 256), 192, 48, 64, 2 * 192 * 192),         # two tiles along the width
    ((300, 300), 192, 48, 1, 4 * 192 * 192),          # 2 x 2 tiles, no padding
    ((30, 50), 0, 0, 16, 32 * 64),                    # whole image
])
def test_processed_pixels(lr_hw, tile, overlap, pad, want):
    assert bench.processed_pixels(lr_hw, tile, overlap, pad) == want


def test_module_profile_times_modules_and_scan_then_restores():
    torch.manual_seed(0)
    net = models.build("mambair_smoke").eval()
    scan = mambair.selective_scan
    with bench.module_profile(net, (mambair,)) as totals, torch.no_grad():
        net(torch.rand(1, 3, 12, 12))
    assert totals["selective_scan"] > 0 and totals["MambaIR"] >= totals["selective_scan"]
    assert mambair.selective_scan is scan
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_run_is_bounded_and_projects_the_rest(tmp_path):
    out = tmp_path / "evaluate.json"
    bench.run(out, "cpu", models=("mambair_smoke",), sizes=("set5", "set14"), max_seconds=0.0)
    rec = json.loads(out.read_text())
    m = rec["models"]["mambair_smoke"]
    assert m["sizes"]["set5"]["projected"] is False and m["sizes"]["set5"]["seconds"] > 0
    assert m["sizes"]["set14"]["projected"] is True       # over budget: projected, said so
    cost = m["set5_set14_projection"]["seconds_per_processed_lr_pixel"]
    assert m["sizes"]["set14"]["seconds"] == pytest.approx(cost * m["sizes"]["set14"]["processed_lr_pixels"])
    assert m["profile"]["size"] == "set5" and "selective_scan" in m["profile"]["inclusive_seconds_by_module_type"]
    proj = m["set5_set14_projection"]
    assert proj["projected"] is True and len(proj["per_image_seconds"]) == 19
    assert proj["set5_set14_seconds"] == pytest.approx(sum(proj["per_image_seconds"].values()))
    assert rec["load_average_before"] is not None and "provenance" in rec
