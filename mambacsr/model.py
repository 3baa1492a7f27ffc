"""MambaCSR: Dual-Interleaved Scanning for Compressed Image Super-Resolution With SSMs.

Paper: Yulin Ren, Xin Li, Mengxi Guo, Bingchen Li, Shijie Zhao, Zhibo Chen,
arXiv:2408.11758 (2024). Upstream code and released QF10 x4 weights:
https://github.com/renyulin-f/MambaCSR (commit f71199e), ``basicsr/archs/mambacsr_arch.py``,
``basicsr/archs/mamba/{multi_mamba,local_scan}.py``, ``options/train/MambaCSR_Q10_{Final,wo}.yaml``.
The upstream repository ships no license file. This file is an independent
re-implementation in csrbench style that keeps the upstream attribute names, so
``state_dict()`` keys and shapes equal the official ones and the released
checkpoints load with ``load_state_dict(strict=True)`` after `checkpoint_filter_fn`.

Architecture (x4, embed_dim C = 180, d_inner D = 2C = 360, d_state N = 16):

- ``conv_first`` (3 -> C), then 6 residual groups (``layers``) of 6 RLM blocks, ``norm``,
  ``conv_after_body`` + long skip, pixel-shuffle reconstruction (``conv_before_upsample``,
  ``upsample``, ``conv_last``).
- RLMBlock: ``x = x*skip_scale + SS2D(ln_1(x)) + 0.01*CAB(ln_1(x))``, then
  ``x = x*skip_scale2 + MLP(ln_2(x))`` (MLP hidden 2C). The SS2D (upstream ``LW_SS2D``):
  ``in_proj`` C -> 2D split into x, z; 3x3 depthwise conv + SiLU on x; for each of the
  block's K directions its own ``x_proj`` / ``dt_proj`` / A / D slice and one selective scan
  over all K*D channels; each direction is un-scanned and gated by a shared channel gate
  (``multi_scan.attn``); the K results are summed; ``out_norm``; ``* SiLU(z)``; ``out_proj``.
- Dual-interleaved scanning: each block scans only K = 2 directions chosen by its index i
  in the group, cycling with period 4: ``[w8, w8_flip]``, ``[c_w8, c_w8_flip]``,
  ``[w64, w64_flip]``, ``[c_w64, c_w64_flip]`` (see `mambacsr.scan_orders` for the names).
  *Hierarchical* interleaving = the alternation of the local window (8) and the large one
  (64); *horizontal-to-vertical* (H2V) interleaving = the alternation of row-major and
  column-major scans from block to block (each block does one orientation, both ways).
  ``w64`` is a global scan on the 64 x 64 LR training patch but a *windowed* scan (64 x 64
  windows) on larger test tiles, and a zero-padded global scan on smaller inputs. This is
  the official behaviour and it is kept; the padded tokens only decay the SSM state, so
  each run of them is scanned as one step with the run's total decay (`PackedScan`: same
  recurrence, up to float rounding; 271 instead of 4096 steps for ``w64`` on 16 x 16).
- Cross-scale scanning (``cross_scale=True``): the ``conv_first`` features are bilinearly
  downsampled x0.5, pass ``patch_embed2`` and, after the first residual group only, one
  6-block group at half resolution (``layers2``; it uses the same dual-interleaved cycle, so
  its ``w64`` blocks zero-pad a 32 x 32 map to 64 x 64); then ``layers3`` (upstream
  ``Cross_SS2D``, K = 4 directions ``w16, w16_flip, c_w16, c_w16_flip``) scans the joint
  sequence in which every half-resolution token precedes its 4 position-aligned
  full-resolution tokens (length 5HW/4), drops the half-resolution outputs, and adds its own
  MLP (hidden 4C = 720). ``ln_1`` of the cross layer normalises only the HR input; the gate
  half of ``in_proj_down`` is computed upstream but never used (it gets a zero gradient).

Not reproduced: upstream's ``BasicLayer`` switches every group shallower than 6 blocks to
``w32`` directions when cross-scale scanning is on; no released config has such a group,
and here the direction cycle is explicit data (``directions`` / ``lr_directions``).

Input handling: ``forward`` subtracts the DIV2K RGB mean and multiplies by ``img_range`` as
upstream. Upstream's forward needs H, W divisible by 16 when cross-scale scanning is on
(its nested scan does not pad); we pad the image to ``pad_multiple`` with the mirror padding
of the official test script (``cat([x, flip(x)])``) and crop the output. Without
cross-scale scanning nothing is padded here: each windowed scan zero-pads internally
as upstream's ``local_scan_bchw`` (with the padded runs packed, see above). The official test script also tiles the LR image
(about 192 px tiles with a quarter overlap) and pads every tile up to the next multiple of
64 (always adding at least one pixel); that belongs to the evaluator, not to this module.

Variants (functions returning configs; see each docstring):
``mambacsr`` (paper, Table 1; options/train/MambaCSR_Q10_Final.yaml),
``mambacsr_wo_cross`` (MambaCSR_Q10_wo.yaml; Table 2 "no cross-scale"),
``mambacsr_sequential_cross`` (Table 2 simple sequential cross-scale; our reading),
Table 3 ``mambacsr_t3_plain/hier/h2v/both`` and Table 4 ``mambacsr_win4 ... win64``;
``smoke(cfg)`` reduces any of them.

Why Table 1's 19.69 M / 76.03 GFLOPs differ from the true 22,051,842 parameters:
the paper's parameter count follows thop-style counting, which sums parameters of leaf
modules only; the raw ``nn.Parameter`` tensors that live on non-leaf modules
(``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``,
``skip_scale``, ``skip_scale2``: 2,359,800 values here) are missed (the same happens to
weights applied through ``F.linear`` in other Mamba code): 22,051,842 - 2,359,800 =
19,692,042 = 19.69 M. The 76.03 GFLOPs come from the official ``flops()`` (fvcore at a
1 x 3 x 64 x 64 LR input), whose handle is registered for an op name the scan does not
have, so the selective scan itself is left uncounted; counting it gives about 93.8 G
(figure from the issue author; ``harness/complexity.py`` reproduces both counts).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mambacsr.layers import (
    CAB,
    DIV2K_RGB_MEAN,
    BasicLayer,
    DropPath,
    Mlp,
    PatchEmbed,
    Upsample,
    init_weights,
    is_pixelshuffle_scale,
    linear_drop_path_rates,
    pad_symmetric,
    residual_conv,
    unwrap_state_dict,
)
from mambacsr.ops import selective_scan
from mambacsr.scan_orders import ScanOrder, cross_scan_order, parse_direction, scan, scan_order, unscan

__all__ = [
    "MambaCSRConfig",
    "MambaCSR",
    "checkpoint_filter_fn",
    "dual_interleaved",
    "mambacsr",
    "mambacsr_wo_cross",
    "mambacsr_sequential_cross",
    "mambacsr_t3_plain",
    "mambacsr_t3_hier",
    "mambacsr_t3_h2v",
    "mambacsr_t3_both",
    "mambacsr_win4",
    "mambacsr_win8",
    "mambacsr_win16",
    "mambacsr_win32",
    "mambacsr_win64",
    "smoke",
    "VARIANTS",
]

Cycle = tuple[tuple[str, ...], ...]


def dual_interleaved(local: int = 8, large: int = 64) -> Cycle:
    """The official dual-interleaved cycle (block i of a group uses entry i % 4).

    Args:
        local: local window (upstream ``scan_size``; Table 4 varies it).
        large: large window (64; global on a 64 x 64 training patch).

    Returns:
        ``((w{local}, w{local}_flip), (c_w{local}, c_w{local}_flip), (w{large}, ...), (c_w{large}, ...))``.
    """
    return ((f"w{local}", f"w{local}_flip"), (f"c_w{local}", f"c_w{local}_flip"),
            (f"w{large}", f"w{large}_flip"), (f"c_w{large}", f"c_w{large}_flip"))


def _four_way(w: int) -> tuple[str, ...]:
    return (f"w{w}", f"w{w}_flip", f"c_w{w}", f"c_w{w}_flip")


@dataclass(frozen=True)
class MambaCSRConfig:
    """MambaCSR hyper-parameters (defaults = the paper model, MambaCSR_Q10_Final.yaml).

    Args:
        upscale: SR factor (2^n or 3).
        in_chans: image channels (3: the DIV2K RGB mean is subtracted; else no mean).
        img_range: input scaling after mean subtraction (1.0 upstream).
        rgb_mean: mean subtracted from RGB inputs.
        embed_dim: feature channels C.
        depths: RLM blocks per residual group (``layers``).
        d_state: SSM state size N.
        ssm_ratio: d_inner = ssm_ratio * embed_dim.
        dt_rank: rank of the dt projection; 0 means ceil(embed_dim / 16).
        d_conv: depthwise conv kernel in the SS2D (> 1 upstream).
        mlp_ratio: RLM block MLP hidden = mlp_ratio * embed_dim.
        cab_compress_ratio, cab_squeeze_factor: CAB channel reductions (24, 24).
        cab_scale: weight of the CAB branch (0.01).
        attn_act_ratio: reduction of the per-direction channel gate (BiAttn).
        dt_min, dt_max, dt_init_floor, dt_scale: dt initialisation (Mamba defaults).
        directions: cycle of per-block direction tuples for ``layers`` (block i uses
            ``directions[i % len(directions)]``); all directions of a block must be distinct.
        cross_scale: enable the cross-scale branch (``patch_embed2``, ``layers2``, ``layers3``).
        cross_mode: ``"aligned"`` (paper) or ``"sequential"`` (Table 2 ablation).
        depths2: blocks of each half-resolution group; group i runs after main group i.
        lr_directions: direction cycle of the half-resolution groups.
        cross_directions: directions of the cross-scale SS2D (HR window names).
        cross_mlp_ratio: MLP hidden of the cross layer = cross_mlp_ratio * embed_dim.
        official_cross_unscan: reproduce the official column-first cross un-scan for
            non-square window grids (see `mambacsr.scan_orders`); False = true inverse.
        pad_multiple: forward mirror-pads H, W to a multiple of this (1 = no padding);
            must be a multiple of every cross-scale window when cross_scale is on.
        resi_connection: ``"1conv"`` or ``"3conv"`` at the end of each group.
        num_feat: channels of the pixel-shuffle reconstruction.
        upsampler: only ``"pixelshuffle"`` (the only one upstream implements).
        drop_rate: dropout after the patch embeddings.
        drop_path_rate: stochastic depth, linear over the main blocks (0.1 upstream default).
        img_size: LR training patch (informational: where ``w64`` is global).
    """

    upscale: int = 4
    in_chans: int = 3
    img_range: float = 1.0
    rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    d_state: int = 16
    ssm_ratio: float = 2.0
    dt_rank: int = 0
    d_conv: int = 3
    mlp_ratio: float = 2.0
    cab_compress_ratio: int = 24
    cab_squeeze_factor: int = 24
    cab_scale: float = 0.01
    attn_act_ratio: float = 0.125
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    directions: Cycle = field(default_factory=lambda: dual_interleaved(8, 64))
    cross_scale: bool = True
    cross_mode: str = "aligned"
    depths2: tuple[int, ...] = (6,)
    lr_directions: Cycle = field(default_factory=lambda: dual_interleaved(8, 64))
    cross_directions: tuple[str, ...] = ("w16", "w16_flip", "c_w16", "c_w16_flip")
    cross_mlp_ratio: float = 4.0
    official_cross_unscan: bool = False
    pad_multiple: int = 16
    resi_connection: str = "1conv"
    num_feat: int = 64
    upsampler: str = "pixelshuffle"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    img_size: int = 64

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"MambaCSRConfig.{key}: {why} (got {getattr(self, key)!r})")

        if not is_pixelshuffle_scale(self.upscale):
            raise bad("upscale", "must be 2^n or 3")
        if not self.depths or any(d < 1 for d in self.depths):
            raise bad("depths", "needs at least one group of at least one block")
        if self.upsampler != "pixelshuffle":
            raise bad("upsampler", "only 'pixelshuffle' is implemented (as upstream)")
        if self.resi_connection not in ("1conv", "3conv"):
            raise bad("resi_connection", "must be '1conv' or '3conv'")
        if self.pad_multiple < 1:
            raise bad("pad_multiple", "must be >= 1")
        for key in ("directions", "lr_directions"):
            cycle = getattr(self, key)
            if not cycle or any(not dirs for dirs in cycle):
                raise bad(key, "needs at least one non-empty tuple of directions")
            for dirs in cycle:
                if len(set(dirs)) != len(dirs):
                    raise bad(key, f"repeated direction in {dirs}")
                for d in dirs:
                    parse_direction(d)
        if self.cross_scale:
            if self.cross_mode not in ("aligned", "sequential"):
                raise bad("cross_mode", "must be 'aligned' or 'sequential'")
            if not self.depths2 or len(self.depths2) > len(self.depths) or any(d < 1 for d in self.depths2):
                raise bad("depths2", "needs 1..len(depths) groups of at least one block")
            if not self.cross_directions:
                raise bad("cross_directions", "needs at least one direction")
            for d in self.cross_directions:
                kind, w, _, _ = parse_direction(d)
                if kind != "window" or w % 2:
                    raise bad("cross_directions", f"{d!r} must be w<K> / c_w<K> with even K")
                if self.pad_multiple % w:
                    raise bad("pad_multiple", f"must be a multiple of the cross-scale window {w}")

    @property
    def d_inner(self) -> int:
        return int(self.ssm_ratio * self.embed_dim)

    @property
    def rank(self) -> int:
        return math.ceil(self.embed_dim / 16) if self.dt_rank == 0 else self.dt_rank

    def block_directions(self) -> dict[str, tuple]:
        """Scan directions of every block, as data.

        Returns:
            ``{"layers": ((dirs of block 0, ...) per group), "layers2": (...) or (),
            "layers3": (cross directions per cross layer) or ()}``.
        """
        def groups(depths: tuple[int, ...], cycle: Cycle) -> tuple:
            return tuple(tuple(cycle[i % len(cycle)] for i in range(d)) for d in depths)

        return {
            "layers": groups(self.depths, self.directions),
            "layers2": groups(self.depths2, self.lr_directions) if self.cross_scale else (),
            "layers3": tuple(self.cross_directions for _ in self.depths2) if self.cross_scale else (),
        }


# ----------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------- blocks


class BiAttn(nn.Module):
    """Channel gate applied to each un-scanned direction (upstream ``BiAttn``, channel part only).

    (B, L, D) -> (B, L, D): ``x * sigmoid(select(GELU(reduce(mean_L(LayerNorm(x))))))``.
    """

    def __init__(self, in_channels: int, act_ratio: float = 0.125) -> None:
        super().__init__()
        reduce_channels = int(in_channels * act_ratio)
        self.norm = nn.LayerNorm(in_channels)
        self.global_reduce = nn.Linear(in_channels, reduce_channels)
        self.act_fn = nn.GELU()
        self.channel_select = nn.Linear(reduce_channels, in_channels)
        self.gate_fn = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        g = self.norm(x).mean(1, keepdim=True)
        g = self.gate_fn(self.channel_select(self.act_fn(self.global_reduce(g))))  # (B, 1, D)
        return x * g


class MultiScan(nn.Module):
    """Holds a block's directions and merges the K scanned outputs (upstream ``MultiScanVSSM``).

    Merge: crop each direction to its own length, un-scan it to the grid, gate it with
    the shared `BiAttn` and sum over directions.
    """

    def __init__(self, dim: int, directions: tuple[str, ...], act_ratio: float = 0.125) -> None:
        super().__init__()
        self.directions = tuple(directions)
        self.attn = BiAttn(dim, act_ratio)

    def merge(self, ys: Tensor, orders: list[ScanOrder | PackedScan], H: int, W: int) -> Tensor:
        """(B, K, D, L) -> (B, H*W, D)."""
        B, K, D, _ = ys.shape
        out = None
        for k, order in enumerate(orders):
            y = ys[:, k, :, :order.length]
            y = order.unscan(y) if isinstance(order, PackedScan) else unscan(y, order, H, W)
            y = y.reshape(B, D, H * W).transpose(1, 2)
            y = self.attn(y)
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return "directions=" + ", ".join(self.directions)


# Collapse each run of zero-padded tokens inside a window scan into one step (see PackedScan).
# Same recurrence, fewer steps; False scans the padded tokens one by one, as upstream does.
# Traced runs (fvcore's FlopCountAnalysis, where Table 1's 76.03 G comes from) always scan the
# padding token by token, so counted MACs stay those of the official code.
PACK_PADDING = True


@dataclass(frozen=True, eq=False)
class PackedScan:
    """A padded window scan with every run of padded tokens collapsed into one step.

    Upstream zero-pads the map to whole windows and scans the padded tokens too
    (``w64`` on a 16 x 16 map: 4096 steps for 256 pixels, 48 padded tokens after each
    row's 16). A padded token has u = 0, hence B = C = 0 and dt = 0 before the bias,
    so all it does is decay the state by exp(softplus(dt_bias) * A); a run of k of them
    decays it by exp(k * softplus(dt_bias) * A), which is one step of u = 0 with
    delta = k * softplus(dt_bias) (`padding_run_dt`). Runs before the first and after
    the last real token change no output and are dropped. Outputs equal upstream's up
    to float rounding (the decay is one exponential instead of a product of k).

    Attributes:
        order: the padded ScanOrder it packs.
        source: (L',) int64; step t reads pixel ``source[t]`` of the H*W map (row-major),
            or H*W, a zero token, for a collapsed run.
        run: (L',) float32; how many padded tokens step t stands for (0: a real pixel).
        unscan_index: (H*W,) int64; the step each output pixel reads.
    """

    order: ScanOrder
    source: Tensor
    run: Tensor
    unscan_index: Tensor
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def length(self) -> int:
        return int(self.source.numel())

    def on(self, device: torch.device | str, what: str) -> Tensor:
        """``source`` / ``run`` / ``unscan_index`` on `device`, cached per device."""
        key = (what, str(torch.device(device)))
        if key not in self._on_device:
            self._on_device[key] = getattr(self, what).to(device)
        return self._on_device[key]

    def scan(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, L') packed sequence (collapsed runs read zeros)."""
        B, C, H, W = x.shape
        src = torch.cat([x.reshape(B, C, H * W), x.new_zeros(B, C, 1)], dim=-1)
        return src.index_select(-1, self.on(x.device, "source"))

    def unscan(self, y: Tensor) -> Tensor:
        """(B, C, L') -> (B, C, H, W)."""
        out = y.index_select(-1, self.on(y.device, "unscan_index"))
        return out.view(*y.shape[:-1], self.order.height, self.order.width)


@functools.lru_cache(maxsize=512)
def packed_scan_order(name: str, H: int, W: int) -> ScanOrder | PackedScan:
    """`scan_order(name, H, W)`, packed as a `PackedScan` when it scans padded tokens (cached)."""
    order = scan_order(name, H, W)
    if (order.padded_height, order.padded_width) == (H, W):
        return order
    r, c = order.index // order.padded_width, order.index % order.padded_width
    t = torch.nonzero((r < H) & (c < W)).squeeze(1)                   # steps of real pixels, in order
    gap = t[1:] - t[:-1] - 1                                           # padded tokens after each
    has_gap = gap > 0
    new_t = torch.arange(t.numel()) + torch.cat([torch.zeros(1, dtype=torch.long), has_gap.long().cumsum(0)])
    n = t.numel() + int(has_gap.sum())
    source = torch.full((n,), H * W, dtype=torch.long)
    source[new_t] = (r * W + c)[t]
    run = torch.zeros(n)
    run[new_t[:-1][has_gap] + 1] = gap[has_gap].float()
    unscan_index = torch.empty(H * W, dtype=torch.long)
    unscan_index[source[new_t]] = new_t
    return PackedScan(order, source, run, unscan_index)


def padding_run_dt(dt_bias: Tensor, run: Tensor) -> Tensor:
    """The dt that makes one scan step decay like ``run`` padded tokens.

    softplus(dt + dt_bias) = run * softplus(dt_bias), i.e. dt = softplus^-1(y) - dt_bias
    with y = run * softplus(dt_bias), written y + log(-expm1(-y)) for stability.

    Args:
        dt_bias: (K, D) the scan's delta bias.
        run: (K, L) padded tokens per step (0 for real tokens; their value is unused).

    Returns:
        (K, D, L) float32.
    """
    b = dt_bias.float()[:, :, None]
    y = run.clamp(min=1.0)[:, None, :] * F.softplus(b)
    return y + torch.log(-torch.expm1(-y)) - b


def _scan_sequences(x: Tensor, orders: list[ScanOrder | PackedScan]) -> tuple[Tensor, Tensor | None]:
    """Stack each order's sequence of the (B, D, H, W) map: (B, K, D, max L), and (K, max L) runs or None."""
    seqs = [o.scan(x) if isinstance(o, PackedScan) else scan(x, o) for o in orders]
    xs = _stack_padded(seqs)
    if not any(isinstance(o, PackedScan) for o in orders):
        return xs, None
    L = xs.shape[-1]
    runs = [F.pad(o.on(x.device, "run"), (0, L - o.length)) if isinstance(o, PackedScan)
            else x.new_zeros(L, dtype=torch.float32) for o in orders]
    return xs, torch.stack(runs)


class _SSMCore(nn.Module):
    """Per-direction SSM parameters and the batched selective scan of K sequences.

    Parameters (upstream names): ``x_proj_weight`` (K, R + 2N, D), ``dt_projs_weight``
    (K, D, R), ``dt_projs_bias`` (K, D), ``A_logs`` (K*D, N), ``Ds`` (K*D,).
    """

    def _init_ssm(self, K: int, cfg: MambaCSRConfig) -> None:
        D, R, N = cfg.d_inner, cfg.rank, cfg.d_state
        self.K, self.d_inner, self.dt_rank, self.d_state = K, D, R, N
        # x_proj: nn.Linear default init, bound 1/sqrt(fan_in); stacked over directions.
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, D).uniform_(-D ** -0.5, D ** -0.5))
        std = R ** -0.5 * cfg.dt_scale
        self.dt_projs_weight = nn.Parameter(torch.empty(K, D, R).uniform_(-std, std))
        dt = torch.exp(torch.rand(K, D) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=cfg.dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(K * D, 1)
        self.A_logs = nn.Parameter(torch.log(A))
        self.Ds = nn.Parameter(torch.ones(K * D))

    def _scan_core(self, xs: Tensor, runs: Tensor | None = None) -> Tensor:
        """Selective scan of K direction sequences.

        Args:
            xs: (B, K, D, L).
            runs: (K, L) padded tokens each step stands for (`PackedScan`), or None.

        Returns:
            (B, K, D, L) float32.
        """
        B, K, D, L = xs.shape
        N, R = self.d_state, self.dt_rank
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        if runs is not None:  # collapsed padding runs: u = B = C = 0 there, only the decay is set
            dts = torch.where(runs[:, None] > 0, padding_run_dt(self.dt_projs_bias, runs), dts.float())
        ys = selective_scan(
            xs.reshape(B, K * D, L).float(), dts.reshape(B, K * D, L).float(),
            -torch.exp(self.A_logs.float()), Bs.float().contiguous(), Cs.float().contiguous(),
            D=self.Ds.float(), z=None, delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True,
        )
        return ys.view(B, K, D, L)


def _stack_padded(seqs: list[Tensor]) -> Tensor:
    """Stack (B, D, L_k) sequences to (B, K, D, max L), zero-padding at the end (as upstream)."""
    L = max(s.shape[-1] for s in seqs)
    return torch.stack([F.pad(s, (0, L - s.shape[-1])) if s.shape[-1] < L else s for s in seqs], dim=1)


class LocalWindowSS2D(_SSMCore):
    """Multi-direction 2-D selective scan of one RLM block (upstream ``LW_SS2D``).

    Args:
        cfg: model config (dims, dt init).
        directions: the block's K scan directions.

    Shapes: forward (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, cfg: MambaCSRConfig, directions: tuple[str, ...]) -> None:
        super().__init__()
        C, D = cfg.embed_dim, cfg.d_inner
        self.directions = tuple(directions)
        self.out_norm = nn.LayerNorm(D)
        self.in_proj = nn.Linear(C, 2 * D, bias=False)
        self.act = nn.SiLU()
        self.d_conv = cfg.d_conv
        if cfg.d_conv > 1:
            self.conv2d = nn.Conv2d(D, D, cfg.d_conv, padding=(cfg.d_conv - 1) // 2, groups=D, bias=True)
        self._init_ssm(len(directions), cfg)
        self.out_proj = nn.Linear(D, C, bias=False)
        self.multi_scan = MultiScan(D, directions, cfg.attn_act_ratio)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        xz = self.in_proj(x)
        if self.d_conv > 1:
            x, z = xz.chunk(2, dim=-1)
            z = self.act(z)
            x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # (B, D, H, W)
        else:
            x, z = self.act(xz).chunk(2, dim=-1)
            x = x.permute(0, 3, 1, 2).contiguous()
        scan_order_fn = packed_scan_order if PACK_PADDING and not torch.jit.is_tracing() else scan_order
        orders = [scan_order_fn(d, int(H), int(W)) for d in self.directions]
        ys = self._scan_core(*_scan_sequences(x, orders))
        y = self.out_norm(self.multi_scan.merge(ys, orders, H, W)).view(B, H, W, -1).to(z.dtype)
        return self.out_proj(y * z)


class RLMBlock(nn.Module):
    """Residual local Mamba block. (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, cfg: MambaCSRConfig, directions: tuple[str, ...], drop_path: float = 0.0) -> None:
        super().__init__()
        C = cfg.embed_dim
        self.cab_scale = cfg.cab_scale
        self.ln_1 = nn.LayerNorm(C)
        self.self_attention = LocalWindowSS2D(cfg, directions)
        self.skip_scale = nn.Parameter(torch.ones(C))
        self.drop_path = DropPath(drop_path)
        self.conv_block = CAB(C, cfg.cab_compress_ratio, cfg.cab_squeeze_factor)
        self.ln_2 = nn.LayerNorm(C)
        self.skip_scale2 = nn.Parameter(torch.ones(C))
        self.mlp = Mlp(C, int(cfg.mlp_ratio * C))

    @property
    def directions(self) -> tuple[str, ...]:
        return self.self_attention.directions

    def forward(self, inp: Tensor) -> Tensor:
        x = self.ln_1(inp)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        x = inp * self.skip_scale + self.drop_path(self.self_attention(x)) + conv_x * self.cab_scale
        return x * self.skip_scale2 + self.drop_path(self.mlp(self.ln_2(x)))


class CrossScaleSS2D(_SSMCore):
    """Cross-scale fusion layer (upstream ``Cross_SS2D``).

    Scans the joint LR + HR token sequence (see `mambacsr.scan_orders.cross_scan_order`),
    keeps the HR outputs, and applies its own residual MLP.

    Shapes: forward((B, H, W, C) HR, (B, H/2, W/2, C) LR) -> (B, H, W, C).
    """

    def __init__(self, cfg: MambaCSRConfig) -> None:
        super().__init__()
        C, D = cfg.embed_dim, cfg.d_inner
        self.directions = tuple(cfg.cross_directions)
        self.mode = cfg.cross_mode
        self.official_unscan = cfg.official_cross_unscan
        self.out_norm = nn.LayerNorm(D)
        self.in_proj = nn.Linear(C, 2 * D, bias=False)
        self.in_proj_down = nn.Linear(C, 2 * D, bias=False)
        self.ln_1 = nn.LayerNorm(C)
        self.ln_2 = nn.LayerNorm(C)
        self.act = nn.SiLU()
        self.act_down = nn.SiLU()
        k = cfg.d_conv
        self.conv2d = nn.Conv2d(D, D, k, padding=(k - 1) // 2, groups=D, bias=True)
        self.conv2d2 = nn.Conv2d(D, D, k, padding=(k - 1) // 2, groups=D, bias=True)
        self._init_ssm(len(self.directions), cfg)
        self.out_proj = nn.Linear(D, C, bias=False)
        self.multi_scan = MultiScan(D, self.directions, cfg.attn_act_ratio)
        self.mlp = Mlp(C, int(cfg.cross_mlp_ratio * C))
        self.skip_scale = nn.Parameter(torch.ones(C))
        self.skip_scale2 = nn.Parameter(torch.ones(C))

    def forward(self, x: Tensor, x_down: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        if tuple(x_down.shape[1:3]) != (H // 2, W // 2):
            raise ValueError(f"CrossScaleSS2D: x_down must be (B, {H // 2}, {W // 2}, C), got {tuple(x_down.shape)}")
        inp = x
        x, z = self.in_proj(self.ln_1(x)).chunk(2, dim=-1)
        z = self.act(z)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # (B, D, H, W)
        # Upstream also computes act_down(z_down) and never uses it: skip it (same output).
        x_down = self.in_proj_down(x_down)[..., :self.d_inner]
        x_down = self.act_down(self.conv2d2(x_down.permute(0, 3, 1, 2).contiguous()))  # (B, D, H/2, W/2)
        orders = [cross_scan_order(d, int(H), int(W), self.mode, self.official_unscan) for d in self.directions]
        ys = self._scan_core(_stack_padded([scan(x, o, x_down) for o in orders]))
        y = self.out_norm(self.multi_scan.merge(ys, orders, H, W)).view(B, H, W, -1).to(z.dtype)
        out = self.out_proj(y * z)
        out = inp * self.skip_scale + out
        return out * self.skip_scale2 + self.mlp(self.ln_2(out))


class ResidualLocalGroup(nn.Module):
    """Residual local Mamba group (RLMG): blocks, a conv, and a skip. (B, H, W, C) -> same."""

    def __init__(self, cfg: MambaCSRConfig, depth: int, cycle: Cycle, drop_path: list[float]) -> None:
        super().__init__()
        self.residual_group = BasicLayer(RLMBlock(cfg, cycle[i % len(cycle)], drop_path[i]) for i in range(depth))
        self.conv = residual_conv(cfg.embed_dim, cfg.resi_connection)

    def forward(self, x: Tensor) -> Tensor:
        y = self.residual_group(x).permute(0, 3, 1, 2).contiguous()
        return self.conv(y).permute(0, 2, 3, 1) + x


# ----------------------------------------------------------------------------- model


class MambaCSR(nn.Module):
    """MambaCSR network.

    Args:
        cfg: a `MambaCSRConfig` (see the variant functions).

    forward: (B, in_chans, h, w) in [0, 1], any h, w -> (B, in_chans, upscale*h, upscale*w).
    """

    def __init__(self, cfg: MambaCSRConfig) -> None:
        super().__init__()
        if not isinstance(cfg, MambaCSRConfig):
            raise TypeError(f"MambaCSR takes a MambaCSRConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        C = cfg.embed_dim
        mean = torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1) if cfg.in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.conv_first = nn.Conv2d(cfg.in_chans, C, 3, 1, 1)
        self.patch_embed = PatchEmbed(C, norm=True, flatten=False)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        if cfg.cross_scale:
            self.pos_drop2 = nn.Dropout(cfg.drop_rate)
            self.patch_embed2 = PatchEmbed(C, norm=True, flatten=False)
        dpr = linear_drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            ResidualLocalGroup(cfg, d, cfg.directions, dpr[s:s + d]) for d, s in zip(cfg.depths, starts))
        if cfg.cross_scale:
            # Upstream reuses the first drop-path rates of main group i for half-resolution group i.
            self.layers2 = nn.ModuleList(
                ResidualLocalGroup(cfg, d, cfg.lr_directions, (dpr[s:] + [0.0] * d)[:d])
                for d, s in zip(cfg.depths2, starts))
            self.layers3 = nn.ModuleList(CrossScaleSS2D(cfg) for _ in cfg.depths2)
        self.norm = nn.LayerNorm(C)
        self.conv_after_body = residual_conv(C, cfg.resi_connection)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(C, cfg.num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(cfg.upscale, cfg.num_feat)
        self.conv_last = nn.Conv2d(cfg.num_feat, cfg.in_chans, 3, 1, 1)
        self.apply(init_weights)

    @property
    def block_directions(self) -> dict[str, tuple]:
        """The directions each built block scans (same layout as `MambaCSRConfig.block_directions`)."""
        def groups(layers: nn.ModuleList) -> tuple:
            return tuple(tuple(b.directions for b in g.residual_group.blocks) for g in layers)

        return {
            "layers": groups(self.layers),
            "layers2": groups(self.layers2) if self.cfg.cross_scale else (),
            "layers3": tuple(m.directions for m in self.layers3) if self.cfg.cross_scale else (),
        }

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) shallow features -> (B, C, H, W) deep features."""
        if self.cfg.cross_scale:
            x_down = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
            x_down = self.pos_drop2(self.patch_embed2(x_down))  # (B, H/2, W/2, C)
        x = self.pos_drop(self.patch_embed(x))  # (B, H, W, C)
        n_cross = len(self.cfg.depths2) if self.cfg.cross_scale else 0
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n_cross:
                x_down = self.layers2[i](x_down)
                x = self.layers3[i](x, x_down)
        return self.norm(x).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: (B, in_chans, h, w) float in [0, 1].

        Returns:
            (B, in_chans, upscale*h, upscale*w), nominally in [0, 1] (not clamped).
        """
        if x.dim() != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"MambaCSR expects (B, {self.cfg.in_chans}, h, w), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.cfg.pad_multiple > 1:
            x = pad_symmetric(x, self.cfg.pad_multiple)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.cfg.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        x = x / self.cfg.img_range + mean
        s = self.cfg.upscale
        return x[..., :h * s, :w * s]


def checkpoint_filter_fn(state_dict: dict, model: MambaCSR) -> dict[str, Tensor]:
    """Adapt an upstream (BasicSR) checkpoint to `MambaCSR`.

    Unwraps ``params_ema`` (preferred, as the official test reads it), ``params``,
    ``state_dict`` or ``model``; strips a DDP ``module.`` prefix; drops ``mean`` (a
    non-persistent buffer here).

    Args:
        state_dict: the loaded checkpoint (a dict).
        model: the target model (used to report unexpected keys clearly).

    Returns:
        A state dict for ``model.load_state_dict(..., strict=True)``.
    """
    state_dict, _ = unwrap_state_dict(state_dict, "MambaCSR checkpoint_filter_fn")
    return {k: v for k, v in state_dict.items() if k != "mean"}


# ----------------------------------------------------------------------------- variants


def mambacsr() -> MambaCSRConfig:
    """The paper model (Table 1): dual-interleaved + position-aligned cross-scale scanning.

    options/train/MambaCSR_Q10_Final.yaml; released weights ``Cross-scale-QF10-x4.pth``.
    22,051,842 parameters.
    """
    return MambaCSRConfig()


def mambacsr_wo_cross() -> MambaCSRConfig:
    """Dual-interleaved scanning only (Table 2 "no cross-scale"; Table 3 "both"; Table 4 w=8).

    options/train/MambaCSR_Q10_wo.yaml; released weights ``Dual-Interleaved-QF10-x4.pth``.
    18,372,603 parameters.
    """
    return replace(MambaCSRConfig(), cross_scale=False, pad_multiple=1)


def mambacsr_sequential_cross() -> MambaCSRConfig:
    """Table 2 "simple sequential cross-scale scanning" (no upstream config; our reading).

    Same network as `mambacsr`; the cross layer scans all LR tokens, then all HR tokens
    (the same LR and HR orders as the aligned scan, concatenated instead of interleaved).
    """
    return replace(MambaCSRConfig(), cross_mode="sequential")


def mambacsr_t3_plain() -> MambaCSRConfig:
    """Table 3 "neither hierarchical nor H2V" (no upstream config; our reading).

    Upstream's ``dual_interleaved_scan=False`` branch: every block scans all four
    directions ``w8, w8_flip, c_w8, c_w8_flip`` (K = 4, local windows only). K = 4 is what
    makes this row cost more (84.56 vs 76.03 GFLOPs in the paper). Cross-scale off, as
    the table's text says; its printed GFLOPs seem measured with cross-scale on.
    """
    return replace(mambacsr_wo_cross(), directions=(_four_way(8),))


def mambacsr_t3_hier() -> MambaCSRConfig:
    """Table 3 "hierarchical only": blocks 0,1 scan ``w8`` 4-way, blocks 2,3 ``w64`` 4-way (K = 4).

    The official i % 4 cycle with the row/column alternation removed (our reading).
    """
    return replace(mambacsr_wo_cross(), directions=(_four_way(8), _four_way(8), _four_way(64), _four_way(64)))


def mambacsr_t3_h2v() -> MambaCSRConfig:
    """Table 3 "horizontal-to-vertical only": ``[w8, w8_flip]`` and ``[c_w8, c_w8_flip]``
    alternate (K = 2), no large window (our reading)."""
    return replace(mambacsr_wo_cross(), directions=(("w8", "w8_flip"), ("c_w8", "c_w8_flip")))


def mambacsr_t3_both() -> MambaCSRConfig:
    """Table 3 "hierarchical + H2V" = `mambacsr_wo_cross` (its scores equal Table 2's row)."""
    return mambacsr_wo_cross()


def _win(w: int) -> MambaCSRConfig:
    return replace(mambacsr_wo_cross(), directions=dual_interleaved(w, 64))


def mambacsr_win4() -> MambaCSRConfig:
    """Table 4, window 4x4: upstream ``scan_size=4`` replaces only the local window
    (cycle w4, c_w4, w64, c_w64); the 64 window stays; cross-scale off (w=8 row equals
    `mambacsr_wo_cross`'s scores)."""
    return _win(4)


def mambacsr_win8() -> MambaCSRConfig:
    """Table 4, window 8x8 (= `mambacsr_wo_cross`)."""
    return _win(8)


def mambacsr_win16() -> MambaCSRConfig:
    """Table 4, window 16x16 (cycle w16, c_w16, w64, c_w64)."""
    return _win(16)


def mambacsr_win32() -> MambaCSRConfig:
    """Table 4, window 32x32 (cycle w32, c_w32, w64, c_w64)."""
    return _win(32)


def mambacsr_win64() -> MambaCSRConfig:
    """Table 4, window 64x64: local = large window, so the hierarchy collapses (w64, c_w64, w64, c_w64)."""
    return _win(64)


def _cap_window(name: str, cap: int) -> str:
    kind, w, column_first, flip = parse_direction(name)
    if kind != "window" or w <= cap:
        return name
    return f"{'c_' if column_first else ''}w{cap}{'_flip' if flip else ''}"


def smoke(cfg: MambaCSRConfig) -> MambaCSRConfig:
    """Reduced copy of `cfg` for CI: same code paths and scan structure, small dims.

    embed_dim 24, d_state 8, 2 groups of (4, 2) blocks (4 so the whole 4-block direction
    cycle occurs), one 4-block half-resolution group and the cross layer if `cfg` has
    them, num_feat 16, CAB reductions 6 (4 hidden channels; 24 would leave a single
    ReLU channel that is often dead). Windows larger than 16 are capped at 16, so a 16 x 16 LR patch
    plays the role of the 64 x 64 training patch (``w16`` global there, zero-padded on the
    8 x 8 half-resolution map, as ``w64`` is on 32 x 32). `upscale` is kept.
    """
    def cap(cycle: Cycle) -> Cycle:
        return tuple(tuple(_cap_window(d, 16) for d in dirs) for dirs in cycle)

    return replace(
        cfg, embed_dim=24, d_state=8, depths=(4, 2), num_feat=16, cab_compress_ratio=6, cab_squeeze_factor=6,
        depths2=(4,) if cfg.cross_scale else cfg.depths2,
        directions=cap(cfg.directions), lr_directions=cap(cfg.lr_directions),
        cross_directions=tuple(_cap_window(d, 16) for d in cfg.cross_directions),
    )


# Released weights (timm ``_cfg`` style, plain data; read by ``harness.released``). Official test:
# options/test/test_MambaCSR_Q10_{Final,wo}.yml (``param_key_g: params_ema``, crop_border 4) and
# basicsr/models/mambacsr_model.py ``test()``: the LR image is split into (h // 192 + 1) x (w // 192 + 1)
# parts with a quarter-part overlap, each part mirror-padded up to the next multiple of 64, no
# self-ensemble. ``official`` lists the config overrides that reproduce the official code.
_MAMBACSR_EVAL = {
    "tile": 192, "tile_overlap": 48, "pad_multiple": 64, "self_ensemble": False, "crop_border": 4,
    "note": "official: h//192+1 parts per side with a quarter overlap, each padded to the next multiple of 64 "
            "(at least 1 px); here: 192 px LR tiles, 48 px overlap, centre blend, pad_multiple 64",
}
_MAMBACSR_RELEASE = {  # what the two released files share
    "url": "https://drive.google.com/drive/folders/1595CDawG7MIiNgMAAPcAtDpM_PiPKmGS",
    "sha256": None, "sha256_note": "the authors publish no hash; the Google Drive folder cannot be fetched here",
    "params_key": "params_ema", "license": "none stated (the repository has no license file)",
    "train_data": "DF2K (DIV2K + Flickr2K), sub-images 480 px HR / 120 px LR, step 240 / 60 (README)",
    "degradation": {"scale": 4, "codec": "jpeg", "level": 10, "how": "bicubic x4, then cv2 JPEG at quality 10 (README)"},
    "eval": _MAMBACSR_EVAL,
}
RELEASED_WEIGHTS = {
    "Cross-scale-QF10-x4.pth": {**_MAMBACSR_RELEASE, "model": "mambacsr",
                                "official": {"official_cross_unscan": True, "pad_multiple": 64}},
    "Dual-Interleaved-QF10-x4.pth": {**_MAMBACSR_RELEASE, "model": "mambacsr_wo_cross",
                                     "official": {"pad_multiple": 64}},
}


VARIANTS = {
    "mambacsr": mambacsr,
    "mambacsr_wo_cross": mambacsr_wo_cross,
    "mambacsr_sequential_cross": mambacsr_sequential_cross,
    "mambacsr_t3_plain": mambacsr_t3_plain,
    "mambacsr_t3_hier": mambacsr_t3_hier,
    "mambacsr_t3_h2v": mambacsr_t3_h2v,
    "mambacsr_t3_both": mambacsr_t3_both,
    "mambacsr_win4": mambacsr_win4,
    "mambacsr_win8": mambacsr_win8,
    "mambacsr_win16": mambacsr_win16,
    "mambacsr_win32": mambacsr_win32,
    "mambacsr_win64": mambacsr_win64,
}
