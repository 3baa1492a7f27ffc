"""HAT: Activating More Pixels in Image Super-Resolution Transformer.

Chen, Wang, Zhou, Qiao, Dong, CVPR 2023, arXiv:2205.04437.
Upstream: ``github:XPixelGroup/HAT`` @ 1638a9a822581657811867bf670717f8371fc3e5
(``hat/archs/hat_arch.py``, ``hat/models/hat_model.py``, ``options/test/HAT_SRx4.yml``),
Apache-2.0; built on SwinIR (Apache-2.0). Rewritten for csrbench; module attribute
names follow upstream, so ``state_dict()`` keys and shapes equal the official ones
(``conv_first``, ``patch_embed.norm``, ``layers.<i>.residual_group.blocks.<j>.attn.qkv``,
``...blocks.<j>.conv_block.cab.<k>``, ``layers.<i>.residual_group.overlap_attn.*``,
``relative_position_bias_table``, ``layers.<i>.conv``, ``norm``, ``conv_after_body``,
``conv_before_upsample.0``, ``upsample.<k>``, ``conv_last``).

Structure: conv_first -> RHAG x N (each: HAB x depth [window self-attention with
alternating shift + a channel-attention conv branch CAB scaled by ``conv_scale``],
then one OCAB [overlapping cross-attention: queries from ws x ws windows, keys and
values from (1 + overlap_ratio) * ws windows unfolded with stride ws], then a 3x3
conv, residual) -> LayerNorm -> conv_after_body + shallow skip -> pixel-shuffle.

Differences from upstream, none of which changes a weight or a result:
    * attention runs through ``F.scaled_dot_product_attention``
      (:func:`baselines._swin_common.window_attention`, oracle ``window_attention_ref``);
    * ``relative_position_index_SA`` / ``relative_position_index_OCA`` are
      NON-persistent buffers (upstream: persistent, so released checkpoints such as
      ``HAT_SRx4.pth`` carry them). They depend only on ``window_size`` and
      ``overlap_ratio``; :func:`checkpoint_filter_fn` checks that the checkpoint's
      equal the model's and drops them, so ``load_state_dict(strict=True)`` works;
    * the OCA index is stored reduced modulo the bias-table size. Upstream's formula
      yields negative entries, which PyTorch indexing wraps around; the reduced
      index selects exactly the same table rows;
    * the shifted-window ``attn_mask`` is built at forward time for the actual padded
      size (one cached entry), as upstream's ``forward_features`` does each call;
    * ``mean`` is a non-persistent buffer (upstream: a plain tensor attribute);
    * padding: the official test (``HATModel.pre_process``) reflect-pads the LR image
      bottom/right to a multiple of ``window_size`` and crops the SR output; here
      ``forward`` does the same, so any (h, w) works (maps smaller than the pad are
      reflected repeatedly, where upstream's ``F.pad`` would fail);
    * ``img_size`` only documents the training patch (upstream shrinks the window
      when ``img_size <= window_size``; that case is refused);
    * not carried over: ``ape``, ``patch_size != 1``, ``qk_scale``, ``attn_drop_rate``
      (fused attention), upsamplers other than ``pixelshuffle`` (upstream's forward
      implements only that one).

Complexity: :func:`hat` (``HAT_SRx4.yml``) has 20,772,507 parameters (sum of numel,
equal to the official module). Table 1 of the MambaCSR paper prints 20.81 M /
102.4 G (the HAT paper's own figures); thop at 1x3x64x64 gives 20.510 M /
86.41 GMACs (thop skips the relative-position bias tables). Those counts are
reproduced by ``harness/complexity.py``, not here.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn

from baselines._swin_common import (
    ShiftMaskCache,
    WindowAttention,
    filter_recomputed,
    relative_position_index,
    shifted_window_attention,
    validate_swin_config,
    window_attention,
    window_partition,
    window_reverse,
)
from mambacsr.layers import (
    CAB,
    DIV2K_RGB_MEAN,
    BasicLayer,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchUnEmbed,
    ResidualGroup,
    Upsample,
    init_weights,
    linear_drop_path_rates,
    pad_to_multiple,
    residual_conv,
    unwrap_state_dict,
)

__all__ = ["HAT", "HATConfig", "checkpoint_filter_fn", "hat", "smoke"]



@dataclass(frozen=True)
class HATConfig:
    """HAT hyper-parameters (upstream constructor arguments of the same names).

    Defaults are :func:`hat` (``options/test/HAT_SRx4.yml``).

    Args:
        upscale: scale factor s (2^n or 3).
        in_chans: image channels (3: RGB mean subtracted; else no mean).
        img_range: scale after mean subtraction (1.0 or 255.0).
        img_size: training LR patch size (documentation only; must exceed window_size).
        embed_dim: token channels C.
        depths: HABs per residual hybrid attention group (RHAG).
        num_heads: attention heads per RHAG (HABs and its OCAB).
        window_size: attention window side ws; inputs are padded to a multiple of it.
        compress_ratio: CAB hidden channels = C // compress_ratio.
        squeeze_factor: channel-attention bottleneck = C // squeeze_factor.
        conv_scale: weight of the CAB branch in each HAB.
        overlap_ratio: OCAB key/value window = ws + int(overlap_ratio * ws).
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projections.
        drop_rate: dropout after attention projection, in the MLP and after the embedding.
        drop_path_rate: stochastic depth, linear from 0 over all HABs (upstream default 0.1).
        patch_norm: LayerNorm after the patch embedding (``patch_embed.norm``).
        upsampler: only ``pixelshuffle`` (upstream implements no other).
        resi_connection: ``1conv`` or ``identity`` at the end of each RHAG and the body.
        num_feat: reconstruction channels (upstream hard-codes 64).
        use_checkpoint: gradient checkpointing per HAB / OCAB (saves memory, same result).
    """

    upscale: int = 4
    in_chans: int = 3
    img_range: float = 1.0
    img_size: int = 64
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 16
    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    patch_norm: bool = True
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    num_feat: int = 64
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        name = "HATConfig"
        validate_swin_config(self, name, ("pixelshuffle",), resi_connections=("1conv", "identity"))
        if self.embed_dim // self.compress_ratio < 1 or self.embed_dim // self.squeeze_factor < 1:
            raise ValueError(f"{name}: embed_dim={self.embed_dim} // compress_ratio={self.compress_ratio} "
                             f"and // squeeze_factor={self.squeeze_factor} must both be >= 1")
        extra = int(self.window_size * self.overlap_ratio)
        if extra < 0 or extra % 2:
            raise ValueError(f"{name}.overlap_ratio={self.overlap_ratio}: int(window_size * overlap_ratio)"
                             f"={extra} must be even and >= 0 (the overlap is split over both sides)")


def oca_relative_position_index(window_size: int, overlap_win_size: int) -> torch.Tensor:
    """Relative-position index of overlapping cross-attention (upstream ``calculate_rpi_oca``).

    Query token (yq, xq) of a ws x ws window and key token (yk, xk) of its
    wse x wse overlapping window map to
    ``(yk - yq + ws - wse + 1) * (ws + wse - 1) + (xk - xq + ws - wse + 1)``,
    reduced modulo the table size (ws + wse - 1)^2; upstream leaves the negative
    values for PyTorch indexing to wrap, which selects the same rows.

    Args:
        window_size: query window side ws.
        overlap_win_size: key/value window side wse.

    Returns:
        int64 (ws*ws, wse*wse), values in [0, (ws + wse - 1)^2).
    """
    ws, wse = window_size, overlap_win_size

    def grid(n: int) -> torch.Tensor:
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)

    rel = (grid(wse)[:, None, :] - grid(ws)[:, :, None]).permute(1, 2, 0)    # ws*ws, wse*wse, 2
    rel = rel + (ws - wse + 1)
    side = ws + wse - 1
    return (rel[..., 0] * side + rel[..., 1]) % (side * side)


class HAB(nn.Module):
    """Hybrid attention block: x + attn(norm1(x)) + conv_scale * CAB(norm1(x)), then x + mlp(norm2(x)).

    Args:
        dim: channels C.
        num_heads: nH.
        window_size: ws.
        shift_size: 0 (W-MSA) or ws // 2 (SW-MSA).
        compress_ratio, squeeze_factor: of the CAB.
        conv_scale: weight of the CAB branch.
        mlp_ratio: MLP hidden / C.
        qkv_bias: bias on qkv.
        drop: dropout rate.
        drop_path: stochastic depth rate of this block.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, mlp_ratio: float, qkv_bias: bool, drop: float,
                 drop_path: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, proj_drop=drop, own_index=False)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi_sa: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H*W, C); x_size (H, W); rpi_sa (N, N); attn_mask (nW, N, N) -> (B, H*W, C)."""
        h, w = x_size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        attn = functools.partial(self.attn, rpi=rpi_sa)
        attn_x = shifted_window_attention(y, self.window_size, self.shift_size, attn, attn_mask).reshape(b, h * w, c)
        x = x + self.drop_path(attn_x) + conv_x * self.conv_scale
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class OCAB(nn.Module):
    """Overlapping cross-attention block: ws x ws query windows attend to wse x wse key windows.

    wse = ws + int(overlap_ratio * ws); keys/values are cut with an unfold of
    kernel wse, stride ws, zero padding (wse - ws) / 2, so every query window
    sees its own window plus a border of its neighbours.

    Args:
        dim: channels C.
        window_size: ws.
        overlap_ratio: see above.
        num_heads: nH.
        qkv_bias: bias on ``qkv``.
        mlp_ratio: MLP hidden / C.
    """

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int,
                 qkv_bias: bool = True, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        ows = self.overlap_win_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.unfold = nn.Unfold(kernel_size=(ows, ows), stride=window_size, padding=(ows - window_size) // 2)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + ows - 1) ** 2, num_heads))        # (ws+wse-1)^2, nH
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C); x_size (H, W) multiples of ws; rpi (ws*ws, wse*wse) -> (B, H*W, C)."""
        h, w = x_size
        b, _, c = x.shape
        ws, ows, nh = self.window_size, self.overlap_win_size, self.num_heads
        d = c // nh
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        q = qkv[..., :c]                                                 # B, H, W, C
        kv = qkv[..., c:].permute(0, 3, 1, 2)                            # B, 2C, H, W
        q = window_partition(q, ws).reshape(-1, ws * ws, c)              # B*nW, Nq, C
        kv = self.unfold(kv)                                             # B, 2C*wse*wse, nW
        nw = kv.shape[-1]
        kv = kv.view(b, 2, c, ows * ows, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, ows * ows, c)
        bw, nq, nk = q.shape[0], ws * ws, ows * ows
        q = q.reshape(bw, nq, nh, d).transpose(1, 2)                     # B*nW, nH, Nq, d
        k = kv[0].view(bw, nk, nh, d).transpose(1, 2)                    # B*nW, nH, Nk, d
        v = kv[1].view(bw, nk, nh, d).transpose(1, 2)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(nq, nk, -1).permute(2, 0, 1)  # nH, Nq, Nk
        y = window_attention(q, k, v, bias=bias).transpose(1, 2).reshape(bw, nq, c)
        y = window_reverse(y.view(-1, ws, ws, c), ws, h, w).reshape(b, h * w, c)
        x = x + self.proj(y)
        x = x + self.mlp(self.norm2(x))
        return x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, overlap_win_size={self.overlap_win_size}"


