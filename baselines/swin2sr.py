"""Swin2SR: SwinV2 Transformer for Compressed Image Super-Resolution and Restoration.

Conde, Choi, Burchi, Timofte, ECCVW (AIM 2022), arXiv:2209.11345.
Upstream: ``github:mv-lab/swin2sr`` @ 6f25d7689813f7dd12c5a212b638066fa71bc9e6
(``models/network_swin2sr.py``, ``main_test_swin2sr.py``), Apache-2.0; built on
SwinIR (Apache-2.0) and Swin Transformer V2 (Liu et al. 2022, arXiv:2111.09883, MIT).
Rewritten for csrbench; module attribute names follow upstream so ``state_dict()``
keys and shapes equal the official ones.

What SwinV2 changes against SwinIR (:mod:`baselines.swinir`): scaled cosine attention
with a learned per-head ``logit_scale`` (clamped at log 100); a continuous position
bias (``cpb_mlp``: 2 -> 512 -> nH MLP on log-spaced relative coordinates, then
16*sigmoid); ``q_bias``/``v_bias`` instead of a qkv bias; post-norm residuals
(``x + norm1(attn(x))``); and ``patch_embed.proj``, a 1x1 conv, both at the top and
inside every RSTB.

Differences from upstream, none of which changes a weight:
    * attention runs through ``F.scaled_dot_product_attention``
      (:func:`baselines._swin_common.window_attention`; oracle ``window_attention_ref``);
    * the shifted-window mask is built per padded input size (one cached entry), not
      a persistent ``attn_mask`` sized for ``img_size``; ``relative_position_index``
      and ``relative_coords_table`` are non-persistent buffers.
      :func:`checkpoint_filter_fn` drops ``attn_mask`` and checks-then-drops the other two;
    * ``pixelshuffle_aux`` (the AIM 2022 compressed-SR head): ``forward`` returns only
      the SR image (upstream returns ``(sr, aux)``; use :meth:`Swin2SR.forward_with_aux`);
      the whole head runs at the padded size (bicubic of the padded input to s times the
      padded size) and the result is cropped once at the end, so the output equals
      upstream's forward on the reflect-padded input, cropped. Upstream's own forward,
      when it pads internally, resizes the padded input straight to (s*h, s*w) (a slight
      stretch) and crops before ``conv_last``; the two agree whenever no padding is needed,
      which is always the case in the official test script (it pre-pads the image itself);
    * ``pixelshuffle_hf``, ``ape``, ``patch_size != 1``, ``pretrained_window_size`` and
      the x1 restoration head are not carried over.

Padding: reflect to a multiple of the window inside ``forward`` (upstream's
``check_image_size``), output cropped to (s*h, s*w).

Complexity note: Table 1 of the MambaCSR paper appears to print the SwinIR and
Swin2SR rows swapped: its "SwinIR 8.72 M / 37.17 G" is, per the lead's thop run,
thop's count for Swin2SR. The true parameter count of :func:`swin2sr` is 12,239,283;
thop counts are reproduced by ``harness/complexity.py``, not here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines._swin_common import (
    ShiftMaskCache,
    filter_recomputed,
    relative_position_index,
    shifted_window_attention,
    validate_swin_config,
    window_attention,
)
from mambacsr.layers import (
    DIV2K_RGB_MEAN,
    BasicLayer,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchUnEmbed,
    ResidualGroup,
    Upsample,
    UpsampleOneStep,
    init_weights,
    linear_drop_path_rates,
    pad_to_multiple,
    residual_conv,
    unwrap_state_dict,
)

__all__ = [
    "Swin2SR",
    "Swin2SRConfig",
    "checkpoint_filter_fn",
    "relative_coords_table",
    "smoke",
    "swin2sr",
    "swin2sr_compressed_x4",
]

UPSAMPLERS = ("pixelshuffle", "pixelshuffle_aux", "pixelshuffledirect", "nearest+conv")
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # SwinV2 clamps exp(logit_scale) at 100


@dataclass(frozen=True)
class Swin2SRConfig:
    """Swin2SR hyper-parameters (upstream constructor arguments of the same names).

    Defaults are :func:`swin2sr` (classical SR x4, as ``main_test_swin2sr.py`` builds it).

    Args:
        upscale: scale factor s (2^n or 3 for pixelshuffle*; 4 for nearest+conv).
        in_chans: image channels (3: RGB mean subtracted; else no mean).
        img_size: training LR patch size (documentation only).
        embed_dim: token channels C.
        depths: blocks per RSTB.
        num_heads: attention heads per RSTB.
        window_size: attention window side ws; inputs are padded to a multiple of it.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: learn ``q_bias`` and ``v_bias``.
        drop_rate: dropout after attention projection and in the MLP.
        attn_drop_rate: dropout on attention weights (must be 0; fused attention).
        drop_path_rate: stochastic depth, linear from 0 over all blocks (upstream default 0.1).
        patch_norm: LayerNorm after the top-level patch embedding.
        img_range: scale after mean subtraction.
        upsampler: ``pixelshuffle`` (classical), ``pixelshuffle_aux`` (compressed SR,
            AIM 2022), ``pixelshuffledirect`` (lightweight), ``nearest+conv`` (real-world).
        resi_connection: ``1conv`` or ``3conv``.
        cpb_hidden: hidden width of the continuous position bias MLP (upstream 512).
        num_feat: reconstruction channels (upstream hard-codes 64).
        use_checkpoint: gradient checkpointing per block.
    """

    upscale: int = 4
    in_chans: int = 3
    img_size: int = 64
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    patch_norm: bool = True
    img_range: float = 1.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    cpb_hidden: int = 512
    num_feat: int = 64
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.upsampler == "pixelshuffle_hf":
            raise NotImplementedError("Swin2SRConfig.upsampler='pixelshuffle_hf' is not implemented yet")
        validate_swin_config(self, "Swin2SRConfig", UPSAMPLERS)
        if self.upsampler == "nearest+conv" and self.upscale != 4:
            raise ValueError(f"Swin2SRConfig.upscale={self.upscale}: 'nearest+conv' supports only 4 (as upstream)")


def relative_coords_table(window_size: int, device: torch.device | None = None) -> torch.Tensor:
    """SwinV2 log-spaced relative coordinates, the input of ``cpb_mlp``.

    Offsets in [-(ws-1), ws-1] are scaled to [-8, 8], then
    ``sign(t) * log2(|t| + 1) / log2(8)``.

    Args:
        window_size: ws (>= 2).
        device: where to build it.

    Returns:
        float32 (1, 2ws-1, 2ws-1, 2), |values| <= log2(9)/3 ~ 1.057 (upstream's buffer layout).
    """
    r = torch.arange(-(window_size - 1), window_size, dtype=torch.float32, device=device)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / (window_size - 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttention(nn.Module):
    """SwinV2 window attention: scaled cosine attention + continuous position bias.

    Args:
        dim: channels C.
        window_size: ws.
        num_heads: nH.
        qkv_bias: learn ``q_bias``, ``v_bias`` (k has none).
        proj_drop: dropout after ``proj``.
        cpb_hidden: hidden width of ``cpb_mlp``.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 proj_drop: float = 0.0, cpb_hidden: int = 512) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))   # nH, 1, 1
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(cpb_hidden, num_heads, bias=False))
        self.register_buffer("relative_coords_table", relative_coords_table(window_size), persistent=False)
        self.register_buffer("relative_position_index",
                             relative_position_index(window_size, window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> torch.Tensor:
        """(nH, N, N) bias 16*sigmoid(cpb_mlp(coords)), N = ws*ws."""
        n = self.window_size * self.window_size
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)  # (2ws-1)^2, nH
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None -> (B*nW, N, C)."""
        bw, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                               # B*nW, nH, N, d
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()      # nH, 1, 1
        q = F.normalize(q, dim=-1) * scale.to(q.dtype)
        k = F.normalize(k, dim=-1)
        x = window_attention(q, k, v, bias=self.relative_position_bias(), mask=mask, scale=1.0)
        x = x.transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """Post-norm SwinV2 block: x + norm1(attn(x)), then x + norm2(mlp(x)); shift on odd blocks.

    Args:
        dim: channels C.
        num_heads: nH.
        window_size: ws.
        shift_size: 0 (W-MSA) or ws // 2 (SW-MSA).
        mlp_ratio: MLP hidden / C.
        qkv_bias: learn q/v biases.
        drop: dropout rate.
        drop_path: stochastic depth rate of this block.
        cpb_hidden: hidden width of the position-bias MLP.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 qkv_bias: bool, drop: float, drop_path: float, cpb_hidden: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, proj_drop=drop,
                                    cpb_hidden=cpb_hidden)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def _attn(self, x: torch.Tensor, x_size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        b, _, c = x.shape
        x = shifted_window_attention(x.reshape(b, *x_size, c), self.window_size, self.shift_size, self.attn, mask)
        return x.reshape(b, -1, c)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H*W, C); x_size (H, W); mask: (nW, N, N) shift mask -> (B, H*W, C)."""
        x = x + self.drop_path(self.norm1(self._attn(x, x_size, mask)))
        x = x + self.drop_path(self.norm2(self.mlp(x)))
        return x


def swin2sr_blocks(dim: int, depth: int, num_heads: int, cfg: Swin2SRConfig, drop_path: list[float]) -> BasicLayer:
    """``depth`` SwinV2 blocks alternating W-MSA / SW-MSA (upstream ``residual_group``; keys ``blocks.<i>``)."""
    ws = cfg.window_size
    return BasicLayer([SwinTransformerBlock(dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2, cfg.mlp_ratio,
                                            cfg.qkv_bias, cfg.drop_rate, drop_path[i], cfg.cpb_hidden)
                       for i in range(depth)], cfg.use_checkpoint)


class Swin2SR(nn.Module):
    """Swin2SR for super-resolution: (B, C, h, w) in [0, 1] -> (B, C, s*h, s*w).

    Args:
        cfg: the frozen :class:`Swin2SRConfig`.
    """

    def __init__(self, cfg: Swin2SRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, nf, ch = cfg.embed_dim, cfg.num_feat, cfg.in_chans
        self.upscale = cfg.upscale
        self.upsampler = cfg.upsampler
        self.window_size = cfg.window_size
        self.img_range = cfg.img_range
        mean = DIV2K_RGB_MEAN if ch == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.shift_mask = ShiftMaskCache(cfg.window_size, cfg.window_size // 2)

        # 1. shallow features
        self.conv_first = nn.Conv2d(ch, c, 3, 1, 1)
        # 2. deep features
        self.patch_embed = PatchEmbed(c, norm=cfg.patch_norm, proj=True)
        self.patch_unembed = PatchUnEmbed()
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = linear_drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            start = sum(cfg.depths[:i])
            blocks = swin2sr_blocks(c, depth, heads, cfg, dpr[start:start + depth])
            self.layers.append(ResidualGroup(blocks, c, cfg.resi_connection, proj=True))
        self.norm = nn.LayerNorm(c)
        self.conv_after_body = residual_conv(c, cfg.resi_connection)
        # 3. reconstruction
        if cfg.upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(cfg.upscale, nf)
            self.conv_last = nn.Conv2d(nf, ch, 3, 1, 1)
        elif cfg.upsampler == "pixelshuffle_aux":
            self.conv_bicubic = nn.Conv2d(ch, nf, 3, 1, 1)
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.conv_aux = nn.Conv2d(nf, ch, 3, 1, 1)
            self.conv_after_aux = nn.Sequential(nn.Conv2d(ch, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(cfg.upscale, nf)
            self.conv_last = nn.Conv2d(nf, ch, 3, 1, 1)
        elif cfg.upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(cfg.upscale, c, ch)
        else:  # nearest+conv, x4 only
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, ch, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W), H and W multiples of ws -> (B, C, H, W)."""
        x_size = (x.shape[2], x.shape[3])
        mask = self.shift_mask(x_size, x.device)
        x = self.pos_drop(self.patch_embed(x))                                # B, H*W, C
        for layer in self.layers:
            x = layer(x, x_size, mask)
        return self.patch_unembed(self.norm(x), x_size)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Super-resolve and also return the ``pixelshuffle_aux`` head's LR estimate.

        Args:
            x: (B, in_chans, h, w) in [0, 1], any h, w >= 1.

        Returns:
            ``(sr, aux)``: sr (B, in_chans, s*h, s*w); aux (B, in_chans, h, w), the
            auxiliary LR reconstruction (upstream's training target: the clean LR
            image), or None for the other upsamplers. Neither is clamped.
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"Swin2SR expects (B, {self.cfg.in_chans}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.upscale
        x = pad_to_multiple(x, self.window_size, mode="reflect")
        hp, wp = x.shape[-2:]
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        aux = None
        if self.upsampler == "pixelshuffle_aux":
            bicubic = F.interpolate(x, size=(hp * s, wp * s), mode="bicubic", align_corners=False)
            bicubic = self.conv_bicubic(bicubic)                              # B, nf, s*hp, s*wp
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            x = self.conv_before_upsample(x)
            aux = self.conv_aux(x)                                            # B, C, hp, wp
            x = self.conv_last(self.upsample(self.conv_after_aux(aux)) + bicubic)
            aux = (aux / self.img_range + mean)[:, :, :h, :w]
        else:
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            if self.upsampler == "pixelshuffle":
                x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
            elif self.upsampler == "pixelshuffledirect":
                x = self.upsample(x)
            else:  # nearest+conv
                x = self.conv_before_upsample(x)
                x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
                x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
                x = self.conv_last(self.lrelu(self.conv_hr(x)))
        x = x / self.img_range + mean
        return x[:, :, : h * s, : w * s], aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: (B, in_chans, h, w) in [0, 1], any h, w >= 1.

        Returns:
            (B, in_chans, s*h, s*w), about [0, 1] (not clamped).
        """
        return self.forward_with_aux(x)[0]


# Buffers upstream saves that this model recomputes: attn_mask depends on img_size
# (dropped unchecked); the other two depend only on the window and are checked.
_SIZE_DEPENDENT = ("attn_mask",)
_RECOMPUTED = ("relative_position_index", "relative_coords_table")


def checkpoint_filter_fn(state_dict: dict, model: Swin2SR) -> dict:
    """Adapt an official Swin2SR checkpoint to :class:`Swin2SR` (then ``load_state_dict(strict=True)``).

    Unwraps ``params_ema`` (preferred) / ``params``; strips ``module.``; drops
    ``attn_mask`` (sized for the training ``img_size``); checks and drops
    ``relative_position_index`` and ``relative_coords_table`` (non-persistent here).

    Args:
        state_dict: ``torch.load`` result of an upstream ``.pth``.
        model: the model that will load it.

    Returns:
        A plain ``{key: tensor}`` dict matching ``model.state_dict()``.
    """
    sd, _ = unwrap_state_dict(state_dict, "Swin2SR checkpoint_filter_fn")
    return filter_recomputed(sd, model, "Swin2SR", _SIZE_DEPENDENT, _RECOMPUTED)


def swin2sr() -> Swin2SRConfig:
    """Swin2SR classical SR x4 (``main_test_swin2sr.py --task classical_sr --scale 4``): 12,239,283 params.

    Official weights: ``Swin2SR_ClassicalSR_X4_64.pth`` (key ``params``),
    https://github.com/mv-lab/swin2sr/releases/tag/v0.0.1, Apache-2.0.
    """
    return Swin2SRConfig(upscale=4, img_size=64, upsampler="pixelshuffle")


def swin2sr_compressed_x4() -> Swin2SRConfig:
    """Swin2SR AIM 2022 compressed (JPEG) SR x4 (``--task compressed_sr --scale 4``,
    ``pixelshuffle_aux``): 12,244,598 params.

    Official weights: ``Swin2SR_CompressedSR_X4_48.pth`` (key ``params``).
    """
    return Swin2SRConfig(upscale=4, img_size=48, upsampler="pixelshuffle_aux")


# Released weights (timm ``_cfg`` style, plain data; read by ``harness.released``). Official test:
# main_test_swin2sr.py --task compressed_sr --scale 4 --training_patch_size 48: whole image,
# mirror-padded to a multiple of the window (8), no self-ensemble, crop_border = scale.
RELEASED_WEIGHTS = {
    "Swin2SR_CompressedSR_X4_48.pth": {
        "model": "swin2sr_compressed_x4",
        "url": "https://github.com/mv-lab/swin2sr/releases/download/v0.0.1/Swin2SR_CompressedSR_X4_48.pth",
        "sha256": None, "sha256_note": "not published by the authors; not downloadable here",
        "params_key": "params", "license": "Apache-2.0",
        "train_data": "DIV2K + Flickr2K, LR patch 48 (AIM 2022 compressed-input SR challenge)",
        "degradation": {"scale": 4, "codec": "jpeg", "level": 10,
                        "how": "bicubic x4 then JPEG (AIM 2022 track 1; quality 10 as we read the challenge report)"},
        "eval": {"tile": 0, "tile_overlap": 0, "pad_multiple": 8, "self_ensemble": False, "crop_border": 4,
                 "note": "main_test_swin2sr.py: whole image, padded to a multiple of 8 by flipping"},
        "official": {},
    },
}


def smoke(cfg: Swin2SRConfig) -> Swin2SRConfig:
    """Reduced copy on the same code path: C=24, 2 RSTBs of 2 blocks, 2 heads, ws 4,
    cpb MLP 32 wide, same upsampler and upscale."""
    return dataclasses.replace(cfg, embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=4,
                               mlp_ratio=2.0, num_feat=16, cpb_hidden=32, img_size=16)
