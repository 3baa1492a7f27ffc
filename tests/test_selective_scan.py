"""Selective scan: numba and chunked-torch paths against the float64 reference loop; dispatch.

Errors are relative: max|a - b| / max|b| against `selective_scan_ref` run in float64, for the output,
the last state and the gradient of every input (cotangents random, through `torch.autograd.grad`).
The max differences are printed before each assert (pytest shows them on failure).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from mambacsr.ops import (
    SCAN_OP_NAMES,
    current_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
    set_backend,
    use_backend,
)

ss = importlib.import_module("mambacsr.ops.selective_scan")  # the module (the package exports the function)

HAS_NUMBA = importlib.util.find_spec("numba") is not None
FAST = ["numba", "torch"] if HAS_NUMBA else ["torch"]
TOL32 = 1e-5
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture(autouse=True)
def _auto_backend(monkeypatch):
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    set_backend(None)
    yield
    set_backend(None)


def make_inputs(batch: int, dim: int, N: int, L: int, groups: int | None, *, D: bool = True, z: bool = True,
                bias: bool = True, decay: float = 1.0, seed: int = 0, dtype=torch.float32) -> list:
    """Inputs of the given sizes; groups None: 3-D B/C. decay scales A (Mamba-like A < 0)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    bc = (batch, N, L) if groups is None else (batch, groups, N, L)
    xs = [r(batch, dim, L), 0.5 * r(batch, dim, L), -decay * torch.exp(0.5 * r(dim, N)), r(*bc), r(*bc),
          r(dim) if D else None, r(batch, dim, L) if z else None, 0.3 * r(dim) if bias else None]
    return [None if x is None else x.to(dtype) for x in xs]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def compare(fn, xs: list, softplus: bool, last: bool, tol: float, **kw) -> dict:
    """Run fn and the float64 ref with the same cotangents; return {name: rel err}; assert <= tol."""
    x64 = [None if x is None else x.double().requires_grad_() for x in xs]
    xf = [None if x is None else x.clone().requires_grad_() for x in xs]
    ref = selective_scan_ref(*x64, delta_softplus=softplus, return_last_state=last)
    res = fn(*xf, delta_softplus=softplus, return_last_state=last, **kw)
    ref, res = (ref if last else (ref,)), (res if last else (res,))
    g = torch.Generator().manual_seed(1)
    cot = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in ref]
    live = [i for i, x in enumerate(xs) if x is not None]
    g_ref = torch.autograd.grad(sum((r * c).sum() for r, c in zip(ref, cot)), [x64[i] for i in live])
    g_res = torch.autograd.grad(sum((r * c.to(r.dtype)).sum() for r, c in zip(res, cot)), [xf[i] for i in live])
    errs = {"out": rel_err(res[0], ref[0])}
    if last:
        errs["last_state"] = rel_err(res[1], ref[1])
    for i, a, b in zip(live, g_res, g_ref):
        assert a.shape == xs[i].shape and a.dtype == xs[i].dtype, NAMES[i]
        errs["d" + NAMES[i]] = rel_err(a, b)
    print({k: f"{v:.2e}" for k, v in errs.items()})
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"
    return errs


def scan_with(backend: str):
    def fn(*args, **kw):
        with use_backend(backend):
            return selective_scan(*args, **kw)
    return fn


# (batch, dim, N, L, groups, D, z, bias, softplus, last)
CASES = [
    (1, 4, 3, 1, None, True, True, True, True, True),  # L = 1
    (2, 4, 4, 7, 2, False, False, False, False, False),  # odd L, nothing optional
    (1, 8, 16, 67, 4, True, True, True, True, True),  # L not a multiple of the 64-step chunk, groups 4
    (2, 6, 5, 130, None, True, False, True, True, False),  # 3-D B/C, > 2 checkpoint chunks
    (1, 4, 4, 100, 1, False, True, False, True, True),
    (2, 8, 2, 33, 2, True, False, False, False, True),
    (2, 90, 16, 70, 2, True, True, True, True, True),  # 45 channels per group: one full forward block of 32 + 13
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}n{}L{}g{}".format(*c[:5]))
def test_matches_float64_ref(backend, case):
    batch, dim, N, L, groups, D, z, bias, softplus, last = case
    xs = make_inputs(batch, dim, N, L, groups, D=D, z=z, bias=bias, seed=L)
    if not softplus:
        xs[1] = xs[1].abs()  # keep dt >= 0 so the test is about the scan, not an exploding state
    compare(scan_with(backend), xs, softplus, last, TOL32)


