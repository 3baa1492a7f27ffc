"""Reading any input image as 8-bit RGB, and writing lossless PNGs atomically.

Conversions (each is logged with the file name and returned as a note, so the
prepare manifest records it):

- grayscale (1-bit, 8-bit or 16-bit) -> RGB by replicating the channel, as the SR
  benchmarks do (BasicSR reads with ``cv2.imread(path, cv2.IMREAD_COLOR)``, which
  replicates gray into three channels; Set14 has grayscale images in some copies);
- palette (indexed) -> RGB through its palette, exactly (no colour is changed);
- RGBA / LA / palette with transparency whose alpha is fully opaque -> the alpha channel
  is dropped (nothing changes: every pixel is shown as stored);
- 16-bit samples -> 8-bit by ``round(v / 257)``: the exact 65535 -> 255 rescale, which
  gives back ``k`` for 8-bit data stored as ``257 * k`` and the nearest 8-bit value
  otherwise (OpenCV's IMREAD_COLOR would truncate with ``v >> 8``).

Refused with :class:`ImageError` naming the file: an alpha channel with any transparent or
translucent pixel (what lies under it is undefined, and ``cv2.IMREAD_COLOR`` would silently
keep those arbitrary colours; flatten it onto the intended background first), float or
32-bit integer samples, more than 4 channels. Corrupt and truncated files raise
:class:`ImageError` too: integrity is checked with Pillow, which refuses truncated
PNG/JPEG data (OpenCV would silently return a grey-filled JPEG).
"""
from __future__ import annotations

import errno
import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from harness.provenance import write_bytes

__all__ = ["ImageError", "read_rgb", "read_png_rgb", "encode_png", "write_png", "sha256_bytes", "sha256_file",
           "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # never decode half a file
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif", ".webp")


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def _check_integrity(path: Path) -> str:
    """Decode the whole file with Pillow (refuses truncated data); returns its mode (``P`` = palette)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.mode
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}") from None


def _pil_fallback(path: Path) -> np.ndarray:
    """Formats OpenCV cannot read (GIF, ...): via Pillow, channel order RGB(A) or gray."""
    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "1"):
            raise ImageError(f"{path}: unsupported image mode {im.mode!r}")
        a = np.asarray(im.convert("L") if im.mode == "1" else im)
    if a.ndim == 3 and a.shape[2] == 3:
        a = a[..., ::-1]  # to BGR, the OpenCV order the caller expects
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., [2, 1, 0, 3]]
    return a


def read_rgb(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an image file as HxWx3 uint8 RGB, converting as the module docstring says.

    Args:
        path: image file (PNG, JPEG, BMP, TIFF, GIF, ...).

    Returns:
        ``(rgb, notes)``: the HxWx3 uint8 RGB array in [0, 255] and the conversions applied
        (empty for an 8-bit RGB file).

    Raises:
        ImageError: missing, corrupt, truncated or unsupported file (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    mode = _check_integrity(path)
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        a = _pil_fallback(path)
    notes: list[str] = []
    if mode in ("P", "PA"):
        notes.append("palette -> RGB (expanded through its palette)")
    if a.ndim == 3 and a.shape[2] in (2, 4):
        alpha = a[..., -1]
        opaque = np.iinfo(a.dtype).max if a.dtype.kind == "u" else 1
        n = int(np.count_nonzero(alpha != opaque))
        if n:
            raise ImageError(f"{path}: alpha channel with {n} of {alpha.size} pixels not fully opaque; their colour "
                             "is undefined, so the image is refused (flatten it onto its background, or save it "
                             "without alpha)")
    if a.dtype == np.uint16:
        a = np.floor(a.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
        notes.append("16-bit -> 8-bit (round(v/257))")
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ImageError(f"{path}: unsupported sample type {a.dtype} (need 8- or 16-bit integers)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
        notes.append("grayscale -> RGB (channel replicated)")
    elif a.ndim == 3 and a.shape[2] == 2:      # gray + alpha
        a = np.repeat(a[..., :1], 3, axis=2)
        notes.append("grayscale+alpha -> RGB (opaque alpha dropped)")
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
        notes.append("RGBA -> RGB (opaque alpha dropped)")
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise ImageError(f"{path}: unsupported image shape {a.shape}")
    rgb = np.ascontiguousarray(a[..., ::-1])
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"{path}: empty image {rgb.shape}")
    for n in notes:
        log.info("%s: %s", path, n)
    return rgb, notes


def read_png_rgb(path: str | Path) -> np.ndarray:
    """Read one of csrbench's own 8-bit RGB PNGs (``data/hr``, ``data/lr``) as HxWx3 uint8 RGB.

    Raises:
        ImageError: missing, unreadable, or not 8-bit 3-channel (names the file).
    """
    path = Path(path)
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise ImageError(f"{path}: missing or unreadable PNG")
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(f"{path}: expected an 8-bit RGB PNG, got dtype {a.dtype} shape {a.shape}")
    return np.ascontiguousarray(a[..., ::-1])


def encode_png(rgb: np.ndarray, compression: int = 3) -> bytes:
    """Lossless PNG bytes of an HxWx3 uint8 RGB array (zlib level ``compression``)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png needs HxWx3 uint8 RGB, got dtype {rgb.dtype} shape {rgb.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise RuntimeError("cv2.imencode('.png') failed")
    return buf.tobytes()


def write_png(path: str | Path, rgb: np.ndarray) -> str:
    """Write ``rgb`` (HxWx3 uint8) as PNG atomically (temp file + ``os.replace``).

    Returns:
        sha256 hex digest of the written bytes.

    Raises:
        OSError: the write failed (e.g. disk full); the message names ``path`` and nothing
            is left at ``path`` (or the previous file is kept).
    """
    data = encode_png(rgb)
    try:
        write_bytes(path, data)
    except OSError as e:
        what = "disk full" if e.errno == errno.ENOSPC else "write failed"
        raise OSError(e.errno, f"{path}: {what} ({e.strerror or e}); nothing was written there") from e
    return sha256_bytes(data)


def sha256_bytes(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
