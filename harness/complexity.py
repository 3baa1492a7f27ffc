"""Stage ``complexity``: parameters and multiply-adds two ways, latency and peak memory.

For every model, at a 1x3xSxS LR input (S = ``complexity.input_size``, 64 as in
Table 1 of the MambaCSR paper):

(a) **true counts**: parameters = sum of ``numel`` over ``model.parameters()``;
    multiply-adds (MACs) with fvcore's ``FlopCountAnalysis`` (fvcore counts one
    fused multiply-add as one "flop"; csrbench labels them MACs) with extra
    handles for the selective scan (:func:`scan_macs`),
    ``aten::scaled_dot_product_attention`` (our transformers' fused attention:
    the two matmuls upstream writes out explicitly) and ``aten::baddbmm``.
(b) **the paper's counting method**: thop's ``profile`` (params and MACs) for
    the transformers; thop's params and fvcore with its *default* handles only,
    i.e. with the selective scan uncounted, for the Mamba models (the official
    MambaCSR ``flops()`` registers its scan handle under a name the trace never
    produces, so fvcore skips the scan). This reproduces Table 1.

Each model runs forward once: thop's own hook functions and summing rule
(:class:`ThopHooks`, checked equal to ``thop.profile`` in the tests) count during
the fvcore trace, so a paper-size network is not run twice on the CPU. The trace
forces a one-PythonOp scan backend (numba, else the chunked PyTorch Function);
the ``ref`` loop would unroll into L einsums.

Both are set beside Table 1 (``harness/paper/mambacsr_table1.csv``, JPEG QF 10
rows) with the delta in percent and, for every delta over 1 %, a one-line
reason built from the measured breakdown (which parameters thop skips, which
operators fvcore sees that thop cannot hook, the scan's share).

The selective scan's MACs, derived from the recurrence (per scan of u: (B, D, L),
A: (D, N)), with a_t = exp(dt_t A), b_t = dt_t B_t u_t, h_t = a_t h_{t-1} + b_t,
y_t = <C_t, h_t> + D u_t, out = y silu(z):

    dt_t * A          B*D*L*N  (multiplies; exp is not a MAC)
    (dt_t u_t) * B_t  B*D*L + B*D*L*N
    a_t h + b_t       B*D*L*N
    <C_t, h_t>        B*D*L*N
    + D u_t           B*D*L    (when D is given)
    * silu(z)         B*D*L    (when z is given)

    scan_macs = 4*B*D*L*N + B*D*L * (1 + [D] + [z])

softplus, bias adds, exp and silu are elementwise and not counted, as fvcore
does for every other elementwise op. The figure often quoted, 9*B*L*D*N
(state-spaces/mamba issue 110, used by VMamba's ``flops_selective_scan_fn``),
counts FLOPs (multiplies and adds separately, plus the exp) rather than
MACs; it is recorded beside ours as ``scan_9bldn`` (plus B*D*L per D / z term,
as VMamba adds) because the "~93.8 G with the scan" figure for MambaCSR uses it.

Paper-size models are always counted (``mambacsr_smoke`` is counted as
``mambacsr``: Table 1 is about the paper sizes, and counting is cheap), while
latency and peak memory are measured on the model named in the run list (the
smoke size on the smoke profile), for the models ``complexity.latency_models``
selects (``all``; ``table1`` = ``runs.models`` only, which bounds the paper preset
to 6 timed networks out of 17 counted; ``none``), each in a fresh subprocess so
allocator state of one model does not leak into the next:

* CPU: peak resident memory, ``VmHWM - VmRSS`` from ``/proc/self/status`` after
  the model is built and a tiny 8x8 forward has loaded the kernels, with the
  high-water mark reset through ``/proc/self/clear_refs`` (Linux >= 4.0). It
  includes allocator slack, not only tensor bytes. Without ``clear_refs`` the
  ``ru_maxrss`` delta is used (an upper bound on the forward's own peak).
* CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated bytes before the
  forward (tensor bytes, not the caching allocator's reserve).

Latency is the median of ``complexity.latency_repeats`` timed forwards under
``torch.no_grad()`` after one warm-up forward at full size.

References: fvcore (facebookresearch/fvcore 0.1.5.post20221221, Apache-2.0),
thop (Lyken17/pytorch-OpCounter 0.1.1.post2209072238, MIT), the official
MambaCSR ``flops()`` (renyulin-f/MambaCSR @ f71199e, Apache-2.0) and VMamba's
scan flop helper (MzeroMiko/VMamba, MIT). No code copied.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import io
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from harness import paper_tables
from harness.config import Config
from harness.deps import require
from harness.provenance import write_json

__all__ = [
    "run", "count_model", "true_params", "scan_macs", "scan_macs_9bldn", "scan_flop_handle",
    "sdpa_flop_handle", "thop_count", "ThopHooks", "measure_in_subprocess", "UNSUPPORTED_OP_REASONS", "family_of",
    "rss_kib", "reset_rss_peak",
]

log = logging.getLogger("csrbench.complexity")

DEFAULT_BUILD = "harness.models:build"
MAMBA_PREFIXES = ("mambacsr", "mambair")
GIGA = 1e9
MEGA = 1e6

# Ops fvcore has no handle for (beyond its own ignore list) that we leave uncounted on purpose.
# Every op in a trace's unsupported_ops() must be here (reason) or get a handle; otherwise the
# result lists it under "unjustified_ops" and the stage logs a warning.
_ELEMENTWISE = "elementwise (not a multiply-add); fvcore, thop and Table 1 leave it uncounted"
_MOVEMENT = "indexing / layout / copy (no arithmetic)"
_REDUCTION = "reduction or normalisation inside a module (adds, no multiply-add of weights)"
UNSUPPORTED_OP_REASONS: dict[str, str] = {
    **{f"aten::{op}": _ELEMENTWISE for op in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "pow", "sqrt", "rsqrt",
        "exp", "exp_", "log", "log1p", "abs", "sigmoid", "sigmoid_", "silu", "silu_", "gelu", "relu", "relu_",
        "leaky_relu", "leaky_relu_", "prelu", "tanh", "softplus", "softmax", "log_softmax", "clamp_min",
        "clamp_max", "reciprocal", "sin", "cos", "sign", "where", "lerp", "addcmul", "hardtanh",
        "hardswish", "erf", "square", "minimum", "maximum", "fill_", "zero_", "sigmoid_backward",
        "ne", "lt", "le", "logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or",
        "fmod", "remainder", "round", "ceil", "trunc", "exp2", "expm1")},
    **{f"aten::{op}": _MOVEMENT for op in (
        "flip", "roll", "pad", "reflection_pad2d", "replicate_pad2d", "pixel_shuffle", "pixel_unshuffle",
        "unfold", "im2col", "col2im", "fold", "index_select", "take_along_dim", "repeat", "repeat_interleave",
        "stack", "unbind", "split", "split_with_sizes", "tensor_split", "unflatten", "movedim", "new_zeros",
        "new_ones", "zeros", "ones", "zeros_like", "ones_like", "empty_like", "rand", "randn", "scatter",
        "scatter_", "masked_fill_", "type_as", "to", "clone", "slice_scatter", "select_scatter", "tril",
        "triu", "meshgrid", "linspace", "sort", "argsort", "topk", "nonzero", "masked_select", "alias",
        "lift_fresh", "resolve_conj", "resolve_neg", "channel_shuffle", "diagonal", "squeeze_", "unsqueeze_",
        "as_strided", "permute", "view", "reshape", "transpose", "t", "unsqueeze", "squeeze", "select",
        "slice", "size", "numel", "dim", "expand_as", "view_as", "reshape_as", "contiguous")},
    **{f"aten::{op}": _REDUCTION for op in (
        "mean", "sum", "var", "std", "var_mean", "norm", "linalg_vector_norm", "frobenius_norm", "amax",
        "amin", "logsumexp", "cumsum", "prod", "argmax", "argmin", "all", "any")},
    "aten::upsample_bicubic2d": "interpolation (16 weights per output pixel, fixed, not learned); "
                                "fvcore counts bilinear as 4 per output, bicubic has no default handle",
}


# ----------------------------------------------------------------------------- counting helpers

def true_params(model: nn.Module) -> int:
    """Sum of ``numel`` over every parameter (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def family_of(model: str) -> str:
    """``mamba`` for MambaIR / MambaCSR and their variants (the paper counted MACs with fvcore), else
    ``transformer`` (counted with thop)."""
    return "mamba" if paper_tables.base_name(model).startswith(MAMBA_PREFIXES) else "transformer"


def scan_macs(batch: int, dim: int, length: int, dstate: int, with_D: bool, with_z: bool) -> int:
    """Multiply-adds of one selective scan, derived from the recurrence (see the module docstring).

    Args:
        batch, dim, length, dstate: B, D (all directions / groups together), L, N.
        with_D: the skip term D*u is applied.
        with_z: the silu(z) gate is applied.

    Returns:
        4*B*D*L*N + B*D*L*(1 + with_D + with_z).
    """
    bdl = batch * dim * length
    return 4 * bdl * dstate + bdl * (1 + int(with_D) + int(with_z))


def scan_macs_9bldn(batch: int, dim: int, length: int, dstate: int, with_D: bool, with_z: bool) -> int:
    """VMamba's ``flops_selective_scan_fn``: 9*B*L*D*N (+ B*D*L for D, + B*D*L for z). FLOPs, not MACs."""
    bdl = batch * dim * length
    return 9 * bdl * dstate + bdl * (int(with_D) + int(with_z))


def _shape(val: Any) -> list[int] | None:
    try:
        sizes = val.type().sizes()
    except (RuntimeError, AttributeError):
        return None
    return list(sizes) if sizes is not None else None


# signature order of selective_scan_fn / the scan's autograd Function
_SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "return_last_state")