@pytest.mark.parametrize("chunk", [1, 4, 9])
def test_chunked_small_chunks(chunk):
    xs = make_inputs(2, 4, 3, 23, 2, seed=chunk)
    compare(selective_scan_chunked, xs, True, True, TOL32, chunk=chunk)


@pytest.mark.parametrize("backend", FAST)
def test_float64_paths_are_float64_exact(backend):
    xs = make_inputs(1, 4, 3, 70, 2, dtype=torch.float64, seed=3)
    compare(scan_with(backend), xs, True, True, 1e-10)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("decay", [50.0, 1e-6], ids=["strong", "none"])
def test_decay_extremes(backend, decay):
    # softplus(delta) ~ 0.5..1 with |A| ~ decay: A * dt ~ -50 (strong) or ~ -1e-6 (almost none)
    xs = make_inputs(1, 4, 4, 150, 2, decay=decay, seed=5)
    compare(scan_with(backend), xs, True, True, TOL32)


@pytest.mark.parametrize("backend", FAST)
def test_long_sequence_is_stable(backend):
    L = 128 * 128
    xs = make_inputs(1, 2, 2, L, None, z=False, decay=0.05, seed=7)  # slow decay: long memory
    with use_backend(backend):
        out, last = selective_scan(*xs, delta_softplus=True, return_last_state=True)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    ref, ref_last = selective_scan_ref(*[None if x is None else x.double() for x in xs], delta_softplus=True,
                                       return_last_state=True)
    errs = rel_err(out, ref), rel_err(last, ref_last)
    print(f"L={L}: out {errs[0]:.2e} last_state {errs[1]:.2e}")
    assert max(errs) <= TOL32


def test_long_sequence_gradients_numba():
    # oracle: the float64 chunked path (itself checked against the reference loop above); the
    # reference loop's backward at L = 16384 would take most of this file's time budget
    if not HAS_NUMBA:
        pytest.skip("numba not installed")
    L = 128 * 128
    xs = make_inputs(1, 2, 2, L, None, z=False, decay=0.05, seed=8)
    x64 = [None if x is None else x.double().requires_grad_() for x in xs]
    xf = [None if x is None else x.clone().requires_grad_() for x in xs]
    ref = selective_scan_chunked(*x64, delta_softplus=True)
    with use_backend("numba"):
        res = selective_scan(*xf, delta_softplus=True)
    cot = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    live = [i for i, x in enumerate(xs) if x is not None]
    g_ref = torch.autograd.grad((ref * cot).sum(), [x64[i] for i in live])
    g_res = torch.autograd.grad((res * cot.float()).sum(), [xf[i] for i in live])
    errs = {"out": rel_err(res, ref), **{"d" + NAMES[i]: rel_err(a, b) for i, a, b in zip(live, g_res, g_ref)}}
    print({k: f"{v:.2e}" for k, v in errs.items()})
    assert all(torch.isfinite(g).all() for g in g_res)
    assert max(errs.values()) <= TOL32, errs


@pytest.mark.parametrize("backend", FAST)
def test_positive_A_and_constant_B_C(backend):
    # A > 0 (allowed by the API; the torch path falls back to one chunk) and (dim, N) constant B, C
    xs = make_inputs(2, 4, 3, 40, 2, seed=9)
    xs[2] = 0.02 * xs[2].abs()
    xs[3] = torch.randn(4, 3)
    compare(scan_with(backend), xs, True, True, TOL32)


@pytest.mark.parametrize("backend", FAST)
def test_mixed_group_counts(backend):
    xs = make_inputs(1, 8, 3, 20, 2, seed=10)
    xs[4] = torch.randn(1, 4, 3, 20)  # C with 4 groups, B with 2
    compare(scan_with(backend), xs, True, True, TOL32)


