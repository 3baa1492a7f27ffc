"""MambaIR: A Simple Baseline for Image Restoration with State-Space Model.

Guo, Li, Dai, Ouyang, Ren, Xia, ECCV 2024, arXiv:2402.15648.
Upstream: ``github:csguoh/MambaIR`` @ 33d7b3460c4665229334cc8de38c7f4c766ed3be
(``basicsr/archs/mambair_arch.py``, last changed in c308c30;
``options/train/mambair/train_MambaIR_{SR_x4,SR_x2,lightSR_x2}.yml``), Apache-2.0.
Rewritten for csrbench; module and parameter names follow upstream so ``state_dict()``
keys and shapes equal the official ones (``conv_first``, ``patch_embed.norm``,
``layers.<i>.residual_group.blocks.<j>.self_attention.{in_proj, conv2d, x_proj_weight,
dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm, out_proj}``, ``...blocks.<j>.
{ln_1, skip_scale, conv_blk.cab, ln_2, skip_scale2}``, ``layers.<i>.conv``, ``norm``,
``conv_after_body``, ``conv_before_upsample``, ``upsample``, ``conv_last``).

Structure: conv_first -> RSSG x len(depths) (each: VSSBlocks, then a 3x3 conv, plus a
residual) -> LayerNorm -> conv_after_body (+ shallow residual) -> upsampler.
VSSBlock (tokens (B, H, W, C))::

    x = x * skip_scale  + drop_path(SS2D(ln_1(x)))
    x = x * skip_scale2 + CAB(ln_2(x))

SS2D scans the depth-wise-convolved map in 4 directions (row-major, column-major and
both reversed) with one selective scan of 4 groups (``mambacsr.ops.selective_scan``,
the semantics of mamba_ssm's ``selective_scan_fn``), then sums the 4 outputs in the
original pixel order.

Differences from upstream, none of which changes a weight or a result:
    * ``mean`` is a non-persistent buffer (upstream: a plain tensor attribute; in
      neither state_dict);
    * gradient checkpointing passes ``x_size`` (upstream's ``use_checkpoint`` path
      calls ``checkpoint(blk, x)`` and would fail);
    * the unused ``img_size``/``patch_size`` (patch size 1 only), the denoising (x1)
      upsampler and the dead classes (``Mlp``, ``Attention``, ``DynamicPosBias``) are
      not carried over;
    * the CAB squeeze factor (30 upstream) and the reconstruction width ``num_feat``
      (64 upstream) are config fields so that :func:`smoke` can shrink them.

Input size: MambaIR has no windows, so ``forward`` takes any (h, w) unpadded, as the
network does upstream. The official *test* (``MambaIRModel.test``) additionally
splits images wider/taller than 200 px into overlapping tiles; that is an evaluation
strategy, not part of this module.

Complexity note: the true parameter count of :func:`mambair` (classic SR x4) is
20,569,575. Table 1 of the MambaCSR paper prints MambaIR as 16.70 M / 82.3 G: thop
gives 16.720 M because it counts only module parameters and misses the raw
``nn.Parameter``s of SS2D (``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``,
``A_logs``, ``Ds``) and the blocks' ``skip_scale``/``skip_scale2``; fvcore with the
selective scan uncounted gives 82.20 G at a 1x3x64x64 input. The upstream README
(2024-08-19 note, issue #44) acknowledges the thop bug and ships an fvcore script
(``analysis/flops_param_fvcore.py``). Those counts are reproduced by
``harness/complexity.py``, not here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mambacsr.layers import (
    CAB,
    DIV2K_RGB_MEAN,
    BasicLayer,
    ChannelAttention,
    DropPath,
    PatchEmbed,
    ResidualGroup,
    Upsample,
    UpsampleOneStep,
    init_weights,
    is_pixelshuffle_scale,
    linear_drop_path_rates,
    residual_conv,
    unwrap_state_dict,
)
from mambacsr.ops import selective_scan

__all__ = [
    "MambaIR",
    "MambaIRConfig",
    "SS2D",
    "VSSBlock",
    "checkpoint_filter_fn",
    "cross_merge",
    "cross_scan",
    "mambair",
    "mambair_light_x2",
    "mambair_x2",
    "smoke",
]

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
K_DIRECTIONS = 4
# SS2D initialisation constants (upstream SS2D defaults; MambaIR never overrides them).
DT_MIN, DT_MAX, DT_INIT_FLOOR, DT_SCALE = 1e-3, 1e-1, 1e-4, 1.0


@dataclass(frozen=True)
class MambaIRConfig:
    """MambaIR hyper-parameters (upstream constructor arguments of the same names).

    Defaults are :func:`mambair` (classic SR x4, ``train_MambaIR_SR_x4.yml``).

    Args:
        upscale: scale factor s (2^n or 3 for ``pixelshuffle``; any >= 1 for ``pixelshuffledirect``).
        in_chans: image channels (3: RGB mean subtracted; else no mean).
        embed_dim: token channels C.
        depths: VSSBlocks per residual state-space group (RSSG).
        d_state: SSM state size N.
        mlp_ratio: SS2D expansion, d_inner = int(mlp_ratio * C) (upstream passes it as ``expand``).
        d_conv: SS2D depth-wise conv kernel.
        dt_rank: rank R of the step-size projection; ``None`` = ceil(C / 16) (upstream "auto").
        drop_rate: dropout after the patch embedding (``pos_drop``).
        drop_path_rate: stochastic depth on the SS2D branch, linear from 0 over all blocks
            (upstream default 0.1; the option files do not set it).
        patch_norm: LayerNorm after the patch embedding (``patch_embed.norm``).
        img_range: scale after mean subtraction (1.0 or 255.0).
        upsampler: ``pixelshuffle`` (classic SR) or ``pixelshuffledirect`` (lightweight SR,
            which also switches CAB to its dilated depth-wise form, as upstream).
        resi_connection: ``1conv`` or ``3conv`` conv at the end of each RSSG and the body.
        squeeze_factor: channel-attention reduction in CAB (upstream 30).
        num_feat: reconstruction channels of ``pixelshuffle`` (upstream hard-codes 64).
        use_checkpoint: gradient checkpointing per block (saves memory, same result).
    """

    upscale: int = 4
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    d_state: int = 16
    mlp_ratio: float = 2.0
    d_conv: int = 3
    dt_rank: int | None = None
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    patch_norm: bool = True
    img_range: float = 1.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    squeeze_factor: int = 30
    num_feat: int = 64
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        name = "MambaIRConfig"
        if not self.depths or any(d < 1 for d in self.depths):
            raise ValueError(f"{name}.depths={self.depths} must be non-empty positive ints")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"{name}.upsampler={self.upsampler!r} is not one of {UPSAMPLERS}")
        if self.upscale < 1:
            raise ValueError(f"{name}.upscale={self.upscale} must be >= 1")
        if self.upsampler == "pixelshuffle" and not is_pixelshuffle_scale(self.upscale):
            raise ValueError(f"{name}.upscale={self.upscale}: 'pixelshuffle' supports 2^n and 3")
        if self.resi_connection not in ("1conv", "3conv"):
            raise ValueError(f"{name}.resi_connection={self.resi_connection!r} is not '1conv' or '3conv'")
        if self.embed_dim // self.squeeze_factor < 1:
            raise ValueError(f"{name}.embed_dim={self.embed_dim} // squeeze_factor={self.squeeze_factor} "
                             "leaves no channel-attention channel")
        if int(self.mlp_ratio * self.embed_dim) < 1 or self.d_state < 1 or self.d_conv % 2 != 1:
            raise ValueError(f"{name}: mlp_ratio={self.mlp_ratio}, d_state={self.d_state}, d_conv={self.d_conv} "
                             "must give d_inner >= 1, d_state >= 1 and an odd d_conv")
        if self.dt_rank is not None and self.dt_rank < 1:
            raise ValueError(f"{name}.dt_rank={self.dt_rank} must be None (auto) or >= 1")

    @property
    def is_light_sr(self) -> bool:
        """Upstream's ``is_light_sr``: True for the ``pixelshuffledirect`` (lightweight) model."""
        return self.upsampler == "pixelshuffledirect"