class AttenBlocks(BasicLayer):
    """``depth`` HABs alternating W-MSA / SW-MSA, then one OCAB (upstream ``residual_group``).

    Keys ``blocks.<i>.*`` and ``overlap_attn.*`` as upstream.
    """

    def __init__(self, cfg: HATConfig, num_heads: int, depth: int, drop_path: list[float]) -> None:
        c, ws = cfg.embed_dim, cfg.window_size
        super().__init__([HAB(c, num_heads, ws, 0 if i % 2 == 0 else ws // 2, cfg.compress_ratio, cfg.squeeze_factor,
                              cfg.conv_scale, cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, drop_path[i])
                          for i in range(depth)], cfg.use_checkpoint)
        self.overlap_attn = OCAB(c, ws, cfg.overlap_ratio, num_heads, cfg.qkv_bias, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], params: dict[str, torch.Tensor]) -> torch.Tensor:
        """x: (B, H*W, C); params: ``rpi_sa``, ``attn_mask``, ``rpi_oca`` -> (B, H*W, C)."""
        x = super().forward(x, x_size, params["rpi_sa"], params["attn_mask"])
        if self.use_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self.overlap_attn, x, x_size, params["rpi_oca"],
                                                     use_reentrant=False)
        return self.overlap_attn(x, x_size, params["rpi_oca"])