@pytest.mark.parametrize("backend", FAST)
def test_bfloat16_computes_in_float32(backend):
    xs = make_inputs(1, 4, 3, 30, 2, seed=11, dtype=torch.bfloat16)
    with use_backend(backend):
        out, last = selective_scan(*xs, delta_softplus=True, return_last_state=True)
    ref = selective_scan_ref(*[None if x is None else x.float() for x in xs], delta_softplus=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert rel_err(out, ref.to(torch.bfloat16)) <= 1e-2


def test_fast_exp_matches_libm():
    if not HAS_NUMBA:
        pytest.skip("numba not installed")
    from mambacsr.ops import _cpu_kernel

    x = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(88.0, 88.72, 1001),
                        [-87.3, -87.29, 88.29, 88.31, np.inf, -np.inf, np.nan]]).astype(np.float32)
    buf = x.copy()
    _cpu_kernel._exp_inplace(buf, buf.size, True, np.empty(buf.size, np.int32))
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64))
    normal = (x >= -87.3) & (want < 3.4e38)  # results in the normal float32 range
    err = np.abs(buf[normal] / want[normal] - 1).max()
    print(f"max relative error of the float32 exp: {err:.2e}")
    assert err < 2e-7
    assert (buf[x < -87.3] == 0).all()  # flushed to zero instead of subnormal
    assert np.isposinf(buf[want > 3.41e38]).all() and np.isnan(buf[-1])


