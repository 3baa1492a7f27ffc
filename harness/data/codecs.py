"""The compression step of ``csrbench degrade``: JPEG, HEVC and VVC round trips of 8-bit RGB.

Paper set-up (MambaCSR, Ren et al. 2024, following HST / the NTIRE compressed-SR
protocol): JPEG by OpenCV at quality 10/20/30, HEVC by HM and VVC by VTM at QP
32/37/42, all-intra, on the x4 bicubic LR images.

JPEG: ``cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, q])`` exactly as BasicSR's
``add_jpg_compression`` (OpenCV encodes from BGR with libjpeg-turbo's default 4:2:0
chroma subsampling and its own BT.601 full-range YCbCr), decoded by ``cv2.imdecode``.

HEVC / VVC: the RGB -> YUV 4:2:0 conversion is done here in numpy with explicit
matrices, not by ffmpeg (ffmpeg only sees raw planar YUV in and out):

- ITU-R BT.601 (Kr = 0.299, Kb = 0.114), limited ("studio") range:
  8-bit Y = 16 + 219 Y', Cb/Cr = 128 + 224 P; 10-bit Y = 64 + 876 Y', Cb/Cr = 512 + 896 P;
- chroma down-sampled by the mean of each 2x2 block (chroma sited at the block centre)
  and up-sampled back with the matching centre-sited bilinear filter (taps 3/4, 1/4,
  edges replicated);
- quantised with round-half-up, decoded RGB rounded and clipped to uint8.

HEVC (default ``hevc_encoder: ffmpeg``) is 8-bit Main: libx265 at a constant QP
(``qp=QP:keyint=1``, all-intra, ``-tune psnr`` to switch off psycho-visual RDO and
adaptive quantisation as HM has none, SEI info off so the bitstream is only the coded
picture). VVC (``vvc_encoder: ffmpeg``) is 10-bit Main10 (libvvenc only accepts
yuv420p10le): libvvenc at constant QP, ``-qpa 0`` (no perceptual QP adaptation) and
``IntraPeriod=1``. Both decode with ffmpeg's native decoders. Images are padded to a
multiple of 8 by edge replication (both codecs code whole 8x8 minimum blocks) and
cropped back after decoding; the bits per pixel use the unpadded LR size.

External reference encoders: ``hevc_encoder: hm`` runs HM's ``TAppEncoder`` at
``degrade.hm_path`` with ``cfg/encoder_intra_main.cfg`` of its source tree (8-bit input);
``vvc_encoder: vtm`` runs VTM's ``EncoderApp`` at ``degrade.vtm_path`` with
``cfg/encoder_intra_vtm.cfg`` (10-bit input). Their bitstreams decode with ffmpeg.

Tools: the ffmpeg binary of the ``imageio-ffmpeg`` wheel
(``imageio_ffmpeg.get_ffmpeg_exe()``; v9.0.2 in this environment: libx265 4.3,
libvvenc 1.15, native hevc/vvc decoders).
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "EncoderError", "CodecResult", "rgb_to_yuv420", "yuv420_to_rgb", "pad_to_multiple",
    "degrade_jpeg", "degrade_hevc", "degrade_vvc", "compress", "ffmpeg_exe", "check_ffmpeg_encoder",
    "ffmpeg_hevc_command", "ffmpeg_vvc_command", "ffmpeg_decode_command", "hm_command", "vtm_command",
    "find_cfg", "check_tools", "codec_settings", "encoder_version", "BT601", "PAD_MULTIPLE", "QP_RANGE",
    "degrade_avc", "degrade_webp", "ffmpeg_avc_command", "ffmpeg_webp_command", "FFMPEG_ENCODER", "WEBP_QUALITY_RANGE",
]

PAD_MULTIPLE = 8
# The QP each encoder accepts, tried with the imageio-ffmpeg binary (v9.0.2): libx265 8-bit refuses
# QP > 51 ("QP exceeds supported range (-QpBDOffsety to 51)"; the offset is 0 at 8 bits) and libvvenc
# refuses QP > 63 (its -1 means "encoder default", not a QP). HM 8-bit and VTM share these limits.
# (libvvenc 1.15 also fails, "Generic error in an external library", on pure noise at QP <= 19;
# photographs encode at every QP tried, 0..29 and 63: that error names the image, see _run.)
QP_RANGE: dict[str, tuple[int, int]] = {"hevc": (0, 51), "vvc": (0, 63), "avc": (0, 51)}
# Test-only codecs of `csrbench generalize` (not paper degradations): AVC = H.264 by libx264 (8-bit, all-intra,
# constant QP, as HEVC), WebP = lossy VP8 by libwebp at quality 0..100 (fed the same BT.601 limited 4:2:0 planes).
WEBP_QUALITY_RANGE = (0, 100)
FFMPEG_ENCODER: dict[str, str] = {"hevc": "libx265", "vvc": "libvvenc", "avc": "libx264", "webp": "libwebp"}
X265_PRESET = "medium"
VVENC_PRESET = "medium"
ENCODE_TIMEOUT_S = 600
BT601 = (0.299, 0.114)  # (Kr, Kb)


class EncoderError(RuntimeError):
    """A codec tool that is missing, lacks an encoder, or failed (names the tool and the input)."""


@dataclass(frozen=True)
class CodecResult:
    """A compression round trip.

    Attributes:
        decoded: HxWx3 uint8 RGB, the decoded image at the input size.
        bitstream_bytes: size of the compressed file (JPEG file / HEVC-VVC Annex-B bitstream); 0 for ``none``.
    """
    decoded: np.ndarray
    bitstream_bytes: int


# ----------------------------------------------------------------------------- colour conversion

def _rgb_to_ypbpr_matrix() -> np.ndarray:
    kr, kb = BT601
    kg = 1.0 - kr - kb
    return np.array([
        [kr, kg, kb],                                                  # Y'
        [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],             # Pb = (B - Y') / (2 (1 - Kb))
        [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],             # Pr = (R - Y') / (2 (1 - Kr))
    ], dtype=np.float64)


def _range(bit_depth: int) -> tuple[float, float, float, float]:
    """(Y offset, Y scale, C offset, C scale) of limited range at ``bit_depth``."""
    if bit_depth not in (8, 10):
        raise ValueError(f"bit_depth must be 8 or 10, got {bit_depth}")
    m = 1 << (bit_depth - 8)
    return 16.0 * m, 219.0 * m, 128.0 * m, 224.0 * m


def pad_to_multiple(img: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Pad the bottom / right of an HxW[xC] array to multiples of ``multiple`` by edge replication."""
    h, w = img.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, mode="edge")


