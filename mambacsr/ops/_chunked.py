"""Chunked pure-PyTorch selective scan: runs on any device, no compiled kernel needed.

The sequence is cut into `n_chunks` chunks of `chunk` steps (chunk ~ sqrt(L), a power of two;
L is padded with delta = 0 steps, which keep the state unchanged, so the last state stays exact):

1. Pass 1, all chunks at once: run the recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t over the
   `chunk` steps of every chunk in parallel, from a zero state; keep the end state of each chunk.
2. Carry, one step per chunk: state_in[c+1] = P[c] * state_in[c] + end_state[c], where
   P[c] = exp(A * sum_{t in chunk c} dt_t) is the cumulative decay of the chunk, i.e. the cumulative sum
   of dt*A in log space relative to the chunk start. With A < 0 (Mamba: A = -exp(A_log)) and dt >= 0
   (softplus) every exponent is <= 0: nothing overflows, strong decay just underflows to 0.
3. Pass 2, all chunks at once: rerun the recurrence from the true chunk start states and read
   y_t = C_t . h_t at every step.

No step ever divides by a decay or exponentiates a positive partial sum, which is what makes the
"cumsum in log space over the whole sequence" formulation overflow. The Python loop has
2*chunk + n_chunks ~ 3*sqrt(L) iterations instead of L; each works on a (B, D, N, n_chunks) state.

When some dt*A can be positive (A > 0 with dt > 0, or dt < 0 with A < 0), the chunk decay P can
overflow earlier than the step-by-step product would; the path then falls back to one chunk of
length L, i.e. exactly the reference recurrence (slower, but as correct as `selective_scan_ref`).

`SelectiveScanTorch` wraps this in a `torch.autograd.Function`: the forward runs without a graph and
saves only the inputs; the backward recomputes the forward with autograd enabled and differentiates
it (activation checkpointing of the scan). A trace therefore shows one op,
`prim::PythonOp.SelectiveScanTorch`; between forward and backward only the inputs are kept (the
recompute's graph exists only during the backward), at the cost of one extra forward. `selective_scan_chunked` is the same computation as plain,
differentiable torch ops (it traces to those ops).

Semantics: state-spaces/mamba `mamba_ssm/ops/selective_scan_interface.py`
(commit e9594ce1c732d97440f0332fdc43170a2294dbfa, Apache-2.0); written for csrbench, no code copied.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SelectiveScanTorch", "selective_scan_chunked", "default_chunk"]


def default_chunk(L: int) -> int:
    """Chunk length: the power of two nearest sqrt(L), at least 1 and at most L."""
    if L <= 1:
        return 1
    return max(1, min(L, 2 ** round(math.log2(math.sqrt(L)))))


def _as_groups(M: Tensor) -> Tensor:
    """B or C as (batch, G, N, L); 3-D (batch, N, L) means one group."""
    return M.unsqueeze(1) if M.dim() == 3 else M


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                           return_last_state: bool = False, chunk: int | None = None):
    """Chunked selective scan as differentiable torch ops (see the module docstring).

    Args:
        u: r(B D L) input. delta: r(B D L) step sizes. A: r(D N).
        B, C: r(B N L) or r(B G N L); channel d uses group d // (D // G).
        D: r(D) skip, optional. z: r(B D L) gate, optional. delta_bias: r(D), optional.
        delta_softplus: apply softplus to delta + delta_bias. return_last_state: also return r(B D N).
        chunk: chunk length; default `default_chunk(L)`.

    Returns:
        out r(B D L) in u's dtype (computed in float32, float64 for float64 u), and the last state
        r(B D N) in the compute dtype when asked.
    """
    dtype_in = u.dtype
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(cdt), delta.to(cdt), A.to(cdt)
    B, C = _as_groups(B).to(cdt), _as_groups(C).to(cdt)
    batch, dim, L = u.shape
    N = A.shape[1]
    gb, gc = B.shape[1], C.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    dt = F.softplus(delta) if delta_softplus else delta

    if chunk is None:
        chunk = default_chunk(L)
    A_pos, A_neg = A.amax(1) > 0, A.amin(1) < 0
    dt_pos, dt_neg = dt.amax(dim=(0, 2)) > 0, dt.amin(dim=(0, 2)) < 0
    if bool(((A_pos & dt_pos) | (A_neg & dt_neg)).any()):
        chunk = L  # some dt*A > 0: one chunk, the plain recurrence (see module docstring)
    n_chunks = -(-L // chunk)
    pad = n_chunks * chunk - L
    dtu = dt * u
    if pad:
        dt, dtu = F.pad(dt, (0, pad)), F.pad(dtu, (0, pad))  # dt = 0: decay 1, input 0 -> state unchanged
        B, C = F.pad(B, (0, pad)), F.pad(C, (0, pad))

    # Layout: chunks innermost, (..., N, n_chunks), so every elementwise op runs over contiguous rows of
    # n_chunks values. Decays and inputs are made per step (each step's tensors stay in cache; building
    # them all at once as (b, dim, T, N, nc) tensors was measured 1.3-2x slower). Per-step slices come
    # from unbind (indexing once per step would make the backward zero-fill a full-size gradient per
    # step). Shapes per step t: dt_t (b, dim, 1, nc); dtu_t (b, G, H, 1, nc); B_t, C_t (b, G, 1, N, nc);
    # h (b, dim, N, nc).
    dt_c = dt.view(batch, dim, n_chunks, chunk).transpose(2, 3).contiguous()  # (b, dim, T, nc)
    dt_t = dt_c.unsqueeze(2).unbind(3)
    dtu_t = dtu.view(batch, gb, dim // gb, 1, n_chunks, chunk).permute(0, 1, 2, 5, 3, 4).contiguous().unbind(3)
    B_t = B.view(batch, gb, 1, N, n_chunks, chunk).permute(0, 1, 5, 2, 3, 4).contiguous().unbind(2)
    C_t = C.view(batch, gc, 1, N, n_chunks, chunk).permute(0, 1, 5, 2, 3, 4).contiguous().unbind(2)
    A_c = A.view(1, dim, N, 1)

    def step(h: Tensor, t: int) -> Tensor:  # one recurrence step for every chunk at once
        inp = (dtu_t[t] * B_t[t]).view(batch, dim, N, n_chunks)
        return torch.addcmul(inp, torch.exp(dt_t[t] * A_c), h)

    # pass 1: end state of every chunk from a zero start state
    h = u.new_zeros(batch, dim, N, n_chunks)
    if n_chunks > 1:
        for t in range(chunk):
            h = step(h, t)
        # carry: cumulative decay of each chunk = exp(A * sum dt), log space relative to the chunk start
        decay_chunk = torch.exp(dt_c.sum(2, keepdim=True) * A_c).unbind(-1)  # n_chunks x (b, dim, N)
        ends = h.unbind(-1)
        starts = []
        state = u.new_zeros(batch, dim, N)
        for c in range(n_chunks):
            starts.append(state)
            state = torch.addcmul(ends[c], decay_chunk[c], state)
        h = torch.stack(starts, dim=-1)
    # pass 2: states from the true start states, read out y
    ys = []
    for t in range(chunk):
        h = step(h, t)
        hg = h.view(batch, gc, dim // gc, N, n_chunks)
        ys.append((hg * C_t[t]).sum(-2).view(batch, dim, n_chunks))
    y = torch.stack(ys, dim=-1).reshape(batch, dim, n_chunks * chunk)[:, :, :L]
    last_state = h[..., -1]
    out = y if D is None else y + u * D.to(cdt)[:, None]
    if z is not None:
        out = out * F.silu(z.to(cdt))
    out = out.to(dtype_in)
    return (out, last_state) if return_last_state else out


class SelectiveScanTorch(torch.autograd.Function):
    """`selective_scan_chunked` as one autograd op that recomputes its forward in the backward.

    Traces as `prim::PythonOp.SelectiveScanTorch`. Gradients flow to every tensor input and from
    both outputs (out and, when returned, last_state).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                return_last_state=False):
        ctx.set_materialize_grads(False)
        ctx.delta_softplus = delta_softplus
        ctx.return_last_state = return_last_state
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    @staticmethod
    def backward(ctx, dout, dlast=None):
        saved = ctx.saved_tensors
        inputs = [None if t is None else t.detach().requires_grad_(need)
                  for t, need in zip(saved, ctx.needs_input_grad[:8])]
        wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i]]
        grads: list[Tensor | None] = [None] * 10
        if not wanted or (dout is None and dlast is None):
            return tuple(grads)
        with torch.enable_grad():
            res = selective_scan_chunked(*inputs, ctx.delta_softplus, ctx.return_last_state)
        outs = res if ctx.return_last_state else (res,)
        pairs = [(o, g) for o, g in zip(outs, (dout, dlast)) if g is not None]
        got = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted],
                                  [g for _, g in pairs], allow_unused=True)
        for i, g in zip(wanted, got):
            grads[i] = torch.zeros_like(inputs[i]) if g is None else g
        return tuple(grads)
