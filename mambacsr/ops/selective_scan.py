"""Selective scan (Mamba's S6) for csrbench.

PLACEHOLDER (foundation commit): only the reference loop exists so far; the
scan-core issue adds the compiled CPU kernel, the chunked PyTorch path and the
dispatch. `selective_scan` currently calls `selective_scan_ref`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan", "selective_scan_ref"]


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False):
    """Plain loop over L with the semantics of mamba_ssm's `selective_scan_ref`.

    Args:
        u: r(B D L) input.
        delta: r(B D L) step sizes.
        A: r(D N) state matrix (real).
        B: r(B N L) or r(B G N L) input projection (G groups share D // G channels each).
        C: r(B N L) or r(B G N L) output projection.
        D: r(D) skip, optional.
        z: r(B D L) gate, optional; output is multiplied by silu(z).
        delta_bias: r(D), added to delta before the softplus.
        delta_softplus: apply softplus to delta.
        return_last_state: also return the final state r(B D N).

    Returns:
        out: r(B D L) in u's dtype (computed in float32, float64 when u is float64),
        and last_state r(B D N) when asked.
    """
    dtype_in = u.dtype
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(cdt) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    dstate = A.shape[1]
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (B, D, N, L)
    C = C.repeat_interleave(dim // C.shape[1], dim=1)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x = u.new_zeros(batch, dim, dstate)
    ys = []
    for i in range(L):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D.to(cdt)[:, None]
    if z is not None:
        out = out * F.silu(z.to(cdt))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False):
    """Fast selective scan; same signature and semantics as `selective_scan_ref`."""
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
