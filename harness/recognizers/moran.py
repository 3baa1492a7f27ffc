"""MORAN v2 (Luo, Jin & Sun, Pattern Recognition 2019) as TextZoom scores with it: ``moran.pth`` of Canjie-Luo/MORAN_v2.

Network ``MORAN(nc=1, nclass=37, nh=256, targetH=32, targetW=100, BidirDecoder=True)``:

- **MORN** (rectification): max-pool, five 3x3 convs (64, 128, 64, 16, 1 channels, batch norm
  after each, ReLU after the first four, max-pools after the first two) give a (B, 1, 4, 12)
  map of vertical offsets for a 32x100 input; ``maxpool(2, stride 1)`` of its positive and of
  its negative part (3x11), bilinear ``grid_sample`` to 32x100, added to the y of an identity
  grid; the input is resampled with that grid. In test mode this runs once more on the
  rectified image ("enhance = 1") and the two offset maps add up.
- **ASRN** encoder: a ResNet (a 3x3 conv + BN stem, then 3, 4, 6, 6, 3 residual blocks of 32,
  64, 128, 256, 512 channels; the first block of each stage downsamples by 2, 2, (2, 1), (2, 1),
  (2, 1) with a 3x3 conv + BN shortcut), giving (B, 512, 1, 25), then two bidirectional LSTMs
  (512 -> 256 -> 256).
- **ASRN** decoders: two attention GRU decoders, left-to-right (``attentionL2R``) and
  right-to-left (``attentionR2L``), each with additive attention (``i2h``, ``h2h``, ``score``),
  a ``GRUCell(256 + 256, 256)`` fed [context, embedding of the previous character] and a
  ``generator`` Linear(256, 37). Greedy decoding: the first step embeds row 0 of
  ``char_embeddings`` (38 x 256, a start token), each later step row ``argmax + 1``.

Key names follow the official modules (``MORN.cnn.1.weight``, ``ASRN.cnn.block3.0.downsample.0.weight``,
``ASRN.rnn.0.rnn.weight_ih_l0``, ``ASRN.attentionL2R.attention_cell.rnn.weight_ih``,
``ASRN.attentionL2R.char_embeddings``, ...), so the released state dict loads with ``strict=True``.
The released file is a bare state dict saved from ``nn.DataParallel`` (``module.`` prefixes, which
TextZoom's ``MORAN_init`` strips); MORAN_v2 pins torch 0.3.1, so it may be in the old non-zip
format and lack BatchNorm's ``num_batches_tracked`` (both accepted by ``load_weights``).

Input preparation (TextZoom ``parse_moran_data``): the RGB crop in [0, 1] is resized to 32x100 with
bicubic ``F.interpolate`` and turned into grey as 0.299 R + 0.587 G + 0.114 B; no ``(x - 0.5) / 0.5``
normalisation (MORAN_v2's own ``resizeNormalize`` has it; TextZoom feeds [0, 1] and so do we).
TextZoom calls the net with a dummy target of 20 characters per image and ``test=True``, so each
decoder runs exactly 20 greedy steps.

Decoding (TextZoom ``super_resolution.py`` eval): ``preds, preds_reverse = output[0]`` -- only the
**left-to-right** decoder is read; argmax per step, class ``i`` is ``0-9a-z$``\\[i] (the
``strLabelConverterForAttention`` of ``'0:1:...:z:$'``), the 20 characters are joined and cut at the
first ``$`` (the end token). The right-to-left decoder's weights are loaded but it is not run
(:meth:`MORANNet.forward` can return it with ``reverse=True``).

Convention that the code cannot settle: ``F.grid_sample`` had ``align_corners=True`` semantics up to
torch 1.2 (MORAN was trained on 0.3.1) and defaults to ``False`` since 1.3; TextZoom pins only
``torch>=1.0.1``. We use ``align_corners=True`` (the network's training convention; identity grid
= pixel centres), settable per :class:`MORN`. The first resize inside MORN is an identity for a
32x100 input either way.

References: Canjie-Luo/MORAN_v2 @ 410596fda22a4746ef83301928de1e91e7d012f7 ``models/moran.py``,
``models/morn.py``, ``models/asrn_res.py``, ``demo.py`` (MIT); JasonBoy1/TextZoom @
f5b887b3be7c94db85a2687824c9c8eb06b4b6c3 ``src/model/moran/`` (a copy of the former),
``src/interfaces/base.py`` (``MORAN_init``, ``parse_moran_data``), ``src/interfaces/super_resolution.py``
(``test``), ``src/utils/utils_moran.py`` (``strLabelConverterForAttention``; no license file).
Written anew here.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.recognizers._weights import BatchRecognizer, load_weights
# MORAN's ASRN has the same BiLSTM module and key names (its dropout=0.3 on a one-layer LSTM has no effect);
# TextZoom's parse_moran_data prepares the image exactly as parse_crnn_data (32x100 bicubic, grey, [0, 1])
from harness.recognizers.crnn import BiLSTM, prepare

__all__ = ["ALPHABET", "EOS", "MAX_STEPS", "MORN", "ASRN", "MORANNet", "prepare", "attention_decode", "load"]

ALPHABET = string.digits + string.ascii_lowercase + "$"  # class i = ALPHABET[i]; "$" (36) ends a word
EOS = "$"
MAX_STEPS = 20  # TextZoom's dummy target: '0' * 20 per image


def _identity_grid(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(B, H, W, 2) sampling grid in [-1, 1], x (width) first; float64 then cast, as the official numpy grid."""
    ys = torch.arange(h, dtype=torch.float64) * 2.0 / (h - 1) - 1
    xs = torch.arange(w, dtype=torch.float64) * 2.0 / (w - 1) - 1
    grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)], dim=-1).float()
    return grid.to(device).expand(b, h, w, 2)


