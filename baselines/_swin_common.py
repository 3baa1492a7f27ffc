"""Window-attention building blocks shared by the Swin-family baselines.

Generic pieces of the Swin Transformer (Liu et al. 2021, arXiv:2103.14030) as
SwinIR (``github:JingyunLiang/SwinIR`` @ 6545850, Apache-2.0) and Swin2SR
(``github:mv-lab/swin2sr`` @ 6f25d76, Apache-2.0) use them, rewritten for
csrbench; HAT and HST reuse the same layout. Nothing here owns a checkpoint key
except through the module attribute names (``Mlp.fc1``/``fc2``,
``Upsample.<i>``, ``PatchEmbed.norm``), which follow upstream.

Contents:
    window_partition / window_reverse   (B, H, W, C) <-> (B*nW, ws, ws, C)
    relative_position_index             (ws*ws, ws*ws) index into a (2ws-1)^2 table
    shifted_window_mask                 (nW, ws*ws, ws*ws) 0 / -100 mask for SW-MSA
    window_attention / _ref             fused SDPA path and its plain-softmax oracle
    pad_to_multiple                     reflect-pad (B, C, H, W) to a multiple of ws
    drop_path / DropPath, Mlp, PatchEmbed, PatchUnEmbed, Upsample, UpsampleOneStep
    residual_conv, init_swin_weights, validate_swin_config   config / init helpers
    unwrap_checkpoint, filter_recomputed                      checkpoint_filter_fn helpers
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchUnEmbed",
    "Upsample",
    "UpsampleOneStep",
    "drop_path",
    "filter_recomputed",
    "init_swin_weights",
    "linear_drop_path_rates",
    "pad_to_multiple",
    "relative_position_index",
    "residual_conv",
    "shifted_window_mask",
    "unwrap_checkpoint",
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


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad the bottom and right of an image batch up to a multiple of ``multiple``.

    Upstream's ``check_image_size`` does ``F.pad(x, (0, pw, 0, ph), 'reflect')``;
    that needs pad < size, so for maps smaller than the pad this reflects
    repeatedly (and replicates a 1-pixel side). For every size upstream accepts
    the result is identical to upstream's.

    Args:
        x: (B, C, H, W).
        multiple: pad H and W up to a multiple of this.
        mode: ``"reflect"`` (upstream) or any other ``F.pad`` mode.

    Returns:
        (B, C, H', W') with H' = ceil(H/multiple)*multiple, likewise W'.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if mode != "reflect":
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x
    while pad_h or pad_w:
        h, w = x.shape[-2:]
        step_h = min(pad_h, h - 1) if h > 1 else 0
        step_w = min(pad_w, w - 1) if w > 1 else 0
        if step_h == 0 and step_w == 0:                     # a 1-pixel side: replicate it
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


def linear_drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``n`` blocks.

    Same values as upstream's ``torch.linspace(0, rate, n)``, in plain Python
    so that building on the meta device never reads a tensor value.
    """
    if n <= 1:
        return [0.0] * n
    return [rate * i / (n - 1) for i in range(n)]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability p.

    Args:
        x: (B, ...) residual branch output.
        p: drop probability.
        training: identity when False.

    Returns:
        x with each sample either zeroed or scaled by 1/(1-p).
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (timm's ``DropPath``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout; keys ``fc1``, ``fc2`` as upstream.

    Args:
        in_features: input (and output) channels C.
        hidden_features: hidden width.
        drop: dropout rate.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H*W, C) tokens, optional LayerNorm (``norm``), patch size 1.

    SwinIR's/HAT's ``PatchEmbed``: no projection, only flatten and norm.
    """

    def __init__(self, embed_dim: int, norm: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)                     # B, H*W, C
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    """(B, H*W, C) tokens -> (B, C, H, W); no parameters."""

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        return x.transpose(1, 2).reshape(b, c, x_size[0], x_size[1])


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: (conv 3x3 -> PixelShuffle(2)) x log2(s), or one x3 step.

    Keys ``0.weight``, ``2.weight``, ... as upstream.

    Args:
        scale: 2^n or 3.
        num_feat: channels in and out.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: list[nn.Module] = []
        if scale >= 1 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"Upsample: scale {scale} is not supported; use 2^n or 3")
        super().__init__(*layers)


class UpsampleOneStep(nn.Sequential):
    """One conv 3x3 to s^2 * out channels, then PixelShuffle(s) (lightweight SR).

    Args:
        scale: upscale factor s.
        num_feat: input channels.
        num_out_ch: output channels.
    """

    def __init__(self, scale: int, num_feat: int, num_out_ch: int) -> None:
        super().__init__(nn.Conv2d(num_feat, scale * scale * num_out_ch, 3, 1, 1), nn.PixelShuffle(scale))


def validate_swin_config(cfg, name: str, upsamplers: tuple[str, ...]) -> None:
    """Field checks shared by Swin-family SR configs; raise ``ValueError`` naming the field.

    ``cfg`` needs ``depths, num_heads, embed_dim, window_size, img_size, upsampler,
    upscale, resi_connection, attn_drop_rate``; ``name`` is the config class name.
    """
    if len(cfg.depths) != len(cfg.num_heads) or not cfg.depths:
        raise ValueError(f"{name}.depths {cfg.depths} and num_heads {cfg.num_heads} must be non-empty, same length")
    for h in cfg.num_heads:
        if cfg.embed_dim % h:
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
        if not (cfg.upscale == 3 or (cfg.upscale >= 2 and cfg.upscale & (cfg.upscale - 1) == 0)):
            raise ValueError(f"{name}.upscale={cfg.upscale}: {cfg.upsampler!r} supports 2^n and 3")
    if cfg.resi_connection not in ("1conv", "3conv"):
        raise ValueError(f"{name}.resi_connection={cfg.resi_connection!r} is not '1conv' or '3conv'")
    if cfg.attn_drop_rate != 0.0:
        raise ValueError(f"{name}.attn_drop_rate={cfg.attn_drop_rate}: only 0 is supported (fused attention)")


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing an RSTB / the body: ``1conv`` (one 3x3) or the lighter ``3conv`` stack.

    Keys as upstream: ``weight``/``bias`` or ``0.*``, ``2.*``, ``4.*``.
    """
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"residual_conv: kind {kind!r} is not '1conv' or '3conv'")


