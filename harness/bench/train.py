"""Benchmark ``csrbench bench train``: training speed and memory of the paper-size models, harness vs bare loop.

For each model (default: the six paper models) and precision (fp32, plus bf16 autocast on CUDA):

- **harness**: ``warmup + iterations + 1`` iterations through the real training loop,
  :func:`harness.train.run`, with the paper preset's ``train`` section (Adam 0.9/0.99, lr 2e-4, L1,
  EMA 0.999, log every 100) and ``batch_size`` / ``data.patch_size`` / ``amp`` set for the case.
  Validation and checkpoints fall after the last timed iteration (one tiny validation image; the files go
  to a temporary folder). The data is an in-memory pool of random patch pairs read through the loop's own
  DataLoader (``num_workers`` 0), so the figure is the loop itself (collate, pinned copy to the device,
  forward, loss, backward, step, EMA, loss window, progress bar) and not PNG decoding, which runs in
  loader workers in a real run. The pool marks the time (after a device synchronize) when the first sample
  of each iteration is fetched; the gap between two marks is one full iteration. The first ``warmup`` gaps
  are dropped (cuDNN / allocator / numba warm-up).
- **bare**: the same network built the same way, the same batch already on the device, and
  ``forward -> L1 -> backward -> Adam step -> zero_grad`` under the same autocast, synchronized and timed
  per iteration, ``warmup`` dropped.

``overhead`` = harness median / bare median - 1 (goal <= 0.10). Note that the harness also pays for the
paper recipe's EMA update (one ``lerp`` over the weights), which the bare loop has not.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` over the harness run (reset before it); on CPU the
process's peak resident set (VmHWM after ``/proc/self/clear_refs`` reset it to the RSS before the run), with
the RSS before the run beside it. On the CPU each case runs in a fresh process (``isolate``): a process that
ran an earlier model keeps that model's freed heap resident, and the next model's peak hides inside it.

Out of memory: a case that raises an out-of-memory error (``torch.cuda.OutOfMemoryError``, or a CPU
allocator failure) is retried at half the batch until it fits; the JSON records every batch tried and
the one measured. Any other error of one case is recorded under that case and the next case runs.

Projection: hours of a full ``train.iterations`` = 300k run = harness s/it x 300000 / 3600 at the measured
batch and patch, and (when those are not the paper's 32 x 64) the same scaled linearly by the pixels per
batch to 32 x 64^2 (a rough extrapolation, labelled so). The goal (MambaCSR <= 48 h on one H100) is judged
only from a CUDA run at the paper's batch and patch. The official code's cost estimate (150-200 H100-hours)
is stored as context, not as a figure of ours.

Writes ``results/bench/train.json`` through :func:`harness.provenance.write_json`, after every case
(``"complete": false`` until the end), so a run stopped by a timeout keeps the cases it finished.
"""
from __future__ import annotations

import dataclasses
import difflib
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["run", "PAPER_MODELS", "fit_batch", "is_oom", "bench_config", "SCHEMA_KEYS"]

log = logging.getLogger(__name__)

PAPER_MODELS = ("swinir", "swin2sr", "hst", "hat", "mambair", "mambacsr")
PAPER_BATCH, PAPER_PATCH, SCALE = 32, 64, 4
OVERHEAD_GOAL = 0.10          # harness s/it at most 10 % above the bare loop's
GOAL_HOURS = {"mambacsr": 48.0}  # a full 300k-iteration run on one H100 (issue 18)
OFFICIAL_ESTIMATE = {
    "model": "mambacsr",
    "h100_hours": [150, 200],
    "note": "the official code's training cost estimated from published anchors (issue 18); context for our "
            "projection, not a figure measured here",
}
POOL = 16                     # distinct random patch pairs the data pool cycles through
PRECISIONS = ("fp32", "bf16")
SCHEMA_KEYS = ("benchmark", "complete", "device", "device_name", "settings", "results", "goals", "context",
               "load_average", "wall_s")


