"""TextZoom (Wang et al., ECCV 2020) LMDB reader, writer and an embedded rendered smoke set.

TextZoom layout (``root`` is ``cfg.textzoom.root``)::

    root/train1, root/train2              training LMDB environments
    root/test/easy|medium|hard            test LMDB environments

Each environment holds ``num-samples`` (ASCII integer) and, for 1-based ``i``,
``image_hr-%09d`` / ``image_lr-%09d`` (encoded PNG/JPEG bytes) and ``label-%09d``
(UTF-8). The official reader uses the lowercase ``image_hr`` key; ``image_HR`` is
accepted too. As TextZoom's ``resizeNormalize`` does, HR is resized to 128x32 and
LR to 64x16 with PIL bicubic, then converted to float in [0, 1].

TextZoom itself cannot be downloaded by csrbench (it comes from the official
repository, https://github.com/JasonBoy1/TextZoom , via its Baidu/Google Drive
links). :func:`make_smoke_textzoom` renders a small stand-in set in exactly the same
format: words from a fixed list drawn with matplotlib's DejaVuSans.ttf, HR sharp at
128x32, LR Gaussian-blurred, downscaled to 64x16 (bicubic) and noised, with more
blur and noise from ``easy`` to ``hard``.

Reference: JasonBoy1/TextZoom @ f5b887b3be7c94db85a2687824c9c8eb06b4b6c3,
``src/dataset/dataset.py`` (``lmdbDataset_real``, ``resizeNormalize``, ``buf2PIL``)
and ``src/dataset/create_lmdb.py``; the repository carries no license file.
Written anew here.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import lmdb
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch.utils.data import Dataset

from harness.data.loader import EFFECTIVELY_INFINITE

__all__ = [
    "HR_SIZE", "LR_SIZE", "TRAIN_SPLITS", "TEST_SPLITS", "SMOKE_WORDS", "SMOKE_LEVELS",
    "TextZoomError", "split_path", "read_lmdb_count", "read_sample", "write_lmdb", "TextZoomPairs", "TextZoomTrain",
    "as_uint8_pairs",
    "render_word", "degrade_word", "make_smoke_textzoom", "prepare_embedded", "embedded_root",
    "resolve_root",
]

HR_SIZE = (128, 32)   # (W, H), as TextZoom's PIL resize takes it
LR_SIZE = (64, 16)
TRAIN_SPLITS = ("train1", "train2")
TEST_SPLITS = ("easy", "medium", "hard")
_KEY_HR = ("image_hr-%09d", "image_HR-%09d")
_KEY_LR = "image_lr-%09d"
_KEY_LABEL = "label-%09d"
_WHERE = ("TextZoom is not downloadable here: get it from the official repository "
          "https://github.com/JasonBoy1/TextZoom (train1, train2, test/easy|medium|hard LMDBs) "
          "and set textzoom.root to that folder, or set textzoom.root to \"\" for the embedded rendered set")


class TextZoomError(ValueError):
    """A missing or malformed TextZoom LMDB; the message names the path or the key."""


def split_path(root: str | Path, split: str) -> Path:
    """Folder of one split's LMDB env: ``root/train1``, ``root/train2`` or ``root/test/<split>``."""
    root = Path(root)
    if split in TRAIN_SPLITS:
        return root / split
    if split in TEST_SPLITS:
        return root / "test" / split
    raise TextZoomError(f"unknown TextZoom split {split!r}; choose one of {', '.join(TRAIN_SPLITS + TEST_SPLITS)}")


_ENVS: dict[tuple[str, int], lmdb.Environment] = {}