def rgb_to_yuv420(rgb: np.ndarray, bit_depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range Y'CbCr 4:2:0 planes of an RGB image (see the module docstring).

    Args:
        rgb: HxWx3 uint8 RGB with even H and W.
        bit_depth: 8 (uint8 planes) or 10 (uint16 planes, values in 0..1023).

    Returns:
        ``(y, cb, cr)``: HxW and (H/2)x(W/2) planes.
    """
    h, w = rgb.shape[:2]
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_yuv420 needs HxWx3 uint8 RGB, got dtype {rgb.dtype} shape {rgb.shape}")
    if h % 2 or w % 2:
        raise ValueError(f"rgb_to_yuv420 needs even sizes, got {h}x{w} (pad first)")
    yo, ys, co, cs = _range(bit_depth)
    ypp = (rgb.astype(np.float64) / 255.0) @ _rgb_to_ypbpr_matrix().T           # H, W, 3: Y', Pb, Pr
    y = yo + ys * ypp[..., 0]
    c = ypp[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))         # 2x2 box, centre-sited
    c = co + cs * c
    top = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    q = lambda a: np.clip(np.floor(a + 0.5), 0, top).astype(dtype)  # noqa: E731
    return q(y), q(c[..., 0]), q(c[..., 1])


def _upsample2_centre(c: np.ndarray) -> np.ndarray:
    """Centre-sited bilinear x2 up-sampling (taps 3/4, 1/4 per axis), edges replicated."""
    def axis(a: np.ndarray, ax: int) -> np.ndarray:
        n = a.shape[ax]
        prev = np.take(a, np.r_[0, np.arange(n - 1)], axis=ax)
        nxt = np.take(a, np.r_[np.arange(1, n), n - 1], axis=ax)
        even = 0.75 * a + 0.25 * prev
        odd = 0.75 * a + 0.25 * nxt
        out = np.stack([even, odd], axis=ax + 1)
        shape = list(a.shape)
        shape[ax] = 2 * n
        return out.reshape(shape)
    return axis(axis(c, 0), 1)


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bit_depth: int) -> np.ndarray:
    """Inverse of :func:`rgb_to_yuv420`: HxWx3 uint8 RGB (rounded half up, clipped)."""
    yo, ys, co, cs = _range(bit_depth)
    yp = (y.astype(np.float64) - yo) / ys
    pb = _upsample2_centre((cb.astype(np.float64) - co) / cs)
    pr = _upsample2_centre((cr.astype(np.float64) - co) / cs)
    ypp = np.stack([yp, pb, pr], axis=-1)
    rgb = ypp @ np.linalg.inv(_rgb_to_ypbpr_matrix()).T
    return np.clip(np.floor(rgb * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _write_yuv(path: Path, planes: Sequence[np.ndarray]) -> None:
    with open(path, "wb") as f:
        for p in planes:
            f.write(p.astype("<u2").tobytes() if p.dtype == np.uint16 else p.tobytes())


def _read_yuv(path: Path, h: int, w: int, bit_depth: int, what: str) -> tuple[np.ndarray, ...]:
    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype("<u2")
    n_y, n_c = h * w, (h // 2) * (w // 2)
    data = np.fromfile(path, dtype=dtype) if path.is_file() else np.zeros(0, dtype)
    if data.size != n_y + 2 * n_c:
        raise EncoderError(f"{what}: decoded YUV has {data.size} samples, expected {n_y + 2 * n_c} "
                           f"for one {w}x{h} 4:2:0 frame (decoder output size differs from the input)")
    y = data[:n_y].reshape(h, w)
    cb = data[n_y:n_y + n_c].reshape(h // 2, w // 2)
    cr = data[n_y + n_c:].reshape(h // 2, w // 2)
    return y, cb, cr


# ----------------------------------------------------------------------------- tools

def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel.

    Raises:
        EncoderError: imageio-ffmpeg is missing or has no binary for this platform.
    """
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # ImportError or its RuntimeError "no ffmpeg exe could be found"
        raise EncoderError(f"ffmpeg not available ({e}); install the imageio-ffmpeg wheel "
                           "(pip install imageio-ffmpeg)") from None


@functools.lru_cache(maxsize=None)
def _ffmpeg_encoders(exe: str) -> frozenset[str]:
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60).stdout
    except OSError as e:
        raise EncoderError(f"cannot run ffmpeg at {exe}: {e}") from None
    return frozenset(m.group(1) for m in re.finditer(r"^\s*V\S*\s+(\S+)", out, re.M))


