"""The training-data sampling contract: PairedPatches, batch_sampler, load_pairs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from harness.data import loader
from harness.data.images import ImageError
from harness.data.loader import PairedPatches, batch_sampler, load_pairs


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _pairs(tmp_path: Path, sizes=((12, 16), (10, 14), (9, 20)), scale: int = 2, extra_hr: int = 0,
           manifest: bool = True) -> tuple[Path, Path]:
    """LR random images; HR = LR upsampled by pixel repetition (so HR[::s, ::s] == LR exactly)."""
    rng = np.random.default_rng(0)
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    names = {}
    for i, (h, w) in enumerate(sizes):
        lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        hr = np.repeat(np.repeat(lr, scale, 0), scale, 1)
        if extra_hr:
            hr = np.pad(hr, ((0, extra_hr), (0, extra_hr), (0, 0)))
        _write(lr_dir / f"im{i}.png", lr)
        _write(hr_dir / f"im{i}.png", hr)
        names[f"im{i}"] = {"sha256": "-"}
    if manifest:
        (lr_dir / "manifest.json").write_text(json.dumps({"images": names}))
    return hr_dir, lr_dir


def test_sample_is_a_function_of_seed_and_k(tmp_path):
    hr, lr = _pairs(tmp_path)
    a = PairedPatches(hr, lr, scale=2, patch_size=6, seed=7)
    b = PairedPatches(hr, lr, scale=2, patch_size=6, seed=7)
    for k in (0, 1, 99, 10 ** 9):
        x, y = a[k]
        assert x.shape == (3, 6, 6) and y.shape == (3, 12, 12) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
        torch.testing.assert_close(b[k][0], x, rtol=0, atol=0)
    assert len(a) >= 2 ** 31
    c = PairedPatches(hr, lr, scale=2, patch_size=6, seed=8)
    assert any(not torch.equal(a[k][0], c[k][0]) for k in range(5))
    assert not torch.equal(a[0][0], a[1][0])


def test_patches_are_paired_under_every_augmentation(tmp_path):
    hr, lr = _pairs(tmp_path, scale=3)
    ds = PairedPatches(hr, lr, scale=3, patch_size=5, seed=0)
    seen = set()
    for k in range(200):
        x, y = ds[k]
        torch.testing.assert_close(y[:, ::3, ::3], x, rtol=0, atol=0)   # pixel-repeated HR: same content
        seen.add(ds.draw(k)[3:])
    assert len(seen) == 8, "flips x transpose give the 8 dihedral transforms"


def test_augment_off_keeps_the_crops(tmp_path):
    hr, lr = _pairs(tmp_path)
    on = PairedPatches(hr, lr, scale=2, patch_size=6, seed=3)
    off = PairedPatches(hr, lr, scale=2, patch_size=6, seed=3, augment=False)
    for k in range(20):
        assert on.draw(k)[:3] == off.draw(k)[:3] and off.draw(k)[3:] == (False, False, False)
        i, top, left = off.draw(k)[:3]
        ref = cv2.imread(str(off.pairs[i][1]))[..., ::-1][top:top + 6, left:left + 6]
        np.testing.assert_array_equal((off[k][0].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), ref)


def test_draws_follow_the_documented_rng_order(tmp_path):
    hr, lr = _pairs(tmp_path)
    ds = PairedPatches(hr, lr, scale=2, patch_size=6, seed=11)
    rng = np.random.default_rng([11, 5])
    i = int(rng.integers(3))
    h, w = ds.sizes[i]
    top, left = int(rng.integers(h - 5)), int(rng.integers(w - 5))
    coins = tuple(bool(c) for c in rng.random(3) < 0.5)
    assert ds.draw(5) == (i, top, left, *coins)


def test_batch_sampler_slices_for_ddp():
    it = iter(batch_sampler(3, 8))
    assert next(it) == list(range(24, 32)) and next(it) == list(range(32, 40))
    r0, r1 = iter(batch_sampler(3, 8, 0, 2)), iter(batch_sampler(3, 8, 1, 2))
    for step in range(3):
        a, b = next(r0), next(r1)
        assert a + b == list(range((3 + step) * 8, (4 + step) * 8))
    s = batch_sampler(5, 4)
    assert next(iter(s)) == next(iter(s)) == [20, 21, 22, 23], "each iter() restarts at start_iteration"
    with pytest.raises(ValueError, match="not divisible"):
        batch_sampler(0, 6, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        batch_sampler(0, 4, 2, 2)


def test_dataloader_workers_and_resume_give_the_same_batches(tmp_path):
    hr, lr = _pairs(tmp_path)
    ds = PairedPatches(hr, lr, scale=2, patch_size=6, seed=1)

    def batches(start, n, workers):
        dl = torch.utils.data.DataLoader(ds, batch_sampler=batch_sampler(start, 4), num_workers=workers)
        out = []
        for b in dl:
            out.append(b[0])
            if len(out) == n:
                return out

    ref = batches(0, 4, 0)
    resumed = batches(2, 2, 0)
    torch.testing.assert_close(resumed[0], ref[2], rtol=0, atol=0)
    par = batches(0, 4, 2)
    for a, b in zip(ref, par):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_small_image_and_bad_sizes_are_errors(tmp_path):
    hr, lr = _pairs(tmp_path / "a")
    with pytest.raises(ValueError, match=r"im1\.png: LR image 10x14 is smaller than the patch 12x12"):
        PairedPatches(hr, lr, scale=2, patch_size=12, seed=0)
    with pytest.raises(ValueError, match="not at scale 3"):
        PairedPatches(hr, lr, scale=3, patch_size=4, seed=0)
    hr2, lr2 = _pairs(tmp_path / "b", sizes=((12, 16),))
    _write(hr2 / "im0.png", np.zeros((30, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="not an integer multiple"):
        load_pairs(hr2, lr2)


def test_incomplete_folders_are_refused(tmp_path):
    hr, lr = _pairs(tmp_path / "a", manifest=False)
    with pytest.raises(FileNotFoundError, match="degrade output is incomplete"):
        PairedPatches(hr, lr, scale=2, patch_size=4, seed=0)
    hr, lr = _pairs(tmp_path / "b")
    (lr / "im2.png").unlink()
    with pytest.raises(ValueError, match=r"missing \['im2'\]"):
        load_pairs(hr, lr)
    hr, lr = _pairs(tmp_path / "c")
    (hr / "im0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"hr/im0\.png: HR image"):
        load_pairs(hr, lr)


def test_load_pairs_sorted_and_cropped(tmp_path):
    hr, lr = _pairs(tmp_path, scale=2, extra_hr=1)   # HR one row / column taller (mod-crop of another scale)
    pairs = load_pairs(hr, lr)
    assert [n for n, _, _ in pairs] == ["im0", "im1", "im2"]
    for _, l, h in pairs:
        assert l.dtype == h.dtype == np.uint8 and h.shape == (2 * l.shape[0], 2 * l.shape[1], 3)
        np.testing.assert_array_equal(h[::2, ::2], l)


def test_load_pairs_limit_decodes_only_the_first_images(tmp_path):
    """limit = N: the first N by name are read (evaluate.max_images, val_images, visual_images); 0 = all."""
    hr, lr = _pairs(tmp_path)
    (lr / "im2.png").write_bytes((lr / "im2.png").read_bytes()[:40])   # truncated: decoding it fails
    assert [n for n, _, _ in load_pairs(hr, lr, limit=2)] == ["im0", "im1"]
    assert [n for n, _, _ in load_pairs(hr, lr, limit=1)] == ["im0"]
    with pytest.raises(ImageError, match="im2.png"):
        load_pairs(hr, lr)
    with pytest.raises(ImageError, match="im2.png"):
        load_pairs(hr, lr, limit=3)


def test_bounded_cache_changes_nothing(tmp_path):
    hr, lr = _pairs(tmp_path)
    big = PairedPatches(hr, lr, scale=2, patch_size=6, seed=4)
    tiny = PairedPatches(hr, lr, scale=2, patch_size=6, seed=4, cache_mb=0)
    for k in range(30):
        torch.testing.assert_close(big[k][1], tiny[k][1], rtol=0, atol=0)
    assert len(tiny._cache) == 1 and len(big._cache) == 3


def test_train_dirs():
    assert loader.train_dirs("data", "df2k", 4, "jpeg_10", False) == (Path("data/hr/df2k"),
                                                                   Path("data/lr/df2k/x4/jpeg_10"))
    assert loader.train_dirs("data", "df2k", 4, "jpeg_10", True) == (Path("data/lr/df2k/sub_hr_x4"),
                                                                  Path("data/lr/df2k/x4/jpeg_10/sub"))
