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
    assert {c["image"] for c in res["source"]["crops"]} == {"img0", "img1"}
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
    with pytest.raises(FileNotFoundError, match="no LR or HR images"):
        erf.run(cfg, None, tmp_path, data, tmp_path / "erf", "cpu", build="test_erf:build_standin")
    _write_images(data / "hr" / cfg.data.test[0], 1, 80)
    res = read_json(erf.run(cfg, None, tmp_path, data, tmp_path / "erf", "cpu", build="test_erf:build_standin"))
    assert res["source"]["kind"].startswith("HR bicubic")


def test_bad_checkpoint_names_the_file(tmp_path):
    from harness.checkpoint import CheckpointError
    p = tmp_path / "final.pt"
    torch.save({"weights": {}}, p)
    with pytest.raises(CheckpointError, match="final.pt"):
        erf.load_weights(TwoConvSR(), p)


class _Pickled:
    """Not a tensor or plain value: torch.load(weights_only=True) refuses to unpickle it."""


def test_weights_load_without_running_pickled_code(tmp_path):
    from harness.checkpoint import CheckpointError
    p = tmp_path / "final.pt"
    torch.save({"state_dict": TwoConvSR().state_dict(), "extra": _Pickled()}, p)
    with pytest.raises(CheckpointError, match="final.pt"):      # weights_only=False loaded this
        erf.load_weights(TwoConvSR(), p)


class Blocks(nn.Module):
    """A residual stack of blocks in an nn.ModuleList, as every model here has (SwinIR, HAT, MambaIR, MambaCSR)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU()) for _ in range(4))
        self.tail = nn.Sequential(nn.Conv2d(8, 48, 3, padding=1), nn.PixelShuffle(4))

    def forward(self, x):
        x = self.head(x)
        for b in self.blocks:
            x = x + b(x)
        return self.tail(x)


def test_checkpointed_blocks_give_the_same_map_and_restore_the_model():
    torch.manual_seed(0)
    net = Blocks()
    crops = [torch.rand(3, 24, 24) for _ in range(2)]
    plain = erf.erf_map(net, crops, checkpoint_blocks=False)
    with erf.checkpointed_blocks(net) as n:
        assert n == 4 and all("forward" in vars(b) for b in net.blocks)
    ckpt = erf.erf_map(net, crops)
    np.testing.assert_allclose(ckpt, plain, rtol=1e-6, atol=1e-12)
    assert not any("forward" in vars(b) for b in net.blocks)          # class forward back in place
    assert all(p.requires_grad for p in net.parameters())              # weights unfrozen afterwards


def test_checkpointed_blocks_keep_fewer_activations():
    """Saved tensors in the graph: with checkpointing only the block inputs, not their insides."""
    torch.manual_seed(0)
    net = Blocks().eval()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)

    def saved_bytes(checkpointed):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with erf.checkpointed_blocks(net) if checkpointed else __import__("contextlib").nullcontext():
                net(x)
        for p in net.parameters():
            p.requires_grad_(True)
        return total
    assert saved_bytes(True) < 0.6 * saved_bytes(False)


def test_crops_come_from_several_images_of_several_datasets(tmp_path):
    data = tmp_path / "data"
    _write_images(data / "lr" / "set5" / "x4" / "jpeg_10", 1, 40, seed=1)       # one usable image
    small = data / "lr" / "set5" / "x4" / "jpeg_10" / "tiny.png"
    cv2.imwrite(str(small), np.zeros((10, 10, 3), np.uint8))                    # too small: skipped
    _write_images(data / "lr" / "urban100" / "x4" / "jpeg_10", 3, 40, seed=2)
    _write_images(data / "hr" / "manga109", 2, 160, seed=3)                     # HR only: downscaled x4 -> 40
    crops, src = erf.load_crops(data, ["set5", "urban100", "manga109"], 4, "jpeg_10", 32, 6, seed=0)
    assert len(crops) == 6 and all(c.shape == (32, 32, 3) for c in crops)
    picked = [(c["dataset"], c["image"]) for c in src["crops"]]
    assert len(set(picked)) == 6 and {d for d, _ in picked} == {"set5", "urban100", "manga109"}
    assert src["skipped_smaller_than_crop"] == 1 and src["distinct_images"] == 6
    assert src["datasets"]["manga109"]["kind"].startswith("HR bicubic")
    assert src["datasets"]["urban100"]["kind"] == "LR jpeg_10"


def test_a_failed_run_leaves_the_previous_complete_set(tmp_path, monkeypatch):
    cfg = _cfg()
    data, out = tmp_path / "data", tmp_path / "erf"
    _write_images(data / "lr" / cfg.data.test[0] / "x4" / "jpeg_10", 2, 20)
    erf.run(cfg, None, tmp_path / "models", data, out, "cpu", build="test_erf:build_standin")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real = erf.erf_map

    def second_model_dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("killed for memory")
        return real(*a, **k)
    monkeypatch.setattr(erf, "erf_map", second_model_dies)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1))   # other crops, other maps
    with pytest.raises(MemoryError):
        erf.run(other, None, tmp_path / "models", data, out, "cpu", build="test_erf:build_standin")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # no new PNG without its erf.json
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "erf"]


def test_json_records_peak_memory(tmp_path):
    cfg = _cfg(num=1, models=("twoconv_a",))
    data = tmp_path / "data"
    _write_images(data / "lr" / cfg.data.test[0] / "x4" / "jpeg_10", 1, 20)
    res = read_json(erf.run(cfg, None, tmp_path, data, tmp_path / "erf", "cpu", build="test_erf:build_standin"))
    mem = res["models"]["twoconv_a"]["memory"]
    assert mem["peak_bytes"] > 10 * 2**20 and "VmHWM" in mem["method"]   # the Python process itself is > 10 MiB
