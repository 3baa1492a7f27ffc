"""Bad real-world inputs met on the way to the paper run: each is a documented conversion or a
clear error naming the file, never a silent wrong number (issue 17.3).

Decisions (documented in harness/data/images.py):
- grayscale -> RGB (channel replicated), palette -> RGB (through its palette), opaque RGBA -> RGB:
  converted, logged with the file name and recorded per image in the prepare manifest;
- 16-bit -> 8-bit by round(v / 257): exact for 8-bit data stored as 257 * k, nearest otherwise;
- alpha with any non-opaque pixel: refused (the colour under it is undefined);
- truncated PNG, wrong image count, wrong image names, image smaller than the scale or the
  training patch: refused, naming the file or folder, before any manifest is written;
- image smaller than the evaluation tile (on one side or both): evaluated whole along that side,
  the same pixels as an untiled forward pass.

The test sets are laid out as the registry's real Set5 (5 images, baby .. woman), given to
``csrbench prepare`` as a local copy (``data.local``), so the registry's own checks run.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import load, profile_path
from harness.data import prepare
from harness.data.images import ImageError, read_rgb
from harness.data.loader import PairedPatches
from harness.data.prepare import DatasetError
from harness.evaluate import super_resolve
from harness.tiling import tiled_forward

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _cfg(local: dict[str, str]):
    cfg = load(profile_path("smoke"))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, local=dict(local)),
                               degrade=dataclasses.replace(cfg.degrade, workers=1, scale=4))


def _rgb(seed: int, h: int = 28, w: int = 36) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _set5(tmp_path: Path, replace: dict[str, bytes] | None = None, names=SET5) -> Path:
    """A Set5 copy in its published layout (``Set5_HR/<name>.png``), some files replaced by ``replace``."""
    folder = tmp_path / "Set5_HR"
    folder.mkdir(parents=True)
    for i, n in enumerate(names):
        data = (replace or {}).get(n)
        if data is None:
            ok, buf = cv2.imencode(".png", _rgb(i)[..., ::-1])
            data = buf.tobytes()
        (folder / f"{n}.png").write_bytes(data)
    return folder


def _prepare(tmp_path: Path, folder: Path) -> Path:
    prepare.run(_cfg({"set5": str(folder)}), datasets=["set5"], out=tmp_path / "data")
    return tmp_path / "data" / "hr" / "set5"


def _manifest(hr: Path) -> dict:
    return json.loads((hr / "manifest.json").read_text())["images"]


def _enc(a: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", a)
    assert ok
    return buf.tobytes()


# ----------------------------------------------------------------------------- documented conversions

def test_grayscale_png_is_replicated_logged_and_recorded(tmp_path, caplog):
    gray = np.random.default_rng(5).integers(0, 256, (28, 36), dtype=np.uint8)
    with caplog.at_level(logging.INFO, logger="harness.data"):
        hr = _prepare(tmp_path, _set5(tmp_path, {"bird": _enc(gray)}))
    assert _manifest(hr)["bird"]["conversions"] == ["grayscale -> RGB (channel replicated)"]
    assert _manifest(hr)["baby"]["conversions"] == []
    out = cv2.imread(str(hr / "bird.png"), cv2.IMREAD_UNCHANGED)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray[:28, :36])   # mod-crop 4: 28x36 kept whole
    assert any("bird.png" in r.getMessage() and "grayscale" in r.getMessage() for r in caplog.records)


def test_palette_png_is_expanded_exactly_and_recorded(tmp_path):
    rgb = _rgb(7)
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    hr = _prepare(tmp_path, _set5(tmp_path, {"head": buf.getvalue()}))
    assert _manifest(hr)["head"]["conversions"] == ["palette -> RGB (expanded through its palette)"]
    np.testing.assert_array_equal(cv2.imread(str(hr / "head.png"))[..., ::-1], np.asarray(pal.convert("RGB")))


def test_16bit_png_is_converted_exactly(tmp_path):
    k = _rgb(9)
    rgb16 = k.astype(np.uint16) * 257                      # 8-bit data stored in 16 bits: must come back exactly
    rgb16[0, 0] = (65535, 32896, 128)                     # and in-between values round to the nearest
    hr = _prepare(tmp_path, _set5(tmp_path, {"woman": _enc(rgb16[..., ::-1])}))
    assert _manifest(hr)["woman"]["conversions"] == ["16-bit -> 8-bit (round(v/257))"]
    got = cv2.imread(str(hr / "woman.png"))[..., ::-1]
    np.testing.assert_array_equal(got[1:], k[1:])
    np.testing.assert_array_equal(got[0, 1:], k[0, 1:])
    assert got[0, 0].tolist() == [255, 128, 0]            # 32896 / 257 = 128.0, 128 / 257 = 0.498


def test_opaque_rgba_drops_alpha_and_says_so(tmp_path):
    rgba = np.dstack([_rgb(11), np.full((28, 36), 255, np.uint8)])
    hr = _prepare(tmp_path, _set5(tmp_path, {"baby": _enc(rgba[..., [2, 1, 0, 3]])}))
    assert _manifest(hr)["baby"]["conversions"] == ["RGBA -> RGB (opaque alpha dropped)"]
    np.testing.assert_array_equal(cv2.imread(str(hr / "baby.png"))[..., ::-1], rgba[..., :3])


# ----------------------------------------------------------------------------- refused, naming the file

@pytest.mark.parametrize("kind", ["rgba", "gray_alpha", "palette_trns"])
def test_transparency_is_an_error_naming_the_file(tmp_path, kind):
    rgb = _rgb(13)
    if kind == "rgba":
        alpha = np.full((28, 36), 255, np.uint8)
        alpha[3, 4] = 254                                 # a single translucent pixel is enough
        data = _enc(np.dstack([rgb[..., ::-1], alpha]))
    elif kind == "gray_alpha":
        buf = io.BytesIO()
        Image.fromarray(np.dstack([rgb[..., 0], np.zeros((28, 36), np.uint8)]), "LA").save(buf, format="PNG")
        data = buf.getvalue()
    else:
        buf = io.BytesIO()
        Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(buf, format="PNG", transparency=0)
        data = buf.getvalue()
    folder = _set5(tmp_path, {"butterfly": data})
    with pytest.raises(ImageError, match=r"butterfly\.png: alpha channel with \d+ of 1008 pixels not fully opaque"):
        _prepare(tmp_path, folder)
    assert not (tmp_path / "data" / "hr" / "set5" / "manifest.json").exists()


def test_truncated_png_in_a_test_set_names_the_file(tmp_path):
    good = _enc(_rgb(3)[..., ::-1])
    folder = _set5(tmp_path, {"bird": good[: len(good) - 40]})
    with pytest.raises(ImageError, match=r"Set5_HR/bird\.png: corrupt or truncated image"):
        _prepare(tmp_path, folder)
    assert not (tmp_path / "data" / "hr" / "set5" / "manifest.json").exists()


@pytest.mark.parametrize("names", [SET5[:4], SET5 + ("zebra",)], ids=["missing_one", "one_extra"])
def test_wrong_image_count_names_the_folder_and_the_count(tmp_path, names):
    folder = _set5(tmp_path, names=names)
    with pytest.raises(DatasetError, match=rf"{folder} \(data\.local\.set5\): expected 5 HR images of set5.*"
                                           rf"{len(names)} images"):
        _prepare(tmp_path, folder)


def test_wrong_image_names_are_refused(tmp_path):
    folder = _set5(tmp_path, names=("img_001", "img_002", "img_003", "img_004", "img_005"))
    with pytest.raises(DatasetError, match=r"set5 images run img_001\.\.img_005, expected baby\.\.woman"):
        _prepare(tmp_path, folder)


def test_image_smaller_than_the_scale_names_the_file(tmp_path):
    folder = _set5(tmp_path, {"head": _enc(_rgb(1, h=3, w=40)[..., ::-1])})
    with pytest.raises(ImageError, match=r"head\.png: 3x40 image is smaller than the scale 4"):
        _prepare(tmp_path, folder)


def test_image_smaller_than_the_training_patch_names_the_file(tmp_path):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    for n, (h, w) in {"0001": (20, 24), "0002": (12, 30)}.items():
        lr = _rgb(2, h, w)
        cv2.imwrite(str(lr_dir / f"{n}.png"), lr[..., ::-1])
        cv2.imwrite(str(hr_dir / f"{n}.png"), np.repeat(np.repeat(lr, 4, 0), 4, 1)[..., ::-1])
    (lr_dir / "manifest.json").write_text(json.dumps({"images": {"0001": {}, "0002": {}}}))
    with pytest.raises(ValueError, match=r"0002\.png: LR image 12x30 is smaller than the patch 16x16"):
        PairedPatches(hr_dir, lr_dir, scale=4, patch_size=16, seed=0)
    PairedPatches(hr_dir, lr_dir, scale=4, patch_size=12, seed=0)   # fits: no error


# ----------------------------------------------------------------------------- smaller than the tile

class _LocalNet(torch.nn.Module):
    """3x3 conv + pixel shuffle x2: receptive radius 1, so centre-blended tiles are exact."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.up = torch.nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.conv(x)))


