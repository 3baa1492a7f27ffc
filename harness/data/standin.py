"""Stand-in copies of the paper's datasets, in their published layouts (the ``rehearsal`` profile).

The paper preset reads DF2K (DIV2K train + Flickr2K), Set5, Set14, BSD100, Urban100,
Manga109 and DIV2K valid, none of which can be downloaded here. With ``data.standin: true``
``csrbench prepare`` writes, for every registry source, an archive of the same name and inner
layout as the published one (``DIV2K_train_HR.zip`` holding ``DIV2K_train_HR/0001.png`` ..
``0800.png``, ``Flickr2K.tar`` holding ``Flickr2K/Flickr2K_HR/000001.png`` .. ``002650.png``,
``Set5_HR.tar.gz`` holding ``Set5_HR/baby.png`` .. ``woman.png``, ``Manga109.zip`` with the
109 title names, ...) under ``data/raw/standin/<source>/``, and then prepares it through the
real path: checksum hook, :func:`harness.data.prepare.extract`, the registry's ``hr_glob``,
count and first / last name checks, :func:`harness.data.images.read_rgb` and the mod-crop. The
real-data folders ``data/raw/<source>/`` are never touched, and the ``data/hr`` manifests carry
``"standin": true`` so a stand-in copy is never taken for the real one.

The images are synthetic but not noise: warped, cropped and mirrored scikit-image photographs
(shipped in the wheel) with straight edges, rectangles and text-like strokes drawn over them;
Urban100 stand-ins add building-like grids, Manga109 stand-ins are grey line art with text.
They are small (DF2K 96-160 px sides) so that the 3450 DF2K images take seconds, except where
a size matters:

- DIV2K valid ``0801`` is 64x800 HR (LR 16x200 at x4), wider than the paper's 192-px LR
  evaluation tile, so tiled evaluation runs with two tiles (and whole along its short side); it
  is the first DIV2K valid image by name, so ``evaluate.max_images: 1`` still scores it (16 LR
  rows, a multiple of every window, so its two tiles carry no padding rows);
- Set5 is at a quarter of its real sizes: every rehearsal network runs on ``baby`` (LR 32x32) several
  times (validation, scoring, generalization to 5 test codecs), so its size sets much of the
  rehearsal's time; the others (LR 14-18 px) are smaller than the networks' windows;
- DIV2K train ``0001`` is 1020x700, cut into several 480-px sub-images (step 240, a last crop
  flush with the edge);
- many sides are not multiples of 4 (mod-crop runs) and the LR sides are mostly not
  multiples of 8 or 16 (the networks' window padding runs);
- two Set14 images are written as 8-bit grayscale PNGs, as in some Set14 copies (the
  grayscale -> RGB conversion runs and is recorded in the manifest).

Everything is a function of the image name and a fixed seed: two runs write identical
archives (fixed member times), so ``dvc repro`` sees identical ``data/hr``.
"""
from __future__ import annotations

import functools
import io
import tarfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from harness.data.registry import Source

__all__ = ["STANDIN_NAMES", "names_of", "size_of", "synth_image", "write_archive", "member_path", "SEED"]

SEED = 20240517
#: Set5 (Bevilacqua et al., BMVC 2012) and Set14 (Zeyde et al., 2010) image names as the SR benchmark
#: copies spell them; BSD100: numeric stems in the style of the BSDS300 test split (Martin et al., ICCV 2001),
#: not checked against a copy (the registry pins no BSD100 names, only the count); Manga109 volume titles
#: (Matsui et al., 2017) with the apostrophes of "That'sIzumiko" / "UchiNoNyan'sDiary" dropped, as in
#: the SR test-set copies.
_SET5 = ("baby", "bird", "butterfly", "head", "woman")
_SET14 = ("baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers", "foreman", "lenna", "man",
          "monarch", "pepper", "ppt3", "zebra")
