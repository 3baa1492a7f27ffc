"""CRNN (Shi, Bai & Yao, TPAMI 2017) as TextZoom scores with it: ``crnn.pth`` of meijieru/crnn.pytorch.

Network ``CRNN(imgH=32, nc=1, nclass=37, nh=256)``: seven 3x3 convs (the last 2x2, no padding),
batch norm after conv 2, 4 and 6, ReLU, max-pools 2x2, 2x2, (2x2 stride (2, 1) pad (0, 1)) x2,
giving a (B, 512, 1, 26) map for a 32x100 input; then two bidirectional LSTMs
(512 -> 256 -> 37 classes). Key names follow the official module names (``cnn.conv0``,
``cnn.batchnorm2``, ``rnn.0.rnn``, ``rnn.0.embedding``, ...), so the released state dict loads
with ``strict=True``.

Input preparation (TextZoom ``parse_crnn_data``): the RGB crop in [0, 1] is resized to 32x100
with bicubic ``F.interpolate`` and turned into grey as 0.299 R + 0.587 G + 0.114 B (no mean /
std normalisation). Decoding: greedy CTC over 26 time steps (argmax, merge repeats, drop the
blank = class 0); class ``i >= 1`` is ``0-9a-z``\\[i - 1].

References: meijieru/crnn.pytorch ``models/crnn.py`` and ``utils.py`` (``strLabelConverter``, MIT);
JasonBoy1/TextZoom @ f5b887b3be7c94db85a2687824c9c8eb06b4b6c3 ``src/interfaces/base.py``
(``CRNN_init``, ``parse_crnn_data``). Written anew here.
"""
from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.recognizers._weights import BatchRecognizer, load_weights

__all__ = ["ALPHABET", "BiLSTM", "CRNNNet", "prepare", "ctc_greedy_decode", "load"]

ALPHABET = string.digits + string.ascii_lowercase  # class i >= 1; class 0 = CTC blank
INPUT_HW = (32, 100)


class BiLSTM(nn.Module):
    """Bidirectional LSTM + linear projection of each time step (official ``BidirectionalLSTM``; MORAN's too)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(2 * n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, n_in) -> (T, B, n_out)
        return self.embedding(self.rnn(x)[0])


class CRNNNet(nn.Module):
    """CRNN with the official layer names. Input (B, nc, 32, W); output logits (T, B, nclass)."""

    def __init__(self, img_h: int = 32, nc: int = 1, nclass: int = len(ALPHABET) + 1, nh: int = 256):
        super().__init__()
        if img_h % 16:
            raise ValueError(f"CRNN: img_h must be a multiple of 16, got {img_h}")
        ks, ps, nm = (3, 3, 3, 3, 3, 3, 2), (1, 1, 1, 1, 1, 1, 0), (64, 128, 256, 256, 512, 512, 512)
        cnn = nn.Sequential()

        def conv_relu(i: int, bn: bool = False) -> None:
            cnn.add_module(f"conv{i}", nn.Conv2d(nc if i == 0 else nm[i - 1], nm[i], ks[i], 1, ps[i]))
            if bn:
                cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(nm[i]))
            cnn.add_module(f"relu{i}", nn.ReLU(True))

        conv_relu(0)
        cnn.add_module("pooling0", nn.MaxPool2d(2, 2))
        conv_relu(1)
        cnn.add_module("pooling1", nn.MaxPool2d(2, 2))
        conv_relu(2, True)
        conv_relu(3)
        cnn.add_module("pooling2", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        conv_relu(4, True)
        conv_relu(5)
        cnn.add_module("pooling3", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        conv_relu(6, True)
        self.cnn = cnn
        self.rnn = nn.Sequential(BiLSTM(512, nh, nh), BiLSTM(nh, nh, nclass))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)
        if f.shape[2] != 1:
            raise ValueError(f"CRNN: the conv features must be 1 high, got {tuple(f.shape)} for input {tuple(x.shape)}")
        return self.rnn(f.squeeze(2).permute(2, 0, 1))


def prepare(images: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 RGB crops -> (B, 1, 32, 100) grey in [0, 1] as TextZoom's ``parse_crnn_data`` makes it."""
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).float() / 255.0 for im in images])
    x = F.interpolate(x, INPUT_HW, mode="bicubic")
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def ctc_greedy_decode(logits: torch.Tensor, alphabet: str = ALPHABET) -> list[str]:
    """(T, B, C) scores -> strings: argmax per step, merge repeats, drop blanks (class 0)."""
    best = logits.argmax(2).t().tolist()  # (B, T)
    out = []
    for seq in best:
        chars, prev = [], 0
        for c in seq:
            if c != 0 and c != prev:
                chars.append(alphabet[c - 1])
            prev = c
        out.append("".join(chars))
    return out


def load(weights: str | Path, device: torch.device | str = "cpu") -> BatchRecognizer:
    """TextZoom's CRNN from a local ``crnn.pth``."""
    return BatchRecognizer(load_weights(CRNNNet(), Path(weights)), prepare, ctc_greedy_decode, device)