# ----------------------------------------------------------------------------- helpers


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """Unfold a map into MambaIR's 4 scan sequences.

    Args:
        x: (B, D, H, W).

    Returns:
        (B, 4, D, L), L = H*W: [row-major, column-major, row-major reversed,
        column-major reversed].
    """
    b, d, h, w = x.shape
    hw = x.reshape(b, d, h * w)
    wh = x.transpose(2, 3).reshape(b, d, h * w)
    xs = torch.stack([hw, wh], dim=1)                                   # B, 2, D, L
    return torch.cat([xs, xs.flip(-1)], dim=1)                          # B, 4, D, L


def cross_merge(ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`cross_scan`, summed: bring each direction back to row-major order.

    Args:
        ys: (B, 4, D, L) per-direction outputs in their scan order.
        h: map height H.
        w: map width W.

    Returns:
        (B, D, L) row-major sum of the 4 directions.
    """
    b, k, d, n = ys.shape
    if k != K_DIRECTIONS or n != h * w:
        raise ValueError(f"cross_merge: expected (B, 4, D, {h}*{w}), got {tuple(ys.shape)}")
    inv = ys[:, 2:4].flip(-1)                                           # B, 2, D, L
    col = torch.stack([ys[:, 1], inv[:, 1]], dim=1).view(b, 2, d, w, h)
    col = col.transpose(3, 4).reshape(b, 2, d, n)                       # back to row-major
    return ys[:, 0] + inv[:, 0] + col[:, 0] + col[:, 1]


# ----------------------------------------------------------------------------- blocks


class LightCAB(nn.Module):
    """MambaIR's lightweight channel attention block (``is_light_sr``; keys ``cab.<i>``).

    conv1x1 (C -> C/2), dw-conv3x3, GELU, conv1x1 (-> C), dilated (2) dw-conv3x3,
    channel attention. The classic form is :class:`mambacsr.layers.CAB` with compress ratio 3.

    Args:
        num_feat: channels C.
        squeeze_factor: channel-attention reduction.
    """

    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        mid = num_feat // 2
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, mid, 1, 1, 0),
            nn.Conv2d(mid, mid, 3, 1, 1, groups=mid),
            nn.GELU(),
            nn.Conv2d(mid, num_feat, 1, 1, 0),
            nn.Conv2d(num_feat, num_feat, 3, 1, padding=2, groups=num_feat, dilation=2),
            ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.cab(x)


def _dt_bias_init(k: int, d_inner: int) -> torch.Tensor:
    """(K, D) softplus^-1 of dt ~ log-uniform(DT_MIN, DT_MAX), floored (upstream ``dt_init``)."""
    dt = torch.exp(torch.rand(k, d_inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
    dt = dt.clamp(min=DT_INIT_FLOOR)
    return dt + torch.log(-torch.expm1(-dt))


class SS2D(nn.Module):
    """2-D selective scan over 4 directions (MambaIR's SS2D).

    Input and output are channels-last token maps (B, H, W, C).

    Args:
        d_model: channels C.
        d_state: state size N.
        d_conv: depth-wise conv kernel.
        expand: d_inner = int(expand * C).
        dt_rank: step-size projection rank R; ``None`` = ceil(C / 16).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: float = 2.0,
                 dt_rank: int | None = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(expand * d_model)
        self.dt_rank = dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        k = K_DIRECTIONS

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        self.act = nn.SiLU()
        # Upstream builds 4 nn.Linear / dt_proj modules, stacks their weights and deletes them;
        # the same initial distributions, directly as stacked parameters:
        bound = d_inner ** -0.5                                         # nn.Linear default init
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        dt_std = dt_rank ** -0.5 * DT_SCALE                             # dt_init="random"
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-dt_std, dt_std))
        self.dt_projs_bias = nn.Parameter(_dt_bias_init(k, d_inner))    # K, D
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))                        # K*D, N (S4D-real)
        self.Ds = nn.Parameter(torch.ones(k * d_inner))                 # K*D
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """Scan (B, D, H, W) in 4 directions; returns the merged (B, D, L) float32 sum."""
        b, d, h, w = x.shape
        n, r, k, length = self.d_state, self.dt_rank, K_DIRECTIONS, h * w
        xs = cross_scan(x)                                                   # B, K, D, L
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)       # B, K, R+2N, L
        dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)      # B, K, D, L
        ys = selective_scan(
            xs.float().reshape(b, k * d, length),
            dts.float().reshape(b, k * d, length),
            -torch.exp(self.A_logs.float()),                                 # K*D, N
            bs.float().contiguous(), cs.float().contiguous(),                # B, K, N, L
            self.Ds.float(), z=None,
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True, return_last_state=False,
        ).view(b, k, d, length)
        return cross_merge(ys, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)                              # B, H, W, D each
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))        # B, D, H, W
        y = self.forward_core(x).transpose(1, 2).reshape(b, h, w, self.d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """Visual state-space block: scaled residual SS2D, then scaled residual CAB.

    Args:
        hidden_dim: channels C.
        drop_path: stochastic depth rate of the SS2D branch.
        d_state: SSM state size.
        expand: SS2D expansion.
        d_conv: SS2D conv kernel.
        dt_rank: SS2D step-size rank (None = auto).
        is_light_sr: lightweight CAB.
        squeeze_factor: CAB channel-attention reduction.
    """

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, d_state: int = 16, expand: float = 2.0,
                 d_conv: int = 3, dt_rank: int | None = None, is_light_sr: bool = False,
                 squeeze_factor: int = 30) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = SS2D(hidden_dim, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank)
        self.drop_path = DropPath(drop_path)
        self.skip_scale = nn.Parameter(torch.ones(hidden_dim))
        self.conv_blk = LightCAB(hidden_dim, squeeze_factor) if is_light_sr else CAB(hidden_dim, 3, squeeze_factor)
        self.ln_2 = nn.LayerNorm(hidden_dim)
        self.skip_scale2 = nn.Parameter(torch.ones(hidden_dim))

    def _cab(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_blk(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        """(B, L, C) tokens of an (H, W) = x_size map -> (B, L, C)."""
        b, length, c = x.shape
        x = x.view(b, *x_size, c)                                            # B, H, W, C
        x = x * self.skip_scale + self.drop_path(self.self_attention(self.ln_1(x)))
        x = x * self.skip_scale2 + self._cab(self.ln_2(x))
        return x.reshape(b, length, c)


# ----------------------------------------------------------------------------- model


class MambaIR(nn.Module):
    """MambaIR for super-resolution: (B, C, h, w) in [0, 1] -> (B, C, s*h, s*w).

    Args:
        cfg: the frozen :class:`MambaIRConfig`.
    """

    def __init__(self, cfg: MambaIRConfig) -> None:
        super().__init__()
        if not isinstance(cfg, MambaIRConfig):
            raise TypeError(f"MambaIR takes a MambaIRConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        c, ch = cfg.embed_dim, cfg.in_chans
        self.upscale = cfg.upscale
        self.upsampler = cfg.upsampler
        self.img_range = cfg.img_range
        mean = DIV2K_RGB_MEAN if ch == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

        # 1. shallow features
        self.conv_first = nn.Conv2d(ch, c, 3, 1, 1)
        # 2. deep features
        self.patch_embed = PatchEmbed(c, norm=cfg.patch_norm)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = linear_drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))
        self.layers = nn.ModuleList()
        for i, depth in enumerate(cfg.depths):
            start = sum(cfg.depths[:i])
            blocks = BasicLayer([VSSBlock(c, dpr[start + j], cfg.d_state, cfg.mlp_ratio, cfg.d_conv, cfg.dt_rank,
                                          cfg.is_light_sr, cfg.squeeze_factor) for j in range(depth)],
                                cfg.use_checkpoint)
            self.layers.append(ResidualGroup(blocks, c, cfg.resi_connection))  # upstream RSSG
        self.norm = nn.LayerNorm(c)
        self.conv_after_body = residual_conv(c, cfg.resi_connection)
        # 3. reconstruction
        if cfg.upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, cfg.num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(cfg.upscale, cfg.num_feat)
            self.conv_last = nn.Conv2d(cfg.num_feat, ch, 3, 1, 1)
        else:  # pixelshuffledirect
            self.upsample = UpsampleOneStep(cfg.upscale, c, ch)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        x = self.pos_drop(self.patch_embed(x))                               # B, H*W, C
        for layer in self.layers:
            x = layer(x, (h, w))
        return self.norm(x).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: (B, in_chans, h, w) in [0, 1], any h, w >= 1.

        Returns:
            (B, in_chans, s*h, s*w), about [0, 1] (not clamped).
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"MambaIR expects (B, {self.cfg.in_chans}, h, w), got {tuple(x.shape)}")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        return x / self.img_range + mean