_BSD100 = tuple(str(n) for n in sorted([
    101085, 101087, 102061, 103070, 105025, 106024, 108005, 108070, 108082, 109053, 119082, 12084, 123074, 126007,
    130026, 134035, 14037, 143090, 145086, 147091, 148026, 148089, 156065, 157055, 159008, 160068, 16077, 163085,
    167062, 167083, 170057, 175032, 175043, 182053, 189080, 19021, 196073, 197017, 198023, 208001, 210088, 21077,
    216081, 219090, 220075, 223061, 227092, 229036, 236037, 24077, 241004, 253027, 253055, 260058, 262007,
    271035, 285079, 291000, 295087, 296007, 296059, 300091, 302008, 304034, 304074, 306005, 3096, 33039,
    335094, 37073, 41033, 41069, 42012, 42049, 43074, 45096, 46076, 47079, 48055, 49024, 52049, 54082, 55073,
    55075, 58060, 62096, 64061, 65033, 69015, 69020, 69040, 76053, 78004, 8023, 85048, 86000, 86016, 86068,
    89072, 97033]))
_MANGA109 = (
    "ARMS", "AisazuNihaIrarenai", "AkkeraKanjinchou", "Akuhamu", "AosugiruHaru", "AppareKappore", "Arisa",
    "BEMADER_P", "BakuretsuKungFuGirl", "Belmondo", "BokuHaSitatakaKun", "BurariTessenTorimonocho", "ByebyeC-BOY",
    "Count3DeKimeteAgeru", "DollGun", "Donburakokko", "DualJustice", "EienNoWith", "EvaLady", "EverydayOsakanaChan",
    "GOOD_KISS_Ver2", "GakuenNoise", "GarakutayaManta", "GinNoChimera", "Hamlet", "HanzaiKousyouninMinegishiEitarou",
    "HaruichibanNoFukukoro", "HarukaRefrain", "HealingPlanet", "HeiseiJimen", "HighschoolKimengumi_vol01",
    "HighschoolKimengumi_vol20", "HinagikuKenzan", "HisokaReturns", "JangiriPonpon", "JijiBabaFight", "Joouari",
    "Jyovolley", "KarappoHighschool", "KimiHaBokuNoTaiyouDa", "KoukouNoHitotachi", "KuroidoGanka", "KyokugenCyclone",
    "LancelotFullThrottle", "LoveHina_vol01", "LoveHina_vol14", "MAD_STONE", "MadouTaiga", "MagicStarGakuin",
    "MagicianLoad", "MariaSamaNihaNaisyo", "MayaNoAkaiKutsu", "MemorySeijin", "MeteoSanStrikeDesu", "MiraiSan",
    "MisutenaideDaisy", "MoeruOnisan_vol01", "MoeruOnisan_vol19", "MomoyamaHaikagura", "MukoukizuNoChonbo",
    "MutekiBoukenSyakuma", "Nekodama", "NichijouSoup", "Ningyoushi", "OL_Lunch", "OhWareraRettouSeitokai", "PLANET7",
    "ParaisoRoad", "PikaruGenkiDesu", "PlatinumJungle", "PrayerHaNemurenai", "PrismHeart", "PsychoStaff", "Raphael",
    "ReveryEarth", "RinToSiteSippuNoNaka", "RisingGirl", "Saisoku", "SaladDays_vol01", "SaladDays_vol18",
    "SamayoeruSyonenNiJunaiWo", "SeisinkiVulnus", "ShimatteIkouze_vol01", "ShimatteIkouze_vol26", "SonokiDeABC",
    "SyabondamaKieta", "TaiyouNiSmash", "TapkunNoTanteisitsu", "TasogareTsushin", "TennenSenshiG",
    "TensiNoHaneToAkumaNoShippo", "TetsuSan", "ThatsIzumiko", "TotteokiNoABC", "ToutaMairimasu", "TouyouKidan",
    "TsubasaNoKioku", "UchiNoNyansDiary", "UchuKigekiM774", "UltraEleven", "UnbalanceTokyo", "WarewareHaOniDearu",
    "YamatoNoHane", "YasasiiAkuma", "YouchienBoueigumi", "YoumaKourin", "YukiNoFuruMachi", "YumeNoKayoiji",
    "YumeiroCooking")

