"""SwinIR: Image Restoration Using Swin Transformer.

Liang, Cao, Sun, Zhang, Van Gool, Timofte, ICCVW 2021, arXiv:2108.10257.
Upstream: ``github:JingyunLiang/SwinIR`` @ 6545850fbf8df298df73d81f3e8cba638787c8bd
(``models/network_swinir.py``, ``main_test_swinir.py``), Apache-2.0; itself from
Swin Transformer (Ze Liu, MIT). Rewritten for csrbench; module attribute names
follow upstream so ``state_dict()`` keys and shapes equal the official ones.

Differences from upstream, none of which changes a weight or a result:
    * attention runs through ``F.scaled_dot_product_attention``
      (:func:`baselines._swin_common.window_attention`, oracle ``window_attention_ref``);
    * the shifted-window mask is built at forward time for the actual padded size
      (one cached entry) instead of a persistent ``attn_mask`` buffer sized for
      ``img_size``, so any input size works; ``relative_position_index`` is a
      non-persistent buffer. Both are dropped from official checkpoints by
      :func:`checkpoint_filter_fn` (``relative_position_index`` is checked first);
    * ``mean`` is a non-persistent buffer (upstream: a plain tensor attribute; not in
      either state_dict);
    * ``img_size`` only documents the training patch (upstream uses it to size
      ``attn_mask`` and to shrink the window when ``img_size <= window_size``;
      that case is refused here);
    * absolute position embedding (``ape``), ``patch_size != 1``, ``qk_scale`` and
      the ``''`` (denoising / JPEG, x1) upsampler are not carried over.

Padding: as upstream's ``check_image_size``, reflect-pad bottom/right to a multiple
of the window inside ``forward`` and crop the output to (s*h, s*w). (The official
test script instead pre-pads by 1..ws rows with a flipped copy; outputs differ only
near the bottom/right border.)

Complexity note: Table 1 of the MambaCSR paper appears to print the SwinIR and
Swin2SR rows swapped: its "SwinIR 8.72 M / 37.17 G" is, per the lead's thop run,
thop's count for Swin2SR, and "Swin2SR 11.67 M / 52.96 G" thop's count for SwinIR
real_sr x4. The true parameter count of :func:`swinir` is 11,715,559; thop counts are
reproduced by ``harness/complexity.py``, not here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines._swin_common import (
    ShiftMaskCache,
    SwinTransformerBlock,
    filter_recomputed,
    validate_swin_config,
)
from mambacsr.layers import (
    DIV2K_RGB_MEAN,
    BasicLayer,
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
    "SwinIR",
    "SwinIRConfig",
    "checkpoint_filter_fn",
    "smoke",
    "swinir",
    "swinir_classical_x2",
    "swinir_classical_x4",
]

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv")


@dataclass(frozen=True)
class SwinIRConfig:
    """SwinIR hyper-parameters (upstream constructor arguments of the same names).

    Defaults are :func:`swinir` (real_sr x4, as ``main_test_swinir.py`` builds it).

    Args:
        upscale: scale factor s (2^n or 3 for pixelshuffle; 2 or 4 for nearest+conv).
        in_chans: image channels (3: RGB mean subtracted; else no mean).
        img_size: training LR patch size (documentation only; see module docstring).
        embed_dim: token channels C.
        depths: blocks per residual Swin Transformer block (RSTB).
        num_heads: attention heads per RSTB.
        window_size: attention window side ws; inputs are padded to a multiple of it.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after attention projection and in the MLP.
        attn_drop_rate: dropout on attention weights (must be 0; fused attention).
        drop_path_rate: stochastic depth, linear from 0 over all blocks (upstream default 0.1).
        patch_norm: LayerNorm after the patch embedding (``patch_embed.norm``).
        img_range: scale after mean subtraction (1.0 or 255.0).
        upsampler: ``pixelshuffle`` (classical), ``pixelshuffledirect`` (lightweight),
            ``nearest+conv`` (real-world).
        resi_connection: ``1conv`` or ``3conv`` conv at the end of each RSTB and the body.
        num_feat: reconstruction channels (upstream hard-codes 64).
        use_checkpoint: gradient checkpointing per block (saves memory, same result).
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
    upsampler: str = "nearest+conv"
    resi_connection: str = "1conv"
    num_feat: int = 64
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        validate_swin_config(self, "SwinIRConfig", UPSAMPLERS)
        if self.upsampler == "nearest+conv" and self.upscale not in (2, 4):
            raise ValueError(f"SwinIRConfig.upscale={self.upscale}: 'nearest+conv' supports 2 and 4")