class HAT(nn.Module):
    """Hybrid Attention Transformer for SR: (B, C, h, w) in [0, 1] -> (B, C, s*h, s*w).

    Args:
        cfg: the frozen :class:`HATConfig`.
    """

    def __init__(self, cfg: HATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, nf, ch, ws = cfg.embed_dim, cfg.num_feat, cfg.in_chans, cfg.window_size
        self.upscale = cfg.upscale
        self.window_size = ws
        self.shift_size = ws // 2
        self.overlap_ratio = cfg.overlap_ratio
        self.img_range = cfg.img_range
        mean = DIV2K_RGB_MEAN if ch == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        ows = ws + int(cfg.overlap_ratio * ws)
        self.register_buffer("relative_position_index_SA", relative_position_index(ws, ws), persistent=False)
        self.register_buffer("relative_position_index_OCA", oca_relative_position_index(ws, ows),
                             persistent=False)
        self.shift_mask = ShiftMaskCache(ws, ws // 2)

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
            blocks = AttenBlocks(cfg, heads, depth, dpr[start:start + depth])
            self.layers.append(ResidualGroup(blocks, c, cfg.resi_connection))  # upstream RHAG
        self.norm = nn.LayerNorm(c)
        self.conv_after_body = residual_conv(c, cfg.resi_connection)
        # 3. reconstruction (pixelshuffle)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(cfg.upscale, nf)
        self.conv_last = nn.Conv2d(nf, ch, 3, 1, 1)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W), H and W multiples of ws -> (B, C, H, W)."""
        x_size = (x.shape[2], x.shape[3])
        params = {"attn_mask": self.shift_mask(x_size, x.device),
                  "rpi_sa": self.relative_position_index_SA,
                  "rpi_oca": self.relative_position_index_OCA}
        x = self.pos_drop(self.patch_embed(x))                              # B, H*W, C
        for layer in self.layers:
            x = layer(x, x_size, params)
        return self.patch_unembed(self.norm(x), x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: (B, in_chans, h, w) in [0, 1], any h, w >= 1.

        Returns:
            (B, in_chans, s*h, s*w), about [0, 1] (not clamped).
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"HAT expects (B, {self.cfg.in_chans}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size, mode="reflect")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        x = x / self.img_range + mean
        return x[:, :, : h * self.upscale, : w * self.upscale]


# Buffers upstream saves: they depend only on window_size / overlap_ratio, so the
# filter checks them against the model's before dropping. attn_mask is size-dependent.
_RECOMPUTED = ("relative_position_index_SA", "relative_position_index_OCA")
_SIZE_DEPENDENT = ("attn_mask",)


def checkpoint_filter_fn(state_dict: dict, model: HAT) -> dict:
    """Adapt an official HAT checkpoint to :class:`HAT` (then ``load_state_dict(strict=True)``).

    Unwraps ``params_ema`` (preferred; what ``HAT_SRx4.yml`` loads) / ``params`` /
    ``state_dict`` / ``model``; strips a DataParallel ``module.`` prefix; drops any
    ``attn_mask``; checks ``relative_position_index_SA`` / ``_OCA`` against the model's
    (upstream's negative OCA entries are compared modulo the table size) and drops them.

    Args:
        state_dict: ``torch.load`` result of an upstream ``.pth``.
        model: the model that will load it.

    Returns:
        A plain ``{key: tensor}`` dict matching ``model.state_dict()``.

    Raises:
        TypeError: not a dict.
        ValueError: a checked index differs from the model's (other window_size / overlap_ratio).
    """
    sd, _ = unwrap_state_dict(state_dict, "HAT checkpoint_filter_fn")
    oca = "relative_position_index_OCA"
    if oca in sd:  # upstream's negative entries select the same rows as ours, reduced modulo the table
        table = model.layers[0].residual_group.overlap_attn.relative_position_bias_table.shape[0]
        sd[oca] = sd[oca].to(torch.int64) % table
    return filter_recomputed(sd, model, "HAT", _SIZE_DEPENDENT, _RECOMPUTED)


def hat() -> HATConfig:
    """HAT x4 as ``options/test/HAT_SRx4.yml``: C=180, 6 RHAGs x 6 HABs, 6 heads, ws 16. 20,772,507 params.

    Official weights: ``HAT_SRx4.pth`` (key ``params_ema``), linked from the upstream
    README (Google Drive / Baidu), Apache-2.0.
    """
    return HATConfig()


# Released weights (timm ``_cfg`` style, plain data; read by ``harness.released``). Official test:
# options/test/HAT_SRx4.yml (``param_key_g: params_ema``): whole image padded to a multiple of the
# window (16), no tiling, no self-ensemble, crop_border 4.
RELEASED_WEIGHTS = {
    "HAT_SRx4.pth": {
        "model": "hat", "url": "https://github.com/XPixelGroup/HAT#how-to-test (Google Drive / Baidu links)",
        "sha256": "a92f81bd2c0c1aaa371a6e4d6cac69e749fde2e36196885ee47a4a3667542c9a",
        "sha256_note": "not published by the authors; from a third-party install manifest (81,089,561 bytes), "
                       "not verified here",
        "params_key": "params_ema", "license": "Apache-2.0",
        "train_data": "DF2K (DIV2K + Flickr2K), LR patch 64",
        "degradation": {"scale": 4, "codec": "none", "level": 0, "how": "MATLAB bicubic x4"},
        "eval": {"tile": 0, "tile_overlap": 0, "pad_multiple": 16, "self_ensemble": False, "crop_border": 4,
                 "note": "HAT_SRx4.yml: whole image padded to a multiple of 16"},
        "official": {},
    },
}


def smoke(cfg: HATConfig) -> HATConfig:
    """Reduced copy on the same code path: C=24, 2 RHAGs of 2 HABs (+ OCAB), 4 heads, ws 4, same upscale.

    ws 4 keeps ``overlap_ratio`` 0.5 valid (OCA window 6); ``squeeze_factor`` 3 keeps
    the channel-attention bottleneck at 8 channels (30 would leave none at C=24).
    """
    return dataclasses.replace(cfg, embed_dim=24, depths=(2, 2), num_heads=(4, 4), window_size=4,
                               squeeze_factor=3, compress_ratio=3, mlp_ratio=2.0, num_feat=16, img_size=16)
