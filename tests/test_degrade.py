"""csrbench degrade: MATLAB bicubic, YUV conversion, codec round trips, the stage, bad input."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import stat
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.config import Degradation, load, profile_path
from harness.data import codecs, degrade, prepare
from harness.data import images as images_mod
from harness.data.codecs import EncoderError
from harness.data.degrade import imresize
from harness.data.images import ImageError


def _cfg(workers: int = 1, sub_images: bool = False, **deg):
    cfg = load(profile_path("smoke"))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sub_images=sub_images),
                               degrade=dataclasses.replace(cfg.degrade, workers=workers, **deg))


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 90 * np.sin(xx / 6.0), 128 + 80 * np.cos(yy / 5.0), 128 + 60 * np.sin((xx + yy) / 8.0)], -1)
    return np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


# ----------------------------------------------------------------------------- MATLAB imresize

def _matlab_imresize_reference(img: np.ndarray, scale: float) -> np.ndarray:
    """Independent, literal per-pixel transcription of MATLAB imresize.m (bicubic, antialiasing)."""
    def kernel(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
        if x <= 2:
            return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
        return 0.0

    def resize_dim(a, dim):
        n_in = a.shape[dim]
        n_out = math.ceil(n_in * scale)
        width = 4 / scale if scale < 1 else 4
        out = np.zeros(a.shape[:dim] + (n_out,) + a.shape[dim + 1:])
        for x in range(1, n_out + 1):
            u = x / scale + 0.5 * (1 - 1 / scale)
            left = math.floor(u - width / 2)
            taps = range(left, left + math.ceil(width) + 2)
            ws = [(scale * kernel(scale * (u - j)) if scale < 1 else kernel(u - j)) for j in taps]
            tot = sum(ws)
            for j, wgt in zip(taps, ws):
                k = (j - 1) % (2 * n_in)                  # aux = [1:n, n:-1:1], 1-based
                src = k if k < n_in else 2 * n_in - 1 - k
                sl_out = [slice(None)] * a.ndim
                sl_in = [slice(None)] * a.ndim
                sl_out[dim], sl_in[dim] = x - 1, src
                out[tuple(sl_out)] += wgt / tot * a[tuple(sl_in)]
        return out
    return resize_dim(resize_dim(img.astype(np.float64), 0), 1)


def test_known_values_of_a_ramp():
    # Hand-derived from MATLAB's contributions(): x1/2 taps at distances +-0.25..+-1.75 (in output
    # units) have weights 0.43359375, 0.11328125, -0.03515625, -0.01171875; the border folds
    # symmetrically (index 0 -> pixel 1, -1 -> 2, -2 -> 3). imresize(1:8, 0.5) in MATLAB.
    out = imresize(np.arange(1, 9, dtype=np.float64)[None, :, None], 0.5)
    np.testing.assert_array_equal(out.ravel(), [1.44921875, 3.48828125, 5.51171875, 7.55078125])
    idx, w = degrade.contributions(8, 4, 0.5)
    np.testing.assert_array_equal(w[1], [-0.01171875, -0.03515625, 0.11328125, 0.43359375,
                                         0.43359375, 0.11328125, -0.03515625, -0.01171875])
    np.testing.assert_array_equal(idx[0], [2, 1, 0, 0, 1, 2, 3, 4])


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2.0])
def test_matches_an_independent_matlab_transcription(scale):
    img = np.random.default_rng(3).random((13, 17, 3))
    got = imresize(img, scale)
    ref = _matlab_imresize_reference(img, scale)
    assert got.shape == ref.shape == (math.ceil(13 * scale), math.ceil(17 * scale), 3)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_constant_image_stays_constant():
    for scale in (0.25, 1 / 3, 0.5):
        out = imresize(np.full((24, 36, 3), 0.3125), scale)
        np.testing.assert_allclose(out, 0.3125, atol=1e-14)


def test_block_images_at_quarter_scale():
    # x1/4 stencil over 4x4 blocks: own block 0.845703125, neighbours 0.08984375 and -0.0126953125
    # (sums of 0.25*cubic(d/4) over the four pixels of each block). Away from the borders:
    # - a block image whose block values are linear gives exactly the block values;
    # - a single bright block gives the outer product of the stencil.
    stencil = np.array([-0.0126953125, 0.08984375, 0.845703125, 0.08984375, -0.0126953125])
    assert stencil.sum() == 1.0
    vals = np.add.outer(0.05 * np.arange(8), 0.03 * np.arange(8)) + 0.1
    img = np.kron(vals, np.ones((4, 4)))[..., None]
    out = imresize(img, 0.25)[..., 0]
    np.testing.assert_allclose(out[2:-2, 2:-2], vals[2:-2, 2:-2], atol=1e-13)
    single = np.zeros((9, 9))
    single[4, 4] = 1.0
    out = imresize(np.kron(single, np.ones((4, 4)))[..., None], 0.25)[..., 0]
    np.testing.assert_allclose(out[2:7, 2:7], np.outer(stencil, stencil), atol=1e-13)
    assert np.abs(out[:2]).max() == 0 and np.abs(out[:, 7:]).max() == 0


def test_bicubic_downscale_pipeline():
    hr = _smooth(34, 47)
    lr = degrade.bicubic_downscale(hr, 4)
    assert lr.dtype == np.uint8 and lr.shape == (8, 11, 3)      # mod-crop 32x44 first
    ref = np.clip(np.floor(_matlab_imresize_reference(hr[:32, :44] / 255.0, 0.25) * 255 + 0.5), 0, 255)
    np.testing.assert_array_equal(lr, ref)
    with pytest.raises(ValueError, match="smaller than the scale"):
        degrade.bicubic_downscale(hr[:3], 4)


# ----------------------------------------------------------------------------- colour and codecs

def test_bt601_limited_known_values():
    rgb = np.zeros((2, 8, 3), np.uint8)
    rgb[:, 0:2] = 255                 # white
    rgb[:, 2:4] = 0                   # black
    rgb[:, 4:6] = (255, 0, 0)         # red
    rgb[:, 6:8] = (0, 0, 255)         # blue
    y, cb, cr = codecs.rgb_to_yuv420(rgb, 8)
    assert y[0].tolist() == [235, 235, 16, 16, 81, 81, 41, 41]
    assert cb[0].tolist() == [128, 128, 90, 240] and cr[0].tolist() == [128, 128, 240, 110]
    y, cb, cr = codecs.rgb_to_yuv420(rgb, 10)
    assert y.dtype == np.uint16 and y[0, 0] == 940 and y[0, 2] == 64 and cb[0, 0] == 512 and cr[0, 2] == 960
    flat = np.zeros((4, 6, 3), np.uint8) + np.array([200, 40, 90], np.uint8)
    for bd in (8, 10):
        back = codecs.yuv420_to_rgb(*codecs.rgb_to_yuv420(flat, bd), bd)
        assert np.abs(back.astype(int) - flat).max() <= 1


def test_jpeg_quality_orders_size_and_psnr():
    img = _smooth(48, 64)
    res = {q: codecs.degrade_jpeg(img, q) for q in (10, 20, 30)}
    ps = [_psnr(res[q].decoded, img) for q in (10, 20, 30)]
    sizes = [res[q].bitstream_bytes for q in (10, 20, 30)]
    assert ps[0] < ps[1] < ps[2] and sizes[0] < sizes[1] < sizes[2]
    ok, buf = cv2.imencode(".jpg", img[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 20])
    np.testing.assert_array_equal(res[20].decoded, cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("codec", ["hevc", "vvc"])
def test_video_codecs_round_trip(codec):
    img = _smooth(48, 64)
    res = {qp: codecs.compress(img, codec, qp) for qp in (32, 37, 42)}
    ps = [_psnr(res[q].decoded, img) for q in (32, 37, 42)]
    for r in res.values():
        assert r.decoded.shape == img.shape and r.decoded.dtype == np.uint8 and r.bitstream_bytes > 0
    assert ps[0] > ps[1] > ps[2] > 20, ps
    assert res[32].bitstream_bytes > res[42].bitstream_bytes
    odd = codecs.compress(img[:45, :61], codec, 37)    # padded to 48x64 internally, cropped back
    assert odd.decoded.shape == (45, 61, 3) and _psnr(odd.decoded, img[:45, :61]) > 20


def test_missing_ffmpeg_or_encoder(monkeypatch):
    img = _smooth(16, 16)
    monkeypatch.setattr(codecs, "_ffmpeg_encoders", lambda exe: frozenset({"libx265"}))
    with pytest.raises(EncoderError, match="has no libvvenc encoder"):
        codecs.degrade_vvc(img, 37)
    import imageio_ffmpeg

    def gone():
        raise RuntimeError("No ffmpeg exe could be found")
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", gone)
    with pytest.raises(EncoderError, match="imageio-ffmpeg"):
        codecs.degrade_hevc(img, 37)


def test_hm_vtm_paths_are_checked(tmp_path):
    img = _smooth(16, 16)
    with pytest.raises(EncoderError, match="degrade.hm_path is empty"):
        codecs.degrade_hevc(img, 37, encoder="hm")
    with pytest.raises(EncoderError, match="degrade.vtm_path: encoder binary not found: /nonexistent/EncoderApp"):
        codecs.degrade_vvc(img, 37, encoder="vtm", vtm_path="/nonexistent/EncoderApp")
    b = tmp_path / "bin" / "TAppEncoderStatic"
    b.parent.mkdir()
    b.write_text("")
    with pytest.raises(EncoderError, match="not executable"):
        codecs.degrade_hevc(img, 37, encoder="hm", hm_path=str(b))
    b.chmod(b.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(EncoderError, match="cannot find cfg/encoder_intra_main.cfg"):
        codecs.degrade_hevc(img, 37, encoder="hm", hm_path=str(b))


def test_hm_and_vtm_command_construction(tmp_path):
    b = tmp_path / "HM" / "bin" / "TAppEncoderStatic"
    cfg = tmp_path / "HM" / "cfg" / "encoder_intra_main.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("IntraPeriod : 1\n")
    b.parent.mkdir(parents=True)
    assert codecs.find_cfg(b, "encoder_intra_main.cfg") == cfg.resolve()
    cmd = codecs.hm_command(b, cfg, Path("in.yuv"), Path("out.bin"), 64, 48, 37)
    assert cmd[:7] == [str(b), "-c", str(cfg), "-i", "in.yuv", "-b", "out.bin"]
    s = " ".join(cmd)
    assert "-wdt 64 -hgt 48" in s and "-f 1" in s and "-q 37" in s and "--InputBitDepth=8" in s
    assert "--InputChromaFormat=420" in s
    s = " ".join(codecs.vtm_command("EncoderApp", Path("c.cfg"), Path("in.yuv"), Path("o.bin"), 64, 48, 42))
    assert "-q 42" in s and "--InputBitDepth=10" in s and "--InternalBitDepth=10" in s


def test_hm_path_end_to_end_with_a_stand_in_encoder(tmp_path):
    """A fake TAppEncoder (HM's argument syntax, x265 inside) checks what degrade hands to HM."""
    root = tmp_path / "HM"
    (root / "cfg").mkdir(parents=True)
    (root / "cfg" / "encoder_intra_main.cfg").write_text("IntraPeriod : 1\n")
    (root / "bin").mkdir()
    fake = root / "bin" / "TAppEncoderStatic"
    log = tmp_path / "args.json"
    fake.write_text(f"""#!{sys.executable}
import json, subprocess, sys
a = sys.argv[1:]
opt = {{a[i]: a[i + 1] for i in range(len(a) - 1) if a[i].startswith('-') and not a[i].startswith('--')}}
json.dump(a, open({str(log)!r}, 'w'))
w, h = int(opt['-wdt']), int(opt['-hgt'])
import os
assert os.path.getsize(opt['-i']) == w * h * 3 // 2, 'raw 8-bit 4:2:0 frame expected'
from harness.data.codecs import ffmpeg_exe, ffmpeg_hevc_command
subprocess.run(ffmpeg_hevc_command(ffmpeg_exe(), opt['-i'], opt['-b'], w, h, int(opt['-q'])), check=True)
""")
    fake.chmod(0o755)
    img = _smooth(45, 61)
    r = codecs.degrade_hevc(img, 32, encoder="hm", hm_path=str(fake))
    args = json.loads(log.read_text())
    assert args[args.index("-wdt") + 1] == "64" and args[args.index("-hgt") + 1] == "48"
    assert r.decoded.shape == img.shape and _psnr(r.decoded, img) > 25


# ----------------------------------------------------------------------------- the stage

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    prepare.run(_cfg(), datasets=["skimage_test"], out=data)
    return data


def _copy_hr(prepared, tmp_path):
    import shutil
    shutil.copytree(prepared / "hr", tmp_path / "hr")
    return tmp_path


def test_stage_writes_pngs_and_manifest(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    t0 = time.monotonic()
    out = degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("jpeg", 10)], scale=4, data=data)
    assert time.monotonic() - t0 < 10
    assert out == data / "lr"
    folder = data / "lr" / "skimage_test" / "x4" / "jpeg_10"
    man = json.loads((folder / "manifest.json").read_text())
    assert man["provenance"]["git"] is not None and man["codec"] == "jpeg" and man["level"] == 10
    assert "libjpeg" in man["settings"]["version"]
    hr_man = json.loads((data / "hr" / "skimage_test" / "manifest.json").read_text())["images"]
    for name, rec in man["images"].items():
        png = folder / f"{name}.png"
        assert hashlib.sha256(png.read_bytes()).hexdigest() == rec["sha256"]
        lr = cv2.imread(str(png))[..., ::-1]
        assert list(lr.shape[:2]) == rec["lr_size"] and [4 * v for v in rec["lr_size"]] == hr_man[name]["size"]
        clean = degrade.bicubic_downscale(cv2.imread(str(data / "hr" / "skimage_test" / f"{name}.png"))[..., ::-1], 4)
        ref = codecs.degrade_jpeg(clean, 10)
        np.testing.assert_array_equal(lr, ref.decoded)
        assert rec["bitstream_bytes"] == ref.bitstream_bytes
        assert rec["bpp"] == pytest.approx(ref.bitstream_bytes * 8 / (lr.shape[0] * lr.shape[1]))
        assert rec["psnr_rgb"] == pytest.approx(_psnr(lr, clean))
        assert 20 < rec["psnr_y"] < 45 and rec["hr_sha256"] == hr_man[name]["sha256"]


