"""Recognisers and TextZoom accuracy."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from harness import recognition as rec
from harness.data import textzoom as tz


def test_str_filt_and_accuracy():
    assert rec.str_filt("Hello, World-42!") == "helloworld42"
    assert rec.str_filt("ÉTÉ") == "t"               # non-ASCII letters are dropped, as in TextZoom
    assert rec.accuracy(["Cat!", "dog", "x"], ["cat", "DOG.", "y"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        rec.accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no samples"):
        rec.accuracy([], [])


def test_missing_tesseract_names_packages(monkeypatch):
    monkeypatch.setattr(rec.shutil, "which", lambda name: None)
    with pytest.raises(rec.RecognizerError, match="tesseract-ocr and tesseract-ocr-eng"):
        rec.build_recognizer("tesseract")


@pytest.mark.parametrize("name,expected", [("crnn", "crnn.pth"), ("aster", "demo.pth.tar"), ("moran", "moran.pth")])
def test_learned_recognizers_say_where_weights_come_from(tmp_path, name, expected):
    with pytest.raises(rec.RecognizerError, match=rf"textzoom.recognizer_weights.*{expected}"):
        rec.build_recognizer(name, "")
    with pytest.raises(rec.RecognizerError, match=rf"(?s)nope.pth.*{expected}.*github.com"):
        rec.build_recognizer(name, str(tmp_path / "nope.pth"))
    w = tmp_path / expected
    w.write_bytes(b"\0")  # not a checkpoint
    with pytest.raises(rec.RecognizerError, match=rf"(?s){expected}.*could not be loaded.*github.com"):
        rec.build_recognizer(name, str(w))
    with pytest.raises(ValueError, match="unknown recogniser"):
        rec.build_recognizer("crnnn")


def test_tsv_parser_maps_pages():
    tsv = ("level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
           "1\t1\t0\t0\t0\t0\t0\t0\t9\t9\t-1\t\n5\t1\t1\t1\t1\t1\t0\t0\t9\t9\t90\tab\n"
           "1\t2\t0\t0\t0\t0\t0\t0\t9\t9\t-1\t\n"
           "1\t3\t0\t0\t0\t0\t0\t0\t9\t9\t-1\t\n5\t3\t1\t1\t1\t1\t0\t0\t9\t9\t90\tcd\n"
           "5\t3\t1\t1\t1\t2\t0\t0\t9\t9\t90\tef\n")
    assert rec.Tesseract._parse_tsv(tsv, 3) == ["ab", "", "cd ef"]
    with pytest.raises(rec.RecognizerError, match="3 pages for 4 images"):
        rec.Tesseract._parse_tsv(tsv, 4)


@pytest.mark.skipif(shutil.which("tesseract") is None,
                    reason="tesseract binary absent (apt-get install tesseract-ocr tesseract-ocr-eng)")
def test_tesseract_reads_hr_well_and_lr_worse(tmp_path):
    """Measured on 40 words per split (seed 0): HR 1.00 everywhere; bicubic LR easy 0.975, medium 0.75, hard 0.25."""
    root = tz.make_smoke_textzoom(tmp_path / "tz", n_train=1, n_test=40, seed=0)
    ocr = rec.build_recognizer("tesseract")
    with pytest.raises(ValueError, match="image 0 must be uint8"):
        ocr.recognize([np.zeros((32, 128), np.uint8)])
    assert ocr.recognize([]) == []
    acc = {}
    for split in ("easy", "hard"):
        hrs, lrs, labels = [], [], []
        for i in range(1, 41):
            hr, lr, label = tz.read_sample(tz.split_path(root, split), i)
            hrs.append(hr)
            lrs.append(np.asarray(Image.fromarray(lr).resize((128, 32), Image.BICUBIC)))
            labels.append(label)
        acc[split] = (rec.accuracy(ocr.recognize(hrs), labels), rec.accuracy(ocr.recognize(lrs), labels))
    print("tesseract accuracy (hr, bicubic lr):", acc)
    for split, (hr_acc, lr_acc) in acc.items():
        assert hr_acc >= 0.9, (split, acc)
    assert acc["hard"][1] < acc["hard"][0] - 0.3, acc      # blurred, noised LR reads clearly worse
    assert acc["hard"][1] < acc["easy"][1], acc
