"""Building blocks shared by every csrbench network (MambaCSR and the baselines).

One copy of each generic layer, as ``timm.layers`` keeps them for timm's models.
``mambacsr`` is the lower package (the baselines already import ``mambacsr.ops``),
so ``baselines/*.py`` import from here and nothing here imports a model file,
``harness`` or DVC. Swin-only pieces (window partition, shift masks, window
attention) stay in ``baselines/_swin_common.py``.

Module attribute names follow the upstream code of SwinIR / Swin2SR / HAT / MambaIR /
MambaCSR (``Mlp.fc1``/``fc2``, ``PatchEmbed.proj``/``norm``, ``Upsample.<i>``,
``CAB.cab.<i>``, ``ChannelAttention.attention.<i>``), so ``state_dict()`` keys equal
the official ones wherever these layers sit.

Contents:
    DIV2K_RGB_MEAN                          the mean upstream SR models subtract
    drop_path / DropPath, linear_drop_path_rates   stochastic depth
    BasicLayer                              a stack of blocks, optionally gradient-checkpointed
    Mlp, PatchEmbed, PatchUnEmbed           token MLP and (B, C, H, W) <-> tokens
    ResidualGroup                           blocks -> conv -> + tokens (RSTB, RHAG, RSSG)
    Upsample, UpsampleOneStep               pixel-shuffle reconstruction
    ChannelAttention, CAB                   RCAN channel attention and its conv block
    residual_conv                           ``1conv`` / ``3conv`` / ``identity`` closing conv
    init_weights                            upstream ``_init_weights`` (Linear, LayerNorm)
    pad_to_multiple, pad_symmetric          reflect / mirror padding of an image batch
    unwrap_state_dict                       the weights inside an upstream checkpoint
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

__all__ = [
    "CAB",
    "DIV2K_RGB_MEAN",
    "BasicLayer",
    "ChannelAttention",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchUnEmbed",
    "ResidualGroup",
    "Upsample",
    "UpsampleOneStep",
    "drop_path",
    "init_weights",
    "is_pixelshuffle_scale",
    "linear_drop_path_rates",
    "pad_symmetric",
    "pad_to_multiple",
    "residual_conv",
    "unwrap_state_dict",
]

# DIV2K RGB mean that SwinIR, Swin2SR, HST, HAT, MambaIR and MambaCSR subtract from the input.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

# Wrapper keys of upstream checkpoints, most preferred first: BasicSR saves ``params`` and
# (with EMA) ``params_ema``, and its test loads ``params_ema`` when present.
CHECKPOINT_KEYS = ("params_ema", "params", "state_dict", "model")


# ----------------------------------------------------------------------------- stochastic depth


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability p.

    timm's ``drop_path`` (what MambaIR and MambaCSR import): a Bernoulli(1 - p) mask per
    sample, divided by 1 - p, times x.

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
    """Module form of :func:`drop_path` (timm's ``DropPath``; no parameters).

    Args:
        p: drop probability.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


def linear_drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``n`` blocks.

    Upstream's ``torch.linspace(0, rate, n)`` in plain Python (double precision), so
    that building on the meta device never reads a tensor value.
    """
    if n <= 1:
        return [0.0] * n
    return [rate * i / (n - 1) for i in range(n)]


# ----------------------------------------------------------------------------- token layers


class BasicLayer(nn.Module):
    """Blocks applied in turn, each optionally under gradient checkpointing (upstream ``BasicLayer``).

    Keys ``blocks.<i>.*`` as upstream.

    Args:
        blocks: the blocks, each called as ``blk(x, *args)``.
        use_checkpoint: recompute each block in the backward pass (less memory, same result).
    """

    def __init__(self, blocks: Iterable[nn.Module], use_checkpoint: bool = False) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """x and ``args`` (e.g. ``x_size``, a mask) go to every block; returns the last block's output."""
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, *args, use_reentrant=False)
            else:
                x = blk(x, *args)
        return x


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout on channel-last tokens; keys ``fc1``, ``fc2``.

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
    """Patch size 1 embedding: (B, C, H, W) -> tokens, optional 1x1 conv ``proj`` and LayerNorm ``norm``.

    SwinIR / HAT / MambaIR / MambaCSR: no projection (flatten and norm only);
    Swin2SR: ``proj=True``.

    Args:
        embed_dim: channels C (in and out).
        norm: LayerNorm over C after flattening.
        proj: a 1x1 conv before flattening (Swin2SR).
        flatten: True: (B, H*W, C) tokens; False: channel-last (B, H, W, C) maps (MambaCSR).
    """

    def __init__(self, embed_dim: int, norm: bool = True, proj: bool = False, flatten: bool = True) -> None:
        super().__init__()
        self.flatten = flatten
        self.proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=1, stride=1) if proj else None
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj(x)
        x = x.flatten(2).transpose(1, 2) if self.flatten else x.permute(0, 2, 3, 1)   # B, H*W, C | B, H, W, C
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    """(B, H*W, C) tokens -> (B, C, H, W); no parameters."""

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        return x.transpose(1, 2).reshape(b, c, x_size[0], x_size[1])


