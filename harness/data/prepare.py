"""Stage ``prepare``: get each dataset's HR images and write them mod-cropped to ``data/hr``.

For every dataset (default: ``data.train`` + ``data.test`` of params.yaml):

1. Find its images, in this order: ``data.local[<source or dataset>]`` (an archive file or
   a folder), ``--data-root`` (a folder holding the archives or the extracted folders),
   an earlier extraction in ``data/raw/<source>/extracted/``, an earlier download
   ``data/raw/<source>/<archive>``, else a download from the registry URLs into that path:
   resumable (HTTP ``Range`` onto ``<archive>.part``), short timeout, then the archive
   checksum where the registry has one. Offline the download fails at once with a message
   naming the URL and the exact path to place the archive at.
2. Verify the copy: the registry's image count (``hr_glob`` inside the archive / folder)
   and, while converting, that every image decodes (corrupt or truncated files raise,
   naming the file; see :mod:`harness.data.images` for grayscale / RGBA / 16-bit /
   palette conversions, which are recorded per image).
3. Write ``data/hr/<dataset>/<image>.png``: 8-bit RGB, mod-cropped so H and W are
   multiples of ``degrade.scale`` (BasicSR ``mod_crop``: bottom / right rows dropped),
   atomically, in ``degrade.workers`` processes; then ``data/hr/<dataset>/manifest.json``
   (source, original size, conversions, sha256 per image).

The embedded ``skimage_*`` sets are read from the scikit-image wheel (sha256-checked),
cropped as the registry says: no network, no archive. A dataset whose manifest matches
(same sources, same scale, every PNG present with its sha256) is skipped.

``data.standin: true`` (the ``rehearsal`` profile) replaces step 1 for the archive datasets:
:mod:`harness.data.standin` writes a synthetic archive of each source, with the published
archive name, inner layout, image names and count, under ``data/raw/standin/<source>/``, and
steps 1-3 then run on it exactly as on a user's copy (extraction, ``hr_glob``, count and name
checks, decoding and conversions, mod-crop). The manifests say ``"standin": true``, so stand-in
and real copies never pass for each other; ``data/raw/<source>/`` is not touched.
"""
from __future__ import annotations

import errno
import http.client
import logging
import os
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.config import Config
from harness.data import registry
from harness.data.degrade import process_pool
from harness.data.images import IMAGE_SUFFIXES, ImageError, read_rgb, sha256_file, write_png
from harness.data.registry import Dataset, Source