#: Image stems per registry source name, in the published spelling.
STANDIN_NAMES: dict[str, tuple[str, ...]] = {
    "div2k_train": tuple(f"{i:04d}" for i in range(1, 801)),
    "div2k_valid": tuple(f"{i:04d}" for i in range(801, 901)),
    "flickr2k": tuple(f"{i:06d}" for i in range(1, 2651)),
    "set5": _SET5,
    "set14": _SET14,
    "bsd100": _BSD100,
    "urban100": tuple(f"img_{i:03d}" for i in range(1, 101)),
    "manga109": _MANGA109,
}
#: HR sizes (H, W) that matter (see the module docstring); the rest are drawn per image.
_FIXED_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("div2k_valid", "0801"): (64, 800),
    ("div2k_train", "0001"): (1020, 700),
    # Set5 at a quarter of its real sizes (baby 512x512 ... woman 344x228). baby, the first image, is what
    # validation, generalization and the visual crops run on: LR 32x32, the rehearsal's ERF crop.
    ("set5", "baby"): (128, 128), ("set5", "bird"): (72, 72), ("set5", "butterfly"): (64, 64),
    ("set5", "head"): (70, 70), ("set5", "woman"): (86, 57),
}
_GRAY = {("set14", "man"), ("set14", "zebra")}
#: (min, max) HR side per source; BSD100 keeps its 3:2 landscape / portrait shapes, Manga109 its 1:1.41 pages.
_SIDE_RANGE = {"div2k_train": (96, 160), "flickr2k": (96, 160), "div2k_valid": (96, 160), "set14": (96, 176),
               "urban100": (112, 176)}
_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "ihc.png",
           "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png", "camera.png", "page.png")


def names_of(source: Source) -> tuple[str, ...]:
    """Image stems of the stand-in of ``source``, checked against the registry's count and first / last.

    Raises:
        KeyError: no stand-in for this source name.
        ValueError: the names disagree with the registry (a registry edit the stand-in missed).
    """
    if source.name not in STANDIN_NAMES:
        raise KeyError(f"no stand-in for source {source.name!r}; known: {', '.join(sorted(STANDIN_NAMES))}")
    names = STANDIN_NAMES[source.name]
    stems = sorted(names)
    if len(set(names)) != source.count or (source.first and stems[0] != source.first) or (
            source.last and stems[-1] != source.last):
        raise ValueError(f"stand-in of {source.name}: {len(set(names))} names {stems[0]}..{stems[-1]}, registry "
                         f"expects {source.count} {source.first or '?'}..{source.last or '?'}")
    return names


def _rng(source: str, name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(f"{source}/{name}".encode())])


def size_of(source: str, name: str) -> tuple[int, int]:
    """HR (H, W) of one stand-in image (before the mod-crop of ``prepare``)."""
    if (source, name) in _FIXED_SIZES:
        return _FIXED_SIZES[(source, name)]
    rng = _rng(source, "size/" + name)
    if source == "bsd100":      # 481x321 / 321x481 in BSDS300, here about a quarter
        long, short = int(rng.integers(116, 125)), int(rng.integers(77, 84))
        return (short, long) if rng.random() < 0.65 else (long, short)
    if source == "manga109":    # pages about 1170 x 1654, here about a tenth
        w = int(rng.integers(112, 125))
        return int(round(w * 1.414)) + int(rng.integers(-2, 3)), w
    lo, hi = _SIDE_RANGE.get(source, (96, 160))
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


