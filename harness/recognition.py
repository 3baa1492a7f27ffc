"""Scene-text recognisers and TextZoom's word accuracy, for scoring text super-resolution.

A recogniser maps a list of ``HxWx3 uint8 RGB`` crops to a list of strings
(:class:`Recognizer`). Accuracy is TextZoom's: exact match after
:func:`str_filt` (lowercase, keep only ``0-9a-z``) of prediction and label.

- :class:`Tesseract` (default, no weights): the ``tesseract`` binary (Debian
  ``tesseract-ocr`` + ``tesseract-ocr-eng``) in single-line mode (``--psm 7``), on crops
  upscaled x4 (bicubic). One process reads a whole batch from a list file; the TSV
  output's ``page_num`` maps words back to images.
- :class:`CRNN`, :class:`ASTER`, :class:`MORAN`: TextZoom's recognisers, networks in
  :mod:`harness.recognizers`. Their weights are not downloadable here: the classes load the
  local file given in ``textzoom.recognizer_weights`` (the error says where to get it).

Reference: JasonBoy1/TextZoom @ f5b887b3be7c94db85a2687824c9c8eb06b4b6c3,
``src/utils/util.py`` (``str_filt``) and ``src/interfaces/super_resolution.py``
(accuracy = ``str_filt(pred, 'lower') == str_filt(label, 'lower')``); the repository
carries no license file. Written anew here.
"""
from __future__ import annotations

import importlib
import os
import shutil
import string
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import logging

import numpy as np
from PIL import Image

__all__ = ["Recognizer", "str_filt", "accuracy", "Tesseract", "CRNN", "ASTER", "MORAN", "build_recognizer",
           "RECOGNIZERS", "RecognizerError"]

_LOWER = set(string.digits + string.ascii_lowercase)


log = logging.getLogger(__name__)


class RecognizerError(RuntimeError):
    """A recogniser that cannot run (missing binary or weights); the message says how to fix it."""


@runtime_checkable
class Recognizer(Protocol):
    """Reads one text line per crop."""

    def recognize(self, images: list[np.ndarray]) -> list[str]:
        """Args: images: ``HxWx3 uint8 RGB`` crops. Returns: one string per crop, in order."""
        ...


def str_filt(s: str) -> str:
    """TextZoom's ``str_filt(s, 'lower')``: lowercase, then drop every char outside ``0-9a-z``."""
    return "".join(c for c in s.lower() if c in _LOWER)