def check_ffmpeg_encoder(encoder: str, exe: str | None = None) -> str:
    """Return the ffmpeg path after checking ``ffmpeg -encoders`` lists ``encoder``.

    Raises:
        EncoderError: ffmpeg is missing or was built without ``encoder``.
    """
    exe = exe or ffmpeg_exe()
    if encoder not in _ffmpeg_encoders(exe):
        raise EncoderError(f"ffmpeg at {exe} has no {encoder} encoder (see `{exe} -encoders`); "
                           "use the imageio-ffmpeg wheel's build or point degrade.hm_path / vtm_path at HM / VTM")
    return exe


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=ENCODE_TIMEOUT_S, cwd=cwd,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    except FileNotFoundError:
        raise EncoderError(f"{what}: encoder binary not found: {cmd[0]}") from None
    except PermissionError:
        raise EncoderError(f"{what}: encoder binary is not executable: {cmd[0]}") from None
    except subprocess.TimeoutExpired:
        raise EncoderError(f"{what}: {Path(cmd[0]).name} ran over {ENCODE_TIMEOUT_S} s") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout or "").strip().splitlines()[-5:]
        raise EncoderError(f"{what}: {Path(cmd[0]).name} exited with {p.returncode}: " + " | ".join(tail))
    return p


def ffmpeg_hevc_command(exe: str, src: Path, dst: Path, width: int, height: int, qp: int) -> list[str]:
    """ffmpeg + libx265: one 8-bit 4:2:0 raw frame -> all-intra constant-QP HEVC Annex-B bitstream."""
    x265 = f"qp={qp}:keyint=1:min-keyint=1:info=0:frame-threads=1:pools=none:log-level=error"
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
            "-s", f"{width}x{height}", "-i", str(src), "-frames:v", "1", "-c:v", "libx265",
            "-preset", X265_PRESET, "-tune", "psnr", "-x265-params", x265, "-f", "hevc", "-y", str(dst)]