def test_stage_is_idempotent_and_redoes_partial_output(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    cfg = _cfg()

    def run():
        degrade.run(cfg, datasets=["skimage_test"], degradations=[Degradation("jpeg", 20)], data=data)
    run()
    folder = data / "lr" / "skimage_test" / "x4" / "jpeg_20"
    m0 = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    run()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == m0, "complete output must be skipped"
    (folder / "coffee.png").unlink()                     # partial: one image missing
    (folder / "stale.png").write_bytes(b"x")             # and a foreign file
    run()
    assert (folder / "coffee.png").is_file() and not (folder / "stale.png").exists()
    assert (folder / "chelsea.png").stat().st_mtime_ns != m0["chelsea.png"], "a partial folder is redone"
    (folder / "rocket.png").write_bytes(b"tampered")     # sha256 mismatch
    run()
    assert hashlib.sha256((folder / "rocket.png").read_bytes()).hexdigest() == \
        json.loads((folder / "manifest.json").read_text())["images"]["rocket"]["sha256"]


def test_codec_none_and_parallel_workers_match(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    degs = [Degradation("none", 0), Degradation("jpeg", 30)]
    import shutil
    shutil.copytree(data / "hr", data / "a" / "hr")
    shutil.copytree(data / "hr", data / "b" / "hr")
    degrade.run(_cfg(workers=1), datasets=["skimage_test"], degradations=degs, data=data / "a")
    degrade.run(_cfg(workers=2), datasets=["skimage_test"], degradations=degs, data=data / "b")
    for tag in ("none_0", "jpeg_30"):
        a = json.loads((data / "a/lr/skimage_test/x4" / tag / "manifest.json").read_text())["images"]
        b = json.loads((data / "b/lr/skimage_test/x4" / tag / "manifest.json").read_text())["images"]
        assert {k: v["sha256"] for k, v in a.items()} == {k: v["sha256"] for k, v in b.items()}
    none = json.loads((data / "a/lr/skimage_test/x4/none_0/manifest.json").read_text())["images"]["chelsea"]
    assert none["bpp"] is None and none["psnr_rgb"] is None   # identical to the clean LR: inf -> null


def test_video_stage_manifest(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("hevc", 42), Degradation("vvc", 42)],
                data=data)
    for codec, lib in (("hevc", "libx265"), ("vvc", "libvvenc")):
        man = json.loads((data / "lr/skimage_test/x4" / f"{codec}_42" / "manifest.json").read_text())
        assert lib in man["settings"]["version"] and man["settings"]["qp"] == 42
        for rec in man["images"].values():
            assert 0 < rec["bpp"] < 8 and 15 < rec["psnr_y"] < 50


def test_unprepared_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="csrbench prepare --dataset skimage_test"):
        degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("jpeg", 10)], data=tmp_path)


