"""Shared set-up of the train / evaluate / resume / DDP tests: a tiny SR net, toy PNG folders, a config.

Not a test module (leading underscore). The tests and the subprocess drivers they
write import it from ``tests/`` (pytest puts that folder on ``sys.path``).
"""
from __future__ import annotations

import dataclasses
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from harness import config
from harness.config import Degradation
from harness.provenance import write_json

SCALE = 2
DEG = Degradation("jpeg", 10)
TRAIN_SET, TEST_SET = "toytrain", "toytest"


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    kind: str = "conv"        # conv | nearest
    scale: int = SCALE
    width: int = 8
    nan_at: int = -1          # training forward call (1-based) whose output becomes NaN; -1 = never
    sleep: float = 0.0        # seconds slept per training forward (lets a test kill a run mid-way)


class TinySR(nn.Module):
    """3x3 conv x3 + PixelShuffle (receptive field 7 LR px), or nearest upsampling plus a zero-init conv."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        s, w = cfg.scale, cfg.width
        if cfg.kind == "conv":
            self.body = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(w, 3 * s * s, 3, padding=1), nn.PixelShuffle(s))
        else:
            self.body = nn.Conv2d(3, 3, 1)
            nn.init.zeros_(self.body.weight)
            nn.init.zeros_(self.body.bias)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "conv":
            y = self.body(x)
        else:
            y = nn.functional.interpolate(x + self.body(x), scale_factor=self.cfg.scale, mode="nearest")
        if self.training:
            self.calls += 1
            if self.cfg.sleep:
                time.sleep(self.cfg.sleep)
            if self.calls == self.cfg.nan_at:
                y = y * float("nan")
        return y


TINY_MODELS = {
    "tiny": TinyConfig(),
    "tiny_nan": TinyConfig(nan_at=7),
    "tiny_slow": TinyConfig(sleep=0.04),
    "nearest": TinyConfig(kind="nearest"),
}


def fake_models_module() -> types.ModuleType:
    """Stand-in for ``harness.models`` (build / config_of / list_models) with the tiny nets."""
    mod = types.ModuleType("harness.models")

    def config_of(name, **overrides):
        if name not in TINY_MODELS:
            raise KeyError(f"unknown model {name!r}")
        return dataclasses.replace(TINY_MODELS[name], **overrides)

    mod.config_of = config_of
    mod.build = lambda name, **overrides: TinySR(config_of(name, **overrides))
    mod.list_models = lambda smoke=None: list(TINY_MODELS)
    return mod


def install_fake_models() -> None:
    """For subprocess drivers: make ``import harness.models`` give the stand-in."""
    sys.modules["harness.models"] = fake_models_module()


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def nearest_up(img: np.ndarray, s: int = SCALE) -> np.ndarray:
    return img.repeat(s, axis=0).repeat(s, axis=1)


def make_data(root: Path, n_train: int = 3, n_test: int = 2, size: int = 24, offsets: tuple[int, ...] = (0, 6),
              scale: int = SCALE) -> Path:
    """Toy ``data/`` tree: HR = nearest-upsampled LR (+ a constant offset per test image).

    ``data/hr/<set>/<name>.png`` and ``data/lr/<set>/x<scale>/jpeg_10/<name>.png``; LR sides ``size``.
    Test image ``i`` has HR = nearest_up(LR) + offsets[i] (values kept inside 0..255),
    so a nearest-upsampling network has a hand-computable PSNR.
    """
    rng = np.random.default_rng(123)
    for ds, n in ((TRAIN_SET, n_train), (TEST_SET, n_test)):
        for i in range(n):
            lr = rng.integers(20, 200, (size + 2 * i, size + 4 * i, 3), dtype=np.uint8)
            hr = nearest_up(lr, scale)
            if ds == TEST_SET:
                hr = (hr.astype(np.int16) + offsets[i % len(offsets)]).astype(np.uint8)
            _save_png(root / "hr" / ds / f"img{i:02d}.png", hr)
            _save_png(root / "lr" / ds / f"x{scale}" / DEG.tag / f"img{i:02d}.png", lr)
        # the manifest `csrbench degrade` writes last; the loader refuses a folder without it
        write_json(root / "lr" / ds / f"x{scale}" / DEG.tag / "manifest.json",
                   {"images": {f"img{i:02d}": {} for i in range(n)}})
    return root


def make_cfg(**train: object) -> config.Config:
    """The smoke profile shrunk to the toy data; ``train`` overrides keys of the train section."""
    # names=False: the tiny nets stand in for harness.models, so the smoke preset's model names are not
    # checked against them
    cfg = config.load(config.profile_path("smoke"), names=False)
    base = dict(iterations=12, batch_size=4, milestones=(6, 9), ckpt_every=4, log_every=2, val_every=6,
                val_images=2, keep_last=2, ema_decay=0.9, lr=1e-3, seed=0)
    base.update(train)
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, **base),
        data=dataclasses.replace(cfg.data, train=TRAIN_SET, test=(TEST_SET,), patch_size=8, num_workers=0),
        evaluate=dataclasses.replace(cfg.evaluate, tile=0, tile_overlap=8, crop_border=SCALE, self_ensemble=False),
    )


def train_kwargs(root: Path, model: str = "tiny", out: str = "run", scale: int = SCALE) -> dict:
    return dict(model=model, degradation=DEG, scale=scale, out=root / out, curves=root / f"{out}.csv",
                data=root / "data", device=torch.device("cpu"))
