"""PSNR and SSIM on the BT.601 Y channel, exactly as BasicSR computes them for SR papers.

Pure float64 functions on ``HxWx3 uint8 RGB`` arrays (the SR output already
clamped to [0, 1], scaled by 255 and rounded, as BasicSR's ``tensor2img`` does):

- crop ``crop_border`` pixels from every side (BasicSR and the papers use the scale);
- Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255 values, not rounded
  (BasicSR's ``bgr2ycbcr(y_only=True)`` on its BGR arrays; the same weights here on RGB);
- PSNR = 10 log10(255^2 / MSE) in float64; identical images give ``float('inf')``
  (kept as inf here; :func:`harness.provenance.write_json` stores it as JSON ``null``);
- SSIM: 11x11 Gaussian window, sigma 1.5 (``cv2.getGaussianKernel``), C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, the mean of the SSIM map over the *valid* region (``cv2.filter2D``
  then a 5-pixel crop), i.e. BasicSR's ``_ssim``.

One deliberate difference: BasicSR's ``to_y_channel`` computes Y in float32
(``img.astype(np.float32) / 255.``); this module keeps float64 throughout. The
two agree to about 1e-5 dB / 1e-7 SSIM on 8-bit images (see tests/test_metrics.py).

Reference: XPixelGroup/BasicSR @ 8d56e3a045f9fb3e1d8872f92ee4a4f07f886b0a,
``basicsr/metrics/psnr_ssim.py`` and ``basicsr/metrics/metric_util.py`` (Apache-2.0);
the copy vendored in renyulin-f/MambaCSR @ f71199e1 is the same. Written anew here.
Also matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` on the float Y.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = ["METRICS", "psnr_y", "ssim_y", "rgb_to_y"]

#: What each metric key means, stored as data (pyiqa-style) for the report and `check`.
METRICS: dict[str, dict[str, Any]] = {
    "psnr_y": {"higher_is_better": True, "unit": "dB", "range": (0.0, math.inf),
               "description": "PSNR on BT.601 Y (16-235), float64, crop_border = scale (BasicSR)"},
    "ssim_y": {"higher_is_better": True, "unit": "", "range": (-1.0, 1.0),
               "description": "SSIM on BT.601 Y, 11x11 Gaussian sigma 1.5, valid region (BasicSR _ssim)"},
}

_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _check_pair(sr: np.ndarray, hr: np.ndarray, crop_border: int, name: str) -> None:
    for label, img in (("sr", sr), ("hr", hr)):
        if not isinstance(img, np.ndarray):
            raise TypeError(f"{name}: {label} must be a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise TypeError(f"{name}: {label} must be uint8 (SR clamped to [0,1], *255, rounded), got {img.dtype}")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name}: {label} must be HxWx3 RGB, got shape {img.shape}")
    if sr.shape != hr.shape:
        raise ValueError(f"{name}: sr shape {sr.shape} != hr shape {hr.shape}")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"{name}: crop_border must be an integer >= 0, got {crop_border!r}")
    h, w = sr.shape[:2]
    if h - 2 * crop_border <= 0 or w - 2 * crop_border <= 0:
        raise ValueError(f"{name}: crop_border {crop_border} leaves nothing of a {h}x{w} image")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image, 0-255 scale, float64, not rounded.

    Args:
        img: HxWx3 RGB array with values in 0..255 (any real dtype).

    Returns:
        HxW float64 array, Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, in [16, 235].
    """
    x = np.asarray(img, dtype=np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _crop(img: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border == 0:
        return img
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """PSNR on the Y channel (BasicSR ``calculate_psnr(..., test_y_channel=True)``).

    Args:
        sr: HxWx3 uint8 RGB super-resolved image.
        hr: HxWx3 uint8 RGB ground truth, same shape.
        crop_border: pixels removed from each side before the comparison.

    Returns:
        PSNR in dB (float64 arithmetic); ``inf`` for identical crops.

    Raises:
        TypeError: not a uint8 numpy array.
        ValueError: wrong or mismatched shape, bad crop_border.
    """
    _check_pair(sr, hr, crop_border, "psnr_y")
    a = rgb_to_y(_crop(sr, crop_border))
    b = rgb_to_y(_crop(hr, crop_border))
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def _ssim_map_mean(a: np.ndarray, b: np.ndarray) -> float:
    """BasicSR's ``_ssim`` on two HxW float64 images in 0..255."""
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())

    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]   # valid region only

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 ** 2, mu2 ** 2, mu1 * mu2
    sigma1_sq = filt(a ** 2) - mu1_sq
    sigma2_sq = filt(b ** 2) - mu2_sq
    sigma12 = filt(a * b) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)) / (
        (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2))
    return float(ssim_map.mean())


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """SSIM on the Y channel (BasicSR ``calculate_ssim(..., test_y_channel=True)``).

    Args:
        sr: HxWx3 uint8 RGB super-resolved image.
        hr: HxWx3 uint8 RGB ground truth, same shape.
        crop_border: pixels removed from each side before the comparison.

    Returns:
        Mean SSIM over the valid region of the 11x11 Gaussian window (1.0 for identical crops).

    Raises:
        TypeError: not a uint8 numpy array.
        ValueError: wrong or mismatched shape, bad crop_border, or a crop smaller than 11x11.
    """
    _check_pair(sr, hr, crop_border, "ssim_y")
    a = rgb_to_y(_crop(sr, crop_border))
    b = rgb_to_y(_crop(hr, crop_border))
    if min(a.shape) < 11:
        raise ValueError(f"ssim_y: the cropped image {a.shape[0]}x{a.shape[1]} is smaller than the 11x11 window")
    return _ssim_map_mean(a, b)