def _scan_args(inputs: list[Any], outputs: list[Any]) -> dict[str, Any]:
    """Positional arguments of a traced scan PythonOp: tensor shapes and constants, by name.

    ``node.cconv()`` spells the calling convention ('d' = traced tensor input, 'c' = constant),
    so an omitted optional (``None``) shows up as a constant and does not shift the names.
    """
    node = outputs[0].node()
    cconv = node.cconv() if hasattr(node, "cconv") else "d" * len(inputs)
    scalars = list(node.scalar_args()) if hasattr(node, "scalar_args") else []
    it_in, it_sc = iter(inputs), iter(scalars)
    values: list[Any] = []
    for c in cconv:
        values.append(("tensor", _shape(next(it_in))) if c == "d" else ("const", next(it_sc)))
    first = next((i for i, v in enumerate(values) if v[0] == "tensor"), None)
    if first is None:
        raise ValueError(f"selective-scan op {node.kind()}: no tensor inputs in the trace")
    named = dict(zip(_SCAN_ARGS, values[first:]))
    u, A = named.get("u"), named.get("A")
    if u is None or u[1] is None or len(u[1]) != 3 or A is None or A[0] != "tensor" or len(A[1]) != 2:
        raise ValueError(
            f"selective-scan op {node.kind()}: expected arguments (u (B, D, L), delta, A (D, N), B, C, D, z, ...) "
            f"in that order, got {[v for v in values]}; update harness.complexity._SCAN_ARGS")
    return named