def accuracy(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of exact matches after :func:`str_filt` on both sides.

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    if len(preds) != len(labels):
        raise ValueError(f"accuracy: {len(preds)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("accuracy: no samples")
    return sum(str_filt(p) == str_filt(t) for p, t in zip(preds, labels)) / len(labels)


def _check_images(images: Sequence[np.ndarray]) -> None:
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            desc = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise ValueError(f"recognize: image {i} must be uint8 HxWx3 RGB, got {desc}")


class Tesseract:
    """Tesseract OCR via its command-line binary, one process per batch.

    Args:
        upscale: bicubic factor applied to each crop first (TextZoom crops are 32 px high;
            Tesseract reads best with ~30 px letters).
        psm: page segmentation mode; 7 = a single text line.
        lang: traineddata name.
        whitelist: characters Tesseract may output ("" = no restriction).
        binary: the executable.
    """

    def __init__(self, upscale: int = 4, psm: int = 7, lang: str = "eng",
                 whitelist: str = string.digits + string.ascii_letters, binary: str = "tesseract"):
        path = shutil.which(binary)
        if path is None:
            raise RecognizerError(
                f"Tesseract binary {binary!r} not found on PATH; install the Debian packages "
                "tesseract-ocr and tesseract-ocr-eng (apt-get install -y tesseract-ocr tesseract-ocr-eng), "
                "or set textzoom.recognizer to crnn/aster/moran with textzoom.recognizer_weights")
        if upscale < 1:
            raise ValueError(f"Tesseract: upscale must be >= 1, got {upscale}")
        self.binary, self.upscale, self.psm, self.lang, self.whitelist = path, upscale, psm, lang, whitelist
        self.crashes = 0  # crops tesseract crashed on (read as "")

    def recognize(self, images: list[np.ndarray]) -> list[str]:
        """Read each crop as one line; see :class:`Recognizer`."""
        _check_images(images)
        if not images:
            return []
        with tempfile.TemporaryDirectory(prefix="csrbench-ocr-") as d:
            paths = []
            for i, im in enumerate(images):
                p = Path(d) / f"{i:06d}.png"
                img = Image.fromarray(im)
                if self.upscale > 1:
                    img = img.resize((img.width * self.upscale, img.height * self.upscale), Image.BICUBIC)
                img.save(p, compress_level=1)  # lossless either way; level 6 was ~40 % of the stage
                paths.append(str(p))
            listfile = Path(d) / "images.txt"
            listfile.write_text("\n".join(paths) + "\n")
            cmd = [self.binary, str(listfile), "stdout", "--psm", str(self.psm), "-l", self.lang]
            if self.whitelist:
                cmd += ["-c", f"tessedit_char_whitelist={self.whitelist}"]
            cmd += ["tsv"]
            env = dict(os.environ, OMP_THREAD_LIMIT="1")  # no thread oversubscription on shared cores
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode < 0:
            # Tesseract itself crashed on some input (seen: SIGFPE on noise-like SR output of an
            # untrained model). Bisect to the crashing crops; each reads as "" (= wrong), logged.
            if len(images) == 1:
                self.crashes += 1
                log.warning("tesseract crashed (signal %d) on one crop; counted as unrecognised", -r.returncode)
                return [""]
            half = len(images) // 2
            return self.recognize(images[:half]) + self.recognize(images[half:])
        if r.returncode != 0:
            raise RecognizerError(f"tesseract failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
        return self._parse_tsv(r.stdout, len(images))

    @staticmethod
    def _parse_tsv(tsv: str, n: int) -> list[str]:
        """Words (level 5) joined by spaces, per ``page_num`` (1-based, one page per image)."""
        words: list[list[str]] = [[] for _ in range(n)]
        pages = 0
        for line in tsv.splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) < 12:
                continue
            level, page = int(cols[0]), int(cols[1])
            if level == 1:
                pages += 1
            elif level == 5 and cols[11].strip():
                words[page - 1].append(cols[11].strip())
        if pages != n:
            raise RecognizerError(f"tesseract returned {pages} pages for {n} images")
        return [" ".join(w) for w in words]


class _WeightsRecognizer:
    """A learned recogniser of ``harness.recognizers.<name>``, from a local weights file."""
    name = ""
    expected = ""
    origin = ""

    def __init__(self, weights: str | Path, device: str = "cpu"):
        if not weights:
            raise RecognizerError(
                f"textzoom.recognizer is {self.name!r} but textzoom.recognizer_weights is empty: set it to the "
                f"local path of {self.expected} (official weights: {self.origin}; they are not downloadable here)")
        p = Path(weights)
        if not p.is_file():
            raise RecognizerError(
                f"textzoom.recognizer_weights: {p} not found; expected {self.expected} from {self.origin}")
        self.weights = p
        module = importlib.import_module(f"harness.recognizers.{self.name}")
        try:
            self._impl = module.load(p, device)
        except (ValueError, RuntimeError, OSError) as e:
            raise RecognizerError(f"textzoom.recognizer_weights: {p} could not be loaded as {self.expected} "
                                  f"({self.origin}): {e}") from None

    def recognize(self, images: list[np.ndarray]) -> list[str]:
        """Read each crop; see :class:`Recognizer`."""
        _check_images(images)
        return self._impl.recognize(list(images)) if images else []


class CRNN(_WeightsRecognizer):
    """CRNN (Shi et al. 2017), TextZoom's ``crnn.pth``: :mod:`harness.recognizers.crnn`."""
    name, expected = "crnn", "crnn.pth"
    origin = "https://github.com/meijieru/crnn.pytorch (as TextZoom's TRAIN.VAL.crnn_pretrained)"


class ASTER(_WeightsRecognizer):
    """ASTER (Shi et al. 2018), TextZoom's ``demo.pth.tar``: :mod:`harness.recognizers.aster`."""
    name, expected = "aster", "demo.pth.tar"
    origin = "https://github.com/ayumiymk/aster.pytorch (as TextZoom's TRAIN.VAL.rec_pretrained)"


class MORAN(_WeightsRecognizer):
    """MORAN v2 (Luo et al. 2019), TextZoom's ``moran.pth``: :mod:`harness.recognizers.moran`."""
    name, expected = "moran", "moran.pth"
    origin = "https://github.com/Canjie-Luo/MORAN_v2 (as TextZoom's TRAIN.VAL.moran_pretrained)"


RECOGNIZERS = {"tesseract": Tesseract, "crnn": CRNN, "aster": ASTER, "moran": MORAN}


def build_recognizer(name: str, weights: str = "", device: str = "cpu") -> Recognizer:
    """The recogniser ``textzoom.recognizer`` names; ``weights`` is ``textzoom.recognizer_weights``.

    Raises:
        ValueError: unknown name.
        RecognizerError: missing binary or weights, or weights that do not fit the network
            (the message says where they come from).
    """
    if name not in RECOGNIZERS:
        raise ValueError(f"unknown recogniser {name!r}; choose one of {', '.join(RECOGNIZERS)}")
    if name == "tesseract":
        return Tesseract()
    return RECOGNIZERS[name](weights, device)
