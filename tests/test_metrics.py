"""PSNR / SSIM on Y: known answers, skimage / BasicSR cross-checks, clear errors on bad input."""
import math

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from harness import metrics
from harness.metrics import METRICS, psnr_y, rgb_to_y, ssim_y

Y_GAIN = (65.481 + 128.553 + 24.966) / 255  # dY per unit change of R = G = B


def _const(h, w, v):
    return np.full((h, w, 3), v, dtype=np.uint8)


def _pair(seed=0, h=40, w=52, noise=12):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hr = cv2.GaussianBlur(hr, (5, 5), 1.0)  # some structure, not white noise
    sr = np.clip(hr.astype(np.int16) + rng.integers(-noise, noise + 1, hr.shape), 0, 255).astype(np.uint8)
    return sr, hr


def test_y_of_black_and_white():
    assert rgb_to_y(_const(1, 1, 0))[0, 0] == pytest.approx(16.0, abs=1e-12)
    assert rgb_to_y(_const(1, 1, 255))[0, 0] == pytest.approx(235.0, abs=1e-12)


@pytest.mark.parametrize("c", [1, 5, 40])
def test_psnr_known_answer_constant_images(c):
    sr, hr = _const(20, 24, 100 + c), _const(20, 24, 100)
    d = c * Y_GAIN
    assert psnr_y(sr, hr, crop_border=4) == pytest.approx(20 * math.log10(255 / d), abs=1e-9)


def test_ssim_known_answer_constant_images():
    sr, hr = _const(30, 30, 130), _const(30, 30, 100)
    a, b = rgb_to_y(sr)[0, 0], rgb_to_y(hr)[0, 0]
    c1 = (0.01 * 255) ** 2
    # zero variance: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    assert ssim_y(sr, hr, crop_border=0) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-10)


def test_identical_images_give_inf_and_one():
    _, hr = _pair()
    assert psnr_y(hr, hr.copy(), 4) == math.inf
    assert ssim_y(hr, hr.copy(), 4) == pytest.approx(1.0, abs=1e-12)


def test_crop_border_removes_border_differences():
    _, hr = _pair()
    sr = hr.copy()
    sr[:2] = 0
    sr[:, -3:] = 255
    assert psnr_y(sr, hr, crop_border=3) == math.inf
    assert psnr_y(sr, hr, crop_border=2) < 60


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_skimage_on_y(seed):
    sr, hr = _pair(seed)
    b = 4
    ys, yh = rgb_to_y(sr[b:-b, b:-b]), rgb_to_y(hr[b:-b, b:-b])
    ref_psnr = peak_signal_noise_ratio(yh, ys, data_range=255)
    ref_ssim = structural_similarity(yh, ys, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    got_psnr, got_ssim = psnr_y(sr, hr, b), ssim_y(sr, hr, b)
    print(f"psnr {got_psnr:.8f} vs skimage {ref_psnr:.8f}; ssim {got_ssim:.8f} vs {ref_ssim:.8f}")
    assert got_psnr == pytest.approx(ref_psnr, abs=1e-9)
    assert got_ssim == pytest.approx(ref_ssim, abs=1e-4)
    assert 0.2 < got_ssim < 0.999   # a real comparison, not a degenerate one


def _basicsr_float32_psnr_ssim(sr, hr, b):
    """BasicSR's to_y_channel in float32 (BGR input, y_only), then its float64 PSNR / _ssim."""
    def to_y(img_rgb):
        bgr = img_rgb[..., ::-1].astype(np.float64)[b:-b, b:-b]
        x = bgr.astype(np.float32) / 255.0
        y = (np.dot(x, [24.966, 128.553, 65.481]) + 16.0) / 255.0
        return (y * 255.0).astype(np.float64)
    a, c = to_y(sr), to_y(hr)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((a - c) ** 2))
    return psnr, metrics._ssim_map_mean(a, c)


def test_float64_y_agrees_with_basicsr_float32_y():
    sr, hr = _pair(3)
    ref_psnr, ref_ssim = _basicsr_float32_psnr_ssim(sr, hr, 4)
    assert psnr_y(sr, hr, 4) == pytest.approx(ref_psnr, abs=1e-4)
    assert ssim_y(sr, hr, 4) == pytest.approx(ref_ssim, abs=1e-6)


def test_psnr_drops_with_more_noise():
    lo = psnr_y(*_pair(0, noise=2), crop_border=4)
    hi = psnr_y(*_pair(0, noise=30), crop_border=4)
    assert lo > hi + 10


@pytest.mark.parametrize("fn", [psnr_y, ssim_y])
def test_bad_input_raises_clearly(fn):
    sr, hr = _pair()
    with pytest.raises(ValueError, match="shape"):
        fn(sr[:-1], hr, 0)
    with pytest.raises(TypeError, match="uint8"):
        fn(sr.astype(np.float32), hr, 0)
    with pytest.raises(ValueError, match="HxWx3"):
        fn(sr[..., 0], hr[..., 0], 0)
    with pytest.raises(ValueError, match="crop_border"):
        fn(sr, hr, 30)
    with pytest.raises(ValueError, match="crop_border"):
        fn(sr, hr, -1)


def test_ssim_too_small_for_window():
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(_const(14, 14, 3), _const(14, 14, 4), crop_border=2)


def test_metrics_table_describes_the_functions():
    """Each METRICS entry names a function whose scores keep its ``range`` and ``higher_is_better``."""
    assert set(METRICS) == {"psnr_y", "ssim_y"}
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    noise = rng.normal(0, 1, hr.shape)
    far, near = (np.clip(hr + sigma * noise, 0, 255).astype(np.uint8) for sigma in (30, 3))
    for name, info in METRICS.items():
        fn = getattr(metrics, name)
        lo, hi = info["range"]
        worse, better, same = (fn(x, hr, 2) for x in (far, near, hr))
        assert lo <= worse and better <= hi, name
        assert (worse < better) is info["higher_is_better"], name
        assert same == pytest.approx(hi, abs=1e-12), name   # identical images: the best end (inf dB, SSIM 1)


def test_matches_pyiqa_when_installed():
    pyiqa = pytest.importorskip("pyiqa")
    import torch
    sr, hr = _pair(5)
    b = 4
    t = lambda x: torch.from_numpy(x[b:-b, b:-b].copy()).permute(2, 0, 1)[None].double() / 255
    psnr = pyiqa.create_metric("psnry", color_space="ycbcr", device="cpu")
    assert float(psnr(t(sr), t(hr))) == pytest.approx(psnr_y(sr, hr, b), abs=1e-3)