def test_corrupt_hr_names_the_file(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    p = data / "hr" / "skimage_test" / "coffee.png"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ImageError, match=r"coffee\.png"):
        degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("jpeg", 10)], data=data)
    assert not (data / "lr/skimage_test/x4/jpeg_10/manifest.json").exists()


def test_disk_full_leaves_no_half_written_output(prepared, tmp_path, monkeypatch):
    data = _copy_hr(prepared, tmp_path)

    def full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(images_mod, "write_bytes", full)
    with pytest.raises(OSError, match=r"jpeg_10/chelsea\.png: disk full"):
        degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("jpeg", 10)], data=data)
    folder = data / "lr/skimage_test/x4/jpeg_10"
    assert not list(folder.glob("*")), "no PNG, temp file or manifest may be left"


def test_missing_encoder_fails_before_any_output(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    with pytest.raises(EncoderError, match="degrade.vtm_path: encoder binary not found"):
        degrade.run(_cfg(vvc_encoder="vtm", vtm_path=str(tmp_path / "nope")), datasets=["skimage_test"],
                    degradations=[Degradation("vvc", 37)], data=data)
    assert not (data / "lr").exists()


# ----------------------------------------------------------------------------- sub-images

def test_subimage_positions_follow_basicsr():
    assert degrade.subimage_positions(1000) == [0, 240, 480, 520]
    assert degrade.subimage_positions(960) == [0, 240, 480]
    assert degrade.subimage_positions(719) == [0, 239]
    assert degrade.subimage_positions(480) == [0] and degrade.subimage_positions(300) == [0]


def test_sub_images_are_aligned(tmp_path, monkeypatch):
    # 2 images: 768x768 (retina crop -> 3x3 crops) and a small one (whole image = one crop)
    from harness.data import registry
    from harness.data.registry import Dataset
    full = registry.get("skimage_train")
    small = Dataset("tiny_train", "train", 2, "test", "x",
                    skimage=(full.skimage[4], registry.get("skimage_test").skimage[0]))
    monkeypatch.setitem(registry.DATASETS, "tiny_train", small)
    cfg = _cfg(sub_images=True)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train="tiny_train"))
    prepare.run(cfg, datasets=["tiny_train"], out=tmp_path)
    degrade.run(cfg, datasets=["tiny_train"], degradations=[Degradation("jpeg", 10)], data=tmp_path)
    base = tmp_path / "lr/tiny_train/x4"
    hr_sub, lr_sub = sorted((base.parent / "sub_hr_x4").glob("*.png")), sorted((base / "jpeg_10" / "sub").glob("*.png"))
    assert [p.name for p in hr_sub] == [p.name for p in lr_sub]
    assert len([p for p in hr_sub if p.name.startswith("retina_")]) == 9
    assert [p.name for p in hr_sub if p.name.startswith("chelsea")] == ["chelsea_s001.png"]
    lr_full = cv2.imread(str(base / "jpeg_10" / "retina.png"))
    hr_full = cv2.imread(str(tmp_path / "hr/tiny_train/retina.png"))
    s005_lr = cv2.imread(str(base / "jpeg_10/sub/retina_s005.png"))
    s005_hr = cv2.imread(str(base.parent / "sub_hr_x4/retina_s005.png"))
    np.testing.assert_array_equal(s005_lr, lr_full[60:180, 60:180])     # row 2, col 2: HR offset 240
    np.testing.assert_array_equal(s005_hr, hr_full[240:720, 240:720])
    from harness.data.loader import PairedPatches, train_dirs
    ds = PairedPatches(*train_dirs(tmp_path, "tiny_train", 4, "jpeg_10", True), scale=4, patch_size=16, seed=0)
    assert len(ds.pairs) == 10 and ds[3][1].shape == (3, 64, 64)
    m = {p.name: p.stat().st_mtime_ns for p in lr_sub}
    degrade.run(cfg, datasets=["tiny_train"], degradations=[Degradation("jpeg", 10)], data=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in lr_sub} == m


