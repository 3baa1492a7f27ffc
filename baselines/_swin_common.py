"""Window-attention building blocks shared by the Swin-family baselines.

Pieces of the Swin Transformer (Liu et al. 2021, arXiv:2103.14030) as SwinIR
(``github:JingyunLiang/SwinIR`` @ 6545850, Apache-2.0), Swin2SR
(``github:mv-lab/swin2sr`` @ 6f25d76, Apache-2.0), HST and HAT use them, rewritten
for csrbench. Layers every network shares (``Mlp``, ``PatchEmbed``, ``Upsample``,
``DropPath``, ``residual_conv``, ...) live in :mod:`mambacsr.layers`; this module
holds only what needs windows. Module attribute names follow upstream
(``attn.qkv``, ``attn.proj``, ``relative_position_bias_table``, ``norm1``/``norm2``,
``mlp.fc1``/``fc2``, ``residual_group.blocks.<i>``, ``conv``, ``patch_embed.*``).

Contents:
    window_partition / window_reverse   (B, H, W, C) <-> (B*nW, ws, ws, C)
    relative_position_index             (ws*ws, ws*ws) index into a (2ws-1)^2 table
    shifted_window_mask, ShiftMaskCache (nW, ws*ws, ws*ws) 0 / -100 mask for SW-MSA, cached per size
    window_attention / _ref             fused SDPA path and its plain-softmax oracle
    shifted_window_attention            roll -> partition -> attention -> reverse -> roll back
    WindowAttention, SwinTransformerBlock   Swin v1 W-MSA and pre-norm block (SwinIR, HST; HAT's attention)
    validate_swin_config, filter_recomputed   config check and checkpoint_filter_fn helper
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mambacsr.layers import DropPath, Mlp, is_pixelshuffle_scale

__all__ = [
    "ShiftMaskCache",
    "SwinTransformerBlock",
    "WindowAttention",
    "filter_recomputed",
    "relative_position_index",
    "shifted_window_attention",
    "shifted_window_mask",
    "validate_swin_config",
    "window_attention",
    "window_attention_ref",
    "window_partition",
    "window_reverse",
]

# Value upstream (Swin, SwinIR, Swin2SR, HAT) puts on masked logits; not -inf, so keep it.
MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut a feature map into non-overlapping square windows.

    Args:
        x: (B, H, W, C), H and W multiples of ``window_size``.
        window_size: window side ws.

    Returns:
        (B*nW, ws, ws, C) contiguous, nW = (H/ws)*(W/ws), batch-major (index = b*nW + w).
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: (B*nW, ws, ws, C).
        window_size: window side ws.
        h, w: the feature-map size the windows came from.

    Returns:
        (B, H, W, C).
    """
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, c)


