"""csrbench prepare: embedded sets, downloads (resume, checksum, offline), local copies, bad input."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import time
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from harness.config import load, profile_path
from harness.data import images as images_mod
from harness.data import prepare, registry
from harness.data.images import ImageError, read_rgb
from harness.data.prepare import ChecksumError, DatasetError, DownloadError
from harness.data.registry import Dataset, Source


def _cfg(workers: int = 1, local: dict | None = None, scale: int = 4):
    cfg = load(profile_path("smoke"))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, local=dict(local or {})),
                               degrade=dataclasses.replace(cfg.degrade, workers=workers, scale=scale))


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", rgb[..., ::-1] if rgb.ndim == 3 else rgb)
    assert ok
    return buf.tobytes()


def _images(n: int, h: int = 30, w: int = 42) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {f"img{i:02d}.png": _png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for i in range(n)}


def _tar(files: dict[str, bytes], top: str = "Fake_HR") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes], top: str = "Fake_HR") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(f"{top}/{name}", data)
    return buf.getvalue()


def _register(monkeypatch, urls=(), checksum=None, count=3, archive="Fake_HR.tar.gz", name="fake"):
    src = Source(name=name, urls=tuple(urls), archive=archive, checksum=checksum, checksum_note="test",
                 hr_glob="Fake_HR/*.png", count=count)
    ds = Dataset(name, "test", count, "test licence", "http://example.invalid", sources=(src,))
    monkeypatch.setitem(registry.DATASETS, name, ds)
    return ds


class _RangeServer:
    """127.0.0.1 HTTP server for one file, honouring ``Range: bytes=N-`` (records the headers seen)."""

    def __init__(self, payload: bytes, cut_after: int | None = None):
        self.payload, self.ranges, self.cut_after = payload, [], cut_after
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:   # simulate a dropped connection once
                    self.wfile.write(body[: outer.cut_after])
                    outer.cut_after = None
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Fake_HR.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    made = []

    def make(payload, cut_after=None):
        s = _RangeServer(payload, cut_after)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


# ----------------------------------------------------------------------------- embedded sets

def test_skimage_test_prepares_offline_and_is_idempotent(tmp_path):
    out = prepare.run(_cfg(), datasets=["skimage_test"], out=tmp_path)
    assert out == tmp_path / "hr"
    folder = tmp_path / "hr" / "skimage_test"
    man = json.loads((folder / "manifest.json").read_text())
    assert set(man["images"]) == {"chelsea", "coffee", "rocket"}
    for name, rec in man["images"].items():
        img = cv2.imread(str(folder / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape[2] == 3
        assert img.shape[0] % 4 == 0 and img.shape[1] % 4 == 0
        assert list(img.shape[:2]) == rec["size"]
        assert hashlib.sha256((folder / f"{name}.png").read_bytes()).hexdigest() == rec["sha256"]
    # the crop is exactly the registry's window of the skimage photograph
    src = cv2.imread(str(prepare.skimage_dir() / "chelsea.png"))[..., ::-1]
    t, l, h, w = registry.get("skimage_test").skimage[0].crop
    np.testing.assert_array_equal(cv2.imread(str(folder / "chelsea.png"))[..., ::-1], src[t:t + h, l:l + w])
    mtime = (folder / "chelsea.png").stat().st_mtime_ns
    prepare.run(_cfg(), datasets=["skimage_test"], out=tmp_path)
    assert (folder / "chelsea.png").stat().st_mtime_ns == mtime, "a complete dataset must be skipped"


def test_mod_crop_to_the_scale(tmp_path, monkeypatch):
    files = _images(3, h=31, w=45)
    arc = tmp_path / "Fake_HR.tar.gz"
    arc.write_bytes(_tar(files))
    _register(monkeypatch)
    prepare.run(_cfg(local={"fake": str(arc)}, scale=4), datasets=["fake"], out=tmp_path / "d")
    img = cv2.imread(str(tmp_path / "d" / "hr" / "fake" / "img00.png"))
    assert img.shape[:2] == (28, 44)
    src = cv2.imdecode(np.frombuffer(files["img00.png"], np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(img, src[:28, :44])   # bottom / right rows dropped


def test_unknown_dataset(tmp_path):
    with pytest.raises(registry.UnknownDatasetError, match="set5"):
        prepare.run(_cfg(), datasets=["set_5"], out=tmp_path)
    with pytest.raises(registry.UnknownDatasetError, match=r"data.local.flikr2k.*did you mean 'flickr2k'"):
        prepare.run(_cfg(local={"flikr2k": "/x"}), datasets=["skimage_test"], out=tmp_path)


# ----------------------------------------------------------------------------- downloads

def test_download_checksum_and_extract(tmp_path, monkeypatch, server_factory):
    payload = _tar(_images(3))
    srv = server_factory(payload)
    _register(monkeypatch, urls=[srv.url], checksum="sha256:" + hashlib.sha256(payload).hexdigest())
    prepare.run(_cfg(), datasets=["fake"], out=tmp_path)
    assert (tmp_path / "raw" / "fake" / "Fake_HR.tar.gz").read_bytes() == payload
    assert not (tmp_path / "raw" / "fake" / "Fake_HR.tar.gz.part").exists()
    assert sorted(p.name for p in (tmp_path / "hr" / "fake").glob("*.png")) == ["img00.png", "img01.png", "img02.png"]
    # a second run uses the extraction and never calls the server again
    (tmp_path / "hr" / "fake" / "manifest.json").unlink()
    n = len(srv.ranges)
    prepare.run(_cfg(), datasets=["fake"], out=tmp_path)
    assert len(srv.ranges) == n


def test_download_resumes_a_part_file_with_range(tmp_path, server_factory):
    payload = bytes(range(256)) * 400
    srv = server_factory(payload)
    dest = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(payload[:30000])
    prepare.download([srv.url], dest, "md5:" + hashlib.md5(payload).hexdigest())
    assert srv.ranges == ["bytes=30000-"]
    assert dest.read_bytes() == payload


def test_download_dropped_connection_keeps_part_then_resumes(tmp_path, server_factory):
    payload = bytes(range(256)) * 400
    srv = server_factory(payload, cut_after=5000)
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match="rerun to resume"):
        prepare.download([srv.url], dest, None)
    assert not dest.exists() and (tmp_path / "a.bin.part").stat().st_size == 5000
    prepare.download([srv.url], dest, None)
    assert srv.ranges[-1] == "bytes=5000-" and dest.read_bytes() == payload


def test_checksum_mismatch_deletes_the_download(tmp_path, monkeypatch, server_factory):
    payload = _tar(_images(3))
    srv = server_factory(payload)
    _register(monkeypatch, urls=[srv.url], checksum="sha256:" + "0" * 64)
    with pytest.raises(ChecksumError, match="expected 0000"):
        prepare.run(_cfg(), datasets=["fake"], out=tmp_path)
    raw = tmp_path / "raw" / "fake"
    assert not (raw / "Fake_HR.tar.gz").exists() and not (raw / "Fake_HR.tar.gz.part").exists()
    assert not (tmp_path / "hr" / "fake" / "manifest.json").exists()


def test_offline_fails_at_once_naming_url_and_path(tmp_path, monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there: connection refused, like a machine without network
    url = f"http://127.0.0.1:{port}/Fake_HR.tar.gz"
    _register(monkeypatch, urls=[url])
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        prepare.run(_cfg(), datasets=["fake"], out=tmp_path)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert url in msg
    assert str((tmp_path / "raw" / "fake" / "Fake_HR.tar.gz").resolve()) in msg
    assert "data.local.fake" in msg and "--data-root" in msg


def test_manual_only_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(DownloadError, match=r"manual download only.*raw/manga109/Manga109.zip"):
        prepare.run(_cfg(), datasets=["manga109"], out=tmp_path)


def test_file_url_download(tmp_path, monkeypatch):
    arc = tmp_path / "src" / "Fake_HR.tar.gz"
    arc.parent.mkdir()
    arc.write_bytes(_tar(_images(3)))
    _register(monkeypatch, urls=[arc.as_uri()])
    prepare.run(_cfg(), datasets=["fake"], out=tmp_path / "d")
    assert len(list((tmp_path / "d" / "hr" / "fake").glob("*.png"))) == 3


# ----------------------------------------------------------------------------- local copies

def test_local_folder_is_verified(tmp_path, monkeypatch):
    files = _images(3)
    hr = tmp_path / "copy" / "Fake_HR"
    hr.mkdir(parents=True)
    for n, b in files.items():
        (hr / n).write_bytes(b)
    _register(monkeypatch)
    # the parent (layout hr_glob) and the HR folder itself both work
    for where in (tmp_path / "copy", hr):
        out = tmp_path / f"d_{where.name}"
        prepare.run(_cfg(local={"fake": str(where)}), datasets=["fake"], out=out)
        assert len(list((out / "hr" / "fake").glob("*.png"))) == 3
    (hr / "img02.png").unlink()
    with pytest.raises(DatasetError, match=r"expected 3 HR images.*2 images"):
        prepare.run(_cfg(local={"fake": str(hr)}), datasets=["fake"], out=tmp_path / "d2")


def test_data_root_with_zip_archive(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "Fake_HR.zip").write_bytes(_zip(_images(3)))
    _register(monkeypatch, archive="Fake_HR.zip")
    prepare.run(_cfg(), datasets=["fake"], data_root=root, out=tmp_path / "d")
    assert len(list((tmp_path / "d" / "hr" / "fake").glob("*.png"))) == 3


def test_truncated_archive(tmp_path, monkeypatch):
    arc = tmp_path / "Fake_HR.tar.gz"
    arc.write_bytes(_tar(_images(3))[:-300])
    _register(monkeypatch)
    with pytest.raises(DatasetError, match="corrupt or truncated archive"):
        prepare.run(_cfg(local={"fake": str(arc)}), datasets=["fake"], out=tmp_path / "d")
    assert not (tmp_path / "d" / "raw" / "fake" / "extracted").exists()


# ----------------------------------------------------------------------------- bad images

def _bad_image_bytes() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    rgba[..., 3] = 255                     # opaque: dropping alpha changes nothing (translucent: test_bad_inputs)
    rgb16 = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    pal = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    enc = lambda a: cv2.imencode(".png", a)[1].tobytes()  # noqa: E731
    return {"gray.png": enc(gray), "rgba.png": enc(rgba), "rgb16.png": enc(rgb16), "palette.png": buf.getvalue()}


def test_conversions_are_documented_per_image(tmp_path, monkeypatch):
    files = _bad_image_bytes()
    hr = tmp_path / "copy"
    hr.mkdir()
    for n, b in files.items():
        (hr / n).write_bytes(b)
    _register(monkeypatch, count=4)
    prepare.run(_cfg(local={"fake": str(hr)}), datasets=["fake"], out=tmp_path / "d")
    folder = tmp_path / "d" / "hr" / "fake"
    man = json.loads((folder / "manifest.json").read_text())["images"]
    assert man["gray"]["conversions"] == ["grayscale -> RGB (channel replicated)"]
    assert man["rgba"]["conversions"] == ["RGBA -> RGB (opaque alpha dropped)"]
    assert man["palette"]["conversions"] == ["palette -> RGB (expanded through its palette)"]
    assert man["rgb16"]["conversions"] == ["16-bit -> 8-bit (round(v/257))"]
    for n in ("gray", "rgba", "rgb16", "palette"):
        a = cv2.imread(str(folder / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        assert a.dtype == np.uint8 and a.shape == (20, 24, 3), n
    g = cv2.imread(str(folder / "gray.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(g[..., 0], g[..., 2])
    src16 = cv2.imdecode(np.frombuffer(files["rgb16.png"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.imread(str(folder / "rgb16.png")),
                                  np.floor(src16 / 257.0 + 0.5).astype(np.uint8))
    pal_rgb = np.asarray(Image.open(io.BytesIO(files["palette.png"])).convert("RGB"))
    np.testing.assert_array_equal(cv2.imread(str(folder / "palette.png"))[..., ::-1], pal_rgb)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_image_names_the_file_and_writes_no_manifest(tmp_path, monkeypatch, damage):
    files = _images(3)
    b = files["img01.png"]
    files["img01.png"] = b[: len(b) // 2] if damage == "truncated" else b"not an image at all" * 10
    hr = tmp_path / "copy"
    hr.mkdir()
    for n, data in files.items():
        (hr / n).write_bytes(data)
    _register(monkeypatch)
    with pytest.raises(ImageError, match=r"img01\.png"):
        prepare.run(_cfg(local={"fake": str(hr)}), datasets=["fake"], out=tmp_path / "d")
    assert not (tmp_path / "d" / "hr" / "fake" / "manifest.json").exists()


def test_truncated_jpeg_is_refused(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.tobytes()[: buf.size // 2])
    with pytest.raises(ImageError, match="t.jpg: corrupt or truncated"):
        read_rgb(p)


def test_disk_full_leaves_nothing_half_written(tmp_path, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(images_mod, "write_bytes", full)
    with pytest.raises(OSError, match=r"chelsea\.png: disk full") as e:
        prepare.run(_cfg(), datasets=["skimage_test"], out=tmp_path)
    assert e.value.errno == errno.ENOSPC
    folder = tmp_path / "hr" / "skimage_test"
    assert not list(folder.glob("*.png")) and not (folder / "manifest.json").exists()


def test_parallel_workers_give_identical_files(tmp_path):
    prepare.run(_cfg(workers=1), datasets=["skimage_test"], out=tmp_path / "a")
    prepare.run(_cfg(workers=2), datasets=["skimage_test"], out=tmp_path / "b")
    a = json.loads((tmp_path / "a/hr/skimage_test/manifest.json").read_text())["images"]
    b = json.loads((tmp_path / "b/hr/skimage_test/manifest.json").read_text())["images"]
    assert {k: v["sha256"] for k, v in a.items()} == {k: v["sha256"] for k, v in b.items()}