def checkpoint_filter_fn(state_dict: dict, model: MambaIR) -> dict:
    """Adapt an official MambaIR checkpoint to :class:`MambaIR` (then ``load_state_dict(strict=True)``).

    Unwraps ``params_ema`` (preferred) / ``params`` / ``state_dict`` / ``model``, strips a
    DataParallel ``module.`` prefix. Upstream saves no buffers (``mean`` is a plain
    attribute), so nothing else is dropped; a stray ``mean`` entry is removed.

    Args:
        state_dict: ``torch.load`` result of an upstream ``.pth``.
        model: the model that will load it (used to check key shapes).

    Returns:
        A plain ``{key: tensor}`` dict matching ``model.state_dict()``.

    Raises:
        TypeError: not a dict.
        ValueError: a key's shape differs from the model's (other config), naming the key.
    """
    state_dict, _ = unwrap_state_dict(state_dict, "MambaIR checkpoint_filter_fn")
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k == "mean":
            continue
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"MambaIR checkpoint_filter_fn: {k!r} has shape {tuple(v.shape)}, the model "
                             f"expects {tuple(own[k].shape)} (different config?)")
        out[k] = v
    return out


# ----------------------------------------------------------------------------- variants


def mambair() -> MambaIRConfig:
    """MambaIR classic SR x4 (``train_MambaIR_SR_x4.yml``, pixelshuffle): 20,569,575 params.

    Official weights: linked from the "Model Summary" table of the upstream README (not
    downloaded here; checkpoint layout assumed BasicSR's ``params`` / ``params_ema``).
    """
    return MambaIRConfig(upscale=4, embed_dim=180, depths=(6, 6, 6, 6, 6, 6), d_state=16, mlp_ratio=2.0,
                         upsampler="pixelshuffle", img_range=1.0)