def test_default_plan_covers_params_runs(prepared, tmp_path):
    data = _copy_hr(prepared, tmp_path)
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, runs=dataclasses.replace(cfg.runs, degradations=(Degradation("jpeg", 10),),
                                                            ablation_degradation=Degradation("jpeg", 20)))
    degrade.run(cfg, datasets=["skimage_test"], data=data)
    lr = data / "lr" / "skimage_test"
    assert sorted(str(p.parent.relative_to(lr)) for p in lr.glob("*/*/manifest.json")) == \
        ["x2/none_0", "x4/jpeg_10", "x4/jpeg_20"]
    x2 = cv2.imread(str(lr / "x2/none_0/chelsea.png"))
    assert x2.shape[:2] == (96, 128)


# ----------------------------------------------------------------------------- encoder ranges, clean failure

@pytest.mark.parametrize("codec", ["hevc", "vvc"])
def test_qp_range_is_what_the_ffmpeg_encoder_accepts(codec):
    """QP_RANGE is the encoder's own: its top QP encodes, one above is refused by ffmpeg itself."""
    import subprocess
    import tempfile
    lo, hi = codecs.QP_RANGE[codec]
    exe = codecs.ffmpeg_exe()
    make = codecs.ffmpeg_hevc_command if codec == "hevc" else codecs.ffmpeg_vvc_command
    bit_depth = 8 if codec == "hevc" else 10
    import skimage.data
    photo = np.ascontiguousarray(skimage.data.astronaut()[100:164, 100:164])   # libvvenc fails on noise at QP <= 19
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.yuv"
        codecs._write_yuv(src, codecs.rgb_to_yuv420(photo, bit_depth))
        rc = {qp: subprocess.run(make(exe, src, Path(tmp) / f"{qp}.bit", 64, 64, qp), capture_output=True).returncode
              for qp in (lo, hi, hi + 1)}
    assert rc[lo] == 0 and rc[hi] == 0 and rc[hi + 1] != 0, rc
    with pytest.raises(ValueError, match=f"QP must be in {lo}..{hi}"):
        codecs.compress(_smooth(16, 16), codec, hi + 1)