def is_oom(err: BaseException) -> bool:
    """True for an out-of-memory failure (CUDA's, or the CPU allocator's), which a smaller batch may avoid."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(err)
    return isinstance(err, RuntimeError) and any(m in msg for m in (
        "out of memory", "can't allocate memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED"))


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def fit_batch(measure: Callable[[int], dict[str, Any]], batch: int, device: torch.device = torch.device("cpu")
              ) -> dict[str, Any]:
    """``measure(batch)``, halving the batch after each out-of-memory error until it fits.

    Returns:
        ``measure``'s dict plus ``batch_size`` (the one measured) and ``oom_batches`` (those that did not fit);
        or ``{"error": ..., "oom_batches": [...]}`` when not even batch 1 fits. Other errors propagate.
    """
    tried: list[dict[str, Any]] = []
    while True:
        err = None
        try:
            res = measure(batch)
        except Exception as e:  # noqa: BLE001 - filtered by is_oom just below
            if not is_oom(e):
                raise
            err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        if err is None:
            return {"batch_size": batch, "oom_batches": tried, **res}
        # outside the except block: the traceback (and the tensors its frames hold) is gone
        _free(device)
        tried.append({"batch_size": batch, "error": err})
        log.warning("batch %d does not fit (%s)%s", batch, err, "; halving" if batch > 1 else "")
        if batch == 1:
            return {"error": "out of memory even at batch 1", "oom_batches": tried}
        batch //= 2


# ----------------------------------------------------------------------------- memory

def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class _Memory:
    """Peak memory of a block: CUDA max allocated, or the CPU process's peak RSS (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> "_Memory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            return self
        self.before = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self.bound = "exact"
        except OSError:
            self.bound = "lifetime peak (upper bound)"
        return self

    def result(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {"kind": "cuda_max_memory_allocated", "peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
                    "before_mb": self.before / 2**20}
        peak = _status_kb("VmHWM")
        if peak is None:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"kind": "cpu_peak_rss", "peak_mb": peak / 1024,
                "before_mb": None if self.before is None else self.before / 1024, "bound": self.bound}

    def __exit__(self, *exc: Any) -> None:
        return None


