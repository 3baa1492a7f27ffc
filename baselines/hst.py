"""HST: Hierarchical Swin Transformer for Compressed Image Super-resolution.

Li, Li, Lu, Liu, Feng, Chen, ECCV 2022 Workshops (AIM 2022 compressed image SR
challenge), arXiv:2208.09885.
Upstream: ``github:lixinustc/HST-for-Compressed-Image-SR`` @ 48f37baf80a7a688690e2c3d5e7b84788eb9a272
(``model.py``, ``swin_block.py``, ``test_HST.py``). The repository has no LICENSE file;
its ``swin_block.py`` is SwinIR's (Apache-2.0). Rewritten for csrbench; module
attribute names follow upstream, so ``state_dict()`` keys and shapes equal the
official ones (``conv1``/``conv2``/``conv3``, ``GRSTB_1``/``_2``/``_3`` with
``layers.<i>.residual_group.blocks.<j>.attn.qkv``, ``patch_embed.norm``, ``norm``,
``conv_after_grstb1..3``, ``upconv1``/``upconv2``, ``conv_fuse_1``/``_2``,
``conv_before_up.0``, ``upsample.0``/``.2``, ``conv_last``).

Structure (three scales, C_l, C_m, C_h = ``num_features``)::

    x --conv3 7x7------------------------------------------> x_h (C_h, H)
    x --conv1 5x5/2--> x_m (C_m, H/2) --conv2 3x3/2--> x_l (C_l, H/4)
    x_l = conv_after_grstb1(GRSTB_1(x_l)) + x_l                        # 2 RSTBs
    x_lm = conv_fuse_1(cat[PS2(upconv1(x_l)), x_m])                    # 2*C_m, H/2
    x_lm = conv_after_grstb2(GRSTB_2(x_lm)) + x_lm                     # 4 RSTBs
    x_h = conv_fuse_2(cat[PS2(upconv2(x_lm)), x_h])                    # 3*C_h, H
    x_h = conv_after_grstb3(GRSTB_3(x_h)) + x_h                        # 6 RSTBs
    out = conv_last(upsample(conv_before_up(x_h))) + mean

A GRSTB is SwinIR's body: LayerNorm patch embedding, RSTBs (Swin blocks
alternating W-MSA / SW-MSA, a 3x3 conv, residual), LayerNorm.

Differences from upstream, none of which changes a weight or a result:
    * attention runs through ``F.scaled_dot_product_attention``
      (:func:`baselines._swin_common.window_attention`, oracle ``window_attention_ref``);
    * the shifted-window masks are built at forward time for each scale's padded
      size (cached) instead of persistent ``attn_mask`` buffers sized for ``img_size``;
      ``relative_position_index`` is a non-persistent buffer; both are dropped from
      official checkpoints by :func:`checkpoint_filter_fn` (the index is checked first);
    * ``mean`` is a non-persistent buffer (upstream: a plain tensor attribute);
    * padding: the official ``test_HST.py`` pads the LR image bottom/right with a
      flipped copy (symmetric padding) to a multiple of ``upscale * window_size``
      = 32, always adding 1..32 rows/columns, and crops the output; the model's own
      ``check_image_size`` then replicate-pads to a multiple of 8 (a no-op after
      that). Here ``forward`` pads symmetrically to the smallest multiple of
      ``4 * window_size`` (the quarter-scale map must tile into windows; 32 for the
      official config), adding nothing when h, w already are multiples (as in
      training on 64 x 64 patches), so outputs differ from the test script only near
      the bottom/right border when h or w is a multiple of 32;
    * ``upscale`` other than 4 uses the SwinIR pixel-shuffle ``Upsample`` (upstream
      hard-codes two x2 steps; same keys at x4);
    * ``img_size`` only documents the training patch (upstream sizes ``attn_mask``
      with it and shrinks the window when ``img_size // 4 <= window_size``; refused);
    * ``in_chans`` other than 3 subtracts no mean (upstream is RGB only).

Complexity: :func:`hst` (``HST(img_size=64)``) has 16,582,179 parameters (sum of
numel, equal to the official module). Table 1 of the MambaCSR paper prints
16.48 M / 54.95 G; thop at 1x3x64x64 gives 16.485 M / 54.95 GMACs (thop skips the
relative-position bias tables). Those counts are reproduced by
``harness/complexity.py``, not here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from baselines._swin_common import ShiftMaskCache, filter_recomputed
from baselines.swinir import swin_blocks
from mambacsr.layers import (
    DIV2K_RGB_MEAN,
    PatchEmbed,
    PatchUnEmbed,
    ResidualGroup,
    Upsample,
    init_weights,
    is_pixelshuffle_scale,
    linear_drop_path_rates,
    pad_symmetric,
    unwrap_state_dict,
)

__all__ = ["HST", "HSTConfig", "checkpoint_filter_fn", "hst", "pad_symmetric", "smoke"]



@dataclass(frozen=True)
class HSTConfig:
    """HST hyper-parameters. Defaults are :func:`hst` (``HST(img_size=64)``, x4).

    Upstream's constructor takes only ``img_size``, ``num_features``, ``scale`` and
    ``window_size``; the per-scale depths and heads, MLP ratio and drop-path rate
    are its hard-coded values, exposed here so :func:`smoke` can shrink them.

    Args:
        upscale: scale factor s (upstream ``scale``; 2^n or 3, official 4).
        in_chans: image channels (3: RGB mean subtracted; else no mean).
        img_range: scale after mean subtraction (upstream: none, i.e. 1.0).
        img_size: training LR patch size (documentation only; img_size // 4 must exceed window_size).
        num_features: (C_l, C_m, C_h); the GRSTBs run at C_l, 2*C_m and 3*C_h channels.
        depths_low, num_heads_low: blocks / heads per RSTB of ``GRSTB_1`` (quarter scale).
        depths_mid, num_heads_mid: of ``GRSTB_2`` (half scale).
        depths_high, num_heads_high: of ``GRSTB_3`` (full scale).
        window_size: attention window side ws; inputs are padded to a multiple of 4*ws.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after attention projection, in the MLP and after the embedding.
        drop_path_rate: stochastic depth, linear from 0 over each GRSTB's blocks (upstream 0.1).
        patch_norm: LayerNorm after each GRSTB's patch embedding (``patch_embed.norm``).
        resi_connection: ``1conv`` or ``3conv`` conv at the end of each RSTB.
        num_feat: reconstruction channels (upstream hard-codes 64).
        use_checkpoint: gradient checkpointing per Swin block (saves memory, same result).
    """

    upscale: int = 4
    in_chans: int = 3
    img_range: float = 1.0
    img_size: int = 64
    num_features: tuple[int, int, int] = (60, 60, 60)
    depths_low: tuple[int, ...] = (6, 6)
    num_heads_low: tuple[int, ...] = (6, 6)
    depths_mid: tuple[int, ...] = (6, 6, 6, 6)
    num_heads_mid: tuple[int, ...] = (6, 6, 6, 6)
    depths_high: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads_high: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    patch_norm: bool = True
    resi_connection: str = "1conv"
    num_feat: int = 64
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        name = "HSTConfig"
        if len(self.num_features) != 3 or min(self.num_features) < 1:
            raise ValueError(f"{name}.num_features={self.num_features} must be three positive ints (low, mid, high)")
        c_l, c_m, c_h = self.num_features
        for scale, dim, depths, heads in (("low", c_l, self.depths_low, self.num_heads_low),
                                          ("mid", 2 * c_m, self.depths_mid, self.num_heads_mid),
                                          ("high", 3 * c_h, self.depths_high, self.num_heads_high)):
            if len(depths) != len(heads) or not depths:
                raise ValueError(f"{name}.depths_{scale} {depths} and num_heads_{scale} {heads} "
                                 "must be non-empty and the same length")
            for h in heads:
                if h < 1 or dim % h:
                    raise ValueError(f"{name}.num_heads_{scale}: {h} does not divide the {scale}-scale width {dim}")
        if self.window_size < 2:
            raise ValueError(f"{name}.window_size={self.window_size} must be >= 2")
        if self.img_size // 4 <= self.window_size:
            raise ValueError(f"{name}.img_size={self.img_size}: img_size // 4 must exceed window_size="
                             f"{self.window_size} (upstream would silently shrink the quarter-scale window)")
        if not is_pixelshuffle_scale(self.upscale):
            raise ValueError(f"{name}.upscale={self.upscale}: pixelshuffle supports 2^n and 3")
        if self.resi_connection not in ("1conv", "3conv"):
            raise ValueError(f"{name}.resi_connection={self.resi_connection!r} is not '1conv' or '3conv'")


class GRSTB(nn.Module):
    """Group of RSTBs at one scale (a SwinIR body): (B, C, H, W) -> (B, C, H, W).

    LayerNorm patch embedding (``patch_embed.norm``) -> dropout -> RSTBs ->
    LayerNorm (``norm``) -> back to a map. Stochastic depth rises linearly from 0
    to ``cfg.drop_path_rate`` over this group's blocks (upstream, per group).

    Args:
        cfg: the model config (shared fields).
        dim: channels C at this scale.
        depths: blocks per RSTB.
        num_heads: heads per RSTB.
    """

    def __init__(self, cfg: HSTConfig, dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...]) -> None:
        super().__init__()
        dpr = linear_drop_path_rates(cfg.drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            blocks = swin_blocks(dim, depth, heads, cfg, dpr[start:start + depth])
            self.layers.append(ResidualGroup(blocks, dim, cfg.resi_connection))
        self.patch_embed = PatchEmbed(dim, norm=cfg.patch_norm)
        self.patch_unembed = PatchUnEmbed()
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, C, H, W), H and W multiples of ws; mask: (nW, N, N) for (H, W) -> (B, C, H, W)."""
        x_size = (x.shape[2], x.shape[3])
        x = self.pos_drop(self.patch_embed(x))                           # B, H*W, C
        for layer in self.layers:
            x = layer(x, x_size, mask)
        return self.patch_unembed(self.norm(x), x_size)


class HST(nn.Module):
    """Hierarchical Swin Transformer for compressed SR: (B, C, h, w) in [0, 1] -> (B, C, s*h, s*w).

    Args:
        cfg: the frozen :class:`HSTConfig`.
    """

    def __init__(self, cfg: HSTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c_l, c_m, c_h = cfg.num_features
        ch, nf = cfg.in_chans, cfg.num_feat
        self.upscale = cfg.upscale
        self.window_size = cfg.window_size
        self.img_range = cfg.img_range
        mean = DIV2K_RGB_MEAN if ch == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        # one mask per scale, for at most two input sizes
        self.shift_mask = ShiftMaskCache(cfg.window_size, cfg.window_size // 2, max_entries=6)

        self.GRSTB_1 = GRSTB(cfg, c_l, cfg.depths_low, cfg.num_heads_low)
        self.conv_after_grstb1 = nn.Conv2d(c_l, c_l, 3, 1, 1)
        self.GRSTB_2 = GRSTB(cfg, c_m * 2, cfg.depths_mid, cfg.num_heads_mid)
        self.conv_after_grstb2 = nn.Conv2d(c_m * 2, c_m * 2, 3, 1, 1)
        self.GRSTB_3 = GRSTB(cfg, c_h * 3, cfg.depths_high, cfg.num_heads_high)
        self.conv_after_grstb3 = nn.Conv2d(c_h * 3, c_h * 3, 3, 1, 1)

        self.conv_fuse_1 = nn.Conv2d(c_m * 2, c_m * 2, 1, 1, 0)
        self.conv_fuse_2 = nn.Conv2d(c_h * 3, c_h * 3, 1, 1, 0)

        self.conv1 = nn.Conv2d(ch, c_m, kernel_size=5, stride=2, padding=2)     # -> H/2
        self.conv2 = nn.Conv2d(c_m, c_l, kernel_size=3, stride=2, padding=1)    # -> H/4
        self.conv3 = nn.Conv2d(ch, c_h, kernel_size=7, stride=1, padding=3)     # -> H

        self.up = nn.PixelShuffle(2)
        self.upconv1 = nn.Conv2d(c_l, c_m * 4, kernel_size=3, stride=1, padding=1)
        self.upconv2 = nn.Conv2d(c_m * 2, c_h * 8, kernel_size=3, stride=1, padding=1)

        self.conv_before_up = nn.Sequential(nn.Conv2d(c_h * 3, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(cfg.upscale, nf)
        self.conv_last = nn.Conv2d(nf, ch, kernel_size=3, stride=1, padding=1)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: (B, in_chans, h, w) in [0, 1], any h, w >= 1.

        Returns:
            (B, in_chans, s*h, s*w), about [0, 1] (not clamped).
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"HST expects (B, {self.cfg.in_chans}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = pad_symmetric(x, 4 * self.window_size)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x_m = self.conv1(x)                                              # B, C_m, H/2, W/2
        x_l = self.conv2(x_m)                                            # B, C_l, H/4, W/4
        x_h = self.conv3(x)                                              # B, C_h, H, W

        x_l = self.conv_after_grstb1(self.GRSTB_1(x_l, self.shift_mask(x_l.shape[-2:], x.device))) + x_l
        x_lm = self.conv_fuse_1(torch.cat([self.up(self.upconv1(x_l)), x_m], dim=1))      # B, 2C_m, H/2
        x_lm = self.conv_after_grstb2(self.GRSTB_2(x_lm, self.shift_mask(x_lm.shape[-2:], x.device))) + x_lm
        x_h = self.conv_fuse_2(torch.cat([self.up(self.upconv2(x_lm)), x_h], dim=1))      # B, 3C_h, H
        x_h = self.conv_after_grstb3(self.GRSTB_3(x_h, self.shift_mask(x_h.shape[-2:], x.device))) + x_h

        x = self.conv_last(self.upsample(self.conv_before_up(x_h)))
        x = x / self.img_range + mean
        return x[:, :, : h * self.upscale, : w * self.upscale]


# Buffers upstream saves: attn_mask depends on img_size (dropped unchecked);
# relative_position_index only on the window (checked against the model's, then dropped).
_SIZE_DEPENDENT = ("attn_mask",)
_RECOMPUTED = ("relative_position_index",)


def checkpoint_filter_fn(state_dict: dict, model: HST) -> dict:
    """Adapt an official HST checkpoint to :class:`HST` (then ``load_state_dict(strict=True)``).

    The released ``model_comp*.pt`` files are plain state dicts (``test_HST.py``
    loads them directly); ``params_ema`` / ``params`` / ``state_dict`` / ``model``
    wrappers and a DataParallel ``module.`` prefix are stripped too. Drops every
    ``attn_mask``; checks every ``relative_position_index`` against the model's and
    drops it.

    Args:
        state_dict: ``torch.load`` result of an upstream checkpoint.
        model: the model that will load it.

    Returns:
        A plain ``{key: tensor}`` dict matching ``model.state_dict()``.

    Raises:
        TypeError: not a dict.
        ValueError: a checked index differs from the model's (other window_size), naming the key.
    """
    sd, _ = unwrap_state_dict(state_dict, "HST checkpoint_filter_fn")
    return filter_recomputed(sd, model, "HST", _SIZE_DEPENDENT, _RECOMPUTED)


def hst() -> HSTConfig:
    """HST x4 as ``test_HST.py`` builds it (``HST(img_size=64)``): 16,582,179 params.

    Features (60, 60, 60) -> GRSTB widths 60 / 120 / 180 with 2 / 4 / 6 RSTBs of
    6 blocks, 6 heads, ws 8. Official weights: ``checkpoint_comp{10,20,30,40}_x4``
    (Google Drive links in the upstream README; plain state dicts).
    """
    return HSTConfig()


# Released weights (timm ``_cfg`` style, plain data; read by ``harness.released``). Official test:
# test.sh / test_HST.py ``--ckpt checkpoint/model_comp<QF>.pt``: plain state dict, whole image.
RELEASED_WEIGHTS = {
    "model_comp10.pt": {
        "model": "hst", "url": "https://drive.google.com/file/d/1ZtGxO6ghT1YFLgu_PIHBt7VpDV52CsjS/view",
        "sha256": None, "sha256_note": "the authors publish no hash; Google Drive cannot be fetched here (the "
                                       "Drive item is titled checkpoint_comp10_x4; test.sh names it model_comp<QF>.pt)",
        "params_key": None, "license": "see the upstream LICENSE",
        "train_data": "DIV2K + Flickr2K, SR pre-training then AIM 2022 compressed-input SR",
        "degradation": {"scale": 4, "codec": "jpeg", "level": 10, "how": "bicubic x4 then JPEG quality 10"},
        "eval": {"tile": 0, "tile_overlap": 0, "pad_multiple": 8, "self_ensemble": False, "crop_border": 4,
                 "note": "test_HST.py: whole image"},
        "official": {},
    },
}


def smoke(cfg: HSTConfig) -> HSTConfig:
    """Reduced copy on the same code path, all three scales kept.

    Features (16, 12, 8) -> GRSTB widths 16 / 24 / 24, one RSTB of 2 blocks per
    scale (W-MSA + SW-MSA), 2 heads, ws 4 (pad multiple 16), same upscale.
    """
    return dataclasses.replace(cfg, num_features=(16, 12, 8), depths_low=(2,), num_heads_low=(2,),
                               depths_mid=(2,), num_heads_mid=(2,), depths_high=(2,), num_heads_high=(2,),
                               window_size=4, mlp_ratio=2.0, num_feat=16, img_size=32)
