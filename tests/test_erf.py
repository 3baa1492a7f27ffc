"""harness.erf on a tiny conv net, whose effective receptive field is bounded by its receptive field."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from harness import erf
from harness.config import load
from harness.provenance import read_json

ROOT = Path(__file__).resolve().parents[1]


class TwoConvSR(nn.Module):
    """Two 3x3 convs (receptive field 5x5 in the input), then PixelShuffle(4)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 48, 3, padding=1)
        self.up = nn.PixelShuffle(4)

    def forward(self, x):
        return self.up(self.c2(torch.relu(self.c1(x))))


def build_standin(name: str) -> nn.Module:
    if not name.startswith("twoconv"):
        raise KeyError(name)
    return TwoConvSR()


def _cfg(crop=16, num=3, models=("twoconv_a", "twoconv_b")):
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    return dataclasses.replace(cfg, erf=dataclasses.replace(cfg.erf, crop=crop, num_images=num, models=models))


def _write_images(folder: Path, n: int, size: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8))


def test_erf_is_zero_outside_the_receptive_field():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    crops = [torch.from_numpy(rng.random((3, 16, 16))).float() for _ in range(2)]
    m = erf.erf_map(TwoConvSR(), crops)
    cy, cx = erf.centre_of(m.shape, 4)
    assert (cy, cx) == (8, 8)
    inside = np.zeros_like(m, dtype=bool)
    inside[cy - 2:cy + 3, cx - 2:cx + 3] = True
    assert np.all(m[~inside] == 0.0)                     # exactly zero beyond the 5x5 receptive field
    assert m[inside].sum() > 0 and m[cy, cx] > 0
    assert erf.area_ratio(m, 0.99, (cy, cx)) <= 25 / 256
    assert erf.area_ratio(m, 0.2, (cy, cx)) <= erf.area_ratio(m, 0.5, (cy, cx)) <= erf.area_ratio(m, 0.99, (cy, cx))
    shown = erf.normalise(m)
    assert shown.max() == 1.0 and shown.min() == 0.0
    relu = erf.erf_map(TwoConvSR(), crops, mode="relu")
    assert np.all(relu[~inside] == 0.0)


def test_area_ratio_known_answer():
    m = np.zeros((10, 10))
    m[5, 5] = 1.0
    m[5, 7] = 1.0                                       # half the mass 2 px right of the centre
    assert erf.area_ratio(m, 0.5, (5, 5)) == pytest.approx(1 / 100)
    assert erf.area_ratio(m, 0.99, (5, 5)) == pytest.approx(25 / 100)
    assert erf.area_ratio(np.zeros((4, 4)), 0.5, (2, 2)) == 0.0


def test_run_writes_maps_json_and_labels(tmp_path):
    cfg = _cfg()
    data, ckpts, out = tmp_path / "data", tmp_path / "models", tmp_path / "erf"
    _write_images(data / "lr" / cfg.data.test[0] / "x4" / "jpeg_10", 2, 20)
    trained = TwoConvSR()
    (ckpts / "twoconv_b" / "x4_jpeg_10").mkdir(parents=True)
    torch.save({"state_dict": trained.state_dict(), "iterations": 7}, ckpts / "twoconv_b" / "x4_jpeg_10" / "final.pt")
    path = erf.run(cfg, None, ckpts, data, out, torch.device("cpu"), build="test_erf:build_standin")
    res = read_json(path)
    assert res["source"]["kind"] == "LR jpeg_10" and len(res["source"]["crops"]) == 3
    a, b = res["models"]["twoconv_a"], res["models"]["twoconv_b"]
    assert a["weights"] == "random init" and a["checkpoint"] is None
    assert b["weights"] == "checkpoint" and b["checkpoint"]["iterations"] == 7
    for rec in (a, b):
        assert set(rec["area_ratio"]) == {"20", "50", "99"}
        assert 0 < rec["area_ratio"]["99"] <= 25 / 256
    for name in ("erf.png", "twoconv_a.png", "twoconv_b.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_falls_back_to_hr_and_errors_without_data(tmp_path):
    cfg = _cfg(num=1, models=("twoconv_a",))
    data = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="no LR images"):
        erf.run(cfg, None, tmp_path, data, tmp_path / "erf", "cpu", build="test_erf:build_standin")
    _write_images(data / "hr" / cfg.data.test[0], 1, 80)
    res = read_json(erf.run(cfg, None, tmp_path, data, tmp_path / "erf", "cpu", build="test_erf:build_standin"))
    assert res["source"]["kind"].startswith("HR bicubic")


def test_bad_checkpoint_names_the_file(tmp_path):
    p = tmp_path / "final.pt"
    torch.save({"weights": {}}, p)
    with pytest.raises(KeyError, match="final.pt"):
        erf.load_weights(TwoConvSR(), p)