def relative_position_index(window_h: int, window_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Pairwise relative-position index of the Swin relative position bias.

    Token i=(yi, xi), j=(yj, xj) of a window map to
    ``(yi - yj + Wh - 1) * (2*Ww - 1) + (xi - xj + Ww - 1)``.

    Args:
        window_h, window_w: window size (Wh, Ww).
        device: where to build it.

    Returns:
        int64 (Wh*Ww, Wh*Ww), values in [0, (2Wh-1)(2Ww-1)).
    """
    coords = torch.stack(torch.meshgrid(
        torch.arange(window_h, device=device), torch.arange(window_w, device=device), indexing="ij"))
    coords = coords.flatten(1)                                    # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 2
    return (rel[..., 0] + window_h - 1) * (2 * window_w - 1) + (rel[..., 1] + window_w - 1)


def shifted_window_mask(h: int, w: int, window_size: int, shift_size: int,
                        device: torch.device | None = None) -> torch.Tensor:
    """Attention mask of shifted-window attention (SW-MSA) for an (h, w) map.

    After the cyclic shift by ``-shift_size`` a window may hold tokens of up
    to four image regions; pairs from different regions get ``-100`` (upstream's
    value), pairs from the same region 0.

    Args:
        h, w: padded feature-map size, multiples of ``window_size``.
        window_size: ws.
        shift_size: the shift, 0 < shift_size < ws.
        device: where to build it.

    Returns:
        float32 (nW, ws*ws, ws*ws), nW = (h/ws)*(w/ws).
    """
    def region(n: int) -> torch.Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - window_size).long() + (idx >= n - shift_size).long()  # 0, 1, 2

    ids = (region(h)[:, None] * 3 + region(w)[None, :]).to(torch.float32)      # h, w
    win = window_partition(ids[None, :, :, None], window_size).view(-1, window_size * window_size)
    diff = win[:, None, :] - win[:, :, None]                                     # nW, N, N
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Multi-head attention inside windows, with a per-head bias and a per-window mask.

    Fused path: one ``F.scaled_dot_product_attention`` call, the bias and mask
    folded into its additive ``attn_mask``. Same signature and result as
    :func:`window_attention_ref` (the oracle).

    Args:
        q: (B*nW, nH, Nq, d); windows batch-major as :func:`window_partition` gives them.
        k, v: (B*nW, nH, Nk, d).
        bias: (nH, Nq, Nk) added to every window's logits (relative position bias), or None.
        mask: (nW, Nq, Nk) added per window position (shift mask), or None.
        scale: logit scale; None means d ** -0.5.

    Returns:
        (B*nW, nH, Nq, d), dtype of q.
    """
    bw, nh, nq, d = q.shape
    nk = k.shape[2]
    if mask is None:
        attn_mask = None if bias is None else bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    nw = mask.shape[0]
    if bw % nw:
        raise ValueError(f"window_attention: {bw} windows is not a multiple of the mask's {nw}")
    attn_mask = mask[:, None].to(q.dtype)                    # nW, 1, Nq, Nk
    if bias is not None:
        attn_mask = attn_mask + bias[None].to(q.dtype)       # nW, nH, Nq, Nk
    attn_mask = attn_mask.expand(nw, nh, nq, nk).reshape(nw * nh, nq, nk)
    # fold (B, nW) windows so the (nW*nH, Nq, Nk) mask broadcasts over B only
    q, k, v = (t.reshape(bw // nw, nw * nh, t.shape[2], d) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    return out.view(bw, nh, nq, d)


def window_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
                         mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Plain-PyTorch oracle of :func:`window_attention`, in upstream's operation order.

    ``softmax((q * scale) @ k^T + bias + mask) @ v``, computed in float32 and
    cast back to q's dtype. Shapes as :func:`window_attention`.
    """
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    bw, nh, nq, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)                 # B*nW, nH, Nq, Nk
    if bias is not None:
        attn = attn + bias.float()[None]
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(bw // nw, nw, nh, nq, -1) + mask.float()[None, :, None]
        attn = attn.view(bw, nh, nq, -1)
    return (attn.softmax(dim=-1) @ v).to(dtype)


class ShiftMaskCache:
    """Shifted-window masks of one model, built per padded feature-map size and kept.

    Not a module (nothing in the state dict); keyed by (H, W, device). Keeps at most
    ``max_entries`` masks (HST needs one per scale), then starts over.

    Args:
        window_size: ws.
        shift_size: the SW-MSA shift (ws // 2 upstream).
        max_entries: how many (size, device) masks to keep.
    """

    def __init__(self, window_size: int, shift_size: int, max_entries: int = 1) -> None:
        self.window_size = window_size
        self.shift_size = shift_size
        self.max_entries = max_entries
        self._masks: dict[tuple, torch.Tensor] = {}

    def __call__(self, x_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(nW, N, N) mask of :func:`shifted_window_mask` for a padded (H, W) map on ``device``."""
        key = (int(x_size[0]), int(x_size[1]), str(device))
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= self.max_entries:
                self._masks.clear()
            mask = shifted_window_mask(key[0], key[1], self.window_size, self.shift_size, device=device)
            self._masks[key] = mask
        return mask


def shifted_window_attention(x: torch.Tensor, window_size: int, shift_size: int,
                             attn: Callable[..., torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    """(Shifted) window self-attention over a map: roll, partition, attend, reverse, roll back.

    Args:
        x: (B, H, W, C), H and W multiples of ws.
        window_size: ws.
        shift_size: 0 (W-MSA) or the SW-MSA shift.
        attn: called as ``attn(windows, mask=...)`` on (B*nW, ws*ws, C) windows.
        mask: (nW, N, N) shift mask, used only when ``shift_size > 0``.

    Returns:
        (B, H, W, C).
    """
    b, h, w, c = x.shape
    ws, s = window_size, shift_size
    if s > 0:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    win = window_partition(x, ws).view(-1, ws * ws, c)                   # B*nW, N, C
    win = attn(win, mask=mask if s > 0 else None)
    x = window_reverse(win.view(-1, ws, ws, c), ws, h, w)                # B, H, W, C
    if s > 0:
        x = torch.roll(x, shifts=(s, s), dims=(1, 2))
    return x


class WindowAttention(nn.Module):
    """Swin v1 W-MSA with a learned relative position bias table (SwinIR, HST, HAT's HAB).

    Args:
        dim: channels C.
        window_size: ws.
        num_heads: nH.
        qkv_bias: bias on ``qkv``.
        proj_drop: dropout after ``proj``.
        own_index: keep the (N, N) ``relative_position_index`` as a (non-persistent)
            buffer; HAT passes one shared index to every block instead (``rpi``).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 proj_drop: float = 0.0, own_index: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))          # (2ws-1)^2, nH
        if own_index:
            self.register_buffer("relative_position_index",
                                 relative_position_index(window_size, window_size), persistent=False)
        else:
            self.relative_position_index = None
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, rpi: torch.Tensor | None = None) -> torch.Tensor:
        """(nH, N, N) bias, N = ws*ws, read through ``rpi`` (default: the own index)."""
        rpi = self.relative_position_index if rpi is None else rpi
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[rpi.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rpi: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None; rpi: (N, N) or None (own index) -> (B*nW, N, C)."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                          # B*nW, nH, N, d
        x = window_attention(q, k, v, bias=self.relative_position_bias(rpi), mask=mask)
        x = x.transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block: x + attn(norm1(x)), then x + mlp(norm2(x)); shift on odd blocks.

    Args:
        dim: channels C.
        num_heads: nH.
        window_size: ws.
        shift_size: 0 (W-MSA) or ws // 2 (SW-MSA).
        mlp_ratio: MLP hidden / C.
        qkv_bias: bias on qkv.
        drop: dropout rate.
        drop_path: stochastic depth rate of this block.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 qkv_bias: bool, drop: float, drop_path: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def _attn(self, x: torch.Tensor, x_size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        b, _, c = x.shape
        x = shifted_window_attention(x.reshape(b, *x_size, c), self.window_size, self.shift_size, self.attn, mask)
        return x.reshape(b, -1, c)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H*W, C); x_size (H, W); mask: (nW, N, N) shift mask -> (B, H*W, C)."""
        x = x + self.drop_path(self._attn(self.norm1(x), x_size, mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


def validate_swin_config(cfg, name: str, upsamplers: tuple[str, ...],
                         resi_connections: tuple[str, ...] = ("1conv", "3conv")) -> None:
    """Field checks shared by Swin-family SR configs; raise ``ValueError`` naming the field.

    ``cfg`` needs ``depths, num_heads, embed_dim, window_size, img_size, upsampler,
    upscale, resi_connection`` (and ``attn_drop_rate`` where it has one); ``name`` is
    the config class name.
    """
    if len(cfg.depths) != len(cfg.num_heads) or not cfg.depths:
        raise ValueError(f"{name}.depths {cfg.depths} and num_heads {cfg.num_heads} must be non-empty, same length")
    for h in cfg.num_heads:
        if h < 1 or cfg.embed_dim % h:
            raise ValueError(f"{name}.embed_dim={cfg.embed_dim} is not divisible by num_heads {h}")
    if cfg.window_size < 2:
        raise ValueError(f"{name}.window_size={cfg.window_size} must be >= 2")
    if cfg.img_size <= cfg.window_size:
        raise ValueError(f"{name}.img_size={cfg.img_size} must exceed window_size={cfg.window_size} "
                         "(upstream would silently shrink the window)")
    if cfg.upsampler not in upsamplers:
        raise ValueError(f"{name}.upsampler={cfg.upsampler!r} is not one of {upsamplers}")
    if cfg.upscale < 1:
        raise ValueError(f"{name}.upscale={cfg.upscale} must be >= 1")
    if cfg.upsampler.startswith("pixelshuffle") and cfg.upsampler != "pixelshuffledirect":
        if not is_pixelshuffle_scale(cfg.upscale):
            raise ValueError(f"{name}.upscale={cfg.upscale}: {cfg.upsampler!r} supports 2^n and 3")
    if cfg.resi_connection not in resi_connections:
        raise ValueError(f"{name}.resi_connection={cfg.resi_connection!r} is not one of {resi_connections}")
    if getattr(cfg, "attn_drop_rate", 0.0) != 0.0:
        raise ValueError(f"{name}.attn_drop_rate={cfg.attn_drop_rate}: only 0 is supported (fused attention)")


def filter_recomputed(state_dict: dict, model: nn.Module, name: str, drop: tuple[str, ...],
                      check: tuple[str, ...]) -> dict:
    """Remove buffers the model recomputes from a checkpoint.

    Keys whose last component is in ``drop`` (size-dependent, e.g. ``attn_mask``) are
    dropped unchecked; those in ``check`` (window-dependent, e.g.
    ``relative_position_index``) are compared with the model's buffer of the same
    name first (skipped for a model on the meta device).

    Args:
        state_dict: flat checkpoint dict (after :func:`mambacsr.layers.unwrap_state_dict`).
        model: the model that will load it.
        name: model name for error messages.
        drop: leaf names dropped unchecked.
        check: leaf names checked, then dropped.

    Returns:
        The remaining ``{key: tensor}``.

    Raises:
        ValueError: a checked buffer is missing in the model or differs (e.g. another
            window size), naming the key.
    """
    own = dict(model.named_buffers())
    out = {}
    for k, v in state_dict.items():
        leaf = k.rsplit(".", 1)[-1]
        if leaf in drop:
            continue
        if leaf in check:
            if k not in own:
                raise ValueError(f"{name} checkpoint_filter_fn: checkpoint key {k!r} has no counterpart in the model")
            mine = own[k]
            if mine.device.type != "meta" and (tuple(v.shape) != tuple(mine.shape)
                                               or not torch.allclose(v.to(mine), mine, atol=1e-6)):
                raise ValueError(f"{name} checkpoint_filter_fn: {k!r} {tuple(v.shape)} differs from the "
                                 f"model's {tuple(mine.shape)} (different window_size?)")
            continue
        out[k] = v
    return out