def ffmpeg_vvc_command(exe: str, src: Path, dst: Path, width: int, height: int, qp: int) -> list[str]:
    """ffmpeg + libvvenc: one 10-bit 4:2:0 raw frame -> all-intra constant-QP VVC Annex-B bitstream."""
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
            "-s", f"{width}x{height}", "-i", str(src), "-frames:v", "1", "-c:v", "libvvenc",
            "-preset", VVENC_PRESET, "-qp", str(qp), "-qpa", "0", "-vvenc-params", "IntraPeriod=1:Threads=1",
            "-f", "vvc", "-y", str(dst)]


def ffmpeg_avc_command(exe: str, src: Path, dst: Path, width: int, height: int, qp: int) -> list[str]:
    """ffmpeg + libx264: one 8-bit 4:2:0 raw frame -> all-intra constant-QP H.264 Annex-B bitstream.

    ``-tune psnr`` as for HEVC; the SEI NAL units (x264's ~500-byte settings string) are dropped by
    the ``filter_units`` bitstream filter so the size is the coded picture only, as ``info=0`` for x265.
    """
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
            "-s", f"{width}x{height}", "-i", str(src), "-frames:v", "1", "-c:v", "libx264",
            "-preset", X265_PRESET, "-tune", "psnr", "-qp", str(qp), "-x264-params", "keyint=1:min-keyint=1:threads=1",
            "-bsf:v", "filter_units=remove_types=6", "-f", "h264", "-y", str(dst)]


def ffmpeg_webp_command(exe: str, src: Path, dst: Path, width: int, height: int, quality: int) -> list[str]:
    """ffmpeg + libwebp: one 8-bit 4:2:0 raw frame -> lossy WebP (VP8 in RIFF) at ``quality`` 0..100, method 4."""
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
            "-s", f"{width}x{height}", "-i", str(src), "-frames:v", "1", "-c:v", "libwebp", "-lossless", "0",
            "-quality", str(quality), "-compression_level", "4", "-threads", "1", "-f", "webp", "-y", str(dst)]


def ffmpeg_decode_command(exe: str, src: Path, dst: Path, codec: str, bit_depth: int) -> list[str]:
    """ffmpeg: an HEVC / VVC Annex-B bitstream -> raw planar 4:2:0 YUV at ``bit_depth``."""
    fmt = {"hevc": "hevc", "vvc": "vvc", "avc": "h264", "webp": "webp_pipe"}[codec]
    pix = "yuv420p" if bit_depth == 8 else "yuv420p10le"
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1", "-f", fmt, "-i", str(src),
            "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", pix, "-y", str(dst)]


