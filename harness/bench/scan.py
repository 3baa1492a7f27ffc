"""Benchmark ``csrbench bench scan``: selective-scan backends at the shapes MambaCSR and MambaIR use.

Shapes (one SS2D layer on a 64x64 LR patch, batch 1; the K scan directions are folded into the
channel dim as in the official SS2D code: u is (1, K*D_inner, L), B and C are (1, K, N, L)):

- ``mambacsr_64x64``: K = 2, D_inner = 180 * 2 = 360 -> dim 720, N = 16, L = 64*64 = 4096;
- ``mambair_64x64``:  K = 4 -> dim 1440, groups 4, L = 4096;
- ``mambacsr_cross``: the cross-scale scan, approximated as dim 720, groups 2, L = 5*4096/4 = 5120.

Inputs follow Mamba's initialisation and MambaIR's SS2D call: A = -(1..N) per channel (S4D-real),
delta ~ N(0, 0.1) with delta_bias = softplus^-1 of dt in [1e-3, 0.1], delta_softplus=True, D = 1,
z = None; u, B, C standard normal; float32.

Timing (this process): for every backend, a first call (JIT compile or numba cache load included,
reported as ``first_call_*``), then ``repeats`` timed calls; the median is the figure, all runs are
kept. ``fwd``: forward under ``torch.no_grad``; ``fwd_bwd``: forward with every input requiring grad
plus ``out.backward(cotangent)``. The reference loop is timed at full size too (no scaling); its
fwd_bwd is run ``ref_repeats`` times (default 1: ~6 s each at mambacsr_64x64 on 2 cores). Speed-ups
are ref median / backend median from the same run. The host's load average before and after is
recorded, because on a shared machine contention moves every figure.

Peak memory (CPU): one fresh subprocess per (backend, mode) at ``mambacsr_64x64``. It warms the
backend up on a tiny input, allocates the inputs, reads its RSS (VmRSS), resets the peak-RSS mark
(``echo 5 > /proc/self/clear_refs``), runs the case once and reports VmHWM minus that RSS: the extra
resident memory the call needed at its peak, numpy buffers of the numba kernel included (torch's
profiler would miss those). Without clear_refs it falls back to getrusage's ru_maxrss, which can only
give an upper bound when the call did not raise the process's lifetime peak (``"bound": "upper"``). On CUDA: torch.cuda.max_memory_allocated minus the allocation before the call.

Writes ``results/bench/scan.json`` through :func:`harness.provenance.write_json`.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["run", "SHAPES", "make_inputs"]

log = logging.getLogger(__name__)

# name: (batch, dim, N, L, groups)
SHAPES: dict[str, tuple[int, int, int, int, int]] = {
    "mambacsr_64x64": (1, 720, 16, 4096, 2),
    "mambair_64x64": (1, 1440, 16, 4096, 4),
    "mambacsr_cross": (1, 720, 16, 5120, 2),
}
MEMORY_SHAPE = "mambacsr_64x64"
GOALS = {"numba_fwd_speedup": 30.0, "numba_fwd_bwd_speedup": 15.0, "numba_peak_memory_ratio_max": 3.0,
         "torch_fwd_speedup": 3.0, "torch_fwd_bwd_speedup": 3.0}


def make_inputs(batch: int, dim: int, N: int, L: int, groups: int, device: str | torch.device = "cpu",
                seed: int = 0) -> dict[str, Any]:
    """Scan inputs with Mamba's initialisation (see the module docstring), as selective_scan kwargs."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)
    kw = dict(
        u=torch.randn(batch, dim, L, generator=g),
        delta=0.1 * torch.randn(batch, dim, L, generator=g),
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(batch, groups, N, L, generator=g),
        C=torch.randn(batch, groups, N, L, generator=g),
        D=torch.ones(dim),
        delta_bias=delta_bias,
    )
    return {k: v.to(device) for k, v in kw.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _call(backend: str, kw: dict[str, Any], grad: bool, cot: torch.Tensor | None) -> None:
    from mambacsr.ops import selective_scan, use_backend

    with use_backend(backend):
        if not grad:
            with torch.no_grad():
                selective_scan(**kw, delta_softplus=True)
            return
        leaves = {k: v.detach().requires_grad_() for k, v in kw.items()}
        out = selective_scan(**leaves, delta_softplus=True)
        out.backward(cot)


def _time(backend: str, kw: dict[str, Any], grad: bool, cot: torch.Tensor | None, repeats: int,
          device: torch.device) -> dict[str, Any]:
    _sync(device)
    t0 = time.perf_counter()
    _call(backend, kw, grad, cot)
    _sync(device)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _call(backend, kw, grad, cot)
        _sync(device)
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "runs_s": runs, "first_call_s": first}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {key}")