class MORN(nn.Module):
    """Multi-object rectification network: predicts vertical offsets and resamples the image.

    Args:
        nc: input channels.
        target_h, target_w: size of the rectified output (and of the offsets' sampling grid).
        align_corners: ``F.grid_sample`` convention (True = torch <= 1.2 behaviour; see the module docstring).
    """

    def __init__(self, nc: int = 1, target_h: int = 32, target_w: int = 100, align_corners: bool = True):
        super().__init__()
        self.target_h, self.target_w, self.align_corners = target_h, target_w, align_corners

        def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out)]

        self.cnn = nn.Sequential(  # indices = official key indices (cnn.1 conv, cnn.2 bn, ... cnn.16 bn)
            nn.MaxPool2d(2, 2),
            *conv_bn(nc, 64), nn.ReLU(True), nn.MaxPool2d(2, 2),
            *conv_bn(64, 128), nn.ReLU(True), nn.MaxPool2d(2, 2),
            *conv_bn(128, 64), nn.ReLU(True),
            *conv_bn(64, 16), nn.ReLU(True),
            *conv_bn(16, 1),
        )
        self.pool = nn.MaxPool2d(2, 1)

    def _offsets(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """(B, nc, H, W) image -> (B, target_h, target_w, 1) vertical offsets."""
        off = self.cnn(x)                                       # B, 1, H/8, W/8
        off = self.pool(F.relu(off)) - self.pool(F.relu(-off))  # B, 1, H/8 - 1, W/8 - 1
        off = F.grid_sample(off, grid, mode="bilinear", padding_mode="zeros", align_corners=self.align_corners)
        return off.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, enhance: int = 1) -> torch.Tensor:
        """(B, nc, H, W) -> (B, nc, target_h, target_w) rectified image (test mode: ``1 + enhance`` offset passes)."""
        grid = _identity_grid(x.shape[0], self.target_h, self.target_w, x.device)
        grid_x, grid_y = grid[..., :1], grid[..., 1:]
        x_small = F.interpolate(x, (self.target_h, self.target_w), mode="bilinear", align_corners=False)
        offsets = self._offsets(x_small, grid)
        for it in range(enhance + 1):
            if it:
                offsets = offsets + self._offsets(rectified, grid)
            rectified = F.grid_sample(x, torch.cat([grid_x, grid_y + offsets], 3), mode="bilinear",
                                      padding_mode="zeros", align_corners=self.align_corners)
        return rectified