def find_cfg(binary: str | Path, name: str) -> Path:
    """The all-intra cfg of an HM / VTM source tree: ``cfg/<name>`` in a parent folder of ``binary``.

    Raises:
        EncoderError: no parent of ``binary`` holds ``cfg/<name>`` (lists where it looked).
    """
    b = Path(binary).resolve()
    looked = []
    for parent in list(b.parents)[:5]:
        c = parent / "cfg" / name
        looked.append(str(c))
        if c.is_file():
            return c
    raise EncoderError(f"{binary}: cannot find cfg/{name} of its source tree (looked at {', '.join(looked)})")


def hm_command(binary: str | Path, cfg: Path, src: Path, dst: Path, width: int, height: int, qp: int) -> list[str]:
    """HM ``TAppEncoder``: one 8-bit 4:2:0 frame, all-intra ``cfg``, constant QP -> ``dst`` bitstream."""
    return [str(binary), "-c", str(cfg), "-i", str(src), "-b", str(dst), "-wdt", str(width), "-hgt", str(height),
            "-fr", "1", "-f", "1", "-q", str(qp), "--InputBitDepth=8", "--OutputBitDepth=8",
            "--InternalBitDepth=8", "--InputChromaFormat=420"]


def vtm_command(binary: str | Path, cfg: Path, src: Path, dst: Path, width: int, height: int, qp: int) -> list[str]:
    """VTM ``EncoderApp``: one 10-bit 4:2:0 frame, all-intra ``cfg``, constant QP -> ``dst`` bitstream."""
    return [str(binary), "-c", str(cfg), "-i", str(src), "-b", str(dst), "-wdt", str(width), "-hgt", str(height),
            "-fr", "1", "-f", "1", "-q", str(qp), "--InputBitDepth=10", "--OutputBitDepth=10",
            "--InternalBitDepth=10", "--InputChromaFormat=420"]


def _check_binary(path: str, key: str) -> str:
    if not path:
        raise EncoderError(f"degrade.{key} is empty: give the path of the encoder binary in params.yaml")
    p = Path(path)
    if not p.is_file():
        raise EncoderError(f"degrade.{key}: encoder binary not found: {path}")
    if not os.access(p, os.X_OK):
        raise EncoderError(f"degrade.{key}: encoder binary is not executable: {path}")
    return str(p)


def check_tools(codec: str, *, hevc_encoder: str = "ffmpeg", vvc_encoder: str = "ffmpeg", hm_path: str = "",
                vtm_path: str = "") -> None:
    """Fail early when the tool for ``codec`` is missing (ffmpeg encoder, HM / VTM binary and its cfg).

    Raises:
        EncoderError: names the missing tool and the params key to set.
    """
    if codec in ("none", "jpeg"):
        return
    enc = hevc_encoder if codec == "hevc" else vvc_encoder if codec == "vvc" else "ffmpeg"
    if enc == "ffmpeg":
        check_ffmpeg_encoder(FFMPEG_ENCODER[codec])
    elif enc == "hm":
        find_cfg(_check_binary(hm_path, "hm_path"), "encoder_intra_main.cfg")
    elif enc == "vtm":
        find_cfg(_check_binary(vtm_path, "vtm_path"), "encoder_intra_vtm.cfg")
    else:
        raise ValueError(f"unknown {codec} encoder {enc!r}")
    ffmpeg_exe()  # the decoder is always ffmpeg's


# ----------------------------------------------------------------------------- codecs