def mambair_x2() -> MambaIRConfig:
    """MambaIR classic SR x2 (``train_MambaIR_SR_x2.yml``, pixelshuffle): 20,421,863 params."""
    return MambaIRConfig(upscale=2, embed_dim=180, depths=(6, 6, 6, 6, 6, 6), d_state=16, mlp_ratio=2.0,
                         upsampler="pixelshuffle", img_range=1.0)


def mambair_light_x2() -> MambaIRConfig:
    """MambaIR lightweight SR x2 (``train_MambaIR_lightSR_x2.yml``, pixelshuffledirect): 905,016 params."""
    return MambaIRConfig(upscale=2, embed_dim=60, depths=(6, 6, 6, 6), d_state=10, mlp_ratio=1.2,
                         upsampler="pixelshuffledirect", img_range=1.0)


# Released weights (timm ``_cfg`` style, plain data; read by ``harness.released``). Official test:
# options/test/test_MambaIR_SR_x2.yml: whole image, no self-ensemble, crop_border 2, BasicSR's default
# ``param_key_g`` (``params``), strict load.
RELEASED_WEIGHTS = {
    "MambaIR_SR2.pth": {
        "model": "mambair_x2", "url": "https://drive.google.com/file/d/11Kiy_0hmMyDjMvW7MmbUT6tO9n5JrDeB/view",
        "sha256": None, "sha256_note": "the authors publish no hash; Google Drive cannot be fetched here (file "
                                       "name = the README's model name; the Drive file may be named otherwise)",
        "params_key": "params", "license": "Apache-2.0",
        "train_data": "DF2K (DIV2K + Flickr2K), LR patch 64, 500k iterations (train_MambaIR_SR_x2.yml)",
        "degradation": {"scale": 2, "codec": "none", "level": 0, "how": "MATLAB bicubic x2"},
        "eval": {"tile": 0, "tile_overlap": 0, "pad_multiple": 1, "self_ensemble": False, "crop_border": 2,
                 "note": "test_MambaIR_SR_x2.yml: whole image"},
        "official": {},
    },
}


def smoke(cfg: MambaIRConfig) -> MambaIRConfig:
    """Reduced copy on the same code path: C=24, 2 RSSGs of 1 block, N=8, CAB squeeze 4, same upscale."""
    return dataclasses.replace(cfg, embed_dim=24, depths=(1, 1), d_state=8, mlp_ratio=2.0,
                               squeeze_factor=4, num_feat=16)
