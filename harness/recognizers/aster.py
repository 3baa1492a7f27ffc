"""ASTER (Shi et al., TPAMI 2018) as TextZoom scores with it: ``demo.pth.tar`` of ayumiymk/aster.pytorch.

Network ``RecognizerBuilder(arch='ResNet_ASTER', rec_num_classes=97, sDim=512, attDim=512,
max_len_labels=100, eos=94, STN_ON=True)``, TextZoom's build with ``voc_type: all``:

- rectification: the image is resized to 32x64 (bilinear, ``align_corners=True``) for the STN
  head (six conv-BN-ReLU blocks 3 -> 32 -> 64 -> 128 -> 256 -> 256 -> 256 with five 2x2 max-pools,
  then Linear 512 -> 512 + BN1d + ReLU and Linear 512 -> 40 applied to 0.1 x features), which
  predicts 20 control points in [0, 1]^2; a thin-plate-spline transform maps them onto 20 fixed
  points (margins 0.05) and samples the full-size input into a 32x100 image;
- encoder ``ResNet_ASTER``: a 3x3 conv (3 -> 32) and five stages of residual blocks (1x1 then 3x3
  conv, the stride on the 1x1) with 3, 4, 6, 6, 3 blocks of 32, 64, 128, 256, 512 channels and
  strides 2x2, 2x2, 2x1, 2x1, 2x1, giving (B, 512, 1, 25), then a 2-layer BiLSTM (256 per
  direction): 25 feature vectors of 512;
- decoder: additive attention (``sEmbed``, ``xEmbed``, ``wEmbed``) and a GRU cell (512) fed the
  embedding of the previous symbol (class 97 = start) and the attention context; 97 classes.

Key names follow the official modules (``stn_head.stn_convnet.0.0``, ``tps.inverse_kernel``,
``encoder.layer3.2.conv1``, ``encoder.rnn``, ``decoder.decoder.attention_unit.sEmbed``,
``decoder.decoder.gru``, ...); the four TPS matrices are buffers in the released file too, so it
loads with ``strict=True`` (the file's matrices are used, as TextZoom's ``load_state_dict`` does).

Input preparation (TextZoom ``parse_aster_data``): the RGB crop in [0, 1] times 2 minus 1, at its
own size (no resize: the STN / TPS resample it; TextZoom feeds the 128x32 SR output and the 64x16
LR as they are). Decoding (TextZoom eval, ``RecognizerBuilder.forward`` in eval mode): beam search
of width 5 over all 100 steps, with the backtracking of IBM/pytorch-seq2seq's ``TopKDecoder`` that
ASTER copies (an ended hypothesis takes a slot from the back of its sample's beam), then the best
beam; ``get_str_list``: symbols up to the first ``EOS``, ``UNKNOWN`` dropped, then only ``0-9A-Za-z``
kept, lowercased. The vocabulary is ``0-9 a-z A-Z`` + ``string.punctuation`` + ``EOS``, ``PADDING``,
``UNKNOWN`` (``get_vocabulary('all')`` = aster.pytorch's ``ALLCASES_SYMBOLS``).

One convention is not pinned by the code: ``F.grid_sample`` in the TPS is called without
``align_corners``. ASTER was trained with PyTorch 1.1 (its ``environment.yml``), where sampling was
``align_corners=True``; PyTorch 1.3-1.5 changed the default to ``False``. Here it is ``True``, the
convention the released weights were trained under.

References: ayumiymk/aster.pytorch @ be670046c775b54de79766208f0c59321ae1eccf
``lib/models/model_builder.py``, ``stn_head.py``, ``tps_spatial_transformer.py``,
``resnet_aster.py``, ``attention_recognition_head.py``, ``lib/evaluation_metrics/metrics.py``
(MIT); JasonBoy1/TextZoom @ f5b887b3be7c94db85a2687824c9c8eb06b4b6c3 ``src/interfaces/base.py``
(``Aster_init``, ``parse_aster_data``, ``AsterInfo``), ``src/interfaces/super_resolution.py``
(``eval``), ``src/model/recognizer/``, ``src/utils/metrics.py`` (``get_str_list``),
``src/utils/labelmaps.py``, ``src/config/super_resolution.yaml`` (no license file);
IBM/pytorch-seq2seq ``seq2seq/models/TopKDecoder.py`` (Apache-2.0). Written anew here.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.recognizers._weights import load_weights

__all__ = ["VOC", "EOS", "UNKNOWN", "ASTERNet", "prepare", "beam_search", "greedy_search", "ids_to_strings",
           "load", "ASTERRecognizer"]

VOC = list(string.digits + string.ascii_letters + string.punctuation) + ["EOS", "PADDING", "UNKNOWN"]
EOS, UNKNOWN = VOC.index("EOS"), VOC.index("UNKNOWN")  # 94, 96
MAX_LEN = 100          # AsterInfo.max_len
BEAM_WIDTH = 5         # RecognizerBuilder's beam_width
STN_INPUT_HW = (32, 64)
RECTIFIED_HW = (32, 100)
NUM_CONTROL_POINTS = 20
TPS_MARGINS = (0.05, 0.05)
_KEEP = set(string.digits + string.ascii_letters)

# step(y_prev (N,) long, state (1, N, S)) -> (logits (N, C), state (1, N, S))
StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------- rectification: STN head + TPS


def _control_points(n: int, margins: tuple[float, float]) -> torch.Tensor:
    """(n, 2) points (x, y) in [0, 1]^2: n/2 evenly along the top edge, then n/2 along the bottom."""
    mx, my = margins
    xs = np.linspace(mx, 1.0 - mx, n // 2)
    top = np.stack([xs, np.full(n // 2, my)], 1)
    bottom = np.stack([xs, np.full(n // 2, 1.0 - my)], 1)
    return torch.tensor(np.concatenate([top, bottom]), dtype=torch.float32)


def _tps_radial(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(N, 2), (M, 2) -> (N, M) thin-plate kernel U = r^2 log r = 0.5 d log d with d = r^2 (0 at r = 0)."""
    d = (p[:, None, :] - q[None, :, :]).pow(2).sum(-1)
    u = 0.5 * d * torch.log(d)
    return torch.where(d > 0, u, torch.zeros_like(u))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _STNHead(nn.Module):
    """Control-point regressor (official ``STNHead``, activation ``none``). (B, 3, 32, 64) -> (B, N, 2)."""

    def __init__(self, in_ch: int = 3, num_ctrl: int = NUM_CONTROL_POINTS):
        super().__init__()
        chans = (in_ch, 32, 64, 128, 256, 256, 256)
        layers: list[nn.Module] = []
        for i in range(6):                      # Sequential indices: blocks 0, 2, ..., 10; pools 1, 3, ..., 9
            if i:
                layers.append(nn.MaxPool2d(2, 2))
            layers.append(_conv_bn_relu(chans[i], chans[i + 1]))
        self.stn_convnet = nn.Sequential(*layers)
        self.stn_fc1 = nn.Sequential(nn.Linear(2 * 256, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True))
        self.stn_fc2 = nn.Linear(512, 2 * num_ctrl)
        self.num_ctrl = num_ctrl
        # official init_stn: a fresh head predicts the fixed points with margin 0.01 (near identity)
        nn.init.zeros_(self.stn_fc2.weight)
        with torch.no_grad():
            self.stn_fc2.bias.copy_(_control_points(num_ctrl, (0.01, 0.01)).view(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stn_convnet(x).flatten(1)      # (B, 256 * 1 * 2)
        return self.stn_fc2(0.1 * self.stn_fc1(f)).view(-1, self.num_ctrl, 2)


class _TPS(nn.Module):
    """Thin-plate-spline sampler (official ``TPSSpatialTransformer``): (B, C, H, W), (B, N, 2) -> (B, C, h, w).

    The spline maps the fixed target points (``target_control_points``) onto the predicted source
    points; each output pixel (x, y) in [0, 1]^2 is mapped, clamped to [0, 1] and sampled bilinearly.
    """

    def __init__(self, out_hw: tuple[int, int] = RECTIFIED_HW, num_ctrl: int = NUM_CONTROL_POINTS,
                 margins: tuple[float, float] = TPS_MARGINS):
        super().__init__()
        self.out_hw, self.num_ctrl = out_hw, num_ctrl
        target = _control_points(num_ctrl, margins)                       # (N, 2)
        n = num_ctrl
        kernel = torch.zeros(n + 3, n + 3)
        kernel[:n, :n] = _tps_radial(target, target)
        kernel[:n, n] = 1
        kernel[n, :n] = 1
        kernel[:n, n + 1:] = target
        kernel[n + 1:, :n] = target.t()
        h, w = out_hw
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) / (h - 1),
                                torch.arange(w, dtype=torch.float32) / (w - 1), indexing="ij")
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)             # (h*w, 2) as (x, y), row-major
        pix_repr = torch.cat([_tps_radial(pix, target), torch.ones(h * w, 1), pix], 1)  # (h*w, N+3)
        self.register_buffer("inverse_kernel", torch.linalg.inv(kernel))
        self.register_buffer("padding_matrix", torch.zeros(3, 2))
        self.register_buffer("target_coordinate_repr", pix_repr)
        self.register_buffer("target_control_points", target)

    def forward(self, x: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.shape[0]
        if source_points.shape[1:] != (self.num_ctrl, 2):
            raise ValueError(f"TPS: control points must be (B, {self.num_ctrl}, 2), got {tuple(source_points.shape)}")
        y = torch.cat([source_points, self.padding_matrix.expand(b, 3, 2)], 1)   # (B, N+3, 2)
        coords = self.target_coordinate_repr @ (self.inverse_kernel @ y)         # (B, h*w, 2) in [0, 1]
        grid = coords.view(b, *self.out_hw, 2).clamp(0, 1) * 2 - 1
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


# ---------------------------------------------------------------- encoder: ResNet_ASTER + BiLSTM


class _AsterBlock(nn.Module):
    """Residual block: 1x1 conv (carries the stride) + BN + ReLU, 3x3 conv + BN, skip, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int] = (1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != (1, 1) or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + skip)


class _ResNetASTER(nn.Module):
    """(B, 3, 32, 100) -> (B, 25, 512): five residual stages to a 1-high map, then a 2-layer BiLSTM."""

    def __init__(self):
        super().__init__()
        self.layer0 = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        stages = ((32, 3, (2, 2)), (64, 4, (2, 2)), (128, 6, (2, 1)), (256, 6, (2, 1)), (512, 3, (2, 1)))
        c_in = 32
        for i, (c, n, stride) in enumerate(stages, 1):
            blocks = [_AsterBlock(c_in, c, stride)] + [_AsterBlock(c, c) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c_in = c
        self.rnn = nn.LSTM(512, 256, num_layers=2, bidirectional=True, batch_first=True)
        self.out_planes = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.layer0(x)
        for i in range(1, 6):
            f = getattr(self, f"layer{i}")(f)
        if f.shape[2] != 1:
            raise ValueError(f"ASTER: the conv features must be 1 high, got {tuple(f.shape)} "
                             f"for input {tuple(x.shape)}")
        y, _ = self.rnn(f.squeeze(2).transpose(1, 2))   # (B, W/4, 512)
        return y


# ---------------------------------------------------------------- decoder: attention + GRU


class _AttentionUnit(nn.Module):
    """Additive attention: alpha = softmax_t(w . tanh(S s + X x_t))."""

    def __init__(self, s_dim: int, x_dim: int, att_dim: int):
        super().__init__()
        self.sEmbed = nn.Linear(s_dim, att_dim)
        self.xEmbed = nn.Linear(x_dim, att_dim)
        self.wEmbed = nn.Linear(att_dim, 1)

    def forward(self, x_proj: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x_proj = xEmbed(x): (N, T, A); s: (N, S) -> alpha (N, T)."""
        e = self.wEmbed(torch.tanh(self.sEmbed(s).unsqueeze(1) + x_proj)).squeeze(2)
        return F.softmax(e, dim=1)


class _DecoderUnit(nn.Module):
    """One decoding step: attend, then GRU on [embedding(previous symbol), context], then classify."""

    def __init__(self, s_dim: int, x_dim: int, num_classes: int, att_dim: int):
        super().__init__()
        self.attention_unit = _AttentionUnit(s_dim, x_dim, att_dim)
        self.tgt_embedding = nn.Embedding(num_classes + 1, att_dim)   # the last row is the start symbol
        self.gru = nn.GRU(input_size=x_dim + att_dim, hidden_size=s_dim, batch_first=True)
        self.fc = nn.Linear(s_dim, num_classes)

    def forward(self, x: torch.Tensor, x_proj: torch.Tensor, state: torch.Tensor,
                y_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, T, D), x_proj: (N, T, A), state: (1, N, S), y_prev: (N,) -> logits (N, C), state (1, N, S)."""
        alpha = self.attention_unit(x_proj, state[0])
        context = torch.bmm(alpha.unsqueeze(1), x).squeeze(1)        # (N, D)
        inp = torch.cat([self.tgt_embedding(y_prev.long()), context], 1).unsqueeze(1)
        out, state = self.gru(inp, state)
        return self.fc(out.squeeze(1)), state


class _AttentionHead(nn.Module):
    """Official ``AttentionRecognitionHead``: holds the step module as ``decoder``."""

    def __init__(self, num_classes: int, in_planes: int, s_dim: int, att_dim: int, max_len: int):
        super().__init__()
        self.num_classes, self.s_dim, self.max_len = num_classes, s_dim, max_len
        self.decoder = _DecoderUnit(s_dim, in_planes, num_classes, att_dim)

    def step_fn(self, feats: torch.Tensor) -> StepFn:
        """The decoding step over fixed encoder features (N, T, D); ``xEmbed(feats)`` is computed once."""
        x_proj = self.decoder.attention_unit.xEmbed(feats)
        return lambda y_prev, state: self.decoder(feats, x_proj, state, y_prev)


# ---------------------------------------------------------------- search


def greedy_search(step: StepFn, state: torch.Tensor, batch_size: int, max_len: int, num_classes: int) -> torch.Tensor:
    """Official ``sample``: argmax at each of ``max_len`` steps, start symbol = ``num_classes``. -> (B, max_len)."""
    y = torch.full((batch_size,), num_classes, dtype=torch.long, device=state.device)
    out = []
    for _ in range(max_len):
        logits, state = step(y, state)
        y = logits.argmax(1)
        out.append(y)
    return torch.stack(out, 1)


def beam_search(step: StepFn, state: torch.Tensor, batch_size: int, beam_width: int, max_len: int,
                num_classes: int, eos: int) -> torch.Tensor:
    """Official ``beam_search`` (TopKDecoder-style): the best sequence per sample, (B, max_len) long.

    Args:
        step: one decoding step over the ``batch_size * beam_width`` rows (sample-major: row
            ``b * beam_width + k`` is beam ``k`` of sample ``b``).
        state: (1, B * K, S) initial state; rows are reordered with the beams.
        batch_size, beam_width, max_len, num_classes, eos: B, K, number of steps (all are run),
            C, the end symbol.

    Every step keeps the K best (sum of log-softmax) extensions among the K * C of each sample;
    a beam that has emitted ``eos`` is scored -inf from then on. Backtracking starts from the last
    step's beams sorted by score; at each step (last to first) every beam that emitted ``eos`` there
    (in decreasing beam order) replaces the slot ``K - 1 - (n mod K)`` of its sample (n = ended
    beams met so far in that sample) with its own history and score. The slot of highest score
    wins; symbols after its ``eos`` are whatever the slot held before and are cut by decoding.
    """
    k, c = beam_width, num_classes
    dev = state.device
    first_row = torch.arange(batch_size, device=dev).unsqueeze(1) * k                 # (B, 1)
    scores = torch.full((batch_size, k), -float("inf"), device=dev)
    scores[:, 0] = 0.0                                                                  # one live beam at start
    y = torch.full((batch_size * k,), c, dtype=torch.long, device=dev)
    hist_scores, hist_symbols, hist_parents = [], [], []
    for _ in range(max_len):
        logits, state = step(y, state)
        total = scores.reshape(-1, 1) + F.log_softmax(logits, dim=1)                   # (B*K, C)
        top, cand = total.view(batch_size, k * c).topk(k, dim=1)                       # (B, K), sorted
        parent, symbol = cand // c, cand % c
        state = state.index_select(1, (parent + first_row).view(-1))
        y = symbol.view(-1)
        hist_scores.append(top)
        hist_symbols.append(symbol)
        hist_parents.append(parent)
        scores = top.masked_fill(symbol == eos, -float("inf"))

    last_scores, last_order = hist_scores[-1].topk(k, dim=1)
    s_all = torch.stack(hist_scores).cpu().numpy()        # (T, B, K)
    sym = torch.stack(hist_symbols).cpu().numpy()
    par = torch.stack(hist_parents).cpu().numpy()
    slot_score = last_scores.cpu().numpy().copy()         # (B, K) score of each slot
    ptr = last_order.cpu().numpy().copy()                 # beam each slot follows at the current step
    seqs = np.empty((batch_size, k, max_len), dtype=np.int64)
    n_ended = np.zeros(batch_size, dtype=np.int64)
    rows = np.arange(batch_size)[:, None]
    for t in range(max_len - 1, -1, -1):
        cur = sym[t][rows, ptr]
        ptr = par[t][rows, ptr]
        for b, j in reversed(list(zip(*np.nonzero(sym[t] == eos)))):
            slot = k - 1 - n_ended[b] % k
            n_ended[b] += 1
            ptr[b, slot], cur[b, slot], slot_score[b, slot] = par[t, b, j], sym[t, b, j], s_all[t, b, j]
        seqs[:, :, t] = cur
    best = torch.from_numpy(slot_score).topk(k, dim=1).indices[:, 0].numpy()
    return torch.from_numpy(seqs[np.arange(batch_size), best]).to(dev)


# ---------------------------------------------------------------- model


class ASTERNet(nn.Module):
    """ASTER with the official layer names (TextZoom's ``RecognizerBuilder``, STN on).

    Args:
        num_classes: output classes including EOS / PADDING / UNKNOWN (97 for ``voc_type: all``).
        s_dim: GRU state size (``sDim``).
        att_dim: attention and embedding size (``attDim``).
        max_len: decoding steps (``max_len_labels``).
        eos: class index of EOS.

    ``forward((B, 3, H, W) in [-1, 1], beam_width)`` returns (B, max_len) class ids by beam search
    (TextZoom's eval); :meth:`greedy` by the official ``sample``.
    """

    def __init__(self, num_classes: int = len(VOC), s_dim: int = 512, att_dim: int = 512,
                 max_len: int = MAX_LEN, eos: int = EOS):
        super().__init__()
        self.eos = eos
        self.encoder = _ResNetASTER()
        self.decoder = _AttentionHead(num_classes, self.encoder.out_planes, s_dim, att_dim, max_len)
        self.tps = _TPS(RECTIFIED_HW, NUM_CONTROL_POINTS, TPS_MARGINS)
        self.stn_head = _STNHead(3, NUM_CONTROL_POINTS)

    def rectify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, 32, 100): STN on a 32x64 copy, TPS sampling of the full input."""
        points = self.stn_head(F.interpolate(x, STN_INPUT_HW, mode="bilinear", align_corners=True))
        return self.tps(x, points)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> encoder features (B, 25, 512)."""
        return self.encoder(self.rectify(x)).contiguous()

    def forward(self, x: torch.Tensor, beam_width: int = BEAM_WIDTH) -> torch.Tensor:
        feats = self.encode(x)
        b, head = feats.shape[0], self.decoder
        state = feats.new_zeros(1, b * beam_width, head.s_dim)
        step = head.step_fn(feats.repeat_interleave(beam_width, 0))
        return beam_search(step, state, b, beam_width, head.max_len, head.num_classes, self.eos)

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, max_len) class ids, argmax at each step."""
        feats = self.encode(x)
        b, head = feats.shape[0], self.decoder
        state = feats.new_zeros(1, b, head.s_dim)
        return greedy_search(head.step_fn(feats), state, b, head.max_len, head.num_classes)


# ---------------------------------------------------------------- TextZoom's input and output


def prepare(images: list[np.ndarray]) -> torch.Tensor:
    """Same-size HxWx3 uint8 RGB crops -> (B, 3, H, W) in [-1, 1], as TextZoom's ``parse_aster_data``."""
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"ASTER prepare: one batch needs crops of one size, got {sorted(shapes)}")
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images])
    return x.float() / 255.0 * 2 - 1