def test_jit_falls_back_without_cache(monkeypatch):
    if not HAS_NUMBA:
        pytest.skip("numba not installed")
    import numba

    from mambacsr.ops import _cpu_kernel

    real = numba.njit

    def njit(**kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file")
        return real(**kw)

    monkeypatch.setattr(numba, "njit", njit)
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        f = _cpu_kernel._jit(lambda x: x + 1, parallel=False)
    assert f(1) == 2


# ---------------------------------------------------------------------------------------------------------
# dispatch


def test_auto_backend_per_device():
    assert current_backend("cpu") == ("numba" if HAS_NUMBA else "torch")
    expected_cuda = "mamba_ssm" if ss._mamba_selective_scan_fn() is not None else "torch"
    assert current_backend("cuda") == expected_cuda


def test_without_numba_cpu_uses_torch(monkeypatch):
    monkeypatch.setattr(ss, "_cpu_kernel", None)
    assert current_backend("cpu") == "torch"
    with use_backend("numba"), pytest.raises(RuntimeError, match="numba is not installed"):
        current_backend("cpu")


def test_env_var_and_forced_backend(monkeypatch):
    monkeypatch.setenv(ss.ENV_VAR, "torch")
    assert current_backend("cpu") == "torch"
    with use_backend("ref"):  # code beats the env var
        assert current_backend("cpu") == "ref"
    assert current_backend("cpu") == "torch"
    set_backend("ref")
    assert current_backend("cuda") == "ref"
    set_backend(None)
    monkeypatch.setenv(ss.ENV_VAR, "fancy")
    with pytest.raises(ValueError, match="CSRBENCH_SCAN_BACKEND"):
        current_backend("cpu")
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        set_backend("cuda_kernel")


def test_forced_backend_is_the_one_that_runs(monkeypatch):
    xs = make_inputs(1, 4, 3, 9, 2)
    ran = []
    monkeypatch.setattr(ss, "selective_scan_ref", lambda *a, **k: ran.append("ref") or torch.zeros(1))
    monkeypatch.setattr(ss.SelectiveScanTorch, "apply", lambda *a: ran.append("torch") or torch.zeros(1))
    monkeypatch.setattr(ss.SelectiveScanNumba, "apply", lambda *a: ran.append("numba") or torch.zeros(1))
    for name in FAST + ["ref"]:
        with use_backend(name):
            selective_scan(*xs)
    assert ran == FAST + ["ref"]


def test_mamba_ssm_missing_or_wrong_device():
    if ss._mamba_selective_scan_fn() is None:
        with use_backend("mamba_ssm"), pytest.raises(RuntimeError, match=r"pip install -e '\.\[cuda\]'"):
            current_backend("cuda")
    else:
        with use_backend("mamba_ssm"), pytest.raises(RuntimeError, match="CUDA only"):
            current_backend("cpu")
    if HAS_NUMBA:
        with use_backend("numba"), pytest.raises(RuntimeError, match="CPU only"):
            current_backend("cuda")


def test_bad_shapes_name_the_argument():
    xs = make_inputs(1, 4, 3, 9, 2)
    for i, bad, msg in [(1, torch.randn(1, 4, 8), "delta"), (2, torch.randn(5, 3), "A"),
                        (3, torch.randn(1, 3, 3, 9), "B"), (4, torch.randn(1, 2, 3, 8), "C"),
                        (5, torch.randn(3), "D"), (6, torch.randn(1, 4, 8), "z"), (7, torch.randn(2), "delta_bias")]:
        args = list(xs)
        args[i] = bad
        with pytest.raises(ValueError, match=rf"\b{msg} must"):
            selective_scan(*args)
    with pytest.raises(ValueError, match="complex"):
        selective_scan(xs[0], xs[1], xs[2].to(torch.complex64), xs[3], xs[4])


@pytest.mark.parametrize("backend", FAST)
def test_traces_as_one_named_op(backend):
    A = -torch.rand(4, 3)

    def f(u):
        with use_backend(backend):
            return selective_scan(u, u.abs(), A, u[:, :3], u[:, :3])

    graph = torch.jit.trace(f, (torch.randn(1, 4, 10),), check_trace=False).graph
    ops = ["prim::PythonOp." + n.pyname() for n in graph.nodes() if n.kind() == "prim::PythonOp"]
    assert len(ops) == 1 and ops[0] in SCAN_OP_NAMES, ops


@pytest.mark.cuda
def test_mamba_ssm_kernel_matches_ours():
    if ss._mamba_selective_scan_fn() is None:
        pytest.skip("mamba_ssm not importable")
    xs = [None if x is None else x.cuda() for x in make_inputs(2, 16, 8, 300, 2, seed=12)]
    for backend in ("mamba_ssm", "torch"):
        compare(scan_with(backend), xs, True, False, TOL32 if backend == "torch" else 5e-4)
    with use_backend("mamba_ssm"):
        out = selective_scan(*xs, delta_softplus=True)
    with use_backend("torch"):
        ours = selective_scan(*xs, delta_softplus=True)
    assert rel_err(out, ours) <= 5e-4
    assert math.isfinite(out.abs().max().item())


# ---------------------------------------------------------------------------------------------------------
# benchmark plumbing (tiny shape; the real figures come from `csrbench bench scan`)


def test_scan_benchmark_writes_ratios(tmp_path, monkeypatch):
    import json

    from harness.bench import scan as bench

    monkeypatch.setattr(bench, "SHAPES", {"tiny": (1, 4, 4, 70, 2)})
    monkeypatch.setattr(bench, "MEMORY_SHAPE", "tiny")
    path = bench.run(out=tmp_path / "scan.json", repeats=1, shapes=("tiny",), memory=False)
    d = json.loads(path.read_text())
    row = d["shapes"]["tiny"]
    assert "provenance" in d and set(row["backends"]) == set(FAST + ["ref"])
    for name in FAST:
        b = row["backends"][name]
        assert b["resolved_backend"] == name
        want = row["backends"]["ref"]["fwd"]["median_s"] / b["fwd"]["median_s"]
        assert row["speedup_vs_ref"][name]["fwd"] == pytest.approx(want)
    assert d["goals"]["shape"] == "tiny" and "met" in d["goals"][f"{FAST[0]}_fwd_speedup"]
    extra = bench._memory_child(FAST[0], "tiny", True, 1)
    assert extra["peak_extra_mb"] >= 0 and extra["bound"] in ("exact", "upper")


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_numba_kernel_leaves_torch_thread_count_alone():
    """numba's OpenMP layer sets the shared runtime's thread count to its own on its first launch;
    the op restores torch's (the smoke profile runs numba with 2 threads and torch with 1)."""
    code = (
        "import torch\n"
        "from mambacsr.ops import use_backend, selective_scan\n"
        "before = torch.get_num_threads()  # torch's pool is set up before the first scan, as in training\n"
        "g = torch.Generator().manual_seed(0)\n"
        "u = torch.rand(2, 8, 32, generator=g, requires_grad=True)\n"
        "A = -torch.rand(8, 4, generator=g)\n"
        "B, C = torch.rand(2, 4, 32, generator=g), torch.rand(2, 4, 32, generator=g)\n"
        "with use_backend('numba'):\n"
        "    selective_scan(u, torch.rand(2, 8, 32, generator=g), A, B, C).sum().backward()\n"
        "import numba\n"
        "print(before, torch.get_num_threads(), numba.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["1", "1", "2"]