__all__ = ["DownloadError", "ChecksumError", "DatasetError", "download", "verify_checksum", "extract",
           "find_images", "locate_source", "standin_source", "skimage_dir", "run", "DOWNLOAD_TIMEOUT_S", "MANIFEST"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
DOWNLOAD_TIMEOUT_S = 15.0   # per connect / read: offline fails at once, a stalled server within seconds
CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A dataset copy that is missing, incomplete or malformed (names the path and what was expected)."""


class DownloadError(DatasetError):
    """A download that failed; names the URL(s) and where to place the file by hand."""


class ChecksumError(DatasetError):
    """An archive whose checksum differs from the registry's."""


# ----------------------------------------------------------------------------- download

def verify_checksum(path: Path, checksum: str | None) -> None:
    """Check ``path`` against ``"md5:<hex>"`` / ``"sha256:<hex>"``; ``None`` logs that none is published.

    Raises:
        ChecksumError: the digest differs (names file, expected and actual).
    """
    if checksum is None:
        log.info("%s: no published checksum; not verified", path)
        return
    algo, _, want = checksum.partition(":")
    if algo not in ("md5", "sha256") or not want:
        raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    import hashlib
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
    got = h.hexdigest()
    if got.lower() != want.lower():
        raise ChecksumError(f"{path}: {algo} is {got}, expected {want} (corrupt or wrong file)")


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range when ``part`` has bytes), or restart it."""
    from tqdm import tqdm
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "csrbench/0.1 (+prepare)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:   # Range not satisfiable: the part file is already whole
            log.info("%s: server says %s is complete", url, part)
            return
        raise
    with resp:
        status = getattr(resp, "status", None)
        resumed = bool(have) and status == 206
        if have and not resumed:
            log.info("%s: server ignored the Range request; restarting %s", url, part)
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        written = 0
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=(expected + have if resumed else expected) if expected is not None else None,
                initial=have if resumed else 0, unit="B", unit_scale=True, desc=part.name, disable=None,
                leave=False) as bar:
            while True:
                b = resp.read(CHUNK)
                if not b:
                    break
                f.write(b)
                written += len(b)
                bar.update(len(b))
            f.flush()
            os.fsync(f.fileno())
    if expected is not None and written != expected:
        raise DownloadError(f"{url}: connection closed after {written} of {expected} bytes; "
                            f"{part} is kept, rerun to resume")
    log.info("%s: %s %d bytes into %s", url, "resumed with" if resumed else "downloaded", written, part)


def download(urls: Sequence[str], dest: Path, checksum: str | None, *, timeout: float = DOWNLOAD_TIMEOUT_S,
             hint: str = "") -> Path:
    """Download ``dest`` from the first URL that works, resuming ``<dest>.part``, then verify it.

    Args:
        urls: URLs tried in order (``http(s)://`` resume with ``Range``; ``file://`` works too).
        dest: final archive path; written only once complete and verified.
        checksum: ``"md5:<hex>"`` / ``"sha256:<hex>"`` or ``None``.
        timeout: socket timeout per connect / read, seconds.
        hint: extra text for the error message (other ways to provide the data).

    Returns:
        ``dest``.

    Raises:
        DownloadError: every URL failed (names them and where to place the file by hand).
        ChecksumError: the download is not the expected file; the ``.part`` is deleted.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if not urls:
        raise DownloadError(f"{dest.name} has no download URL (manual download only). Place it at {dest.resolve()}"
                            + (f"; {hint}" if hint else ""))
    errors = []
    for url in urls:
        try:
            log.info("downloading %s -> %s", url, dest)
            _fetch(url, part, timeout)
            break
        except DownloadError as e:
            errors.append(str(e))
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError,
                ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DownloadError(f"{part}: disk full while downloading {url}; free space and rerun "
                                    "(the part file is kept and resumes)") from e
            errors.append(f"{url}: {e}")
    else:
        raise DownloadError(
            "cannot download " + "; ".join(errors) + f". No network? Download it elsewhere and place it at "
            f"{dest.resolve()}" + (f"; {hint}" if hint else ""))
    try:
        verify_checksum(part, checksum)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------- archives and folders

def extract(archive: Path, dest: Path) -> Path:
    """Extract a zip / tar(.gz) archive into ``dest`` atomically (``dest.tmp`` then rename).

    Raises:
        DatasetError: not an archive, or corrupt / truncated (names the file).
    """
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log.info("extracting %s -> %s", archive, dest)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                if bad is not None:
                    raise DatasetError(f"{archive}: corrupt member {bad}")
                z.extractall(tmp)   # zipfile drops absolute paths and '..'
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        else:
            raise DatasetError(f"{archive}: not a zip or tar archive")
    except DatasetError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise DatasetError(f"{dest}: disk full while extracting {archive}") from e
        raise DatasetError(f"{archive}: corrupt or truncated archive ({e}); delete it and rerun") from None
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def find_images(root: Path, source: Source) -> tuple[list[Path] | None, list[str]]:
    """The HR images of ``source`` inside ``root`` (an extraction root, a parent folder or the HR folder).

    Tries ``root/<hr_glob>``, ``root/<source.name>/<hr_glob>`` and the images directly in ``root``.

    Returns:
        ``(images, tried)``: the sorted image paths when exactly ``source.count`` matched (else
        ``None``), and one line per pattern tried with its match count (for error messages).
    """
    root = Path(root)
    tried = []
    candidates = [root.glob(source.hr_glob), (root / source.name).glob(source.hr_glob),
                  (p for p in root.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)]
    labels = [root / source.hr_glob, root / source.name / source.hr_glob, root / f"*{{{','.join(IMAGE_SUFFIXES)}}}"]
    for found, label in zip(candidates, labels):
        files = sorted(p for p in found if p.is_file() and not p.name.startswith("."))
        tried.append(f"{label}: {len(files)} images")
        if len(files) == source.count:
            return files, tried
    return None, tried


def _check_stems(files: list[Path], source: Source, where: Path) -> None:
    stems = [p.stem for p in files]
    if source.first and stems[0] != source.first or source.last and stems[-1] != source.last:
        raise DatasetError(f"{where}: {source.name} images run {stems[0]}..{stems[-1]}, expected "
                           f"{source.first}..{source.last} (wrong dataset or split?)")


def _from_path(path: Path, source: Source, raw: Path, what: str) -> list[Path]:
    """Images of ``source`` from a user-given archive file or folder."""
    if path.is_file():
        verify_checksum(path, source.checksum)
        root = extract(path, raw / source.name / "extracted")
        files, tried = find_images(root, source)
        if files is None:
            raise DatasetError(f"{path} ({what}): expected {source.count} images of {source.name} at "
                               f"{source.hr_glob} inside the archive; found " + "; ".join(tried))
        return files
    if not path.is_dir():
        raise DatasetError(f"{path} ({what}): no such file or folder")
    if (path / source.archive).is_file():
        return _from_path(path / source.archive, source, raw, what)
    files, tried = find_images(path, source)
    if files is None:
        raise DatasetError(f"{path} ({what}): expected {source.count} HR images of {source.name} "
                           f"(layout {source.hr_glob}, or the archive {source.archive}); found " + "; ".join(tried))
    return files


def locate_source(source: Source, dataset: Dataset, raw: Path, local: dict[str, str],
                  data_root: Path | None) -> list[Path]:
    """Find (or download and extract) the HR images of one source; see the module docstring for the order.

    Raises:
        DatasetError / DownloadError / ChecksumError: with the path or URL and what was expected.
    """
    for key in (source.name, dataset.name):
        if key in local:
            return _from_path(Path(local[key]), source, raw, f"data.local.{key}")
    if data_root is not None:
        return _from_path(Path(data_root), source, raw, "--data-root")
    done = raw / source.name / "extracted"
    archive = raw / source.name / source.archive
    if done.is_dir():
        files, tried = find_images(done, source)
        if files is not None:
            return files
        log.warning("%s: earlier extraction is incomplete (%s); extracting again", done, "; ".join(tried))
    if not archive.is_file():
        hint = (f"or put the extracted images ({source.hr_glob}) under {done.resolve()}, or point --data-root / "
                f"params data.local.{dataset.name} at an existing copy")
        if dataset.note:
            hint += f" ({dataset.note})"
        download(source.urls, archive, source.checksum, hint=hint)
    else:
        verify_checksum(archive, source.checksum)
    root = extract(archive, done)
    files, tried = find_images(root, source)
    if files is None:
        raise DatasetError(f"{archive}: expected {source.count} images at {source.hr_glob} inside; found "
                           + "; ".join(tried))
    return files


def skimage_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image wheel."""
    import skimage.data
    return Path(skimage.data.__file__).parent


def _skimage_sources(dataset: Dataset) -> list[tuple[str, Path, tuple[int, int, int, int] | None]]:
    folder = skimage_dir()
    out = []
    for im in dataset.skimage:
        p = folder / im.file
        if not p.is_file():
            raise DatasetError(f"{p}: scikit-image sample {im.file} is not in the installed wheel "
                               "(needs scikit-image >= 0.22 shipping its sample photographs)")
        got = sha256_file(p)
        if got != im.sha256:
            raise DatasetError(f"{p}: sha256 {got} differs from the registry's {im.sha256} (modified sample?)")
        out.append((im.name, p, im.crop))
    return out


# ----------------------------------------------------------------------------- conversion

def _convert(args: tuple[str, str, str, int, tuple[int, int, int, int] | None]) -> dict[str, Any]:
    """Worker: one source image -> mod-cropped 8-bit RGB PNG; returns its manifest record."""
    name, src, dst, scale, crop = args
    rgb, notes = read_rgb(src)
    h0, w0 = rgb.shape[:2]
    if crop is not None:
        t, l_, ch, cw = crop
        if t + ch > h0 or l_ + cw > w0:
            raise ImageError(f"{src}: crop {crop} (top, left, h, w) exceeds the image {h0}x{w0}")
        rgb = rgb[t:t + ch, l_:l_ + cw]
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb[: h - h % scale, : w - w % scale])
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"{src}: {h}x{w} image is smaller than the scale {scale}")
    sha = write_png(dst, rgb)
    return {"name": name, "source": str(src), "source_size": [h0, w0], "crop": list(crop) if crop else None,
            "size": list(rgb.shape[:2]), "conversions": notes, "sha256": sha}


def _is_complete(folder: Path, key: dict[str, Any]) -> bool:
    from harness.provenance import read_json
    man = folder / MANIFEST
    if not man.is_file():
        return False
    try:
        m = read_json(man)
    except ValueError:
        return False
    if {k: m.get(k) for k in key} != key or len(m.get("images") or {}) != key["count"]:
        return False
    return all((folder / f"{n}.png").is_file() and sha256_file(folder / f"{n}.png") == r["sha256"]
               for n, r in m["images"].items())


def _key(dataset: Dataset, scale: int, standin: bool = False) -> dict[str, Any]:
    if dataset.embedded:
        src: list[Any] = [{"file": i.file, "sha256": i.sha256, "crop": list(i.crop) if i.crop else None}
                          for i in dataset.skimage]
    else:
        src = [{"source": s.name, "archive": s.archive, "hr_glob": s.hr_glob, "count": s.count}
               for s in dataset.sources]
    key = {"dataset": dataset.name, "mod_crop": scale, "count": dataset.count, "sources": src}
    if standin and not dataset.embedded:    # only then, so the real-data manifests keep their key
        from harness.data import standin as standin_mod
        key["standin"] = {"generator_sha256": sha256_file(standin_mod.__file__), "seed": standin_mod.SEED}
    return key


def standin_source(source: Source, raw: Path) -> list[Path]:
    """The HR images of the stand-in of ``source``, through the same path as a user's archive.

    Writes ``raw/<source>/<archive>`` with :func:`harness.data.standin.write_archive` unless it is
    there from the same generator (a ``.json`` stamp beside it holds the generator's sha256), then
    extracts it and finds its images as :func:`locate_source` does for a real archive.
    """
    import json

    from harness.data import standin as standin_mod
    archive = raw / source.name / source.archive
    stamp = archive.with_name(archive.name + ".json")
    want = {"generator_sha256": sha256_file(standin_mod.__file__), "seed": standin_mod.SEED}
    have = json.loads(stamp.read_text()) if stamp.is_file() else None
    if not archive.is_file() or have != want:
        log.info("stand-in: writing %s (%d synthetic images, published layout %s)", archive, source.count,
                 source.hr_glob)
        stamp.unlink(missing_ok=True)
        standin_mod.write_archive(source, archive)
        stamp.write_text(json.dumps(want))
    return _from_path(archive, source, raw, "stand-in archive (data.standin: true)")


def _prepare_one(cfg: Config, dataset: Dataset, out: Path, data_root: Path | None, scale: int, workers: int) -> Path:
    from harness.provenance import write_json
    folder = out / "hr" / dataset.name
    key = _key(dataset, scale, cfg.data.standin)
    if _is_complete(folder, key):
        log.info("%s: complete (%d images, sha256 verified), skipped", folder, dataset.count)
        return folder
    if dataset.embedded:
        items = _skimage_sources(dataset)
    else:
        items = []
        for s in dataset.sources:
            if cfg.data.standin:
                files = standin_source(s, out / "raw" / "standin")
            else:
                files = locate_source(s, dataset, out / "raw", dict(cfg.data.local), data_root)
            _check_stems(files, s, files[0].parent)
            items += [(p.stem, p, None) for p in files]
    names = [n for n, _, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{dataset.name}: image names collide across sources: {', '.join(dup[:5])}")
    if len(items) != dataset.count:
        raise DatasetError(f"{dataset.name}: found {len(items)} images, the registry expects {dataset.count}")
    if folder.is_dir():
        (folder / MANIFEST).unlink(missing_ok=True)
        for p in folder.glob("*.png"):
            if p.stem not in set(names):
                log.info("%s: removing stale image", p)
                p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(n, str(p), str(folder / f"{n}.png"), scale, crop) for n, p, crop in items]
    log.info("prepare %s: %d images -> %s (mod %d, %d workers)", dataset.name, len(jobs), folder, scale, workers)
    from tqdm import tqdm
    if workers > 1 and len(jobs) > 1:
        with process_pool(min(workers, len(jobs))) as ex:
            records = list(tqdm(ex.map(_convert, jobs), total=len(jobs), desc=f"prepare {dataset.name}",
                                disable=None, leave=False))
    else:
        records = [_convert(j) for j in tqdm(jobs, desc=f"prepare {dataset.name}", disable=None, leave=False)]
    converted = [r for r in records if r["conversions"]]
    if converted:
        log.info("%s: %d images converted (%s)", dataset.name, len(converted),
                 "; ".join(f"{r['name']}: {', '.join(r['conversions'])}" for r in converted[:5]))
    payload = {**key, "licence": dataset.licence, "homepage": dataset.homepage, "note": dataset.note,
               "images": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in records}}
    write_json(folder / MANIFEST, payload, cfg=cfg)
    return folder


def run(cfg: Config, datasets: list[str] | None = None, data_root: Path | None = None,
        out: Path = Path("data")) -> Path:
    """``csrbench prepare``: ``data/hr/<dataset>/`` for every dataset.

    Args:
        cfg: the run's :class:`harness.config.Config` (reads ``data.train``, ``data.test``,
            ``data.local``, ``degrade.scale``, ``degrade.workers``).
        datasets: registry names; default ``data.train`` + ``data.test``.
        data_root: folder with existing copies (archives or extracted folders); skips downloads.
        out: the data folder (``raw/`` and ``hr/`` are written inside).

    Returns:
        ``out/hr``, the folder written.

    Raises:
        UnknownDatasetError: a name not in the registry.
        DatasetError / DownloadError / ChecksumError / ImageError / OSError: as named in the message.
    """
    out = Path(out)
    names = list(datasets) if datasets else list(dict.fromkeys([cfg.data.train, *cfg.data.test]))
    entries = [registry.get(n) for n in names]          # unknown names fail before any work
    known = set(registry.DATASETS) | {s.name for d in registry.DATASETS.values() for s in d.sources}
    for key in cfg.data.local:
        if key not in known:
            import difflib
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise registry.UnknownDatasetError(
                f"{cfg.source}: data.local.{key}: not a dataset or source name"
                + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(known))}"))
    if cfg.data.standin and (data_root is not None or cfg.data.local):
        raise DatasetError(f"{cfg.source}: data.standin is true, so prepare writes synthetic stand-ins; it cannot also "
                           "read --data-root / data.local (set data.standin: false to use a real copy)")
    for d in entries:
        _prepare_one(cfg, d, out, Path(data_root) if data_root else None, cfg.degrade.scale, cfg.degrade.workers)
    return out / "hr"