def _memory_child(backend: str, shape: str, grad: bool, threads: int) -> dict[str, Any]:
    """Run in a fresh process: extra peak RSS of one call (see the module docstring)."""
    import gc

    _set_threads(threads)
    tiny = make_inputs(1, 4, 4, 70, 2)
    _call(backend, tiny, grad, torch.ones(1, 4, 70))  # load / compile the kernel, allocate pools
    del tiny
    gc.collect()
    kw = make_inputs(*SHAPES[shape])
    cot = torch.ones_like(kw["u"]) if grad else None
    rss0 = _status_kb("VmRSS")
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        exact = True
    except OSError:
        exact = False
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _call(backend, kw, grad, cot)
    if exact:
        return {"peak_extra_mb": (_status_kb("VmHWM") - rss0) / 1024, "bound": "exact"}
    peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_extra_mb": (max(peak0, peak1) - rss0) / 1024, "bound": "exact" if peak1 > peak0 else "upper"}


def _memory_cpu(backend: str, grad: bool, threads: int) -> dict[str, Any]:
    code = ("import json, sys; from harness.bench.scan import _memory_child; "
            f"print('RESULT' + json.dumps(_memory_child({backend!r}, {MEMORY_SHAPE!r}, {grad}, {threads})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise RuntimeError(f"memory probe for backend {backend!r} failed (exit {res.returncode}): {res.stderr[-2000:]}")


def _memory_cuda(backend: str, grad: bool, device: torch.device) -> dict[str, Any]:
    kw = make_inputs(*SHAPES[MEMORY_SHAPE], device=device)
    cot = torch.ones_like(kw["u"]) if grad else None
    _call(backend, kw, grad, cot)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    _call(backend, kw, grad, cot)
    torch.cuda.synchronize(device)
    return {"peak_extra_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20, "bound": "exact"}


def _set_threads(threads: int | None) -> None:
    """Set torch's and numba's thread counts (None: leave them)."""
    if threads is None:
        return
    torch.set_num_threads(threads)
    kernel = importlib.import_module("mambacsr.ops.selective_scan")._cpu_kernel
    if kernel is not None:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _backends(device: torch.device) -> list[tuple[str, str]]:
    """(requested, resolved) for the backends worth timing on this device; ref last."""
    from mambacsr.ops import current_backend, use_backend

    wanted = ["mamba_ssm", "torch", "ref"] if device.type == "cuda" else ["numba", "torch", "ref"]
    out = []
    for name in wanted:
        try:
            with use_backend(name):
                out.append((name, current_backend(device)))
        except RuntimeError as err:
            log.warning("scan backend %s skipped: %s", name, err)
    return out


def run(out: Path = Path("results/bench/scan.json"), device: str | torch.device = "cpu", repeats: int = 3, *,
        ref_repeats: int = 1, shapes: tuple[str, ...] = tuple(SHAPES), memory: bool = True,
        threads: int | None = None) -> Path:
    """Time the selective-scan backends (forward, forward+backward) and their peak memory; write JSON.

    Args:
        out: JSON file to write.
        device: 'cpu' or 'cuda' (a torch.device works too).
        repeats: timed calls per backend and mode after the first call; the median is reported.
        ref_repeats: timed fwd_bwd calls of the slow reference loop.
        shapes: names from `SHAPES` to time.
        memory: also measure peak memory at `MEMORY_SHAPE`.
        threads: torch and numba thread count for the run (None: as configured; recorded either way).

    Returns:
        The path written.
    """
    kernel = importlib.import_module("mambacsr.ops.selective_scan")._cpu_kernel
    saved = (torch.get_num_threads(), kernel.num_threads() if kernel is not None else None)
    try:
        return _run(Path(out), torch.device(device), repeats, ref_repeats, tuple(shapes), memory, threads)
    finally:
        torch.set_num_threads(saved[0])
        if saved[1] is not None:
            import numba

            numba.set_num_threads(saved[1])


def _run(out: Path, device: torch.device, repeats: int, ref_repeats: int, shapes: tuple[str, ...], memory: bool,
         threads: int | None) -> Path:
    _cpu_kernel = importlib.import_module("mambacsr.ops.selective_scan")._cpu_kernel  # None without numba
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown scan benchmark shapes {unknown}; known: {list(SHAPES)}")
    _set_threads(threads)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    backends = _backends(device)
    result: dict[str, Any] = {"shapes": {}}
    for shape in shapes:
        batch, dim, N, L, groups = SHAPES[shape]
        kw = make_inputs(batch, dim, N, L, groups, device=device)
        cot = torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(1)).to(device)
        rows: dict[str, Any] = {}
        for name, resolved in backends:
            log.info("scan bench %s: %s", shape, name)
            rows[name] = {"resolved_backend": resolved,
                          "fwd": _time(name, kw, False, None, repeats, device),
                          "fwd_bwd": _time(name, kw, True, cot, ref_repeats if name == "ref" else repeats, device)}
        speed = {}
        if "ref" in rows:
            for name in rows:
                if name != "ref":
                    speed[name] = {m: rows["ref"][m]["median_s"] / rows[name][m]["median_s"] for m in ("fwd", "fwd_bwd")}
        result["shapes"][shape] = {"batch": batch, "dim": dim, "N": N, "L": L, "groups": groups,
                                   "backends": rows, "speedup_vs_ref": speed}

    if memory:
        mem: dict[str, Any] = {}
        for name, resolved in backends:
            log.info("scan bench memory: %s", name)
            mem[name] = {mode: (_memory_cuda(name, grad, device) if device.type == "cuda"
                                else _memory_cpu(name, grad, torch.get_num_threads()))
                         for mode, grad in (("fwd", False), ("fwd_bwd", True))}
        ratio = {name: {m: mem[name][m]["peak_extra_mb"] / mem["ref"][m]["peak_extra_mb"] for m in mem[name]}
                 for name in mem if name != "ref" and "ref" in mem}
        result["memory"] = {"shape": MEMORY_SHAPE, "backends": mem, "ratio_vs_ref": ratio}

    goals: dict[str, Any] = {}
    main = result["shapes"].get(MEMORY_SHAPE) or next(iter(result["shapes"].values()))
    sp = main["speedup_vs_ref"]
    for name in ("numba", "torch"):
        if name in sp:
            goals[f"{name}_fwd_speedup"] = {"value": sp[name]["fwd"], "target_min": GOALS[f"{name}_fwd_speedup"]}
            goals[f"{name}_fwd_bwd_speedup"] = {"value": sp[name]["fwd_bwd"],
                                                "target_min": GOALS[f"{name}_fwd_bwd_speedup"]}
    if memory and "numba" in result["memory"]["ratio_vs_ref"]:
        worst = max(result["memory"]["ratio_vs_ref"]["numba"].values())
        goals["numba_peak_memory_ratio"] = {"value": worst, "target_max": GOALS["numba_peak_memory_ratio_max"]}
    for g in goals.values():
        g["met"] = g["value"] >= g["target_min"] if "target_min" in g else g["value"] <= g["target_max"]
    result["goals"] = {"shape": MEMORY_SHAPE if MEMORY_SHAPE in result["shapes"] else next(iter(result["shapes"])),
                       **goals}

    payload = {
        "benchmark": "selective_scan",
        "device": str(device),
        "repeats": repeats,
        "ref_repeats": ref_repeats,
        "threads": {"torch": torch.get_num_threads(),
                    "numba": _cpu_kernel.num_threads() if _cpu_kernel is not None else None},
        "inputs": "Mamba init: A=-(1..N), delta~N(0,0.1), delta_bias=softplus^-1(U_log[1e-3,0.1]), softplus, D=1, "
                  "z=None; u,B,C ~ N(0,1); float32",
        "timing_method": "median of `repeats` calls after a first call (first_call_s: compile / cache load "
                         "included); fwd under no_grad; fwd_bwd = forward + out.backward(cotangent) with all "
                         "inputs requiring grad; ref timed at full size (no scaling)",
        "memory_method": ("fresh subprocess per case: ru_maxrss after the call minus the RSS just before it "
                          "(inputs allocated, backend warmed up); 'upper' = the call did not raise the process "
                          "peak" if device.type != "cuda" else
                          "torch.cuda.max_memory_allocated minus memory_allocated before the call"),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "wall_s": time.perf_counter() - t_start,
        **result,
    }
    from harness.provenance import write_json

    return write_json(out, payload, device=device, scan_backends={n: r for n, r in backends})
