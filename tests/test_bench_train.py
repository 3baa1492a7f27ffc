"""``csrbench bench train`` on the CPU: the command end to end on a smoke-size model, the JSON it writes,
the out-of-memory halving, errors that name the bad input, and scripts/gpu_check.sh (syntax, dry run)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.bench import train as bench

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
PARAMS = str(ROOT / "harness" / "profiles" / "smoke.yaml")
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
CASE_KEYS = {"batch_size", "oom_batches", "harness", "bare", "overhead", "projected_hours_300k",
             "projected_hours_300k_paper_batch_patch", "peak_memory_mb", "case_wall_s", "load_average_before"}
LOOP_KEYS = {"s_per_it", "s_per_it_mean", "images_per_s", "iterations_timed", "runs_s", "memory"}


def _bench(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "bench" / "train.json"
    rc = cli.main(["bench", "train", "--params", PARAMS, "--device", "cpu", "--out", str(out), *extra])
    return rc, (json.loads(out.read_text()) if out.is_file() else {})


def test_cli_runs_the_training_loop_on_cpu_and_writes_the_schema(tmp_path):
    rc, d = _bench(tmp_path, "--model", "swinir_smoke", "--iterations", "2", "--warmup", "1",
                   "--batch-size", "2", "--patch-size", "8")
    assert rc == 0
    assert set(bench.SCHEMA_KEYS) <= set(d) and "provenance" in d
    assert d["benchmark"] == "train" and d["complete"] is True and d["device"] == "cpu"
    assert d["settings"]["smoke"] is True and d["settings"]["precisions"] == ["fp32"]  # no bf16 default on CPU
    assert d["settings"]["batch_size_requested"] == 2 and d["settings"]["patch_size"] == 8
    assert d["settings"]["isolated_processes"] is True  # CPU default: one fresh process per case
    assert d["context"]["official_estimate"]["h100_hours"] == [150, 200]
    r = d["results"]["swinir_smoke"]["fp32"]
    assert CASE_KEYS <= set(r), set(r)
    assert r["batch_size"] == 2 and r["oom_batches"] == []
    for loop in ("harness", "bare"):
        assert LOOP_KEYS <= set(r[loop])
        assert r[loop]["iterations_timed"] == 2 and len(r[loop]["runs_s"]) == 2
        assert all(t > 0 for t in r[loop]["runs_s"])
        assert r[loop]["images_per_s"] == pytest.approx(2 / r[loop]["s_per_it"])
        assert r[loop]["memory"]["kind"] == "cpu_peak_rss" and r[loop]["memory"]["peak_mb"] > 0
    assert r["overhead"] == pytest.approx(r["harness"]["s_per_it"] / r["bare"]["s_per_it"] - 1)
    assert r["projected_hours_300k"] == pytest.approx(r["harness"]["s_per_it"] * 300_000 / 3600)
    assert r["projected_hours_300k_paper_batch_patch"] == pytest.approx(
        r["projected_hours_300k"] * (32 * 64**2) / (2 * 8**2))
    assert d["goals"]["overhead"]["swinir_smoke/fp32"]["value"] == pytest.approx(r["overhead"])

    # the report's section reads it back (device, s/it, img/s, memory, overhead, hours)
    import jinja2

    from harness.report import render
    sec = render.train_bench_section(tmp_path)
    assert sec["device"] == "cpu" and sec["complete"] is True and sec["smoke"] is True
    row = sec["rows"][0]
    assert (row["model"], row["precision"], row["batch"]) == ("swinir_smoke", "fp32", 2)
    assert row["s_it"] == f"{r['harness']['s_per_it']:.3f}" and row["hours"] == f"{r['projected_hours_300k']:.1f}"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(render.TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("train_bench.html.j2").render(train_bench=sec, dash=render.DASH)
    assert "swinir_smoke" in html and row["s_it"] in html and f"{100 * r['overhead']:+.1f} %" in html
    assert "150–200 H100-hours" in html and "smoke" in html
    assert render.train_bench_section(tmp_path / "nowhere") is None


def test_out_of_memory_halves_the_batch_and_records_it(tmp_path, monkeypatch):
    real = bench._bare

    def bare(model, batch, *args):
        if batch > 1:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} GiB")
        return real(model, batch, *args)

    monkeypatch.setattr(bench, "_bare", bare)
    path = bench.run(tmp_path / "t.json", "cpu", models=["swinir_smoke"], batch_size=4, patch_size=8, iterations=1,
                     warmup=0, isolate=False)  # in this process, where the patch holds
    r = json.loads(path.read_text())["results"]["swinir_smoke"]["fp32"]
    assert r["batch_size"] == 1
    assert [o["batch_size"] for o in r["oom_batches"]] == [4, 2]
    assert "OutOfMemoryError" in r["oom_batches"][0]["error"]
    assert r["harness"]["images_per_s"] == pytest.approx(1 / r["harness"]["s_per_it"])


def test_fit_batch():
    calls = []

    def measure(b):
        calls.append(b)
        if b > 5:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return {"x": b}

    res = bench.fit_batch(measure, 32)
    assert res["batch_size"] == 4 and res["x"] == 4
    assert [o["batch_size"] for o in res["oom_batches"]] == [32, 16, 8]
    assert "can't allocate memory" in res["oom_batches"][0]["error"]
    assert calls == [32, 16, 8, 4]
    never = bench.fit_batch(lambda b: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("out of memory")), 2)
    assert never["error"] == "out of memory even at batch 1" and len(never["oom_batches"]) == 2
    with pytest.raises(ValueError, match="boom"):  # not an out-of-memory error: propagates
        bench.fit_batch(lambda b: (_ for _ in ()).throw(ValueError("boom")), 8)
    assert not bench.is_oom(RuntimeError("shapes do not match"))
    assert bench.is_oom(RuntimeError("CUDA error: out of memory"))
    assert bench.is_oom(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))


def test_one_failing_case_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    def case(model, precision, *args):
        if model == "hst_smoke":
            raise ValueError("hst_smoke broke")
        return {"batch_size": 1, "harness": {"s_per_it": 1.0}, "overhead": 0.05, "projected_hours_300k": 300_000 / 3600}

    monkeypatch.setattr(bench, "_case", case)
    path = bench.run(tmp_path / "t.json", "cpu", models=["hst_smoke", "swinir_smoke"], iterations=1, isolate=False)
    d = json.loads(path.read_text())
    assert d["results"]["hst_smoke"]["fp32"]["error"] == "ValueError: hst_smoke broke"
    assert d["results"]["swinir_smoke"]["fp32"]["overhead"] == 0.05
    assert d["goals"]["overhead"] == {"swinir_smoke/fp32": {"value": 0.05, "met": True}}
    assert d["complete"] is True


def test_time_budget_skips_the_remaining_cases(tmp_path):
    path = bench.run(tmp_path / "t.json", "cpu", models=["swinir_smoke"], precisions=["fp32", "bf16"],
                     max_seconds=0)
    d = json.loads(path.read_text())
    assert set(d["results"]["swinir_smoke"]) == {"fp32", "bf16"}
    assert all("time budget" in r["skipped"] for r in d["results"]["swinir_smoke"].values())


def test_goal_is_judged_only_on_cuda_at_paper_size():
    res = {"mambacsr": {"fp32": {"batch_size": 32, "projected_hours_300k": 60.0, "overhead": 0.02},
                        "bf16": {"batch_size": 32, "projected_hours_300k": 40.0, "overhead": 0.12}}}
    g = bench._goals(res, torch.device("cuda"), 32, 64)
    assert g["mambacsr_hours_300k"]["value"] == 40.0 and g["mambacsr_hours_300k"]["precision"] == "bf16"
    assert g["mambacsr_hours_300k"]["met"] is True
    assert g["overhead"]["mambacsr/bf16"]["met"] is False and g["overhead"]["mambacsr/fp32"]["met"] is True
    cpu = bench._goals(res, torch.device("cpu"), 32, 64)["mambacsr_hours_300k"]
    assert cpu["met"] is None and cpu["why_not_judged"] == "not a CUDA run"
    small = bench._goals(res, torch.device("cuda"), 32, 16)["mambacsr_hours_300k"]
    assert small["met"] is None and "paper" in small["why_not_judged"]


def test_bad_input_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown precision.*fp16"):
        bench.run(tmp_path / "t.json", "cpu", models=["swinir_smoke"], precisions=["fp16"])
    with pytest.raises(ValueError, match="unknown model.*swinirr"):
        bench.run(tmp_path / "t.json", "cpu", models=["swinirr"])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        bench.run(tmp_path / "t.json", "cpu", models=["swinir_smoke"], batch_size=0)
    assert not (tmp_path / "t.json").exists()
    assert cli.main(["bench", "scan", "--params", PARAMS, "--batch-size", "2"]) == 2
    assert "--batch-size not an option of this benchmark" in capsys.readouterr().err
    assert cli.main(["bench", "train", "--params", PARAMS, "--model", "mambacsrr"]) != 0
    assert "did you mean 'mambacsr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # `gpu` was renamed `train`
        cli.main(["bench", "gpu", "--params", PARAMS])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scripts/gpu_check.sh

def _script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_gpu_script_parses():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_gpu_script_dry_run_lists_every_step_within_the_budget(tmp_path):
    res = _script("--dry-run", "--log-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["build", "install", "pytest", "bench"], out
    assert "build_mamba.sh" in steps[0] and "pytest -m cuda" in steps[2]
    assert "harness.cli bench train --device cuda" in steps[3]
    timeouts = [int(s.split("timeout=")[1].split("s")[0]) for s in steps]
    assert sum(timeouts) <= 480, timeouts      # 8 minutes on one H100, the build included
    assert not (ROOT / "results" / "bench" / "gpu_check.log").exists() or "dry run" not in \
        (ROOT / "results" / "bench" / "gpu_check.log").read_text()


def test_gpu_script_bad_argument_and_missing_gpu(tmp_path):
    res = _script("--bogus")
    assert res.returncode == 2 and "unknown option --bogus" in res.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = _script("--log-dir", str(tmp_path))  # the real run refuses at once without a GPU, writing nothing
    assert res.returncode == 3 and "no CUDA GPU" in res.stderr
    assert not list(tmp_path.iterdir())