class ResidualBlock(nn.Module):
    """Official ``Residual_block``: conv1 (3x3 strided, or 1x1 when stride 1) + BN, conv2 3x3 + BN, no ReLU
    between them; a 3x3 strided conv + BN shortcut when the height stride is > 1; ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int | tuple[int, int]):
        super().__init__()
        down = (stride[0] if isinstance(stride, tuple) else stride) > 1
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out)) if down else None
        k, p = (3, 1) if down else (1, 0)
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, p), nn.BatchNorm2d(c_out))
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + self.conv2(self.conv1(x)))


class ResNet(nn.Module):
    """ASRN's backbone: (B, nc, 32, W) -> (B, 512, 1, W/4)."""

    def __init__(self, nc: int = 1):
        super().__init__()
        self.block0 = nn.Sequential(nn.Conv2d(nc, 32, 3, 1, 1), nn.BatchNorm2d(32))
        stages = ((32, 32, 2, 3), (32, 64, 2, 4), (64, 128, (2, 1), 6), (128, 256, (2, 1), 6), (256, 512, (2, 1), 3))
        for i, (c_in, c_out, stride, repeat) in enumerate(stages, 1):
            blocks = [ResidualBlock(c_in, c_out, stride)] + [ResidualBlock(c_out, c_out, 1) for _ in range(repeat - 1)]
            self.add_module(f"block{i}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(6):
            x = getattr(self, f"block{i}")(x)
        return x


class AttentionCell(nn.Module):
    """One decoding step: additive attention over the features, then a GRU step on [context, embedding]."""

    def __init__(self, input_size: int, hidden_size: int, num_embeddings: int):
        super().__init__()
        self.i2h = nn.Linear(input_size, hidden_size, bias=False)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.rnn = nn.GRUCell(input_size + num_embeddings, hidden_size)

    def forward(self, hidden: torch.Tensor, feats: torch.Tensor, feats_proj: torch.Tensor,
                embedding: torch.Tensor) -> torch.Tensor:
        """hidden (B, h), feats (T, B, C), feats_proj = i2h(feats) (T, B, h), embedding (B, E) -> hidden (B, h)."""
        alpha = self.score(torch.tanh(feats_proj + self.h2h(hidden))).softmax(0)  # T, B, 1 (softmax over T)
        context = (feats * alpha).sum(0)                                          # B, C
        return self.rnn(torch.cat([context, embedding], 1), hidden)


class AttentionDecoder(nn.Module):
    """Official ``Attention`` in test mode: greedy decoding for a fixed number of steps.

    Args:
        input_size: feature channels C. hidden_size: GRU size. num_classes: output classes
            (``char_embeddings`` has one more row: row 0 starts, row ``c + 1`` embeds class ``c``).
        num_embeddings: embedding size.
    """

    def __init__(self, input_size: int = 256, hidden_size: int = 256, num_classes: int = len(ALPHABET),
                 num_embeddings: int = 256):
        super().__init__()
        self.hidden_size = hidden_size
        self.attention_cell = AttentionCell(input_size, hidden_size, num_embeddings)
        self.generator = nn.Linear(hidden_size, num_classes)
        self.char_embeddings = nn.Parameter(torch.randn(num_classes + 1, num_embeddings))

    def forward(self, feats: torch.Tensor, steps: int = MAX_STEPS) -> torch.Tensor:
        """(T, B, C) features -> (B, steps, num_classes) logits."""
        b = feats.shape[1]
        feats_proj = self.attention_cell.i2h(feats)  # the same at every step
        hidden = feats.new_zeros(b, self.hidden_size)
        prev = torch.zeros(b, dtype=torch.long, device=feats.device)
        logits = []
        for _ in range(steps):
            hidden = self.attention_cell(hidden, feats, feats_proj, self.char_embeddings[prev])
            logits.append(self.generator(hidden))
            prev = logits[-1].argmax(1) + 1
        return torch.stack(logits, 1)


class ASRN(nn.Module):
    """Attention-based sequence recognition network: ResNet, two BiLSTMs, L2R and R2L attention decoders."""

    def __init__(self, img_h: int = 32, nc: int = 1, nclass: int = len(ALPHABET), nh: int = 256):
        super().__init__()
        if img_h % 16:
            raise ValueError(f"MORAN: img_h must be a multiple of 16, got {img_h}")
        self.cnn = ResNet(nc)
        self.rnn = nn.Sequential(BiLSTM(512, nh, nh), BiLSTM(nh, nh, nh))
        self.attentionL2R = AttentionDecoder(nh, nh, nclass, 256)
        self.attentionR2L = AttentionDecoder(nh, nh, nclass, 256)

    def forward(self, x: torch.Tensor, steps: int = MAX_STEPS,
                reverse: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, nc, 32, W) -> L2R logits (B, steps, nclass), or (L2R, R2L) when ``reverse``."""
        f = self.cnn(x)
        if f.shape[2] != 1:
            raise ValueError(f"MORAN: the conv features must be 1 high, got {tuple(f.shape)} "
                             f"for input {tuple(x.shape)}")
        feats = self.rnn(f.squeeze(2).permute(2, 0, 1))  # T, B, nh
        l2r = self.attentionL2R(feats, steps)
        return (l2r, self.attentionR2L(feats, steps)) if reverse else l2r


class MORANNet(nn.Module):
    """MORAN with the official layer names. Input (B, 1, 32, 100) grey; output L2R logits (B, steps, 37).

    Args:
        nc: input channels. nclass: classes incl. the end token ``$``. nh: LSTM / GRU size.
        target_h, target_w: MORN's output size (the recogniser's input size).
        align_corners: MORN's ``grid_sample`` convention (see the module docstring).
    """

    def __init__(self, nc: int = 1, nclass: int = len(ALPHABET), nh: int = 256, target_h: int = 32,
                 target_w: int = 100, align_corners: bool = True):
        super().__init__()
        self.MORN = MORN(nc, target_h, target_w, align_corners)
        self.ASRN = ASRN(target_h, nc, nclass, nh)

    def forward(self, x: torch.Tensor, steps: int = MAX_STEPS,
                reverse: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.ASRN(self.MORN(x), steps, reverse)


def attention_decode(logits: torch.Tensor, alphabet: str = ALPHABET) -> list[str]:
    """(B, T, C) scores -> strings: argmax per step, ``alphabet[i]`` joined, cut at the first ``$``."""
    return ["".join(alphabet[c] for c in seq).split(EOS)[0] for seq in logits.argmax(2).tolist()]


def load(weights: str | Path, device: torch.device | str = "cpu") -> BatchRecognizer:
    """TextZoom's MORAN from a local ``moran.pth``."""
    return BatchRecognizer(load_weights(MORANNet(), Path(weights)), prepare, attention_decode, device)