def _open(path: Path) -> lmdb.Environment:
    """Read-only env of ``path``, cached per process (LMDB forbids opening one env twice in a process)."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise TextZoomError(f"{path}: no TextZoom LMDB here (missing {path / 'data.mdb'}). {_WHERE}")
    key = (str(path.resolve()), os.getpid())
    if key not in _ENVS:
        _ENVS[key] = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=8)
    return _ENVS[key]


def _forget(path: Path) -> None:
    env = _ENVS.pop((str(Path(path).resolve()), os.getpid()), None)
    if env is not None:
        env.close()


def _close_all() -> None:
    """Close every env this process opened. Runs before each ``os.fork`` (DataLoader workers): an env
    open at the fork stays registered in the child, whose own ``lmdb.open`` of the same path then fails
    ("already open in this process"), and LMDB forbids using a parent's env in a child. Each process
    reopens lazily through :func:`_open`."""
    for key in list(_ENVS):
        _ENVS.pop(key).close()


os.register_at_fork(before=_close_all)


def _count(txn: lmdb.Transaction, path: Path) -> int:
    raw = txn.get(b"num-samples")
    if raw is None:
        raise TextZoomError(f"{path}: LMDB has no 'num-samples' key; not a TextZoom LMDB")
    try:
        return int(raw.decode())
    except ValueError:
        raise TextZoomError(f"{path}: key 'num-samples' is {raw[:20]!r}, not an integer") from None


def read_lmdb_count(path: str | Path) -> int:
    """Number of samples (``num-samples``) of a TextZoom LMDB env at ``path``."""
    with _open(Path(path)).begin() as txn:
        return _count(txn, Path(path))


def _decode(buf: bytes | None, key: str, path: Path) -> Image.Image:
    if buf is None:
        raise TextZoomError(f"{path}: key {key!r} is missing")
    try:
        img = Image.open(io.BytesIO(buf))
        img.load()
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError ...
        raise TextZoomError(f"{path}: key {key!r} holds bytes that are not a decodable image ({e})") from None
    return img.convert("RGB")


def _get(txn: lmdb.Transaction, path: Path, index: int) -> tuple[Image.Image, Image.Image, str]:
    """1-based ``index`` -> (hr PIL RGB, lr PIL RGB, label), images at their stored size."""
    hr_key = next((k % index for k in _KEY_HR if txn.get((k % index).encode()) is not None), _KEY_HR[0] % index)
    hr = _decode(txn.get(hr_key.encode()), hr_key, path)
    lr_key = _KEY_LR % index
    lr = _decode(txn.get(lr_key.encode()), lr_key, path)
    label_key = _KEY_LABEL % index
    raw = txn.get(label_key.encode())
    if raw is None:
        raise TextZoomError(f"{path}: key {label_key!r} is missing")
    return hr, lr, raw.decode("utf-8")


def read_sample(path: str | Path, index: int) -> tuple[np.ndarray, np.ndarray, str]:
    """One stored sample, unresized.

    Args:
        path: folder of the LMDB env.
        index: 1-based sample number, as in the LMDB keys.

    Returns:
        (hr uint8 HxWx3 RGB, lr uint8 hxwx3 RGB, label) at their stored sizes.
    """
    path = Path(path)
    with _open(path).begin() as txn:
        n = _count(txn, path)
        if not 1 <= index <= n:
            raise TextZoomError(f"{path}: index {index} outside 1..{n}")
        hr, lr, label = _get(txn, path, index)
    return np.asarray(hr), np.asarray(lr), label


def _encode_png(img: np.ndarray | Image.Image) -> bytes:
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise TextZoomError(f"image must be uint8 HxWx3 RGB, got {img.dtype} {img.shape}")
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_lmdb(path: str | Path, samples: Iterable[tuple[np.ndarray | bytes, np.ndarray | bytes, str]]) -> Path:
    """Write a TextZoom-format LMDB env atomically (temp folder, then ``os.replace``).

    Args:
        path: the env folder to create (replaced if it exists).
        samples: (hr, lr, label) triples; images as uint8 HxWx3 RGB arrays (stored as PNG)
            or as already-encoded bytes (stored verbatim).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _forget(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        env = lmdb.open(str(tmp), map_size=1 << 30)
        n = 0
        with env.begin(write=True) as txn:
            for n, (hr, lr, label) in enumerate(samples, start=1):
                txn.put((_KEY_HR[0] % n).encode(), hr if isinstance(hr, bytes) else _encode_png(hr))
                txn.put((_KEY_LR % n).encode(), lr if isinstance(lr, bytes) else _encode_png(lr))
                txn.put((_KEY_LABEL % n).encode(), label.encode("utf-8"))
            txn.put(b"num-samples", str(n).encode())
        env.sync()
        env.close()
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _to_tensor(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    if img.size != size:
        img = img.resize(size, Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


class TextZoomPairs(Dataset):
    """One TextZoom LMDB env as (lr, hr, label) samples.

    ``ds[i]`` (0-based) returns ``lr`` float32 (3, 16, 64) and ``hr`` float32 (3, 32, 128),
    RGB in [0, 1] (PIL bicubic resize to 64x16 / 128x32 first, as TextZoom's
    ``resizeNormalize``), and the raw label string. The env is opened on first use in each
    process, so DataLoader workers are fine.

    Args:
        lmdb_path: folder of the env (e.g. ``root/test/easy``).
    """

    def __init__(self, lmdb_path: str | Path):
        self.path = Path(lmdb_path)
        if not self.path.is_dir():
            raise TextZoomError(f"{self.path}: TextZoom LMDB folder not found. {_WHERE}")
        self.n = read_lmdb_count(self.path)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        if not 0 <= i < self.n:
            raise IndexError(f"{self.path}: index {i} outside 0..{self.n - 1}")
        with _open(self.path).begin() as txn:
            hr, lr, label = _get(txn, self.path, i + 1)
        return _to_tensor(lr, LR_SIZE), _to_tensor(hr, HR_SIZE), label


class TextZoomTrain(Dataset):
    """TextZoom training stream for ``harness.train``: sample ``k`` -> ``(lr, hr)``, a pure function of (seed, k).

    Draws uniformly (``numpy.random.default_rng([seed, k])``) from the concatenation of the training
    splits present under ``root`` (``train1``, and ``train2`` when it exists), whole 64x16 / 128x32
    crops, no augmentation (a flipped word is no longer the word). Unbounded, like
    ``harness.data.loader.PairedPatches``.

    Args:
        root: TextZoom root (``root/train1``, ``root/train2``).
        seed: ``train.seed``.
    """

    def __init__(self, root: str | Path, seed: int):
        self.splits = [TextZoomPairs(split_path(root, s)) for s in TRAIN_SPLITS if split_path(root, s).is_dir()]
        if not self.splits:
            raise TextZoomError(f"{Path(root)}: no TextZoom training split ({' or '.join(TRAIN_SPLITS)}). {_WHERE}")
        self.counts = [len(s) for s in self.splits]
        self.total = sum(self.counts)
        if self.total == 0:
            raise TextZoomError(f"{Path(root)}: the TextZoom training splits hold no samples")
        self.seed = int(seed)

    def __len__(self) -> int:
        return EFFECTIVELY_INFINITE

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k < 0:
            raise IndexError(f"sample number must be >= 0, got {k}")
        i = int(np.random.default_rng([self.seed, int(k)]).integers(self.total))
        for split, n in zip(self.splits, self.counts):
            if i < n:
                lr, hr, _ = split[i]
                return lr, hr
            i -= n
        raise AssertionError("unreachable")


def as_uint8_pairs(ds: TextZoomPairs, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``n`` samples of ``ds`` as ``(label, lr, hr)`` uint8 HxWx3 (validation pairs for harness.train)."""
    out = []
    for i in range(min(n, len(ds))):
        lr, hr, label = ds[i]
        lr, hr = ((t.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8) for t in (lr, hr))
        out.append((f"{i:09d}_{label}", lr, hr))
    return out


# ----------------------------------------------------------------------------- embedded smoke set

#: Common English words (lowercase, 2-9 letters) the smoke set draws from.
SMOKE_WORDS: tuple[str, ...] = tuple("""
about above after again air all also always and animal another answer any area around ask away back
base because been before began being below best better between big black blue board body book both
boy bring build but call came can car care carry cause center change city class clear close cold
color come common could country course cut dark day deep did different does dog done door down draw
during each early earth east eat end enough even ever every eye face fact family far farm fast father
feel few field fire first fish five food foot form four free friend from full game gave girl give
good great green ground group grow hand hard has have head hear heart heat help here high hold home
horse hot hour house how idea inch island just keep kind king know land large last later learn leave
left letter life light like line list little live long look made main make man many map mark may mean
men might mile mind miss money month more morning most mother move much music must name near need
never new next night north note nothing now number object off often old once only open order other
over page paper part pass people picture place plan plant play point power press pull put question
quick rain read real red rest right river road rock room round rule run said same saw say school sea
second see seem self sentence set shape ship short should show side simple since sing size sleep slow
small snow some song soon sound south space special stand star start state stay step still stop story
street strong study such sun sure table take talk tell test than that their them then there these
thing think three through time today together told took top toward town tree true try turn under
unit until upon very voice walk want warm watch water way week well went west what wheel where which
while white whole why wind window winter with without woman wood word work world would write year
yellow young your
""".split())

#: Per split: Gaussian blur sigma (HR pixels) before the x2 downscale, and LR noise std (0-255).
SMOKE_LEVELS: dict[str, tuple[float, float]] = {
    "easy": (0.8, 2.0), "medium": (1.4, 5.0), "hard": (2.0, 9.0),
}
_FONT_SIZES = (18, 20, 22, 24)


def _font_path() -> Path:
    import matplotlib
    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: DejaVuSans.ttf not found; the embedded TextZoom set needs matplotlib's fonts")
    return p


def render_word(word: str, rng: np.random.Generator) -> np.ndarray:
    """A sharp 128x32 HR crop of ``word``: dark text on a light background, random size/offset/tint.

    Returns:
        uint8 32x128x3 RGB.
    """
    font_path = str(_font_path())
    W, H = HR_SIZE
    size = int(rng.choice(_FONT_SIZES))
    while True:  # the drawn size, shrunk until the word fits
        font = ImageFont.truetype(font_path, size)
        x0, y0, x1, y1 = font.getbbox(word)
        if x1 - x0 <= W - 6 or size <= 8:
            break
        size -= 1
    bg = tuple(int(v) for v in rng.integers(190, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    img = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(img)
    tw, th = x1 - x0, y1 - y0
    dx = int(rng.integers(-3, 4)) + (W - tw) // 2 - x0
    dy = int(rng.integers(-2, 3)) + (H - th) // 2 - y0
    draw.text((dx, dy), word, font=font, fill=fg)
    return np.asarray(img)


def degrade_word(hr: np.ndarray, sigma: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """HR 32x128 -> LR 16x64: Gaussian blur (``sigma`` HR pixels), PIL bicubic x1/2, Gaussian noise.

    Returns:
        uint8 16x64x3 RGB.
    """
    img = Image.fromarray(hr).filter(ImageFilter.GaussianBlur(sigma)).resize(LR_SIZE, Image.BICUBIC)
    lr = np.asarray(img, dtype=np.float64) + rng.normal(0.0, noise, (LR_SIZE[1], LR_SIZE[0], 3))
    return np.clip(np.round(lr), 0, 255).astype(np.uint8)


def make_smoke_textzoom(root: str | Path, n_train: int, n_test: int, seed: int) -> Path:
    """Render an embedded TextZoom-format set: ``root/train1`` and ``root/test/easy|medium|hard``.

    Words are drawn with ``numpy.random.default_rng([seed, split_number])`` from
    :data:`SMOKE_WORDS`; train1 mixes the three test levels. Labels are the words
    (lowercase letters only). Each env is written atomically.

    Args:
        root: folder to write into.
        n_train: samples in train1 (>= 1).
        n_test: samples in each test split (>= 1).
        seed: base seed.

    Returns:
        ``root``.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    root = Path(root)
    levels = list(SMOKE_LEVELS.values())
    for k, split in enumerate(("train1",) + TEST_SPLITS):
        rng = np.random.default_rng([seed, k])
        n = n_train if split == "train1" else n_test

        def samples(rng=rng, n=n, split=split):
            for _ in range(n):
                word = str(rng.choice(SMOKE_WORDS))
                sigma, noise = levels[int(rng.integers(len(levels)))] if split == "train1" else SMOKE_LEVELS[split]
                hr = render_word(word, rng)
                yield hr, degrade_word(hr, sigma, noise, rng), word

        write_lmdb(split_path(root, split), samples())
    return root


#: Sizes of the embedded set that ``csrbench prepare`` makes.
EMBEDDED = {"n_train": 512, "n_test": 64, "seed": 0}


def prepare_embedded(root: Path) -> Path:
    """Make the embedded TextZoom stand-in at ``root`` (the prepare stage's hook; no download).

    Skips the work when every split already holds the expected number of samples.

    Args:
        root: output folder, normally :func:`embedded_root` of the config.

    Returns:
        ``root``.
    """
    root = Path(root)
    want = {s: EMBEDDED["n_train"] if s == "train1" else EMBEDDED["n_test"] for s in ("train1",) + TEST_SPLITS}
    try:
        if all(read_lmdb_count(split_path(root, s)) == n for s, n in want.items()):
            return root
    except TextZoomError:
        pass
    return make_smoke_textzoom(root, **EMBEDDED)


def embedded_root(cfg) -> Path:
    """Where the embedded set lives: ``<data.root>/raw/textzoom_embedded``."""
    return Path(cfg.data.root) / "raw" / "textzoom_embedded"


def resolve_root(cfg) -> Path:
    """TextZoom root of a config: ``textzoom.root``, or :func:`embedded_root` when it is ``""``."""
    return Path(cfg.textzoom.root) if cfg.textzoom.root else embedded_root(cfg)