def swin_blocks(dim: int, depth: int, num_heads: int, cfg: SwinIRConfig, drop_path: list[float]) -> BasicLayer:
    """``depth`` Swin v1 blocks alternating W-MSA / SW-MSA (upstream ``residual_group``; keys ``blocks.<i>``).

    ``cfg`` supplies ``window_size, mlp_ratio, qkv_bias, drop_rate, use_checkpoint``
    (an :class:`SwinIRConfig` or HST's config).
    """
    ws = cfg.window_size
    return BasicLayer([SwinTransformerBlock(dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2, cfg.mlp_ratio,
                                            cfg.qkv_bias, cfg.drop_rate, drop_path[i]) for i in range(depth)],
                      cfg.use_checkpoint)


class SwinIR(nn.Module):
    """SwinIR for super-resolution: (B, C, h, w) in [0, 1] -> (B, C, s*h, s*w).

    Args:
        cfg: the frozen :class:`SwinIRConfig`.
    """

    def __init__(self, cfg: SwinIRConfig) -> None:
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
        self.patch_embed = PatchEmbed(c, norm=cfg.patch_norm)
        self.patch_unembed = PatchUnEmbed()
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = linear_drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            start = sum(cfg.depths[:i])
            blocks = swin_blocks(c, depth, heads, cfg, dpr[start:start + depth])
            self.layers.append(ResidualGroup(blocks, c, cfg.resi_connection))
        self.norm = nn.LayerNorm(c)
        self.conv_after_body = residual_conv(c, cfg.resi_connection)
        # 3. reconstruction
        if cfg.upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(cfg.upscale, nf)
            self.conv_last = nn.Conv2d(nf, ch, 3, 1, 1)
        elif cfg.upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(cfg.upscale, c, ch)
        else:  # nearest+conv
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
            if cfg.upscale == 4:
                self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, ch, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W), H and W multiples of ws -> (B, C, H, W)."""
        x_size = (x.shape[2], x.shape[3])
        mask = self.shift_mask(x_size, x.device)
        x = self.pos_drop(self.patch_embed(x))                              # B, H*W, C
        for layer in self.layers:
            x = layer(x, x_size, mask)
        return self.patch_unembed(self.norm(x), x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: (B, in_chans, h, w) in [0, 1], any h, w >= 1.

        Returns:
            (B, in_chans, s*h, s*w), about [0, 1] (not clamped).
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"SwinIR expects (B, {self.cfg.in_chans}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size, mode="reflect")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        elif self.upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        else:  # nearest+conv
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
            if self.upscale == 4:
                x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        x = x / self.img_range + mean
        return x[:, :, : h * self.upscale, : w * self.upscale]


# Buffers upstream saves that this model recomputes: attn_mask depends on img_size
# (dropped unchecked); the others depend only on the window and are checked.
_SIZE_DEPENDENT = ("attn_mask",)
_RECOMPUTED = ("relative_position_index",)


def checkpoint_filter_fn(state_dict: dict, model: SwinIR) -> dict:
    """Adapt an official SwinIR checkpoint to :class:`SwinIR` (then ``load_state_dict(strict=True)``).

    Unwraps ``params_ema`` (preferred) / ``params``; strips ``module.``; drops
    ``attn_mask`` (sized for the training ``img_size``; recomputed per input);
    checks and drops ``relative_position_index`` (a non-persistent buffer here).

    Args:
        state_dict: ``torch.load`` result of an upstream ``.pth``.
        model: the model that will load it.

    Returns:
        A plain ``{key: tensor}`` dict matching ``model.state_dict()``.
    """
    sd, _ = unwrap_state_dict(state_dict, "SwinIR checkpoint_filter_fn")
    return filter_recomputed(sd, model, "SwinIR", _SIZE_DEPENDENT, _RECOMPUTED)


def swinir() -> SwinIRConfig:
    """SwinIR-M real-world SR x4 (``main_test_swinir.py --task real_sr --scale 4``): 11,715,559 params.

    Official weights: ``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth`` (key ``params_ema``),
    https://github.com/JingyunLiang/SwinIR/releases/tag/v0.0, Apache-2.0.
    """
    return SwinIRConfig(upscale=4, img_size=64, upsampler="nearest+conv")


def swinir_classical_x4() -> SwinIRConfig:
    """SwinIR-M classical SR x4 (``--task classical_sr --scale 4``, pixelshuffle): 11,900,199 params.

    Official weights: ``001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth`` (or ``DIV2K_s48w8``; key ``params``).
    """
    return SwinIRConfig(upscale=4, img_size=64, upsampler="pixelshuffle")


def swinir_classical_x2() -> SwinIRConfig:
    """SwinIR-M classical SR x2 (``--task classical_sr --scale 2``, pixelshuffle): 11,752,487 params.

    Official weights: ``001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth`` (key ``params``).
    """
    return SwinIRConfig(upscale=2, img_size=64, upsampler="pixelshuffle")


# Released weights (timm ``_cfg`` style, plain data; read by ``harness.released``). Official test:
# main_test_swinir.py --task classical_sr: whole image (no tile), mirror-padded to a multiple of the
# window (8), no self-ensemble, PSNR-Y with crop_border = scale.
_SWINIR_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
RELEASED_WEIGHTS = {
    "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth": {
        "model": "swinir_classical_x2", "url": _SWINIR_RELEASE + "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth",
        "sha256": "2032ebf8f401dd3ce2fae5f3852117cb72101ec6ed8358faa64c2a3fa09ed4ac",
        "sha256_note": "not published by the authors; from a third-party install manifest (67,277,475 bytes), "
                       "not verified here",
        "params_key": "params", "license": "Apache-2.0",
        "train_data": "DF2K (DIV2K + Flickr2K), LR patch 64, window 8",
        "degradation": {"scale": 2, "codec": "none", "level": 0, "how": "MATLAB bicubic x2"},
        "eval": {"tile": 0, "tile_overlap": 0, "pad_multiple": 8, "self_ensemble": False, "crop_border": 2,
                 "note": "main_test_swinir.py: whole image, padded to a multiple of 8 by flipping"},
        "official": {},
    },
    "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth": {
        "model": "swinir_classical_x4", "url": _SWINIR_RELEASE + "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth",
        "sha256": None, "sha256_note": "not published by the authors; not downloadable here",
        "params_key": "params", "license": "Apache-2.0",
        "train_data": "DF2K (DIV2K + Flickr2K), LR patch 64, window 8",
        "degradation": {"scale": 4, "codec": "none", "level": 0, "how": "MATLAB bicubic x4"},
        "eval": {"tile": 0, "tile_overlap": 0, "pad_multiple": 8, "self_ensemble": False, "crop_border": 4,
                 "note": "main_test_swinir.py: whole image, padded to a multiple of 8 by flipping"},
        "official": {},
    },
}


def smoke(cfg: SwinIRConfig) -> SwinIRConfig:
    """Reduced copy on the same code path: C=24, 2 RSTBs of 2 blocks, 2 heads, ws 4, same upscale."""
    return dataclasses.replace(cfg, embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=4,
                               mlp_ratio=2.0, num_feat=16, img_size=16)
