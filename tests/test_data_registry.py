"""The dataset registry: counts, layouts, URLs, and the embedded scikit-image sets."""
from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from harness.data import registry
from harness.data.prepare import skimage_dir


def test_paper_datasets_are_registered_with_their_counts():
    expected = {"df2k": 3450, "div2k_valid": 100, "set5": 5, "set14": 14, "bsd100": 100, "urban100": 100,
                "manga109": 109, "skimage_train": 5, "skimage_test": 3}
    for name, count in expected.items():
        assert registry.get(name).count == count, name
    df2k = registry.get("df2k")
    assert [s.name for s in df2k.sources] == ["div2k_train", "flickr2k"]
    assert [s.count for s in df2k.sources] == [800, 2650]
    assert (df2k.sources[0].first, df2k.sources[0].last) == ("0001", "0800")
    valid = registry.get("div2k_valid").sources[0]
    assert (valid.first, valid.last) == ("0801", "0900")


def test_entries_are_consistent():
    for name, d in registry.DATASETS.items():
        assert d.name == name
        assert d.role in ("train", "test")
        assert d.licence and d.homepage
        assert bool(d.sources) != bool(d.skimage), name          # archives xor embedded
        if d.sources:
            assert d.count == sum(s.count for s in d.sources), name
            for s in d.sources:
                assert s.hr_glob and s.archive
                assert all(u.startswith("https://") for u in s.urls), s.urls
                assert s.checksum is None or s.checksum.split(":")[0] in ("md5", "sha256")
                if s.checksum is None:
                    assert s.checksum_note, f"{s.name}: a missing checksum needs a note"
                if not s.urls:
                    assert "manual" in d.note or "application" in s.checksum_note, name
        else:
            assert d.count == len(d.skimage)


def test_official_urls():
    urls = {s.name: s.urls[0] for d in registry.DATASETS.values() for s in d.sources if s.urls}
    assert urls["div2k_train"] == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip"
    assert urls["div2k_valid"] == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip"
    assert urls["flickr2k"] == "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar"
    assert urls["set5"].endswith("eugenesiow/Set5/resolve/main/data/Set5_HR.tar.gz")
    assert registry.get("manga109").sources[0].urls == ()


def test_skimage_sets_ship_offline_and_match_their_hashes():
    folder = skimage_dir()
    train = registry.get("skimage_train").skimage
    test = registry.get("skimage_test").skimage
    assert 4 <= len(train) <= 8 and 2 <= len(test) <= 4
    assert not {i.file for i in train} & {i.file for i in test}, "train and test share a photograph"
    for im in (*train, *test):
        p = folder / im.file
        assert hashlib.sha256(p.read_bytes()).hexdigest() == im.sha256, im.file
        with Image.open(p) as pil:
            assert pil.mode == "RGB", im.file
            w, h = pil.size
        if im.crop is not None:
            t, l, ch, cw = im.crop
            assert t >= 0 and l >= 0 and t + ch <= h and l + cw <= w, im.name
            assert ch % 4 == 0 and cw % 4 == 0
    for im in test:   # small crops keep CPU evaluation fast
        assert im.crop is not None and im.crop[2] * im.crop[3] <= 256 * 256


def test_unknown_name_suggests_the_closest():
    with pytest.raises(registry.UnknownDatasetError, match="did you mean 'set14'"):
        registry.get("set41")
