"""Selective scan (Mamba's S6 recurrence) for csrbench: fast paths, reference loop and dispatch.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,   y_t = C_t . h_t + D * u_t,   out_t = y_t * silu(z_t)
    with dt = softplus(delta + delta_bias) when delta_softplus, else delta + delta_bias.

`selective_scan` has the signature and semantics of `mamba_ssm.ops.selective_scan_interface.
selective_scan_fn` (state-spaces/mamba, commit e9594ce1c732d97440f0332fdc43170a2294dbfa, Apache-2.0)
for real-valued A; `selective_scan_ref` is the plain loop over L that serves as the oracle. One
difference: here the gradient also flows back from `last_state` (mamba_ssm's CUDA op ignores it).

Backends (`current_backend(device)` says which one a call on that device uses):

- ``numba``: `SelectiveScanNumba`, the compiled CPU kernel in `_cpu_kernel.py` (sequential recurrence,
  parallel over batch x channel, explicit adjoint backward, state checkpoints every 64 steps; see
  that module for why). Default on CPU.
- ``torch``: `SelectiveScanTorch`, the chunked pure-PyTorch scan in `_chunked.py` (any device;
  recomputes its forward in the backward). Default on CUDA without mamba_ssm, and on CPU without numba.
- ``mamba_ssm``: mamba_ssm's CUDA `selective_scan_fn` (optional import). Default on CUDA when importable.
- ``ref``: `selective_scan_ref`, slow, any device.

Choose with the environment variable ``CSRBENCH_SCAN_BACKEND=auto|numba|torch|ref|mamba_ssm`` or, in
code, `set_backend(name)` / `with use_backend(name): ...` (these take precedence over the variable).
A forced backend that cannot run on the tensors' device, or is not installed, raises RuntimeError.

FLOP counting: each fast backend is one `torch.autograd.Function`, so `torch.jit.trace` (fvcore) sees one
node per scan; `SCAN_OP_NAMES` lists their node names (`prim::PythonOp.<class name>`) for which a
counter must register a handle. The ``ref`` backend traces to plain einsum/elementwise ops instead.

dtypes: float32 and float64 are computed in their own precision; float16/bfloat16 inputs are computed
in float32 and the output is cast back to u's dtype (as mamba_ssm does). last_state is returned in the
compute dtype (float32 / float64).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._chunked import SelectiveScanTorch, selective_scan_chunked

try:  # optional compiled CPU kernel
    from . import _cpu_kernel
except ImportError:  # numba not installed
    _cpu_kernel = None

__all__ = [
    "selective_scan", "selective_scan_ref", "selective_scan_chunked", "SelectiveScanNumba", "SelectiveScanTorch",
    "SCAN_OP_NAMES", "BACKENDS", "ENV_VAR", "set_backend", "use_backend", "current_backend",
]

ENV_VAR = "CSRBENCH_SCAN_BACKEND"
BACKENDS = ("auto", "numba", "torch", "ref", "mamba_ssm")
# jit-trace node kinds of the scan ops (fvcore: "prim::PythonOp." + the Function's class name)
SCAN_OP_NAMES = (
    "prim::PythonOp.SelectiveScanNumba",
    "prim::PythonOp.SelectiveScanTorch",
    "prim::PythonOp.SelectiveScanFn",  # mamba_ssm's CUDA op
)
MAMBA_INSTALL_HINT = "pip install -e '.[cuda]'  (or: bash ../shared/device/build_mamba.sh)"

_forced_backend: str | None = None
_mamba_fn = None
_mamba_error: str | None = None


# ---------------------------------------------------------------------------------------------------------
# input checks


def _check_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                  z: Tensor | None, delta_bias: Tensor | None) -> None:
    """Raise ValueError naming the argument whose shape or dtype does not fit the spec."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    if L < 1:
        raise ValueError(f"selective_scan: sequence length L must be >= 1, got u of shape {tuple(u.shape)}")
    if tuple(delta.shape) != tuple(u.shape):
        raise ValueError(f"selective_scan: delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.is_complex() or any(t is not None and t.is_complex() for t in (u, delta, B, C)):
        raise ValueError("selective_scan: complex A/B/C are not supported (real-valued Mamba only)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (dim={dim}, N), got shape {tuple(A.shape)}")
    N = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        ok = ((M.dim() == 2 and tuple(M.shape) == (dim, N))
              or (M.dim() == 3 and tuple(M.shape) == (batch, N, L))
              or (M.dim() == 4 and M.shape[0] == batch and M.shape[2:] == (N, L) and M.shape[1] >= 1
                  and dim % M.shape[1] == 0))
        if not ok:
            raise ValueError(f"selective_scan: {name} must be (dim, N)=({dim}, {N}), (batch, N, L)=({batch}, {N}, "
                             f"{L}) or (batch, G, N, L) with dim % G == 0; got shape {tuple(M.shape)}")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and tuple(v.shape) != (dim,):
            raise ValueError(f"selective_scan: {name} must be (dim,)=({dim},), got shape {tuple(v.shape)}")
    if z is not None and tuple(z.shape) != tuple(u.shape):
        raise ValueError(f"selective_scan: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


def _variable(M: Tensor, batch: int, L: int) -> Tensor:
    """Constant (dim, N) B or C as (batch, dim, N, L) (one group per channel); others unchanged."""
    if M.dim() == 2:
        return M[None, :, :, None].expand(batch, M.shape[0], M.shape[1], L)
    return M


# ---------------------------------------------------------------------------------------------------------
# reference


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False):
    """Plain loop over L with the semantics of mamba_ssm's `selective_scan_ref` (real A only).

    u: r(B D L)
    delta: r(B D L)
    A: r(D N)
    B: r(D N) or r(B N L) or r(B G N L)   (group g serves channels g*D/G ... (g+1)*D/G - 1)
    C: r(D N) or r(B N L) or r(B G N L)
    D: r(D)
    z: r(B D L)
    delta_bias: r(D)

    out: r(B D L), u's dtype
    last_state (optional): r(B D N), float32 (float64 for float64 u)

    Computes in float32, or float64 when u is float64 (so it can serve as a float64 oracle).
    The per-step tensors come from `unbind`, not indexing, so that the backward is linear in L
    (indexing a (B, D, L, N) tensor once per step makes autograd zero-fill a full-size gradient
    per step: quadratic in L, ~25 min for one MambaCSR-size backward).

    Args:
        u, delta, A, B, C, D, z, delta_bias: as above; D, z, delta_bias optional.
        delta_softplus: apply softplus to delta + delta_bias.
        return_last_state: also return the final state.

    Returns:
        out, or (out, last_state) when return_last_state.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(cdt), delta.to(cdt), A.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    dstate = A.shape[1]
    B, C = B.to(cdt), C.to(cdt)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if B.dim() == 2:
        deltaB_u = torch.einsum("bdl,dn,bdl->bdln", delta, B, u)
    elif B.dim() == 3:
        deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    else:
        B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (B, D, N, L)
        deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    if C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    deltaA_t, deltaB_u_t = deltaA.unbind(2), deltaB_u.unbind(2)
    C_t = C.unbind(-1) if C.dim() >= 3 else None
    x = u.new_zeros(batch, dim, dstate)
    ys = []
    for i in range(L):
        x = deltaA_t[i] * x + deltaB_u_t[i]
        if C.dim() == 2:
            ys.append(torch.einsum("bdn,dn->bd", x, C))
        elif C.dim() == 3:
            ys.append(torch.einsum("bdn,bn->bd", x, C_t[i]))
        else:
            ys.append(torch.einsum("bdn,bdn->bd", x, C_t[i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D.to(cdt)[:, None]
    if z is not None:
        out = out * F.silu(z.to(cdt))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


# ---------------------------------------------------------------------------------------------------------
# numba CPU kernel as an autograd op


def _groups(M: Tensor) -> Tensor:
    return M.unsqueeze(1) if M.dim() == 3 else M


def _keep_torch_threads(kernel, *args):
    """``kernel(*args)``, leaving torch's intra-op thread count as it was.

    numba's OpenMP threading layer shares the process's OpenMP runtime with torch and, on its first
    parallel launch, sets the runtime's thread count to numba's own (NUMBA_NUM_THREADS): torch then
    runs its ops with that many threads too. Harmless when the two counts are equal (the defaults);
    the smoke profile gives numba 2 threads and torch 1 (see harness.cli), and there this silently
    made every torch op after the first scan two-threaded. Measured: numba's later launches do not
    change it again, so restoring once is enough; the check costs ~1 us per call.
    """
    n = torch.get_num_threads()
    try:
        return kernel(*args)
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


class SelectiveScanNumba(torch.autograd.Function):
    """The numba CPU kernel (forward + explicit adjoint backward) as one autograd op.

    Same arguments as `selective_scan`, B and C 3-D or 4-D (CPU tensors). Traces as
    `prim::PythonOp.SelectiveScanNumba`. Gradients flow to every tensor input, from `out` and from
    `last_state`. delta_bias + softplus before the scan and the silu(z) gate after it are vectorised
    torch ops inside the op (with their own backward here); the kernel does the recurrence, y = C.h + D u,
    and its adjoint. Saved for backward: the inputs, dt, y when z is given, and the state every 64 steps.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                return_last_state=False):
        if _cpu_kernel is None:
            raise RuntimeError("SelectiveScanNumba needs numba: pip install numba (or use backend 'torch')")
        if u.device.type != "cpu":
            raise RuntimeError(f"SelectiveScanNumba is CPU only, got tensors on {u.device}")
        ctx.set_materialize_grads(False)
        cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
        B4, C4 = _groups(B), _groups(C)
        gb, gc = B4.shape[1], C4.shape[1]
        G = gb * gc // math.gcd(gb, gc)  # the kernel needs one group count: repeat B/C groups to the lcm
        Bk = B4.detach().to(cdt).repeat_interleave(G // gb, dim=1) if G != gb else B4.detach().to(cdt)
        Ck = C4.detach().to(cdt).repeat_interleave(G // gc, dim=1) if G != gc else C4.detach().to(cdt)
        Bk = Bk.transpose(-1, -2).contiguous()  # (b, G, L, N)
        Ck = Ck.transpose(-1, -2).contiguous()
        uk, Ak = u.detach().to(cdt).contiguous(), A.detach().to(cdt).contiguous()
        Dk = None if D is None else D.detach().to(cdt).contiguous()
        x = delta.detach().to(cdt)
        if delta_bias is not None:
            x = x + delta_bias.detach().to(cdt)[:, None]
        dt = (F.softplus(x) if delta_softplus else x).contiguous()
        y, ckpt, last = _keep_torch_threads(_cpu_kernel.scan_fwd, uk.numpy(), dt.numpy(), Ak.numpy(), Bk.numpy(),
                                            Ck.numpy(), None if Dk is None else Dk.numpy())
        y = torch.from_numpy(y)
        zk = None
        if z is not None:
            zk = z.detach().to(cdt)
            out = y * F.silu(zk)
        else:
            out = y
        ctx.delta_softplus = bool(delta_softplus)
        ctx.meta = (B.dim(), C.dim(), gb, gc, G)
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias))
        ctx.save_for_backward(uk, x if delta_softplus else None, dt, Ak, Bk, Ck, Dk, zk,
                              y if z is not None else None, torch.from_numpy(ckpt))
        out = out.to(u.dtype)
        if not return_last_state:
            return out
        return out, torch.from_numpy(last)

    @staticmethod
    def backward(ctx, dout, dlast=None):
        uk, x, dt, Ak, Bk, Ck, Dk, zk, y, ckpt = ctx.saved_tensors
        b_dim, c_dim, gb, gc, G = ctx.meta
        cdt = uk.dtype
        dout = torch.zeros_like(uk) if dout is None else dout.to(cdt)
        dz = None
        if zk is not None:
            sig = torch.sigmoid(zk)
            dz = dout * y * sig * (1 + zk * (1 - sig))
            dy = dout * (zk * sig)
        else:
            dy = dout
        g = _keep_torch_threads(_cpu_kernel.scan_bwd, uk.numpy(), dt.numpy(), Ak.numpy(), Bk.numpy(), Ck.numpy(),
                                None if Dk is None else Dk.numpy(), ckpt.numpy(), dy.contiguous().numpy(),
                                None if dlast is None else dlast.detach().to(cdt).contiguous().numpy())
        t = {k: torch.from_numpy(v) for k, v in g.items()}
        ddelta = t["ddt"]
        if ctx.delta_softplus:
            ddelta = torch.ops.aten.softplus_backward(ddelta, x, 1.0, 20.0)
        batch, _, L = uk.shape
        N = Ak.shape[1]
        dB = t["dB"].transpose(-1, -2)  # (b, G, N, L)
        dC = t["dC"].transpose(-1, -2)
        if G != gb:
            dB = dB.reshape(batch, gb, G // gb, N, L).sum(2)
        if G != gc:
            dC = dC.reshape(batch, gc, G // gc, N, L).sum(2)
        if b_dim == 3:
            dB = dB.squeeze(1)
        if c_dim == 3:
            dC = dC.squeeze(1)
        tu, tdelta, tA, tB, tC, tD, tz, tbias = ctx.dtypes
        return (t["du"].to(tu), ddelta.to(tdelta), t["dA"].to(tA), dB.to(tB), dC.to(tC),
                None if tD is None else t["dD"].to(tD),
                None if tz is None else dz.to(tz),
                None if tbias is None else ddelta.sum(dim=(0, 2)).to(tbias),
                None, None)


# ---------------------------------------------------------------------------------------------------------
# dispatch


def _mamba_selective_scan_fn():
    """mamba_ssm's `selective_scan_fn`, or None when it cannot be imported (reason kept for the error)."""
    global _mamba_fn, _mamba_error
    if _mamba_fn is None and _mamba_error is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            _mamba_fn = selective_scan_fn
        except Exception as err:  # ImportError, or a broken CUDA build (OSError, RuntimeError)
            _mamba_error = f"{type(err).__name__}: {err}"
    return _mamba_fn


def _validate_backend(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {name!r} from {source}; choose one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str | None) -> None:
    """Force a backend for every later call (None or 'auto': back to the env var / automatic choice)."""
    global _forced_backend
    _forced_backend = None if name is None else _validate_backend(name, "set_backend()")


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Context manager: force a backend inside the block, restore the previous setting afterwards."""
    global _forced_backend
    previous = _forced_backend
    set_backend(name)
    try:
        yield
    finally:
        _forced_backend = previous


def requested_backend() -> str:
    """The backend asked for: `set_backend`/`use_backend` if set, else $CSRBENCH_SCAN_BACKEND, else 'auto'."""
    if _forced_backend is not None:
        return _forced_backend
    return _validate_backend(os.environ.get(ENV_VAR, "auto").strip() or "auto", f"${ENV_VAR}")


def current_backend(device: torch.device | str = "cpu") -> str:
    """Name of the backend a call on `device` uses now: 'numba', 'torch', 'ref' or 'mamba_ssm'.

    Args:
        device: where the scan's tensors live ('cpu', 'cuda', 'cuda:1', torch.device).

    Returns:
        The resolved backend name.

    Raises:
        RuntimeError: the requested backend cannot run there (numba off CPU, mamba_ssm off CUDA or not installed).
    """
    dev = torch.device(device).type
    name = requested_backend()
    if name == "auto":
        if dev == "cuda":
            return "mamba_ssm" if _mamba_selective_scan_fn() is not None else "torch"
        return "numba" if (dev == "cpu" and _cpu_kernel is not None) else "torch"
    if name == "numba":
        if _cpu_kernel is None:
            raise RuntimeError("selective-scan backend 'numba' requested but numba is not installed: pip install numba")
        if dev != "cpu":
            raise RuntimeError(f"selective-scan backend 'numba' is CPU only; tensors are on {device}")
    if name == "mamba_ssm":
        if _mamba_selective_scan_fn() is None:
            raise RuntimeError(f"selective-scan backend 'mamba_ssm' requested but mamba_ssm is not importable "
                               f"({_mamba_error}). Install it with: {MAMBA_INSTALL_HINT}")
        if dev != "cuda":
            raise RuntimeError(f"selective-scan backend 'mamba_ssm' is CUDA only; tensors are on {device}")
    return name


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False):
    """Selective scan on the fastest available backend; semantics of mamba_ssm's `selective_scan_fn`.

    Args:
        u: r(B D L) input.
        delta: r(B D L) step sizes (before delta_bias / softplus).
        A: r(D N) real state matrix (Mamba: A = -exp(A_log) < 0).
        B: r(B N L), r(B G N L) (channel d uses group d // (D // G)) or r(D N) (constant).
        C: same layouts as B.
        D: r(D) skip, optional.
        z: r(B D L) gate, optional; out = y * silu(z).
        delta_bias: r(D), added to delta before the softplus, optional.
        delta_softplus: dt = softplus(delta + delta_bias).
        return_last_state: also return the final state r(B D N).

    Returns:
        out r(B D L) in u's dtype, or (out, last_state); last_state in float32 (float64 for float64 u).
    """
    if torch.jit.is_tracing():  # fvcore / jit.trace: record one op, without warnings about its inside
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _dispatch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
              delta_bias: Tensor | None, delta_softplus: bool, return_last_state: bool):
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    backend = current_backend(u.device)
    if backend == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "mamba_ssm":
        return _mamba_selective_scan_fn()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    batch, _, L = u.shape
    B, C = _variable(B, batch, L), _variable(C, batch, L)
    fn = SelectiveScanNumba if backend == "numba" else SelectiveScanTorch
    return fn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
