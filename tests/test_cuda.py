"""GPU checks (``pytest -m cuda``; skipped with a reason on a machine without CUDA, see conftest).

- our selective scan (numba on CPU, the chunked PyTorch path on CUDA) against mamba_ssm's CUDA
  ``selective_scan_fn`` at MambaCSR's shapes (``harness.bench.scan.SHAPES``), forward and the gradient of
  every input; relative error max|a - b| / max|b| <= SCAN_TOL_OUT (output) and SCAN_TOL_GRAD (gradients);
- each paper-size model gives the same output on CUDA and CPU for one 16x16 input, fp32 with TF32 off:
  max |cuda - cpu| <= MODEL_TOL (outputs are images in about [0, 1]; 1e-3 is a quarter of a grey level);
- a few training iterations of each paper model through ``harness.train.run`` on CUDA with bf16 autocast;
- DDP with nccl (2 ranks via torchrun, when two GPUs are visible) matches one process on the same global batch.

Every test prints its measured differences, so the GPU log records them even when they pass.
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cuda

TESTS = Path(__file__).resolve().parent
PAPER_MODELS = ("swinir", "swin2sr", "hst", "hat", "mambair", "mambacsr")
SCAN_TOL_OUT = 5e-4     # mamba_ssm's kernel uses fast exp / different summation order (fp32)
SCAN_TOL_GRAD = 2e-3    # gradients sum over L = 4096-5120 steps
MODEL_TOL = 1e-3


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _mamba_fn():
    from mambacsr.ops.selective_scan import _mamba_selective_scan_fn  # noqa: PLC0415 - optional kernel
    fn = _mamba_selective_scan_fn()
    if fn is None:
        pytest.skip("mamba_ssm is not importable (build it: bash ../shared/device/build_mamba.sh, then add "
                    ".device-cache/site to PYTHONPATH)")
    return fn


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _scan_grads(fn, kw: dict, cot: torch.Tensor, device: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    leaves = {k: v.detach().to(device).clone().requires_grad_() for k, v in kw.items()}
    out = fn(**leaves, delta_softplus=True)
    out.backward(cot.to(device))
    return out, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("shape", ["mambacsr_64x64", "mambacsr_cross"])
@pytest.mark.parametrize("backend,device", [("torch", "cuda"), ("numba", "cpu")])
def test_scan_matches_mamba_ssm(shape, backend, device):
    from harness.bench.scan import SHAPES, make_inputs
    from mambacsr.ops import current_backend, selective_scan, use_backend

    kernel = _mamba_fn()
    kw = make_inputs(*SHAPES[shape])  # Mamba's init; u (1, 720, L), B/C (1, 2, 16, L), D, delta_bias
    cot = torch.randn(kw["u"].shape, generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = _scan_grads(kernel, kw, cot, "cuda")
    with use_backend(backend):
        assert current_backend(device) == backend
        out, grads = _scan_grads(selective_scan, kw, cot, device)
    errs = {"out": _rel(out, ref_out), **{f"d{k}": _rel(grads[k], ref_grads[k]) for k in kw}}
    print(shape, backend, {k: f"{v:.2e}" for k, v in errs.items()})
    assert all(math.isfinite(v) for v in errs.values()), errs
    assert errs["out"] <= SCAN_TOL_OUT, errs
    bad = {k: v for k, v in errs.items() if k != "out" and v > SCAN_TOL_GRAD}
    assert not bad, f"gradients differ from mamba_ssm's by more than {SCAN_TOL_GRAD}: {bad}"


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_model_same_output_on_cuda_and_cpu(model, no_tf32):
    from harness.evaluate import build_model

    torch.manual_seed(0)
    net, _ = build_model(model)
    net.eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = net(x)
        gpu = net.to("cuda")(x.cuda()).cpu()
    diff = (gpu - cpu).abs().max().item()
    print(f"{model}: max |cuda - cpu| = {diff:.2e}, output range [{cpu.min().item():.3f}, {cpu.max().item():.3f}]")
    assert gpu.shape == cpu.shape == (1, 3, 64, 64)
    assert diff <= MODEL_TOL


class _Pool(torch.utils.data.Dataset):
    """Seeded random (lr, hr) patch pairs; sample k is a pure function of k."""

    def __init__(self, patch: int, scale: int = 4):
        self.patch, self.scale = patch, scale

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int):
        g = torch.Generator().manual_seed(int(k))
        return (torch.rand(3, self.patch, self.patch, generator=g),
                torch.rand(3, self.scale * self.patch, self.scale * self.patch, generator=g))


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_bf16_training_iterations(model, tmp_path):
    from harness import checkpoint, train
    from harness.bench.train import bench_config
    from harness.config import Degradation
    from harness.evaluate import build_model

    iters = 4
    cfg = bench_config(batch=2, patch=32, iterations=iters, amp="bf16")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ema_decay=0.0, log_every=1))
    rng = np.random.default_rng(0)
    val = [("v", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))]
    data = train.TrainData(lambda: _Pool(32), lambda: val, {"test": "random"})
    final = train.run(cfg, model=model, degradation=Degradation("jpeg", 10), scale=4, out=tmp_path / "run",
                      curves=tmp_path / "c.csv", data=tmp_path, resume=False, device="cuda", train_data=data)
    ck = checkpoint.load_checkpoint(final)
    losses = [r[1] for r in ck["history"] if r[1] is not None]
    print(f"{model}: bf16 losses {losses}")
    assert len(losses) == iters and all(math.isfinite(v) for v in losses)
    torch.manual_seed(cfg.train.seed)  # the run's initial weights
    init = build_model(model)[0].state_dict()
    moved = [k for k, v in ck["state_dict"].items() if v.is_floating_point() and not torch.equal(v.cpu(), init[k])]
    assert moved, f"{model}: no weight changed in {iters} bf16 iterations"


DDP_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import _trainkit as K
    K.install_fake_models()
    from harness import train
    root = Path(sys.argv[1])
    cfg = K.make_cfg(iterations=8, batch_size=4, ckpt_every=4, log_every=2, val_every=4)
    kw = K.train_kwargs(root, out="ddp")
    kw["device"] = "cuda"
    train.run(cfg, resume=True, **kw)
""")


def test_ddp_nccl_two_gpus_match_one(tmp_path, monkeypatch, no_tf32):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"DDP over nccl needs 2 visible GPUs, this machine has {torch.cuda.device_count()}")
    if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
        pytest.skip("torch.distributed with nccl is not available")
    import _trainkit as K
    from harness import checkpoint as C
    from harness import train

    K.make_data(tmp_path / "data")
    script = tmp_path / "driver.py"
    script.write_text(DDP_DRIVER.format(tests=str(TESTS)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["NVIDIA_TF32_OVERRIDE"] = "0"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    monkeypatch.setitem(sys.modules, "harness.models", K.fake_models_module())
    cfg = K.make_cfg(iterations=8, batch_size=4, ckpt_every=4, log_every=2, val_every=4)
    kw = K.train_kwargs(tmp_path, out="single")
    kw["device"] = "cuda"
    single = train.run(cfg, resume=True, **kw)
    d, s = C.load_checkpoint(tmp_path / "ddp" / "final.pt"), C.load_checkpoint(single)
    diffs = {k: (d["state_dict"][k].float() - s["state_dict"][k].float()).abs().max().item() for k in s["state_dict"]}
    print("ddp vs single, max abs weight difference:", max(diffs.values()))
    for k in s["state_dict"]:
        torch.testing.assert_close(d["state_dict"][k], s["state_dict"][k], rtol=1e-4, atol=1e-5)
    ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "ddp", 8))
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