class ResidualGroup(nn.Module):
    """Residual group: tokens -> blocks -> map -> conv -> tokens -> + tokens.

    SwinIR's / Swin2SR's / HST's ``RSTB``, HAT's ``RHAG`` and MambaIR's ``ResidualGroup``;
    keys ``residual_group.*``, ``conv.*`` and (Swin2SR) ``patch_embed.proj.*`` as upstream.

    Args:
        residual_group: the blocks, called as ``residual_group(x, x_size, *extra)``.
        dim: channels C.
        resi_connection: ``1conv``, ``3conv`` or ``identity`` (:func:`residual_conv`).
        proj: a 1x1 conv in ``patch_embed`` (Swin2SR).
    """

    def __init__(self, residual_group: nn.Module, dim: int, resi_connection: str, proj: bool = False) -> None:
        super().__init__()
        self.residual_group = residual_group
        self.conv = residual_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(dim, norm=False, proj=proj)
        self.patch_unembed = PatchUnEmbed()

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], *extra: Any) -> torch.Tensor:
        """x: (B, H*W, C); ``extra`` (a shift mask, HAT's index dict) goes to the blocks -> (B, H*W, C)."""
        y = self.patch_unembed(self.residual_group(x, x_size, *extra), x_size)   # B, C, H, W
        return self.patch_embed(self.conv(y)) + x


# ----------------------------------------------------------------------------- reconstruction


def is_pixelshuffle_scale(scale: int) -> bool:
    """Whether :class:`Upsample` supports ``scale``: 2^n (n >= 1) or 3."""
    return scale == 3 or (scale >= 2 and scale & (scale - 1) == 0)


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: (conv 3x3 -> PixelShuffle(2)) x log2(s), or one x3 step.

    Keys ``0.weight``, ``2.weight``, ... as upstream.

    Args:
        scale: 2^n (n >= 1) or 3.
        num_feat: channels in and out.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        if not is_pixelshuffle_scale(scale):
            raise ValueError(f"Upsample: scale {scale} is not supported; use 2^n or 3")
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
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


# ----------------------------------------------------------------------------- channel attention


class ChannelAttention(nn.Module):
    """RCAN channel attention: x * sigmoid(conv(relu(conv(avgpool(x))))); keys ``attention.1/3``.

    Args:
        num_feat: channels C.
        squeeze_factor: bottleneck C // squeeze_factor.
    """

    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0),
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block (HAT, MambaIR, MambaCSR): conv3x3 (C -> C/r) -> GELU -> conv3x3 -> channel attention.

    Keys ``cab.0``, ``cab.2``, ``cab.3.attention.*`` as upstream.

    Args:
        num_feat: channels C.
        compress_ratio: r (HAT and MambaIR 3, MambaCSR 24).
        squeeze_factor: of the channel attention.
    """

    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.cab(x)


# ----------------------------------------------------------------------------- body helpers


RESIDUAL_CONVS = ("1conv", "3conv", "identity")


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing a residual group / the body.

    Args:
        dim: channels in and out.
        kind: ``1conv`` (one 3x3), ``3conv`` (3x3 to dim/4, 1x1, 3x3 back, LeakyReLU 0.2
            between) or ``identity`` (HAT's option).

    Returns:
        The module; keys as upstream: ``weight``/``bias`` or ``0.*``, ``2.*``, ``4.*``.
    """
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1))
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"residual_conv: kind {kind!r} is not one of {RESIDUAL_CONVS}")


def init_weights(m: nn.Module) -> None:
    """Upstream ``_init_weights`` (use with ``model.apply``): Linear trunc-normal(0.02), zero bias;
    LayerNorm weight 1, bias 0; convolutions keep PyTorch's default."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- input padding


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad the bottom and right of an image batch up to a multiple of ``multiple``.

    SwinIR's / HAT's ``check_image_size`` does ``F.pad(x, (0, pw, 0, ph), 'reflect')``;
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


def pad_symmetric(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right with a mirrored copy (edge pixel repeated) up to a multiple of ``multiple``.

    The official HST and MambaCSR test scripts pad with ``cat([x, flip(x)])[:h + pad]``:
    the appended rows are the last ``pad`` rows in reverse order. For pads longer than
    the map the pattern continues periodically (x, flip(x), x, ...), where upstream
    would come up short.

    Args:
        x: (B, C, H, W).
        multiple: pad H and W up to a multiple of this.

    Returns:
        (B, C, H', W') with H' = ceil(H/multiple)*multiple, likewise W'; ``x`` itself
        when nothing is added.
    """
    for dim in (-2, -1):
        n = x.shape[dim]
        pad = (-n) % multiple
        if pad:
            m = torch.arange(n + pad, device=x.device) % (2 * n)
            x = x.index_select(dim, torch.where(m < n, m, 2 * n - 1 - m))
    return x


# ----------------------------------------------------------------------------- checkpoints


def unwrap_state_dict(obj: object, name: str = "checkpoint") -> tuple[dict, str | None]:
    """The flat weights inside an upstream checkpoint, and where they were.

    Takes the first dict among ``params_ema`` (preferred, as BasicSR's test loads it),
    ``params``, ``state_dict`` and ``model``; else ``obj`` itself is the state dict.
    A DataParallel / DDP ``module.`` prefix is stripped from every key that has it.

    Args:
        obj: what ``torch.load`` returned.
        name: what to call it in errors (model or file name).

    Returns:
        ``(state_dict, which_key)``: a new ``{key: tensor}`` dict, and the wrapper key
        it came from (``"params_ema"``, ``"params"``, ``"state_dict"``, ``"model"``) or
        None for a plain state dict.

    Raises:
        TypeError: ``obj`` is not a dict, naming ``name``.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"{name}: expected a dict, got {type(obj).__name__}")
    which = next((k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), dict)), None)
    state_dict = obj if which is None else obj[which]
    prefix = "module."
    return {(k[len(prefix):] if isinstance(k, str) and k.startswith(prefix) else k): v
            for k, v in state_dict.items()}, which