def degrade_jpeg(rgb: np.ndarray, quality: int) -> CodecResult:
    """JPEG round trip by OpenCV at ``quality`` (BGR input, 4:2:0), as BasicSR's ``add_jpg_compression``.

    Args:
        rgb: HxWx3 uint8 RGB.
        quality: JPEG quality factor 1..100.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EncoderError("cv2.imencode('.jpg') failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if dec is None or dec.shape != rgb.shape:
        raise EncoderError(f"cv2.imdecode of the JPEG gave {None if dec is None else dec.shape}, expected {rgb.shape}")
    return CodecResult(np.ascontiguousarray(dec[..., ::-1]), int(buf.size))


def _video_round_trip(rgb: np.ndarray, qp: int, codec: str, encoder: str, binary: str, what: str) -> CodecResult:
    lo, hi = WEBP_QUALITY_RANGE if codec == "webp" else QP_RANGE[codec]
    if not lo <= qp <= hi:
        what_level = "quality" if codec == "webp" else "QP"
        raise ValueError(f"{codec} {what_level} must be in {lo}..{hi} (the encoder refuses others), got {qp}")
    h, w = rgb.shape[:2]
    padded = pad_to_multiple(rgb)
    ph, pw = padded.shape[:2]
    bit_depth = 10 if codec == "vvc" else 8
    exe = ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="csrbench-codec-") as tmp:
        tmp = Path(tmp)
        src, bits, dec = tmp / "in.yuv", tmp / f"out.{codec}", tmp / "dec.yuv"
        _write_yuv(src, rgb_to_yuv420(padded, bit_depth))
        if encoder == "ffmpeg":
            check_ffmpeg_encoder(FFMPEG_ENCODER[codec], exe)
            make = {"hevc": ffmpeg_hevc_command, "vvc": ffmpeg_vvc_command, "avc": ffmpeg_avc_command,
                    "webp": ffmpeg_webp_command}[codec]
            cmd = make(exe, src, bits, pw, ph, qp)
        elif encoder == "hm":
            cmd = hm_command(binary, find_cfg(binary, "encoder_intra_main.cfg"), src, bits, pw, ph, qp)
        elif encoder == "vtm":
            cmd = vtm_command(binary, find_cfg(binary, "encoder_intra_vtm.cfg"), src, bits, pw, ph, qp)
        else:
            raise ValueError(f"unknown {codec} encoder {encoder!r}")
        _run(cmd, what, cwd=tmp)
        nbytes = bits.stat().st_size if bits.is_file() else 0
        if nbytes == 0:
            raise EncoderError(f"{what}: {Path(cmd[0]).name} wrote no bitstream")
        _run(ffmpeg_decode_command(exe, bits, dec, codec, bit_depth), f"{what} (decode)")
        planes = _read_yuv(dec, ph, pw, bit_depth, what)
    out = yuv420_to_rgb(*planes, bit_depth)[:h, :w]
    return CodecResult(np.ascontiguousarray(out), int(nbytes))


def degrade_hevc(rgb: np.ndarray, qp: int, encoder: str = "ffmpeg", hm_path: str = "",
                 what: str = "hevc") -> CodecResult:
    """HEVC all-intra round trip (8-bit BT.601 limited 4:2:0) at constant ``qp``.

    Args:
        rgb: HxWx3 uint8 RGB (any size; padded to a multiple of 8 and cropped back).
        qp: quantisation parameter 0..51 (paper: 32, 37, 42).
        encoder: ``"ffmpeg"`` (libx265) or ``"hm"`` (TAppEncoder at ``hm_path``).
        what: label for error messages (the image name).
    """
    binary = _check_binary(hm_path, "hm_path") if encoder == "hm" else ""
    return _video_round_trip(rgb, qp, "hevc", encoder, binary, what)


def degrade_vvc(rgb: np.ndarray, qp: int, encoder: str = "ffmpeg", vtm_path: str = "",
                what: str = "vvc") -> CodecResult:
    """VVC all-intra round trip (10-bit BT.601 limited 4:2:0) at constant ``qp``.

    Args:
        rgb: HxWx3 uint8 RGB (any size; padded to a multiple of 8 and cropped back).
        qp: quantisation parameter 0..63 (paper: 32, 37, 42).
        encoder: ``"ffmpeg"`` (libvvenc) or ``"vtm"`` (EncoderApp at ``vtm_path``).
        what: label for error messages (the image name).
    """
    binary = _check_binary(vtm_path, "vtm_path") if encoder == "vtm" else ""
    return _video_round_trip(rgb, qp, "vvc", encoder, binary, what)


def degrade_avc(rgb: np.ndarray, qp: int, what: str = "avc") -> CodecResult:
    """AVC (H.264) all-intra round trip by libx264 (8-bit BT.601 limited 4:2:0) at constant ``qp`` 0..51."""
    return _video_round_trip(rgb, qp, "avc", "ffmpeg", "", what)


def degrade_webp(rgb: np.ndarray, quality: int, what: str = "webp") -> CodecResult:
    """Lossy WebP round trip by libwebp (8-bit BT.601 limited 4:2:0 planes) at ``quality`` 0..100."""
    return _video_round_trip(rgb, quality, "webp", "ffmpeg", "", what)


def compress(rgb: np.ndarray, codec: str, level: int, *, hevc_encoder: str = "ffmpeg", vvc_encoder: str = "ffmpeg",
             hm_path: str = "", vtm_path: str = "", what: str = "") -> CodecResult:
    """Dispatch on ``codec`` (``none`` / ``jpeg`` / ``hevc`` / ``vvc``); ``level`` is the QF or QP."""
    if codec == "none":
        return CodecResult(rgb, 0)
    if codec == "jpeg":
        return degrade_jpeg(rgb, level)
    if codec == "hevc":
        return degrade_hevc(rgb, level, hevc_encoder, hm_path, what=what or "hevc")
    if codec == "vvc":
        return degrade_vvc(rgb, level, vvc_encoder, vtm_path, what=what or "vvc")
    if codec in ("avc", "webp"):
        return _video_round_trip(rgb, level, codec, "ffmpeg", "", what or codec)
    raise ValueError(f"unknown codec {codec!r} (none, jpeg, hevc, vvc, avc, webp)")


# ----------------------------------------------------------------------------- provenance

@functools.lru_cache(maxsize=None)
def encoder_version(codec: str, encoder: str = "ffmpeg", binary: str = "") -> str:
    """Version string of the tool that codes ``codec`` (for the manifest)."""
    if codec == "none":
        return "none"
    if codec == "jpeg":
        info = cv2.getBuildInformation()
        m = re.search(r"^\s*JPEG:\s*(.+)$", info, re.M)
        return f"opencv {cv2.__version__}, {m.group(1).strip() if m else 'libjpeg (unknown version)'}"
    if encoder in ("hm", "vtm"):
        try:
            p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
            m = re.search(r"Version \[([^\]]+)\]", p.stdout + p.stderr)
            return f"{encoder.upper()} {m.group(1) if m else 'unknown'} ({binary})"
        except OSError:
            return f"{encoder.upper()} unknown ({binary})"
    exe = ffmpeg_exe()
    ff = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    ff = " ".join(ff.split()[:3])
    if codec == "webp":  # ffmpeg does not print libwebp's version
        return f"{ff}, libwebp"
    if codec == "avc":   # x264 writes its version into the SEI of an encode that keeps it
        with tempfile.TemporaryDirectory(prefix="csrbench-ver-") as tmp:
            src, dst = Path(tmp) / "v.yuv", Path(tmp) / "v.h264"
            src.write_bytes(b"\x00" * (16 * 16 * 3 // 2))
            subprocess.run([exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
                            "yuv420p", "-s", "16x16", "-i", str(src), "-frames:v", "1", "-c:v", "libx264", "-f",
                            "h264", "-y", str(dst)], capture_output=True, timeout=60)
            m = re.search(rb"x264 - core (\d+)", dst.read_bytes() if dst.is_file() else b"")
        return f"{ff}, libx264 core {m.group(1).decode() if m else 'unknown'}"
    # one tiny encode with the encoder's own banner gives the library version
    lib = "libx265" if codec == "hevc" else "libvvenc"
    pix = "yuv420p" if codec == "hevc" else "yuv420p10le"
    with tempfile.TemporaryDirectory(prefix="csrbench-ver-") as tmp:
        src = Path(tmp) / "v.yuv"
        src.write_bytes(b"\x00" * (16 * 16 * 3 // 2 * (1 if codec == "hevc" else 2)))
        p = subprocess.run([exe, "-hide_banner", "-nostdin", "-loglevel", "verbose", "-f", "rawvideo", "-pix_fmt", pix,
                            "-s", "16x16", "-i", str(src), "-frames:v", "1", "-c:v", lib, "-f", "null", "-"],
                           capture_output=True, text=True, timeout=60)
    pat = r"HEVC encoder version (\S+)" if codec == "hevc" else r"libvvenc version: (\S+)"
    m = re.search(pat, p.stderr + p.stdout)
    return f"{ff}, {lib} {m.group(1) if m else 'unknown'}"


def codec_settings(codec: str, level: int, *, hevc_encoder: str = "ffmpeg", vvc_encoder: str = "ffmpeg",
                   hm_path: str = "", vtm_path: str = "") -> dict[str, Any]:
    """Everything that determines the output of :func:`compress` (stored in the manifest)."""
    s: dict[str, Any] = {"codec": codec, "level": level}
    if codec == "jpeg":
        s.update(tool="cv2.imencode('.jpg', bgr, [IMWRITE_JPEG_QUALITY, q])", quality=level,
                 chroma="4:2:0 (OpenCV default)")
    elif codec in ("hevc", "vvc"):
        enc = hevc_encoder if codec == "hevc" else vvc_encoder
        bd = 8 if codec == "hevc" else 10
        s.update(qp=level, encoder=enc, bit_depth=bd, colour="BT.601 limited range, numpy (harness.data.codecs)",
                 chroma="4:2:0, 2x2 mean down / centre-sited bilinear up", pad_multiple=PAD_MULTIPLE,
                 structure="all-intra, one frame")
        if enc == "ffmpeg":
            s["command"] = " ".join((ffmpeg_hevc_command if codec == "hevc" else ffmpeg_vvc_command)(
                "ffmpeg", Path("in.yuv"), Path(f"out.{codec}"), 0, 0, level)[1:]).replace("-s 0x0", "-s WxH")
        else:
            binary = hm_path if enc == "hm" else vtm_path
            s["binary"] = binary
            s["cfg"] = "encoder_intra_main.cfg" if enc == "hm" else "encoder_intra_vtm.cfg"
    elif codec in ("avc", "webp"):
        s.update(encoder="ffmpeg", bit_depth=8, colour="BT.601 limited range, numpy (harness.data.codecs)",
                 chroma="4:2:0, 2x2 mean down / centre-sited bilinear up", pad_multiple=PAD_MULTIPLE,
                 structure="all-intra, one frame" if codec == "avc" else "one lossy VP8 frame")
        s["qp" if codec == "avc" else "quality"] = level
        s["command"] = " ".join((ffmpeg_avc_command if codec == "avc" else ffmpeg_webp_command)(
            "ffmpeg", Path("in.yuv"), Path(f"out.{codec}"), 0, 0, level)[1:]).replace("-s 0x0", "-s WxH")
    elif codec != "none":
        raise ValueError(f"unknown codec {codec!r}")
    binary = ""
    if codec == "hevc" and hevc_encoder == "hm":
        binary = hm_path
    elif codec == "vvc" and vvc_encoder == "vtm":
        binary = vtm_path
    enc = hevc_encoder if codec == "hevc" else vvc_encoder if codec == "vvc" else "ffmpeg"
    s["version"] = encoder_version(codec, enc, binary)
    return s

