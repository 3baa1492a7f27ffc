"""Dataset registry: where every dataset comes from, as plain frozen data.

Training: ``df2k`` = DIV2K train 0001-0800 (Agustsson & Timofte, CVPRW 2017) + Flickr2K
000001-002650 (Lim et al., EDSR, CVPRW 2017), the training set of MambaCSR and its
baselines. Testing: ``set5``, ``set14``, ``bsd100``, ``urban100``, ``manga109`` and
``div2k_valid`` (DIV2K 0801-0900). Embedded default (the smoke profile, offline):
``skimage_train`` / ``skimage_test``, colour photographs that ship inside the
scikit-image wheel (no pooch download).

Hosts. DIV2K and Flickr2K come from their official sites. The SR benchmark sets have no
single official archive (BasicSR's docs/DatasetPreparation.md, commit 8d56e3a, points to
a Google-Drive folder that cannot be fetched by URL); we use the HuggingFace mirrors of
Eugene Siow's ``super-image-data`` (``eugenesiow/<Set>``, ``data/<Set>_HR.tar.gz``), which
deepinv and many SR repositories also use. Manga109 is distributed only after an
application (http://www.manga109.org/en/download.html, academic use): it has no URL here
and ``csrbench prepare`` tells where to place a local copy.

Checksums. None of these hosts publish an archive checksum (DIV2K, Flickr2K and the HF
mirrors list none on their pages), so ``checksum`` is ``None`` with a note; pin one with
``Source(..., checksum="sha256:<hex>")`` once a trusted download exists. The scikit-image
files are pinned by the sha256 values of skimage 0.26's own ``data/_registry.py``.

Licences are recorded as notes; none of the benchmark images may be redistributed by
this repository (they stay in the git-ignored ``data/``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["Source", "SkimageImage", "Dataset", "DATASETS", "get", "names", "UnknownDatasetError"]


class UnknownDatasetError(KeyError, ValueError):
    """A dataset name that is not in :data:`DATASETS` (the message suggests the closest).

    A ``KeyError`` for lookups, and a ``ValueError`` so the CLI reports it as bad input
    (one line, exit 1) instead of a traceback.
    """

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Source:
    """One downloadable archive and where its HR images lie once extracted.

    Attributes:
        name: folder under ``data/raw/`` (shared by datasets that use the same archive).
        urls: download URLs, tried in order; empty = manual download only.
        archive: file name of the archive (``.zip``, ``.tar``, ``.tar.gz``).
        checksum: ``"md5:<hex>"`` / ``"sha256:<hex>"`` of the archive, or ``None`` when unpublished.
        checksum_note: why ``checksum`` is ``None`` (or where it comes from).
        hr_glob: glob of the HR images relative to the extraction root.
        count: number of images ``hr_glob`` must match.
        first: lexicographically first image stem (a sanity check of the layout), or "".
        last: lexicographically last image stem, or "".
    """
    name: str
    urls: tuple[str, ...]
    archive: str
    checksum: str | None
    checksum_note: str
    hr_glob: str
    count: int
    first: str = ""
    last: str = ""


@dataclass(frozen=True)
class SkimageImage:
    """One colour photograph shipped inside the scikit-image wheel (``skimage/data/``).

    Attributes:
        name: output image name (``data/hr/<dataset>/<name>.png``).
        file: file name in ``skimage/data/``.
        sha256: sha256 of that file, from skimage 0.26 ``skimage/data/_registry.py``.
        crop: ``(top, left, height, width)`` of a fixed crop, or ``None`` for the whole photo.
    """
    name: str
    file: str
    sha256: str
    crop: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Dataset:
    """A registry entry.

    Attributes:
        name: registry key (``params.yaml`` ``data.train`` / ``data.test``).
        role: ``"train"`` or ``"test"``.
        sources: archives whose images are merged (DF2K = DIV2K train + Flickr2K).
        skimage: embedded images instead of archives (the smoke sets).
        count: total number of HR images.
        licence: licence / terms of use note.
        homepage: the dataset's page (for the manual-download message).
        note: anything else a user must know.
    """
    name: str
    role: str
    count: int
    licence: str
    homepage: str
    sources: tuple[Source, ...] = ()
    skimage: tuple[SkimageImage, ...] = ()
    note: str = ""

    @property
    def embedded(self) -> bool:
        """True for the scikit-image sets (no download, no archive)."""
        return bool(self.skimage)


_NO_CHECKSUM_OFFICIAL = "not published by the host; pin a sha256 after a trusted download"
_NO_CHECKSUM_HF = ("not published on the dataset card; the HuggingFace file page shows the LFS sha256, "
                   "pin it after a trusted download")


def _hf(set_name: str, count: int, first: str, last: str) -> Source:
    repo = f"eugenesiow/{set_name}"
    return Source(
        name=set_name.lower(),
        urls=(f"https://huggingface.co/datasets/{repo}/resolve/main/data/{set_name}_HR.tar.gz",),
        archive=f"{set_name}_HR.tar.gz", checksum=None, checksum_note=_NO_CHECKSUM_HF,
        hr_glob=f"{set_name}_HR/*.png", count=count, first=first, last=last)


DIV2K_TRAIN = Source(
    name="div2k_train", urls=("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",),
    archive="DIV2K_train_HR.zip", checksum=None, checksum_note=_NO_CHECKSUM_OFFICIAL,
    hr_glob="DIV2K_train_HR/*.png", count=800, first="0001", last="0800")
DIV2K_VALID = Source(
    name="div2k_valid", urls=("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",),
    archive="DIV2K_valid_HR.zip", checksum=None, checksum_note=_NO_CHECKSUM_OFFICIAL,
    hr_glob="DIV2K_valid_HR/*.png", count=100, first="0801", last="0900")
FLICKR2K = Source(
    name="flickr2k", urls=("https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar",),
    archive="Flickr2K.tar", checksum=None, checksum_note=_NO_CHECKSUM_OFFICIAL,
    hr_glob="Flickr2K/Flickr2K_HR/*.png", count=2650, first="000001", last="002650")
MANGA109 = Source(
    name="manga109", urls=(), archive="Manga109.zip", checksum=None,
    checksum_note="no public archive (download after application at manga109.org)",
    hr_glob="Manga109/*.png", count=109)

_DIV2K_LICENCE = "DIV2K: academic research use only (NTIRE 2017 terms, data.vision.ee.ethz.ch/cvl/DIV2K/)"
_FLICKR_LICENCE = "Flickr2K: images from Flickr under their owners' licences, research use (EDSR, SNU CVLab)"
_BENCH_LICENCE = "research use only; images keep their original owners' rights (not redistributed here)"

# skimage/data/ photographs (skimage 0.26, shipped in the wheel; sha256 from skimage/data/_registry.py).
# Test images are fixed centre crops (HR 192x256 / 256x192 -> LR 48x64 at x4) so CPU evaluation
# of the smoke models takes seconds; every crop side is a multiple of 4 (and of 2 and 3 for 192).
_SKIMAGE_TRAIN = (
    SkimageImage("astronaut", "astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    SkimageImage("hubble_deep_field", "hubble_deep_field.jpg",
                 "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    SkimageImage("immunohistochemistry", "ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    SkimageImage("motorcycle_left", "motorcycle_left.png",
                 "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    # retina: the fundus photo is a disc on black; the centre 768x768 keeps the vessels.
    SkimageImage("retina", "retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
                 crop=(321, 321, 768, 768)),
)
_SKIMAGE_TEST = (
    SkimageImage("chelsea", "chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
                 crop=(54, 97, 192, 256)),
    SkimageImage("coffee", "coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
                 crop=(104, 172, 192, 256)),
    SkimageImage("rocket", "rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
                 crop=(85, 224, 256, 192)),
)
_SKIMAGE_LICENCE = ("scikit-image sample data, terms per the skimage.data docstrings: astronaut, hubble_deep_field "
                    "(NASA) and rocket (SpaceX) public domain; chelsea, coffee, retina CC0; immunohistochemistry "
                    "no known copyright restrictions; motorcycle_left from the Middlebury 2014 stereo dataset "
                    "(Scharstein et al., GCPR 2014), research use")


def _entries() -> dict[str, Dataset]:
    d = [
        Dataset("df2k", "train", 3450, f"{_DIV2K_LICENCE}; {_FLICKR_LICENCE}",
                "https://data.vision.ee.ethz.ch/cvl/DIV2K/", sources=(DIV2K_TRAIN, FLICKR2K),
                note="DIV2K train 0001-0800 + Flickr2K 000001-002650, merged under their own stems"),
        Dataset("div2k_train", "train", 800, _DIV2K_LICENCE, "https://data.vision.ee.ethz.ch/cvl/DIV2K/",
                sources=(DIV2K_TRAIN,)),
        Dataset("flickr2k", "train", 2650, _FLICKR_LICENCE, "https://cv.snu.ac.kr/research/EDSR/",
                sources=(FLICKR2K,)),
        Dataset("div2k_valid", "test", 100, _DIV2K_LICENCE, "https://data.vision.ee.ethz.ch/cvl/DIV2K/",
                sources=(DIV2K_VALID,), note="DIV2K validation 0801-0900"),
        Dataset("set5", "test", 5, _BENCH_LICENCE, "http://people.rennes.inria.fr/Aline.Roumy/results/SR_BMVC12.html",
                sources=(_hf("Set5", 5, "baby", "woman"),)),
        Dataset("set14", "test", 14, _BENCH_LICENCE, "https://sites.google.com/site/romanzeyde/research-interests",
                sources=(_hf("Set14", 14, "", ""),),
                note="two Set14 images are grayscale in some copies; they are replicated to RGB"),
        Dataset("bsd100", "test", 100, _BENCH_LICENCE,
                "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/",
                sources=(_hf("BSD100", 100, "", ""),)),
        Dataset("urban100", "test", 100, _BENCH_LICENCE, "https://github.com/jbhuang0604/SelfExSR",
                sources=(_hf("Urban100", 100, "", ""),)),
        Dataset("manga109", "test", 109, "Manga109: academic use after application; no redistribution",
                "http://www.manga109.org/en/download.html", sources=(MANGA109,),
                note="no automatic download: apply at manga109.org, then place the 109 HR images locally"),
        Dataset("skimage_train", "train", len(_SKIMAGE_TRAIN), _SKIMAGE_LICENCE,
                "https://scikit-image.org/docs/stable/api/skimage.data.html", skimage=_SKIMAGE_TRAIN,
                note="embedded smoke training set (5 photographs, retina centre-cropped)"),
        Dataset("skimage_test", "test", len(_SKIMAGE_TEST), _SKIMAGE_LICENCE,
                "https://scikit-image.org/docs/stable/api/skimage.data.html", skimage=_SKIMAGE_TEST,
                note="embedded smoke test set (3 fixed centre crops, HR 192x256 / 256x192)"),
    ]
    return {e.name: e for e in d}


DATASETS: dict[str, Dataset] = _entries()


def names() -> list[str]:
    """All registry names, sorted."""
    return sorted(DATASETS)


def get(name: str) -> Dataset:
    """The registry entry of ``name``.

    Raises:
        UnknownDatasetError: ``name`` is not registered (names the closest match).
    """
    try:
        return DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownDatasetError(f"unknown dataset {name!r}{hint}; registered: {', '.join(names())}") from None