# ----------------------------------------------------------------------------- the two loops

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _TimedPool(torch.utils.data.Dataset):
    """Sample ``k`` -> a pair from a pool of random patches; marks the time at the first sample of each batch."""

    def __init__(self, batch: int, patch: int, scale: int, device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.lr = torch.rand(POOL, 3, patch, patch, generator=g)
        self.hr = torch.rand(POOL, 3, scale * patch, scale * patch, generator=g)
        self.batch, self.device, self.marks = batch, device, []

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k % self.batch == 0:
            _sync(self.device)
            self.marks.append(time.perf_counter())
        return self.lr[k % POOL], self.hr[k % POOL]


def bench_config(batch: int, patch: int, iterations: int, amp: str) -> Any:
    """The paper preset with this case's batch, patch, iterations and amp; no validation / checkpoint inside
    the timed iterations, loader workers 0 (see the module docstring)."""
    from harness import config

    cfg = config.load(config.profile_path("paper"))
    t = dataclasses.replace(cfg.train, iterations=iterations, batch_size=batch, amp=amp, val_every=iterations + 1,
                            ckpt_every=iterations + 1, val_images=1, keep_last=1)
    data = dataclasses.replace(cfg.data, patch_size=patch, num_workers=0)
    return dataclasses.replace(cfg, train=t, data=data)


def _stats(times: list[float], batch: int) -> dict[str, Any]:
    med = statistics.median(times)
    return {"s_per_it": med, "s_per_it_mean": statistics.fmean(times), "images_per_s": batch / med,
            "iterations_timed": len(times), "runs_s": times}


def _harness(model: str, batch: int, patch: int, precision: str, iterations: int, warmup: int,
             device: torch.device) -> dict[str, Any]:
    from harness import train
    from harness.config import Degradation

    pool = _TimedPool(batch, patch, SCALE, device)
    rng = np.random.default_rng(0)
    val = [("val", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
            rng.integers(0, 256, (16 * SCALE, 16 * SCALE, 3), dtype=np.uint8))]
    data = train.TrainData(lambda: pool, lambda: val, {"bench": "random patches"})
    total = warmup + iterations + 1
    cfg = bench_config(batch, patch, total, "bf16" if precision == "bf16" else "none")
    with tempfile.TemporaryDirectory(prefix="csrbench-bench-train-") as tmp, _Memory(device) as mem:
        t0 = time.perf_counter()
        train.run(cfg, model=model, degradation=Degradation("jpeg", 10), scale=SCALE, out=Path(tmp) / "run",
                  curves=Path(tmp) / "curves.csv", data=Path(tmp), resume=False, device=device, train_data=data)
        wall = time.perf_counter() - t0
        memory = mem.result()
    gaps = np.diff(pool.marks).tolist()
    if len(gaps) != total - 1:
        raise RuntimeError(f"{model}: expected {total - 1} timed iteration gaps, got {len(gaps)} "
                           "(did harness.train change how it draws batches?)")
    return {**_stats(gaps[warmup:], batch), "wall_s": wall, "memory": memory}


def _bare(model: str, batch: int, patch: int, precision: str, iterations: int, warmup: int,
          device: torch.device) -> dict[str, Any]:
    from harness.evaluate import build_model

    torch.manual_seed(0)
    net, _ = build_model(model)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, patch, patch, generator=g).to(device)
    y = torch.rand(batch, 3, SCALE * patch, SCALE * patch, generator=g).to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    with _Memory(device) as mem:
        for _ in range(warmup + iterations):
            _sync(device)
            t0 = time.perf_counter()
            with amp:
                loss = F.l1_loss(net(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - t0)
        memory = mem.result()
    return {**_stats(times[warmup:], batch), "memory": memory}


def _case(model: str, precision: str, batch: int, patch: int, iterations: int, warmup: int,
          device: torch.device) -> dict[str, Any]:
    def measure(b: int) -> dict[str, Any]:
        load = os.getloadavg()
        h = _harness(model, b, patch, precision, iterations, warmup, device)
        _free(device)
        bare = _bare(model, b, patch, precision, iterations, warmup, device)
        return {"harness": h, "bare": bare, "overhead": h["s_per_it"] / bare["s_per_it"] - 1.0,
                "load_average_before": list(load)}

    t0 = time.perf_counter()
    res = fit_batch(measure, batch, device)
    _free(device)
    res["case_wall_s"] = time.perf_counter() - t0
    if "harness" in res:
        b = res["batch_size"]
        hours = res["harness"]["s_per_it"] * 300_000 / 3600
        res["projected_hours_300k"] = hours
        res["projected_hours_300k_paper_batch_patch"] = hours * (PAPER_BATCH * PAPER_PATCH**2) / (b * patch**2)
        res["peak_memory_mb"] = res["harness"]["memory"]["peak_mb"]
    return res


def _case_in_subprocess(model: str, precision: str, batch: int, patch: int, iterations: int,
                        warmup: int) -> dict[str, Any]:
    """:func:`_case` on the CPU in a fresh process, so its peak RSS is this case's alone (a process that ran
    an earlier model keeps that model's freed heap resident, which hides the next one's peak)."""
    code = ("import json; from harness.bench.train import _case; import torch; "
            f"print('RESULT' + json.dumps(_case({model!r}, {precision!r}, {batch}, {patch}, {iterations}, "
            f"{warmup}, torch.device('cpu'))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise RuntimeError(f"{model} {precision}: benchmark subprocess failed (exit {res.returncode}): "
                       f"{res.stderr[-1500:]}")


# ----------------------------------------------------------------------------- the benchmark

def run(out: Path = Path("results/bench/train.json"), device: str | torch.device = "cpu", *,
        models: tuple[str, ...] | list[str] | None = None, batch_size: int = PAPER_BATCH,
        patch_size: int = PAPER_PATCH, iterations: int = 30, warmup: int = 3,
        precisions: tuple[str, ...] | list[str] | None = None, max_seconds: float | None = None,
        isolate: bool | None = None) -> Path:
    """Time training iterations of each model through the harness and bare; write ``out``.

    Args:
        out: JSON file to write.
        device: 'cpu' or 'cuda' (a torch.device works too).
        models: names from ``harness.models.list_models()`` (default: the six paper models).
        batch_size: batch to try first (the paper's 32); halved on out-of-memory.
        patch_size: LR patch side (the paper's 64; HR patch 4x).
        iterations: timed iterations per loop (after ``warmup``).
        warmup: untimed iterations per loop before the timed ones.
        precisions: 'fp32' and / or 'bf16' (default: both on CUDA, fp32 on CPU).
        max_seconds: start no new case after this many seconds (the skipped ones are listed as such).
        isolate: run each case in a fresh process (default: on the CPU, where peak RSS is per process).

    Returns:
        The path written.

    Raises:
        ValueError: an unknown model or precision, or a size below 1.
    """
    from harness.models import list_models
    from harness.provenance import write_json

    device = torch.device(device)
    models = tuple(models) if models else PAPER_MODELS
    known = list_models()
    for m in models:
        if m not in known:
            close = difflib.get_close_matches(m, known, n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(f"bench train: unknown model {m!r}{hint}; see harness.models.list_models()")
    precisions = tuple(precisions) if precisions else (PRECISIONS if device.type == "cuda" else ("fp32",))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"bench train: unknown precision(s) {bad}; choose from {', '.join(PRECISIONS)}")
    for name, v in (("batch_size", batch_size), ("patch_size", patch_size), ("iterations", iterations)):
        if v < 1:
            raise ValueError(f"bench train: {name} must be >= 1, got {v}")
    if warmup < 0:
        raise ValueError(f"bench train: warmup must be >= 0, got {warmup}")

    from mambacsr.ops import current_backend

    isolate = device.type == "cpu" if isolate is None else isolate
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    settings = {
        "models": list(models), "precisions": list(precisions), "batch_size_requested": batch_size,
        "patch_size": patch_size, "hr_patch_size": SCALE * patch_size, "scale": SCALE, "iterations_timed": iterations,
        "warmup": warmup, "max_seconds": max_seconds, "paper": {"batch_size": PAPER_BATCH, "patch_size": PAPER_PATCH},
        "smoke": any(m.endswith("_smoke") for m in models),
        "torch_threads": torch.get_num_threads(), "scan_backend": current_backend(device),
        "cudnn_benchmark": os.environ.get("CSRBENCH_CUDNN_BENCHMARK") == "1",
        "harness_recipe": "harness.train.run with the paper preset's train section (Adam 0.9/0.99, lr 2e-4, L1, "
                          "EMA 0.999, log_every 100); in-memory random patches, num_workers 0",
        "bare_loop": "forward -> L1 -> backward -> Adam step -> zero_grad, batch already on the device, no EMA",
        "isolated_processes": isolate,
        "timing_method": "median of per-iteration times after `warmup`, each iteration synchronized "
                         "(harness: gap between the fetches of consecutive batches)",
    }

    def write(complete: bool) -> Path:
        payload = {
            "benchmark": "train", "complete": complete, "device": str(device),
            "device_name": _device_name(device), "settings": settings, "results": results,
            "goals": _goals(results, device, batch_size, patch_size),
            "context": {"official_estimate": OFFICIAL_ESTIMATE},
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
            "wall_s": time.perf_counter() - t_start,
        }
        return write_json(out, payload, device=device, scan_backend=settings["scan_backend"])

    for model in models:
        results[model] = {}
        for precision in precisions:
            if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                results[model][precision] = {"skipped": f"time budget of {max_seconds:g} s spent"}
                continue
            log.info("bench train: %s %s, batch %d, LR patch %d", model, precision, batch_size, patch_size)
            try:
                if isolate:
                    results[model][precision] = _case_in_subprocess(model, precision, batch_size, patch_size,
                                                                    iterations, warmup)
                else:
                    results[model][precision] = _case(model, precision, batch_size, patch_size, iterations, warmup,
                                                      device)
            except Exception as e:  # noqa: BLE001 - one broken case must not lose the others
                log.error("bench train: %s %s failed: %s", model, precision, e)
                results[model][precision] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                _free(device)
            write(False)
    return write(True)


def _device_name(device: torch.device) -> str:
    from harness.provenance import provenance
    return provenance(device=device)["device_name"]


def _goals(results: dict[str, dict[str, Any]], device: torch.device, batch: int, patch: int) -> dict[str, Any]:
    """Overhead <= 10 % per measured case; MambaCSR's projected hours vs 48 h (only a CUDA, paper-size figure)."""
    goals: dict[str, Any] = {"overhead_max": OVERHEAD_GOAL, "overhead": {}}
    for model, per in results.items():
        for precision, r in per.items():
            if "overhead" in r:
                goals["overhead"][f"{model}/{precision}"] = {"value": r["overhead"],
                                                             "met": r["overhead"] <= OVERHEAD_GOAL}
    for model, hours in GOAL_HOURS.items():
        cases = {p: r for p, r in results.get(model, {}).items() if "projected_hours_300k" in r}
        if not cases:
            continue
        best_p, best = min(cases.items(), key=lambda kv: kv[1]["projected_hours_300k"])
        paper_size = best["batch_size"] == PAPER_BATCH and patch == PAPER_PATCH
        judged = device.type == "cuda" and paper_size
        goals[f"{model}_hours_300k"] = {
            "value": best["projected_hours_300k"], "precision": best_p, "target_max": hours,
            "target_device": "one NVIDIA H100",
            "met": (best["projected_hours_300k"] <= hours) if judged else None,
            "why_not_judged": None if judged else
            ("not a CUDA run" if device.type != "cuda" else "not at the paper's batch 32 and LR patch 64"),
        }
    return goals
