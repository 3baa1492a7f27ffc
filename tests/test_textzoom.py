"""TextZoom LMDB reader/writer, the embedded rendered set, and the textzoom_eval stage."""
from __future__ import annotations

import dataclasses
import io
import sys
import types

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from harness import config
from harness.data import textzoom as tz


def _rand_img(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_lmdb_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = [(_rand_img(rng, 32, 128), _rand_img(rng, 16, 64), w) for w in ("abc", "Hello!", "x1")]
    path = tz.write_lmdb(tmp_path / "env", samples)
    env = lmdb.open(str(path), readonly=True, lock=False)  # before the reader caches its own handle
    with env.begin() as txn:
        keys = {k.decode() for k, _ in txn.cursor()}
    env.close()
    assert tz.read_lmdb_count(path) == 3
    assert keys == {"num-samples"} | {f"{p}-{i:09d}" for i in (1, 2, 3) for p in ("image_hr", "image_lr", "label")}
    ds = tz.TextZoomPairs(path)
    assert len(ds) == 3
    for i, (hr, lr, word) in enumerate(samples):
        hr2, lr2, word2 = tz.read_sample(path, i + 1)
        np.testing.assert_array_equal(hr2, hr)
        np.testing.assert_array_equal(lr2, lr)
        assert word2 == word
        lr_t, hr_t, label = ds[i]
        assert lr_t.shape == (3, 16, 64) and hr_t.shape == (3, 32, 128) and lr_t.dtype == torch.float32
        np.testing.assert_allclose(hr_t.numpy().transpose(1, 2, 0), hr / 255.0, atol=1e-6)
        np.testing.assert_allclose(lr_t.numpy().transpose(1, 2, 0), lr / 255.0, atol=1e-6)
        assert label == word
    with pytest.raises(IndexError):
        ds[3]


def test_reader_resizes_like_textzoom_and_accepts_upper_hr_key(tmp_path):
    """Real TextZoom crops have other sizes: HR -> 128x32, LR -> 64x16, PIL bicubic. Key image_HR works too."""
    rng = np.random.default_rng(1)
    hr, lr = _rand_img(rng, 40, 150), _rand_img(rng, 20, 70)
    path = tmp_path / "env"
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, img in ((b"image_HR-000000001", hr), (b"image_lr-000000001", lr)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG" if b"lr" in key else "PNG")
            txn.put(key, buf.getvalue())
        txn.put(b"label-000000001", b"Word")
        txn.put(b"num-samples", b"1")
    env.close()
    lr_t, hr_t, label = tz.TextZoomPairs(path)[0]
    want = np.asarray(Image.fromarray(hr).resize((128, 32), Image.BICUBIC)) / 255.0
    np.testing.assert_allclose(hr_t.numpy().transpose(1, 2, 0), want, atol=1e-6)
    assert lr_t.shape == (3, 16, 64) and label == "Word"


def test_missing_folder_names_path_and_origin(tmp_path):
    with pytest.raises(tz.TextZoomError, match=r"(?s)nowhere.*JasonBoy1/TextZoom"):
        tz.TextZoomPairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(tz.TextZoomError, match="data.mdb"):
        tz.TextZoomPairs(tmp_path / "empty")


def test_corrupt_image_names_key(tmp_path):
    rng = np.random.default_rng(2)
    path = tz.write_lmdb(tmp_path / "env", [(_rand_img(rng, 32, 128), b"not a png at all", "abc")])
    with pytest.raises(tz.TextZoomError, match="image_lr-000000001"):
        tz.TextZoomPairs(path)[0]


def test_split_paths():
    assert tz.split_path("r", "train2").as_posix() == "r/train2"
    assert tz.split_path("r", "hard").as_posix() == "r/test/hard"
    with pytest.raises(tz.TextZoomError, match="unknown TextZoom split"):
        tz.split_path("r", "test")


def test_smoke_set_is_seeded_and_harder_per_split(tmp_path):
    a = tz.make_smoke_textzoom(tmp_path / "a", n_train=6, n_test=8, seed=3)
    b = tz.make_smoke_textzoom(tmp_path / "b", n_train=6, n_test=8, seed=3)
    assert tz.read_lmdb_count(tz.split_path(a, "train1")) == 6
    err = {}
    for split in tz.TEST_SPLITS:
        pa, pb = tz.split_path(a, split), tz.split_path(b, split)
        assert tz.read_lmdb_count(pa) == 8
        mse = []
        for i in range(1, 9):
            ha, la, wa = tz.read_sample(pa, i)
            hb, lb, wb = tz.read_sample(pb, i)
            np.testing.assert_array_equal(ha, hb)
            np.testing.assert_array_equal(la, lb)
            assert wa == wb and wa in tz.SMOKE_WORDS
            assert ha.shape == (32, 128, 3) and la.shape == (16, 64, 3)
            up = np.asarray(Image.fromarray(la).resize((128, 32), Image.BICUBIC)).astype(float)
            mse.append(np.mean((up - ha) ** 2))
        err[split] = float(np.mean(mse))
    assert err["easy"] < err["medium"] < err["hard"], err


def test_prepare_embedded_skips_when_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(tz, "EMBEDDED", {"n_train": 3, "n_test": 2, "seed": 0})
    root = tz.prepare_embedded(tmp_path / "tz")
    assert tz.read_lmdb_count(tz.split_path(root, "hard")) == 2
    mtime = (tz.split_path(root, "easy") / "data.mdb").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(tz, "make_smoke_textzoom", lambda *a, **k: calls.append(a))
    tz.prepare_embedded(root)
    assert calls == [] and (tz.split_path(root, "easy") / "data.mdb").stat().st_mtime_ns == mtime


class _TinyX2(nn.Module):
    """Stand-in x2 model: conv + PixelShuffle, plus a bicubic skip so it starts near bicubic."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        up = nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        return up + 0.01 * self.body(x)


class _FakeRecognizer:
    """Reads a crop as its label when it is close to the HR we rendered, else as ''."""

    def __init__(self, table):
        self.table = table

    def recognize(self, images):
        out = []
        for im in images:
            best = min(self.table, key=lambda t: np.abs(t[0].astype(int) - im).mean())
            out.append(best[1] if np.abs(best[0].astype(int) - im).mean() < 1.0 else "")
        return out


def test_textzoom_eval_run(tmp_path, monkeypatch):
    from harness import provenance, textzoom_eval
    root = tz.make_smoke_textzoom(tmp_path / "tz", n_train=2, n_test=5, seed=0)
    table = [tz.read_sample(tz.split_path(root, s), i)[::2] for s in tz.TEST_SPLITS for i in range(1, 6)]
    monkeypatch.setattr(textzoom_eval, "build_recognizer", lambda name, weights, device="cpu": _FakeRecognizer(table))
    fake_models = types.SimpleNamespace(build=lambda name, **kw: _TinyX2())
    monkeypatch.setitem(sys.modules, "harness.models", fake_models)
    import harness
    monkeypatch.setattr(harness, "models", fake_models, raising=False)
    torch.manual_seed(0)
    net = _TinyX2()
    torch.save({"model": net.state_dict(), "iter_num": 1}, tmp_path / "ckpt.pt")

    cfg = config.load(config.profile_path("smoke"), names=False)  # harness.models is the tiny stand-in here
    cfg = dataclasses.replace(cfg, textzoom=dataclasses.replace(cfg.textzoom, batch_size=2))
    path = textzoom_eval.run(cfg, "tiny_x2", tmp_path / "ckpt.pt", tmp_path / "results", torch.device("cpu"),
                             root=root)
    assert path == tmp_path / "results" / "tiny_x2.json"
    res = provenance.read_json(path)
    assert "provenance" in res and res["checkpoint"].endswith("ckpt.pt") and res["crop_border"] == 0
    for split in tz.TEST_SPLITS:
        s = res["splits"][split]
        assert s["n"] == 5 and len(s["words"]) == 5
        assert s["hr"]["accuracy"] == 1.0                 # the fake recogniser reads exact HR
        assert s["bicubic"]["accuracy"] == 0.0            # and nothing blurred
        assert 10 < s["bicubic"]["psnr_y"] < 40 and 0 < s["bicubic"]["ssim_y"] < 1
        assert abs(s["sr"]["psnr_y"] - s["bicubic"]["psnr_y"]) < 1.0   # the stand-in is ~bicubic
    assert res["splits"]["easy"]["bicubic"]["psnr_y"] > res["splits"]["hard"]["bicubic"]["psnr_y"]
    assert res["average"]["n"] == 15 and res["average"]["hr"]["accuracy"] == 1.0
    assert res["max_images"] == 0 and all(res["splits"][s]["available"] == 5 for s in tz.TEST_SPLITS)

    # evaluate.max_images: the first N crops of each split (the rehearsal scores one)
    two = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, max_images=2))
    res2 = provenance.read_json(textzoom_eval.run(two, "tiny_x2", tmp_path / "ckpt.pt", tmp_path / "r3",
                                                  torch.device("cpu"), root=root))
    assert res2["max_images"] == 2 and res2["average"]["n"] == 6
    for split in tz.TEST_SPLITS:
        s2, s = res2["splits"][split], res["splits"][split]
        assert (s2["n"], s2["available"]) == (2, 5) and s2["words"] == s["words"][:2]

    with pytest.raises(RuntimeError, match="do not fit"):
        torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "bad.pt")
        textzoom_eval.run(cfg, "tiny_x2", tmp_path / "bad.pt", tmp_path / "r2", "cpu", root=root)


def test_textzoom_eval_rejects_non_x2_model(tmp_path):
    from harness import textzoom_eval
    root = tz.make_smoke_textzoom(tmp_path / "tz", n_train=1, n_test=2, seed=0)
    ds = tz.TextZoomPairs(tz.split_path(root, "easy"))
    with pytest.raises(ValueError, match=r"expected \(2, 3, 32, 128\)"):
        textzoom_eval.evaluate_split(nn.Identity(), ds, _FakeRecognizer([]), 4, torch.device("cpu"))


def test_textzoom_model_maps_a_text_crop_to_x2(tmp_path):
    from harness import models
    net = models.build("mambair_x2_smoke")
    out = net(torch.rand(1, 3, 16, 64))
    assert tuple(out.shape) == (1, 3, 32, 128)