@functools.lru_cache(maxsize=None)
def _photo(file: str) -> np.ndarray:
    """One scikit-image sample as uint8 RGB HxWx3 (gray samples replicated), read once per process."""
    from harness.data.prepare import skimage_dir
    from PIL import Image
    path = skimage_dir() / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scikit-image sample missing (needed by the stand-ins)")
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def _warped_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A rotated, scaled, sheared and possibly mirrored crop of a random photograph, h x w x 3 uint8."""
    src = _photo(_PHOTOS[int(rng.integers(len(_PHOTOS)))])
    sh, sw = src.shape[:2]
    zoom = float(rng.uniform(0.35, 1.6))
    angle = float(rng.uniform(-25, 25))
    cy, cx = rng.uniform(0.3, 0.7) * sh, rng.uniform(0.3, 0.7) * sw
    m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    m[0, 1] += float(rng.uniform(-0.15, 0.15))          # shear
    m[:, 2] += (w / 2 - cx, h / 2 - cy)
    out = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _grid(rng: np.random.Generator, img: np.ndarray) -> None:
    """Building-like facade: a regular grid of windows in perspective-free rows (Urban100)."""
    h, w = img.shape[:2]
    cell = int(rng.integers(8, 20))
    wall = np.rint(rng.uniform(0.3, 0.9, 3) * 255).astype(np.uint8)
    win = rng.uniform(0.0, 0.4, 3) * 255
    x0 = int(rng.integers(0, w // 3))
    img[:, x0:] = wall
    for y in range(int(rng.integers(0, cell)), h, cell):
        for x in range(x0 + int(rng.integers(0, cell)), w, cell):
            cv2.rectangle(img, (x, y), (x + cell // 2, y + cell * 2 // 3), tuple(float(c) for c in win), -1)


def _strokes(rng: np.random.Generator, img: np.ndarray, n_lines: int, n_text: int) -> None:
    """Straight edges, rectangles and text-like glyph strokes drawn in place."""
    h, w = img.shape[:2]
    for _ in range(n_lines):
        c = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p = (int(rng.integers(w)), int(rng.integers(h)))
        q = (int(rng.integers(w)), int(rng.integers(h)))
        if rng.random() < 0.5:
            cv2.line(img, p, q, c, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.rectangle(img, p, q, c, int(rng.integers(1, 3)), cv2.LINE_AA)
    letters = "ABCDEFGHJKLMNPRSTUVWXYZabdeghkmnpqrstuwxyz0123456789"
    for _ in range(n_text):
        word = "".join(letters[int(i)] for i in rng.integers(len(letters), size=int(rng.integers(2, 7))))
        c = tuple(float(v) for v in (rng.uniform(0, 50, 3) if rng.random() < 0.6 else rng.uniform(205, 255, 3)))
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX]))
        org = (int(rng.integers(0, max(1, w - 20))), int(rng.integers(10, max(11, h))))
        cv2.putText(img, word, org, font, float(rng.uniform(0.25, 0.7)), c, int(rng.integers(1, 3)), cv2.LINE_AA)


def synth_image(source: str, name: str) -> np.ndarray:
    """The stand-in image ``name`` of ``source``: HxWx3 uint8 RGB, or HxW uint8 for the grayscale ones.

    Deterministic: a function of ``(source, name)`` and :data:`SEED` only.
    """
    h, w = size_of(source, name)
    rng = _rng(source, name)
    img = np.ascontiguousarray(_warped_photo(rng, h, w))
    if source == "urban100":
        _grid(rng, img)
        _strokes(rng, img, n_lines=6, n_text=1)
    elif source == "manga109":
        g = cv2.Canny(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 60, 140)
        g = np.where(g > 0, 12, 242).astype(np.uint8)
        img = np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))
        _strokes(rng, img, n_lines=5, n_text=6)   # panel borders and lettering
    else:
        _strokes(rng, img, n_lines=3, n_text=1 if rng.random() < 0.5 else 0)
    if (source, name) in _GRAY:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    return img


def member_path(source: Source, name: str) -> str:
    """Path of image ``name`` inside the published archive: the folder part of ``hr_glob`` + ``name.png``."""
    folder = source.hr_glob.rsplit("/", 1)[0] if "/" in source.hr_glob else ""
    return f"{folder}/{name}.png" if folder else f"{name}.png"


def _png_bytes(img: np.ndarray) -> bytes:
    bgr = img if img.ndim == 2 else img[..., ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("cv2.imencode('.png') failed")
    return buf.tobytes()


def write_archive(source: Source, path: str | Path) -> Path:
    """Write the stand-in archive of ``source`` at ``path`` (zip, tar or tar.gz by ``source.archive``).

    Members are laid out as the published archive (see :func:`member_path`), with fixed times, so
    the bytes depend on the source only. Written to ``<path>.tmp`` then renamed.

    Returns:
        ``path``.
    """
    path = Path(path)
    names = names_of(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    arc = source.archive.lower()
    if arc.endswith(".zip"):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for n in names:
                info = zipfile.ZipInfo(member_path(source, n), date_time=(2017, 1, 1, 0, 0, 0))
                z.writestr(info, _png_bytes(synth_image(source.name, n)))
    elif arc.endswith((".tar", ".tar.gz", ".tgz")):
        import gzip
        with open(tmp, "wb") as raw:
            fobj = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) if arc.endswith("gz") else raw
            with tarfile.open(fileobj=fobj, mode="w", format=tarfile.PAX_FORMAT) as t:
                for n in names:
                    data = _png_bytes(synth_image(source.name, n))
                    info = tarfile.TarInfo(member_path(source, n))
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    t.addfile(info, io.BytesIO(data))
            if fobj is not raw:
                fobj.close()
    else:
        raise ValueError(f"{source.archive}: unknown archive type for a stand-in")
    tmp.replace(path)
    return path