def init_swin_weights(m: nn.Module) -> None:
    """Upstream ``_init_weights`` (use with ``model.apply``): Linear trunc-normal(0.02), zero bias;
    LayerNorm weight 1, bias 0; convolutions keep PyTorch's default."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def unwrap_checkpoint(state_dict: dict, name: str) -> dict:
    """The weights inside an upstream checkpoint: ``params_ema`` > ``params`` > ``state_dict`` > ``model`` > itself.

    Also strips a DataParallel ``module.`` prefix.

    Args:
        state_dict: what ``torch.load`` returned.
        name: model name for error messages.

    Returns:
        A flat ``{key: tensor}`` dict.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"{name} checkpoint_filter_fn: expected a dict, got {type(state_dict).__name__}")
    for key in ("params_ema", "params", "state_dict", "model"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def filter_recomputed(state_dict: dict, model: nn.Module, name: str, drop: tuple[str, ...],
                      check: tuple[str, ...]) -> dict:
    """Remove buffers the model recomputes from a checkpoint.

    Keys whose last component is in ``drop`` (size-dependent, e.g. ``attn_mask``) are
    dropped unchecked; those in ``check`` (window-dependent, e.g.
    ``relative_position_index``) are compared with the model's buffer of the same
    name first (skipped for a model on the meta device).

    Args:
        state_dict: flat checkpoint dict (after :func:`unwrap_checkpoint`).
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