@pytest.mark.parametrize("hw", [(20, 30), (20, 150), (150, 20)], ids=["both_sides", "height_only", "width_only"])
def test_image_smaller_than_the_tile_gives_the_untiled_result(hw):
    net = _LocalNet().eval()
    lr = _rgb(4, *hw)
    with torch.no_grad():
        tiled = super_resolve(net, lr, 2, tile=64, overlap=16)
        whole = super_resolve(net, lr, 2, tile=0, overlap=0)
        calls = []
        tiled_forward(lambda t: calls.append(tuple(t.shape[-2:])) or net(t),
                      torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255, 2, 64, 16)
    assert tiled.shape == (2 * hw[0], 2 * hw[1], 3)
    np.testing.assert_array_equal(tiled, whole)
    small = min(hw)
    assert all(small in c for c in calls)                  # the short side is never padded up to the tile
    assert len(calls) == (1 if max(hw) <= 64 else 3)


def test_read_rgb_refuses_float_tiff(tmp_path):
    p = tmp_path / "f.tiff"
    assert cv2.imwrite(str(p), np.random.default_rng(0).random((8, 8, 3)).astype(np.float32))
    with pytest.raises(ImageError, match=r"f\.tiff: (not a readable image|unsupported sample type float32)"):
        read_rgb(p)
