"""2-D scan orders for MambaCSR (and MambaIR) as cached index permutations.

A Mamba block reads a 2-D feature map (B, C, H, W) as a 1-D sequence (B, C, L).
Every order here is an index permutation computed once per (name, H, W, ...)
and cached: `scan` gathers the sequence with `index_select`, `unscan` gathers
it back with the inverse permutation. Nothing is recomputed per forward.

Direction names (the strings of the official MambaCSR code, so configs can be
compared with it line by line):

- ``h`` / ``v``: global row-major / column-major scan of the H x W grid
  (MambaIR / VMamba's directions); ``h_flip`` / ``v_flip`` reverse them.
  MambaIR's four directions are ``("h", "v", "h_flip", "v_flip")``.
- ``w{K}``: windowed scan. The grid is cut into K x K windows; the windows are
  visited in row-major order and the K*K tokens of each window in row-major
  order. ``c_w{K}`` ("column first") visits the windows in column-major order
  and the tokens inside each window in column-major order, exactly like the
  official ``local_scan_bchw(..., column_first=True)``. ``_flip`` reverses the
  whole sequence.
- Cross-scale orders (`cross_scan_order`, used by MambaCSR's Cross_SS2D) run
  over the concatenated token list ``[LR tokens (h*w, row-major), HR tokens
  (H*W, row-major)]`` with h = H/2, w = W/2. Names are those of the official
  Cross_SS2D: ``w16``, ``w16_flip``, ``c_w16``, ``c_w16_flip`` (16 = HR window).

Padding rule (as the official ``local_scan_bchw`` / ``local_reverse``): when H
or W is not a multiple of the window K, the map is zero-padded at the bottom
and right to Hp = ceil(H/K)*K, Wp = ceil(W/K)*K, the padded tokens are scanned
too (they are zeros, so they enter the recurrence as u = 0, B = C = 0 and only
decay the state), and the un-scan crops back to H x W. A window scan's
permutation is therefore over the Hp*Wp padded grid. So ``w64`` is one global
window on a 64 x 64 training patch, is a zero-padded global scan on anything
smaller (the half-resolution 32 x 32 branch of MambaCSR pads to 64 x 64), and
is a windowed scan (64 x 64 windows) on larger test tiles. ``h``/``v`` never pad.

Cross-scale orders need H and W divisible by the HR window (the official
``nested_local_scan_bchw`` has no padding and fails otherwise); `MambaCSR`
pads its input image to that multiple, so the features always qualify.

Official order inside the position-aligned cross-scale scan (``cross_scale_scan``
in ``basicsr/archs/mamba/local_scan.py``): HR windows of w1 = 16 are walked in
2 x 2 sub-blocks; LR windows are w1/2 = 8. Row-major (``w16``): windows
row-major, sub-blocks row-major inside the window, tokens inside a sub-block
(2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1). Column-first (``c_w16``):
windows, sub-blocks and tokens column-major: (2i, 2j), (2i+1, 2j), (2i, 2j+1),
(2i+1, 2j+1). The LR sequence uses the matching 8 x 8 window scan, and every LR
token (i, j) is followed by the four HR tokens of its sub-block (sequence length
5HW/4). ``_flip`` reverses the LR and the HR sequences separately before they
are interleaved, so each LR token still precedes its 4 aligned HR tokens.
Only the HR positions are un-scanned; the LR outputs are dropped.

The simple *sequential* cross-scale order (Table 2 of the paper) is our reading,
no official code exists for it: the same LR sequence and the same HR sequence,
concatenated (all LR tokens first, then all HR tokens) instead of interleaved.
Flipping reverses each part; the LR part always comes first.

Official-code quirk: the official ``reverse_nested_local_scan_bchw`` (used to
un-scan ``c_w16`` / ``c_w16_flip``) views the column-major window index as if
it were row-major. When the HR window grid is square (every 64 x 64 training
patch) this is exact; when it is not (e.g. a 256 x 192 test tile) it places
whole 16 x 16 windows at the wrong positions. ``cross_scan_order(...,
official_unscan=True)`` reproduces that map (for evaluating the released
checkpoints exactly as the official test did); the default is the true inverse.

Upstream: https://github.com/renyulin-f/MambaCSR (commit f71199e),
``basicsr/archs/mamba/local_scan.py`` and ``multi_mamba.py`` (themselves derived
from LocalMamba, https://github.com/hunto/LocalMamba). License: the MambaCSR
repository ships no license file (all rights reserved by default); LocalMamba is
Apache-2.0. This is an independent re-implementation with explicit index
arithmetic; no upstream code is copied.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ScanOrder",
    "parse_direction",
    "scan_order",
    "cross_scan_order",
    "scan",
    "unscan",
    "scan_length",
]

_WINDOW_RE = re.compile(r"^(c_)?w(\d+)(_flip)?$")
_GLOBAL_RE = re.compile(r"^(h|v)(_flip)?$")


@dataclass(frozen=True, eq=False)
class ScanOrder:
    """One scan order: a permutation of source tokens plus its inverse.

    Attributes:
        name: direction name (``w8``, ``c_w64_flip``, ``h``, ...).
        height, width: the real grid H x W (the HR grid for cross-scale orders).
        padded_height, padded_width: the zero-padded grid Hp x Wp the scan runs over
            (equal to height, width when no padding is needed).
        index: (L,) int64; sequence position t reads source token ``index[t]``. Source
            tokens are the padded grid flattened row-major, or for cross-scale orders
            ``[LR (h*w), HR (H*W)]`` each flattened row-major.
        inverse: (L,) int64, the inverse permutation: source token p sits at sequence
            position ``inverse[p]``.
        unscan_index: (H*W,) int64; the sequence position each output pixel (row-major,
            crop of the padded grid / HR part) reads when un-scanning.
        lr_height, lr_width: the LR grid of a cross-scale order (0 otherwise).
        mode: ``"window"``, ``"global"``, ``"cross_aligned"`` or ``"cross_sequential"``.
    """

    name: str
    height: int
    width: int
    padded_height: int
    padded_width: int
    index: Tensor
    inverse: Tensor
    unscan_index: Tensor
    lr_height: int = 0
    lr_width: int = 0
    mode: str = "window"
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def length(self) -> int:
        """Sequence length L (padded tokens included; 5HW/4 for cross-scale orders)."""
        return int(self.index.numel())

    @property
    def is_cross(self) -> bool:
        return self.mode.startswith("cross")

    def on(self, device: torch.device | str, what: str) -> Tensor:
        """``index`` / ``inverse`` / ``unscan_index`` moved to `device`, cached per device."""
        device = torch.device(device)
        key = (what, str(device))
        t = self._on_device.get(key)
        if t is None:
            t = getattr(self, what).to(device)
            self._on_device[key] = t
        return t


def parse_direction(name: str) -> tuple[str, int, bool, bool]:
    """Split a direction name.

    Args:
        name: ``h``, ``v``, ``w{K}``, ``c_w{K}``, each optionally with ``_flip``.

    Returns:
        (kind, window, column_first, flip) with kind ``"global"`` (window 0) or ``"window"``.

    Raises:
        ValueError: naming the direction if it is not one of the forms above.
    """
    m = _GLOBAL_RE.match(name)
    if m:
        return "global", 0, m.group(1) == "v", m.group(2) is not None
    m = _WINDOW_RE.match(name)
    if m and int(m.group(2)) >= 1:
        return "window", int(m.group(2)), m.group(1) is not None, m.group(3) is not None
    raise ValueError(f"unknown scan direction {name!r}: expected h, v, w<K> or c_w<K>, optionally with _flip")


def _window_positions(H: int, W: int, w: int, column_first: bool) -> Tensor:
    """Sequence position of every pixel of the padded (Hp, Wp) grid, flattened row-major."""
    hg, wg = math.ceil(H / w), math.ceil(W / w)
    r = torch.arange(hg * w).view(-1, 1)
    c = torch.arange(wg * w).view(1, -1)
    if column_first:
        window = (c // w) * hg + (r // w)
        inner = (c % w) * w + (r % w)
    else:
        window = (r // w) * wg + (c // w)
        inner = (r % w) * w + (c % w)
    return (window * (w * w) + inner).reshape(-1)


def _nested_positions(H: int, W: int, w: int, column_first: bool) -> Tensor:
    """HR sequence position of every pixel (row-major) for the official 2x2 nested window scan."""
    hg, wg = H // w, W // w
    half = w // 2
    r = torch.arange(H).view(-1, 1)
    c = torch.arange(W).view(1, -1)
    a, b = r % w, c % w  # position inside the w x w window
    if column_first:
        window = (c // w) * hg + (r // w)
        sub = (b // 2) * half + (a // 2)
        inner = (b % 2) * 2 + (a % 2)
    else:
        window = (r // w) * wg + (c // w)
        sub = (a // 2) * half + (b // 2)
        inner = (a % 2) * 2 + (b % 2)
    return (window * (w * w) + sub * 4 + inner).reshape(-1)


def _invert(positions: Tensor) -> Tensor:
    """index with index[positions[p]] = p (positions must be a permutation)."""
    index = torch.empty_like(positions)
    index[positions] = torch.arange(positions.numel())
    return index


def _check_hw(H: int, W: int) -> None:
    if not (isinstance(H, int) and isinstance(W, int)) or H < 1 or W < 1:
        raise ValueError(f"scan grid must be positive ints, got H={H!r}, W={W!r}")


@functools.lru_cache(maxsize=512)
def scan_order(name: str, H: int, W: int) -> ScanOrder:
    """The scan order `name` on an H x W grid (cached; CPU tensors).

    Args:
        name: direction (see the module docstring).
        H, W: grid size; window scans zero-pad to multiples of the window.

    Returns:
        ScanOrder whose ``index`` is a permutation of the Hp*Wp padded grid.
    """
    _check_hw(H, W)
    kind, w, column_first, flip = parse_direction(name)
    if kind == "global":
        r = torch.arange(H).view(-1, 1)
        c = torch.arange(W).view(1, -1)
        pos = (c * H + r if column_first else r * W + c).reshape(-1)
        hp, wp = H, W
    else:
        pos = _window_positions(H, W, w, column_first)
        hp, wp = math.ceil(H / w) * w, math.ceil(W / w) * w
    if flip:
        pos = pos.numel() - 1 - pos
    unscan_index = pos.view(hp, wp)[:H, :W].reshape(-1).contiguous()
    return ScanOrder(name=name, height=H, width=W, padded_height=hp, padded_width=wp,
                     index=_invert(pos), inverse=pos, unscan_index=unscan_index, mode=kind)


def _official_cross_unscan(H: int, W: int, w: int, hr_seq_pos: Tensor) -> Tensor:
    """The official reverse_nested_local_scan_bchw(column_first=True) placement.

    It views the column-major window index ``win = wg*Hg + hg`` as (Hg, Wg) row-major,
    so the window content lands at window row ``win % Wg`` / column ``win // Wg`` (with
    rows and columns of that view swapped back by its permute). Exact when Hg == Wg.
    """
    hg, wg = H // w, W // w
    r = torch.arange(H).view(-1, 1)
    c = torch.arange(W).view(1, -1)
    win = (c // w) * hg + (r // w)
    a, b = r % w, c % w
    dest = ((((win % wg) * w + a) * hg + win // wg) * w + b).reshape(-1)
    out = torch.empty_like(hr_seq_pos)
    out[dest] = hr_seq_pos
    return out


@functools.lru_cache(maxsize=256)
def cross_scan_order(name: str, H: int, W: int, mode: str = "aligned",
                     official_unscan: bool = False) -> ScanOrder:
    """Cross-scale scan order over ``[LR (H/2 x W/2), HR (H x W)]`` tokens (cached).

    Args:
        name: ``w{K}``, ``w{K}_flip``, ``c_w{K}``, ``c_w{K}_flip``; K is the HR window
            (even); the LR window is K/2.
        H, W: HR grid; both must be multiples of K (no padding, as upstream).
        mode: ``"aligned"`` (MambaCSR's position-aligned order: each LR token then its
            4 HR tokens) or ``"sequential"`` (all LR tokens, then all HR tokens).
        official_unscan: reproduce the official column-first un-scan for non-square
            window grids (see the module docstring); ignored for row-major names.

    Returns:
        ScanOrder with L = 5HW/4; ``unscan_index`` selects the HR outputs.

    Raises:
        ValueError: for a global direction, an odd window, H/W not multiples of K,
            or an unknown mode.
    """
    _check_hw(H, W)
    kind, w, column_first, flip = parse_direction(name)
    if kind != "window" or w % 2:
        raise ValueError(f"cross-scale direction {name!r} must be w<K> or c_w<K> with an even K")
    if H % w or W % w:
        raise ValueError(f"cross-scale scan {name!r} needs H, W divisible by {w}; got H={H}, W={W} "
                         f"(pad the image to a multiple of {w} first)")
    if mode not in ("aligned", "sequential"):
        raise ValueError(f"cross-scale mode must be 'aligned' or 'sequential', got {mode!r}")
    h, wl = H // 2, W // 2
    n_lr, n_hr = h * wl, H * W
    s_lr = _window_positions(h, wl, w // 2, column_first)  # no padding: h, wl divisible by w/2
    s_hr = _nested_positions(H, W, w, column_first)
    if flip:
        s_lr, s_hr = n_lr - 1 - s_lr, n_hr - 1 - s_hr
    if mode == "aligned":
        seq_lr, seq_hr = 5 * s_lr, 5 * (s_hr // 4) + 1 + s_hr % 4
    else:
        seq_lr, seq_hr = s_lr, n_lr + s_hr
    inverse = torch.cat([seq_lr, seq_hr])
    unscan_index = seq_hr
    if official_unscan and column_first and (H // w) != (W // w):
        unscan_index = _official_cross_unscan(H, W, w, seq_hr)
    return ScanOrder(name=name, height=H, width=W, padded_height=H, padded_width=W,
                     index=_invert(inverse), inverse=inverse, unscan_index=unscan_index.contiguous(),
                     lr_height=h, lr_width=wl, mode=f"cross_{mode}")


def scan_length(name: str, H: int, W: int) -> int:
    """Sequence length of direction `name` on an H x W grid (padding included)."""
    kind, w, _, _ = parse_direction(name)
    if kind == "global":
        return H * W
    return math.ceil(H / w) * w * math.ceil(W / w) * w


def scan(x: Tensor, order: ScanOrder, x_lr: Tensor | None = None) -> Tensor:
    """Read a feature map as a sequence.

    Args:
        x: (B, C, H, W) features (the HR map for a cross-scale order).
        order: a ScanOrder built for (H, W).
        x_lr: (B, C, H/2, W/2) LR features; required for cross-scale orders only.

    Returns:
        (B, C, L) sequence; padded positions hold zeros.

    Raises:
        ValueError: when the shapes do not match the order.
    """
    B, C, H, W = x.shape
    if (H, W) != (order.height, order.width):
        raise ValueError(f"scan order {order.name!r} was built for {order.height}x{order.width}, got x of {H}x{W}")
    if order.is_cross:
        if x_lr is None or tuple(x_lr.shape) != (B, C, order.lr_height, order.lr_width):
            got = None if x_lr is None else tuple(x_lr.shape)
            raise ValueError(f"cross-scale order {order.name!r} needs x_lr of shape "
                             f"{(B, C, order.lr_height, order.lr_width)}, got {got}")
        src = torch.cat([x_lr.reshape(B, C, -1), x.reshape(B, C, -1)], dim=-1)
    else:
        if x_lr is not None:
            raise ValueError(f"scan order {order.name!r} is not cross-scale; x_lr must be None")
        ph, pw = order.padded_height - H, order.padded_width - W
        src = F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x
        src = src.reshape(B, C, -1)
    return src.index_select(-1, order.on(x.device, "index"))


def unscan(y: Tensor, order: ScanOrder, H: int, W: int) -> Tensor:
    """Put a sequence back on the grid (crop padding; drop LR tokens of cross orders).

    Args:
        y: (B, C, L) sequence in `order`.
        order: the ScanOrder used by `scan`.
        H, W: the grid to return; must equal the order's (HR) grid.

    Returns:
        (B, C, H, W).
    """
    if (H, W) != (order.height, order.width) or y.shape[-1] != order.length:
        raise ValueError(f"unscan: order {order.name!r} is {order.height}x{order.width} with L={order.length}, "
                         f"got H={H}, W={W}, y of shape {tuple(y.shape)}")
    out = y.index_select(-1, order.on(y.device, "unscan_index"))
    return out.view(*y.shape[:-1], H, W)