def ids_to_strings(ids: torch.Tensor, voc: list[str] = VOC, eos: int = EOS, unknown: int = UNKNOWN) -> list[str]:
    """(B, L) class ids -> TextZoom's ``get_str_list`` strings.

    Symbols up to the first EOS, UNKNOWN dropped, then only ``0-9A-Za-z`` kept (PADDING and
    punctuation go), lowercased.
    """
    out = []
    for seq in ids.tolist():
        chars = []
        for i in seq:
            if i == eos:
                break
            if i != unknown and voc[i] in _KEEP:
                chars.append(voc[i])
        out.append("".join(chars).lower())
    return out


class ASTERRecognizer:
    """Reads crops with a loaded :class:`ASTERNet` (eval mode, no grad), in batches of one crop size."""

    def __init__(self, net: ASTERNet, device: torch.device | str = "cpu", batch_size: int = 64,
                 beam_width: int = BEAM_WIDTH):
        self.net, self.device = net.to(device).eval(), torch.device(device)
        self.batch_size, self.beam_width = batch_size, beam_width

    @torch.no_grad()
    def recognize(self, images: list[np.ndarray]) -> list[str]:
        out: list[str] = [""] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            for j in range(0, len(idx), self.batch_size):
                chunk = idx[j:j + self.batch_size]
                x = prepare([images[i] for i in chunk]).to(self.device)
                for i, s in zip(chunk, ids_to_strings(self.net(x, self.beam_width))):
                    out[i] = s
        return out


def load(weights: str | Path, device: torch.device | str = "cpu") -> ASTERRecognizer:
    """TextZoom's ASTER from a local ``demo.pth.tar`` (``{'state_dict': ..., 'iters', 'best_res'}``)."""
    return ASTERRecognizer(load_weights(ASTERNet(), Path(weights)), device)