def scan_flop_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for the selective-scan PythonOp: :func:`scan_macs` of its traced shapes."""
    a = _scan_args(inputs, outputs)
    batch, dim, length = a["u"][1]
    dstate = a["A"][1][1]
    with_D = a.get("D", ("const", None))[0] == "tensor"
    with_z = a.get("z", ("const", None))[0] == "tensor"
    return scan_macs(batch, dim, length, dstate, with_D, with_z)


def _scan_9bldn_handle(inputs: list[Any], outputs: list[Any]) -> int:
    a = _scan_args(inputs, outputs)
    batch, dim, length = a["u"][1]
    return scan_macs_9bldn(batch, dim, length, a["A"][1][1], a.get("D", ("c",))[0] == "tensor",
                           a.get("z", ("c",))[0] == "tensor")


def sdpa_flop_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::scaled_dot_product_attention(q (..., L, E), k (..., S, E), v (..., S, Ev))``: the MACs of
    ``q @ k^T`` and ``attn @ v``, i.e. ``prod(...) * L * S * (E + Ev)`` (scale, mask, softmax: elementwise)."""
    q, k, v = (_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise ValueError("scaled_dot_product_attention: input shapes missing from the trace")
    lead = math.prod(q[:-2])
    return lead * q[-2] * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::baddbmm(bias, a (b, n, k), c (b, k, m))``: b*n*k*m MACs (the bias add is elementwise)."""
    a, c = _shape(inputs[1]), _shape(inputs[2])
    return a[0] * a[1] * a[2] * c[2]


def _keyed(kind: str, handle: Callable) -> Callable:
    """Wrap an fvcore handle so ``by_operator`` is keyed by the full op name (``aten::_convolution``,
    ``prim::PythonOp.X``) instead of the handle's own short label."""
    def counted(inputs: list[Any], outputs: list[Any]) -> Counter:
        n = handle(inputs, outputs)
        return Counter({kind: int(sum(n.values()) if isinstance(n, Counter) else n)})
    return counted


def scan_op_names() -> tuple[str, ...]:
    """The ``prim::PythonOp.<Name>`` strings the selective scan traces as (from ``mambacsr.ops``)."""
    mod = importlib.import_module("mambacsr.ops.selective_scan")
    names = getattr(mod, "SCAN_OP_NAMES", None)
    if not names:
        raise RuntimeError("mambacsr.ops.selective_scan.SCAN_OP_NAMES is missing: the scan op must name the "
                           "prim::PythonOp strings fvcore sees, so its MACs can be counted")
    return tuple(names)


def _tracing_backend(mod: Any) -> str:
    """The compiled CPU kernel when numba is there, else the chunked PyTorch Function: both trace as
    one PythonOp per scan (the ``ref`` loop would unroll into L einsums)."""
    return "numba" if getattr(mod, "_cpu_kernel", None) is not None else "torch"


def scan_backend() -> str:
    """Name of the selective-scan backend the traces use (``mambacsr.ops.selective_scan.current_backend``)."""
    mod = importlib.import_module("mambacsr.ops.selective_scan")
    with mod.use_backend(_tracing_backend(mod)):
        return str(mod.current_backend(torch.device("cpu")))


@contextlib.contextmanager
def _fast_scan() -> Iterator[None]:
    """Force a one-PythonOp scan backend for tracing (see :func:`_tracing_backend`); :func:`count_model`
    then checks that the scan did trace as such an op."""
    mod = importlib.import_module("mambacsr.ops.selective_scan")
    with mod.use_backend(_tracing_backend(mod)):
        yield


# ----------------------------------------------------------------------------- thop

def _thop():
    """thop's ``profile`` module (``thop.profile`` is also the function, so import by name)."""
    import warnings
    with warnings.catch_warnings():  # thop 0.1.1 imports distutils' LooseVersion
        warnings.simplefilter("ignore", DeprecationWarning)
        require("thop", "harness.complexity (the paper's counting method)")
        return importlib.import_module("thop.profile")


def thop_count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """``thop.profile``'s (MACs, params) of ``model`` at input ``x``, on a deep copy (thop adds buffers).

    thop counts only modules of the types it has hooks for (Conv, Linear, norms, ...) that are
    called in the forward: raw ``nn.Parameter`` s, weights applied through ``F.linear`` and
    functional matmuls / attention are invisible to it. :func:`count_model` gets the same figures
    from :class:`ThopHooks` during its one traced forward instead.
    """
    tp = _thop()
    fresh = copy.deepcopy(model)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.profile(fresh, inputs=(x,), verbose=False)
    return int(round(macs)), int(round(params))


class ThopHooks:
    """thop's counting rule, run inside another forward (the fvcore trace), so paper-size models
    are run once instead of twice.

    Exactly what ``thop.profile`` (0.1.1) does: a ``total_ops`` / ``total_params`` buffer on every
    module, thop's own hook function plus ``count_parameters`` on each module whose type is in
    ``thop.profile.register_hooks``, then thop's ``dfs_count`` rule (a hooked module that is not a
    Sequential / ModuleList reports its own totals, anything else sums its children). The hooks run
    with the JIT tracer paused, so they leave no op in the trace. Buffers and hooks are removed on exit.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.handles: list[Any] = []
        self.hooked: set[nn.Module] = set()

    @staticmethod
    def _untraced(fn: Callable) -> Callable:
        def hook(m: nn.Module, x: Any, y: Any) -> None:
            state = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                fn(m, x, y)
            finally:
                torch._C._set_tracing_state(state)
        return hook

    def __enter__(self) -> "ThopHooks":
        tp = _thop()
        for m in self.model.modules():
            m.register_buffer("total_ops", torch.zeros(1, dtype=torch.float64))
            m.register_buffer("total_params", torch.zeros(1, dtype=torch.float64))
            fn = tp.register_hooks.get(type(m))
            if fn is not None:
                self.handles += [m.register_forward_hook(self._untraced(fn)),
                                 m.register_forward_hook(self._untraced(tp.count_parameters))]
                self.hooked.add(m)
        return self

    def totals(self) -> tuple[int, int]:
        """(MACs, params) by thop's ``dfs_count`` rule."""
        def dfs(module: nn.Module) -> tuple[float, float]:
            ops, params = module.total_ops.item(), 0.0
            for child in module.children():
                if child in self.hooked and not isinstance(child, (nn.Sequential, nn.ModuleList)):
                    o, p = child.total_ops.item(), child.total_params.item()
                else:
                    o, p = dfs(child)
                ops, params = ops + o, params + p
            return ops, params
        ops, params = dfs(self.model)
        return int(round(ops)), int(round(params))

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        for m in self.model.modules():
            m._buffers.pop("total_ops", None)
            m._buffers.pop("total_params", None)


def _thop_skipped_params(model: nn.Module, uncalled: set[str]) -> dict[str, int]:
    """Parameters thop cannot see, grouped as ``<OwnerClass>.<param>`` -> count: those owned by a module
    type thop has no hook for, and those of hooked modules never called (e.g. a Linear whose weight
    is applied through ``F.linear``; marked ``(uncalled)``)."""
    hooked = {t for t in _thop().register_hooks if t not in (nn.Sequential, nn.ModuleList)}
    out: Counter[str] = Counter()
    for name, mod in model.named_modules():
        is_hooked = type(mod) in hooked          # thop matches the exact type, not subclasses
        if is_hooked and name not in uncalled:
            continue
        for pname, p in mod.named_parameters(recurse=False):
            out[f"{type(mod).__name__}.{pname}" + (" (uncalled)" if is_hooked else "")] += p.numel()
    return dict(out.most_common())


# ----------------------------------------------------------------------------- counting

_NINE = "#9bldn"  # pseudo-operator carrying the 9*B*L*D*N figure beside each scan's derived count


def count_model(model: nn.Module, input_size: int, *, with_thop: bool = True,
                expect_scan: bool = False) -> dict[str, Any]:
    """Parameters and MACs of one model at a 1x3xSxS input (CPU, float32, ``torch.no_grad()``).

    One forward: fvcore's trace, with thop's hooks (:class:`ThopHooks`) counting in the same pass.

    Args:
        model: any nn.Module mapping (1, 3, S, S) to an image; it is put in eval mode.
        input_size: S.
        with_thop: also count with thop's rule.
        expect_scan: the model calls the selective scan (Mamba family): fail when no scan op was traced.

    Returns:
        ``{true_params, fvcore: {macs, macs_default_handles, scan_macs, scan_9bldn, macs_with_scan_9bldn,
        by_operator, unsupported_ops: {op: {count, reason}}, unjustified_ops, uncalled_modules,
        uncalled_parameterless}, thop: {params, macs, method}, thop_skipped_params}``. MACs are plain
        counts (divide by 1e9 for G).
    """
    require("fvcore", "harness.complexity (MAC counts)")
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    model = model.eval()
    x = torch.rand(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    scan_names = scan_op_names()

    def scan_handle(kind: str) -> Callable:
        def counted(inputs: list[Any], outputs: list[Any]) -> Counter:
            return Counter({kind: scan_flop_handle(inputs, outputs), kind + _NINE: _scan_9bldn_handle(inputs, outputs)})
        return counted

    handles: dict[str, Callable] = {
        **{k: _keyed(k, h) for k, h in _DEFAULT_SUPPORTED_OPS.items()},
        "aten::scaled_dot_product_attention": _keyed("aten::scaled_dot_product_attention", sdpa_flop_handle),
        "aten::baddbmm": _keyed("aten::baddbmm", baddbmm_flop_handle),
        **{n: scan_handle(n) for n in scan_names},
    }
    thop_rec = None
    with torch.no_grad(), _fast_scan(), (ThopHooks(model) if with_thop else contextlib.nullcontext()) as th:
        fca = FlopCountAnalysis(model, x)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        fca.set_op_handle(**handles)
        raw = {k: int(v) for k, v in fca.by_operator().items()}
        if th is not None:
            t_macs, t_params = th.totals()
            thop_rec = {"params": t_params, "macs": t_macs,
                        "method": "thop 0.1.1 hooks and dfs_count rule, run during the fvcore trace (ThopHooks)"}
    unsupported = dict(fca.unsupported_ops())
    uncalled = set(fca.uncalled_modules())
    by_op = {k: v for k, v in raw.items() if not k.endswith(_NINE)}
    total = sum(by_op.values())
    scan = sum(v for k, v in by_op.items() if k in scan_names)
    scan_9 = sum(v for k, v in raw.items() if k.endswith(_NINE))
    if expect_scan and scan == 0:
        raise RuntimeError(
            f"no selective-scan op ({', '.join(scan_names) or 'SCAN_OP_NAMES unavailable'}) in the trace of "
            f"{type(model).__name__}: the scan must trace as one PythonOp (the reference loop would unroll into "
            f"L einsums); check the scan backend ({scan_backend()})")
    # fvcore's defaults alone: what the official flops() reports (scan, SDPA, baddbmm uncounted)
    default_only = sum(v for k, v in by_op.items() if k in _DEFAULT_SUPPORTED_OPS)
    unjustified = sorted(op for op in unsupported if op not in UNSUPPORTED_OP_REASONS)
    if unjustified:
        log.warning("fvcore skipped ops without a handle or a reason: %s", ", ".join(unjustified))
    modules = dict(model.named_modules())
    uncalled_info, parameterless = [], 0
    for name in sorted(uncalled):
        n_params = sum(p.numel() for p in modules[name].parameters()) if name in modules else 0
        if n_params == 0:
            parameterless += 1
            continue
        uncalled_info.append({"module": name, "type": type(modules[name]).__name__, "params": n_params,
                              "reason": "not called through __call__ (e.g. its weight is applied with F.linear): "
                                        "fvcore attributes its MACs to the caller, thop misses its params and MACs"})
    rec: dict[str, Any] = {
        "true_params": true_params(model),
        "fvcore": {
            "macs": total,
            "macs_default_handles": default_only,
            "scan_macs": scan,
            "scan_9bldn": scan_9,
            "macs_with_scan_9bldn": total - scan + scan_9,
            "scan_ops": list(scan_names),
            "by_operator": by_op,
            "unsupported_ops": {op: {"count": int(c), "reason": UNSUPPORTED_OP_REASONS.get(
                op, "UNJUSTIFIED: no handle and no reason; add one to harness/complexity.py")}
                for op, c in sorted(unsupported.items())},
            "unjustified_ops": unjustified,
            "uncalled_modules": uncalled_info,
            "uncalled_parameterless": {"count": parameterless,
                                       "reason": "modules without parameters never called (e.g. Identity "
                                                 "drop_path at inference): contribute nothing"},
        },
    }
    if thop_rec is not None:
        rec["thop"] = thop_rec
        rec["thop_skipped_params"] = _thop_skipped_params(model, uncalled)
    return rec


# ----------------------------------------------------------------------------- paper comparison

def _pct(ours: float, printed: float) -> float:
    return (ours - printed) / printed * 100.0


def _top(d: dict[str, int], n: int = 3, scale: float = MEGA, unit: str = "M") -> str:
    items = sorted(d.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v / scale:.3g} {unit}" for k, v in items if v)


def _functional_macs(fv: dict[str, Any]) -> dict[str, int]:
    """MACs fvcore finds in ops that thop cannot hook (functional matmuls, attention, einsum, scan)."""
    functional = ("aten::scaled_dot_product_attention", "aten::matmul", "aten::bmm", "aten::baddbmm",
                  "aten::einsum", "aten::mm", *fv["scan_ops"])
    return {k: v for k, v in fv["by_operator"].items() if k in functional and v}


def paper_method(rec: dict[str, Any], family: str) -> dict[str, Any]:
    """The paper's counting: thop params; thop MACs (transformers) or fvcore defaults (Mamba)."""
    if "thop" not in rec:
        return {"params": None, "macs": None, "method": "thop unavailable"}
    if family == "mamba":
        return {"params": rec["thop"]["params"], "macs": rec["fvcore"]["macs_default_handles"],
                "method": "thop params; fvcore MACs with its default handles (selective scan uncounted)"}
    return {"params": rec["thop"]["params"], "macs": rec["thop"]["macs"], "method": "thop params and MACs"}


def compare_table1(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    """Deltas of our counts against the printed Table 1 (or Table 2/3 GFLOPs for ablations).

    Returns:
        ``{rows: {...}, deltas: [{quantity, kind, ours, printed, delta_pct, reason}]}``; ``reason`` is
        set for every ``|delta_pct| > 1``.
    """
    base = paper_tables.base_name(name)
    family = family_of(base)
    pm = paper_method(rec, family)
    rec["paper_method"] = pm
    printed: dict[str, Any] = {}
    notes: list[str] = []
    row_name = paper_tables.TABLE1_ROW.get(base)
    if row_name is not None:
        matched = paper_tables.SWAPPED_COMPLEXITY_ROWS.get(row_name, row_name)
        row = paper_tables.table1_row(matched)
        same = paper_tables.table1_row(row_name)
        printed = {"source": "Table 1 (JPEG QF 10 rows)", "row": matched, "params_m": row["params_m"],
                   "gflops": row["gflops"]}
        if matched != row_name:
            notes.append(paper_tables.SWAPPED_ROWS_NOTE)
            printed["same_name_row"] = {"row": row_name, "params_m": same["params_m"], "gflops": same["gflops"]}
    else:
        for table, variant in paper_tables.ablation_rows_of(base):
            r = next((r for r in paper_tables.ablations() if r["table"] == table and r["variant"] == variant),
                     None)
            if r is not None and r["gflops"] is not None:
                printed = {"source": f"Table {table}", "row": variant, "params_m": None, "gflops": r["gflops"]}
                break
    deltas: list[dict[str, Any]] = []
    if not printed:
        return {"printed": None, "notes": notes, "deltas": deltas, "family": family}

    fv = rec["fvcore"]
    candidates = [
        ("params_m", "true", rec["true_params"] / MEGA, printed.get("params_m")),
        ("params_m", "paper_method", (pm["params"] or 0) / MEGA if pm["params"] is not None else None,
         printed.get("params_m")),
        ("gmacs", "fvcore_with_scan", fv["macs"] / GIGA, printed.get("gflops")),
        ("gmacs", "paper_method", pm["macs"] / GIGA if pm["macs"] is not None else None, printed.get("gflops")),
    ]
    for quantity, kind, ours, ref in candidates:
        if ours is None or ref is None:
            continue
        d = _pct(ours, ref)
        deltas.append({"quantity": quantity, "kind": kind, "ours": ours, "printed": ref, "delta_pct": d,
                       "reason": _reason(base, family, quantity, kind, d, rec, printed) if abs(d) > 1 else None})
    return {"printed": printed, "notes": notes, "deltas": deltas, "family": family}


def _reason(base: str, family: str, quantity: str, kind: str, delta: float, rec: dict[str, Any],
            printed: dict[str, Any]) -> str:
    """One line explaining a delta over 1 %, from the measured breakdown."""
    fv = rec["fvcore"]
    if base == "hat" and quantity == "gmacs":
        return (f"Table 1's {printed['gflops']:g} G is the HAT paper's own figure; it matches neither thop "
                f"({rec.get('thop', {}).get('macs', 0) / GIGA:.2f} G) nor fvcore ({fv['macs'] / GIGA:.2f} G, "
                f"defaults only {fv['macs_default_handles'] / GIGA:.2f} G) at this input")
    if base == "hat" and quantity == "params_m":
        return (f"Table 1's {printed['params_m']:g} M is the HAT paper's own figure (close to the true count "
                f"{rec['true_params'] / MEGA:.2f} M), not thop's ({rec.get('thop', {}).get('params', 0) / MEGA:.2f} M)")
    if quantity == "params_m" and kind == "true":
        skipped = rec.get("thop_skipped_params", {})
        gap = rec["true_params"] - rec.get("thop", {}).get("params", rec["true_params"])
        return (f"printed is thop's count, blind to {gap / MEGA:.3f} M params: raw nn.Parameters, modules of "
                f"types it has no hook for, and layers applied through F.linear ({_top(skipped)})")
    if quantity == "gmacs" and kind == "fvcore_with_scan":
        if family == "mamba":
            return (f"printed omits the selective scan ({fv['scan_macs'] / GIGA:.2f} G MACs; "
                    f"{fv['scan_9bldn'] / GIGA:.2f} G by the 9*B*L*D*N FLOP rule), which the official fvcore "
                    f"handle misses" + ("" if abs(_pct(fv["macs_default_handles"] / GIGA, printed["gflops"])) <= 1
                                       else f"; defaults alone give {fv['macs_default_handles'] / GIGA:.2f} G"))
        func = _functional_macs(fv)
        return (f"printed is thop's count, blind to functional ops fvcore counts "
                f"({_top(func, scale=GIGA, unit='G') or 'none found'})")
    if kind == "paper_method":
        return (f"our implementation under the paper's method differs from the printed figure by {delta:+.2f} %: "
                f"not explained by the counting tools (module structure or configuration differs from the "
                f"official code, or the printed figure was measured differently)")
    return f"{delta:+.2f} %: no reason recorded"


# ----------------------------------------------------------------------------- latency / memory

def _resolve(spec: str) -> Callable[[str], nn.Module]:
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"build spec {spec!r} must be 'module:function'")
    return getattr(importlib.import_module(mod_name), attr)


def rss_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_rss_peak() -> bool:
    """Reset this process's ``VmHWM`` through ``/proc/self/clear_refs`` (Linux >= 4.0); False if it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _measure_here(spec: str, name: str, size: int, repeats: int, device: str, threads: int) -> dict[str, Any]:
    """Latency and peak memory of one forward, in this (fresh) process. Called by the subprocess."""
    import resource
    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = _resolve(spec)(name).eval().to(dev)
    x = torch.rand(1, 3, size, size, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8, device=dev))          # loads kernels / thread pools
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            method = "torch.cuda.max_memory_allocated - memory_allocated before the forward"
        elif reset_rss_peak():
            before = (rss_kib("VmRSS") or 0) * 1024
            method = "VmHWM - VmRSS (/proc/self/status, high-water mark reset via /proc/self/clear_refs)"
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            method = "ru_maxrss delta (upper bound: high-water mark could not be reset)"
        model(x)                                              # warm-up at full size
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - t0)
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated(dev) - before
        elif method.startswith("VmHWM"):
            peak = (rss_kib("VmHWM") or 0) * 1024 - before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    backend = importlib.import_module("mambacsr.ops.selective_scan").current_backend(dev)
    return {"model": name, "device": str(dev), "input": [1, 3, size, size], "repeats": repeats, "scan_backend": backend,
            "median_s": statistics.median(times), "times_s": times, "peak_memory_bytes": int(max(peak, 0)),
            "memory_method": method, "torch_threads": threads}


def measure_in_subprocess(name: str, size: int, repeats: int, device: torch.device | str, *,
                          build: str = DEFAULT_BUILD, timeout_s: float = 900.0) -> dict[str, Any]:
    """Latency (median of ``repeats`` forwards after a warm-up) and peak memory of ``build(name)`` at a
    1x3xSxS input, measured in a fresh Python process (its ``sys.path`` is this one's).

    Raises:
        RuntimeError: the subprocess failed; the message carries its stderr tail.
    """
    args = json.dumps({"spec": build, "name": name, "size": size, "repeats": repeats, "device": str(device),
                       "threads": torch.get_num_threads()})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "harness.complexity", "--measure", args], capture_output=True,
                          text=True, env=env, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CSRBENCH_MEASURE ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"latency/memory of {name!r} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("CSRBENCH_MEASURE "):])


# ----------------------------------------------------------------------------- stage

LATENCY_RULES = {"all": "every counted model", "table1": "runs.models only (Table 1); the others are counted only",
                 "none": "no latency or memory measured"}


def latency_names(cfg: Config, names: Sequence[str]) -> set[str]:
    """The run-list names that get latency / memory (``complexity.latency_models``): each is a fresh
    subprocess with a warm-up and ``latency_repeats`` forwards, the costly part on a paper preset."""
    rule = cfg.complexity.latency_models
    if rule == "all":
        return set(names)
    if rule == "table1":
        return set(names) & set(cfg.runs.model_names)
    return set()


def default_models(cfg: Config) -> list[str]:
    """``runs.models`` + ``runs.ablations``, in order, without repeats."""
    return list(dict.fromkeys([*cfg.runs.model_names, *cfg.runs.ablation_names]))


def run(cfg: Config, models: Sequence[str] | None, out: Path, device: torch.device | str, *,
        build: str = DEFAULT_BUILD, count_paper_size: bool = True) -> Path:
    """Count every model, compare with Table 1, measure latency / memory; write ``out`` (JSON).

    Args:
        cfg: the loaded :class:`harness.config.Config` (reads ``complexity.*``, ``runs.models``,
            ``runs.ablations``).
        models: names to count (default :func:`default_models`).
        out: results file, normally ``results/complexity.json``.
        device: where latency and memory are measured (counting always runs on CPU).
        build: ``module:function`` that maps a model name to an nn.Module (tests pass stand-ins).
        count_paper_size: count ``<name>`` for ``<name>_smoke`` (Table 1 is about the paper sizes).

    Returns:
        ``out``.
    """
    t_start = time.perf_counter()
    builder = _resolve(build)
    size, repeats = cfg.complexity.input_size, cfg.complexity.latency_repeats
    names = list(models) if models else default_models(cfg)
    backend = scan_backend()
    results: dict[str, Any] = {}
    for name in names:
        counted = paper_tables.base_name(name) if count_paper_size else name
        if counted in results:
            results[counted]["latency_models"].append(name)
            continue
        t0 = time.perf_counter()
        log.info("counting %s at 1x3x%dx%d", counted, size, size)
        model = builder(counted)
        rec = count_model(model, size, expect_scan=family_of(counted) == "mamba")
        del model
        gc.collect()
        rec["seconds_counting"] = time.perf_counter() - t0
        rec.update(compare_table1(counted, rec))
        rec["latency_models"] = [name]
        results[counted] = rec
    timed = latency_names(cfg, names)
    for counted, rec in results.items():
        rec["latency"] = {}
        for name in rec["latency_models"]:
            if name not in timed:
                continue
            log.info("latency / memory of %s on %s", name, device)
            t0 = time.perf_counter()
            rec["latency"][name] = measure_in_subprocess(name, size, repeats, device, build=build)
            rec["latency"][name]["seconds_wall"] = time.perf_counter() - t0   # subprocess, build, warm-up, repeats
        rec["latency_models"] = [n for n in rec["latency_models"] if n in timed]
    payload = {
        "input": [1, 3, size, size],
        "unit_note": "MACs (one fused multiply-add = 1, fvcore's 'flop'); Table 1 prints them as GFLOPs",
        "counted_paper_size": count_paper_size,
        "scan_backend": backend,
        "torch_threads": torch.get_num_threads(),
        "scan_mac_rule": "4*B*D*L*N + B*D*L*(1 + [D] + [z]) per scan (derived from the recurrence); "
                         "scan_9bldn = 9*B*L*D*N + B*D*L*([D] + [z]) (VMamba, FLOPs)",
        "seconds_total": time.perf_counter() - t_start,   # the stage's cost on this machine (see README)
        "latency_rule": f"complexity.latency_models: {cfg.complexity.latency_models} "
                        f"({LATENCY_RULES[cfg.complexity.latency_models]})",
        "models": results,
    }
    return write_json(out, payload, cfg=cfg, device=device, scan_backend=backend,
                      torch_threads=torch.get_num_threads(), complexity_input_size=size)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--measure":
        a = json.loads(argv[1])
        res = _measure_here(a["spec"], a["name"], a["size"], a["repeats"], a["device"], a["threads"])
        print("CSRBENCH_MEASURE " + json.dumps(res), flush=True)
        return 0
    print("usage: python -m harness.complexity --measure JSON (internal; use `csrbench complexity`)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