def test_failed_encode_removes_the_folders_it_created(prepared, tmp_path, monkeypatch):
    data = _copy_hr(prepared, tmp_path)
    done = data / "lr/skimage_test/x4/jpeg_10"
    degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("jpeg", 10)], data=data)

    def broken(*a, **k):
        raise EncoderError("hevc: x265 exited with 183: Invalid argument")
    monkeypatch.setattr(codecs, "compress", broken)
    with pytest.raises(EncoderError, match="Invalid argument"):
        degrade.run(_cfg(), datasets=["skimage_test"], degradations=[Degradation("hevc", 37)], data=data)
    assert not (data / "lr/skimage_test/x4/hevc_37").exists()          # no empty output folder left
    assert (done / "manifest.json").is_file()                          # finished work kept


def test_train_images_degrades_only_the_first_n_training_images(prepared, tmp_path):
    """data.train_images (the rehearsal's length knob): the first N training images in name order are
    degraded; a test set is always degraded whole; 0 means every image."""
    data = _copy_hr(prepared, tmp_path)
    cfg = _cfg()
    prepare.run(cfg, datasets=[cfg.data.train], out=data)
    train_names = sorted(json.loads((data / "hr" / cfg.data.train / "manifest.json").read_text())["images"])
    test_names = sorted(json.loads((data / "hr" / "skimage_test" / "manifest.json").read_text())["images"])
    assert len(train_names) > 2
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_images=2))
    degrade.run(cfg, datasets=[cfg.data.train, "skimage_test"], degradations=[Degradation("jpeg", 10)], scale=4,
                data=data)

    def listed(ds):
        return sorted(json.loads((data / "lr" / ds / "x4" / "jpeg_10" / "manifest.json").read_text())["images"])
    assert listed(cfg.data.train) == train_names[:2]
    assert sorted(p.stem for p in (data / "lr" / cfg.data.train / "x4" / "jpeg_10").glob("*.png")) == train_names[:2]
    assert listed("skimage_test") == test_names
    # back to all: the folder is incomplete for the new setting and is redone whole
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_images=0))
    degrade.run(cfg, datasets=[cfg.data.train], degradations=[Degradation("jpeg", 10)], scale=4, data=data)
    assert listed(cfg.data.train) == train_names
