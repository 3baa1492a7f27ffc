"""Released (official) checkpoints: formats, strict loading, clear errors, sha256, the `released` stage.

Checkpoints are written here from our own networks in each official container format
(``mambair_light_x2`` at paper size: 905 k parameters, a 3.6 MB file; the others at smoke
size) and must load strictly and give bit-identical outputs.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import models
from harness.checkpoint import CheckpointError, file_sha256
from harness.config import Degradation, load
from harness.released import (check_sha256, detect_architecture, evaluate_weights, load_released, release_of,
                              releases, run)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]


def _net(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build(name).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape=(1, 3, 12, 16)) -> bool:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


# ----------------------------------------------------------------------------- formats

FORMATS = {
    "bare": lambda sd: sd,
    "params": lambda sd: {"params": sd},
    "params_ema": lambda sd: {"params_ema": sd},
    "module_prefix": lambda sd: {"params": {f"module.{k}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", ["mambair_light_x2", "swinir_classical_x2_smoke", "mambacsr_smoke"])
def test_official_formats_load_strictly_with_identical_outputs(tmp_path, name, fmt):
    net = _net(name)
    path = tmp_path / "w.pth"
    torch.save(FORMATS[fmt](net.state_dict()), path)
    loaded, info = load_released(path, name, fidelity="paper")
    assert _same_outputs(net, loaded)
    assert info["params_key"] == {"bare": None, "module_prefix": "params"}.get(fmt, fmt)
    assert info["sha256"] == file_sha256(path) and info["fidelity"] == "paper" and info["overrides"] == {}


def test_params_ema_preferred_over_params_and_recorded(tmp_path):
    ema, raw = _net("swinir_classical_x2_smoke", 0), _net("swinir_classical_x2_smoke", 1)
    path = tmp_path / "both.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    loaded, info = load_released(path, "swinir_classical_x2_smoke")
    assert info["params_key"] == "params_ema"
    assert _same_outputs(ema, loaded) and not _same_outputs(raw, loaded)


def test_upstream_buffers_are_dropped(tmp_path):
    """Official SwinIR files carry attn_mask / relative_position_index (persistent upstream)."""
    net = _net("swinir_classical_x2_smoke")
    sd = dict(net.state_dict())
    own = dict(net.named_buffers())
    for k, v in own.items():
        if k.endswith("relative_position_index"):
            sd[k] = v.clone()
    sd["layers.0.residual_group.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    path = tmp_path / "up.pth"
    torch.save({"params": sd}, path)
    loaded, _ = load_released(path, "swinir_classical_x2_smoke")
    assert _same_outputs(net, loaded)


# ----------------------------------------------------------------------------- bad files

def test_wrong_architecture_names_the_right_model(tmp_path):
    path = tmp_path / "mambair.pth"
    torch.save({"params_ema": _net("mambair_x2_smoke").state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_released(path, "swinir_classical_x2_smoke")
    msg = str(e.value)
    assert str(path) in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "try --model mambair_x2_smoke" in msg


def test_other_size_of_the_same_family_is_suggested(tmp_path):
    path = tmp_path / "x2.pth"
    torch.save(_net("swinir_classical_x2_smoke").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"try --model swinir_classical_x2_smoke") as e:
        load_released(path, "swinir_classical_x4_smoke")
    assert "missing keys" in str(e.value) or "shape mismatch" in str(e.value)


def test_detect_architecture_exact_match_first(tmp_path):
    found = detect_architecture({"params": _net("hat_smoke").state_dict()})
    assert found[0] == ("hat_smoke", 1.0)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"params": _net("swinir_classical_x2_smoke").state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*unreadable"):
        load_released(path, "swinir_classical_x2_smoke")


def test_extra_key_is_named(tmp_path):
    sd = dict(_net("mambair_x2_smoke").state_dict())
    sd["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save({"params": sd}, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys: head\.extra\.weight"):
        load_released(path, "mambair_x2_smoke")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_released(tmp_path / "nope.pth", "mambair_x2_smoke")


def test_sha256_mismatch_warns_with_both_hashes(tmp_path, caplog):
    path = tmp_path / "w.pth"
    torch.save(_net("mambair_x2_smoke").state_dict(), path)
    wrong = "0" * 64
    with caplog.at_level(logging.WARNING, logger="harness.released"):
        _, info = load_released(path, "mambair_x2_smoke", expected_sha256=wrong)
    actual = file_sha256(path)
    assert info["sha256"] == actual and info["expected_sha256"] == wrong
    assert any(actual in r.message and wrong in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harness.released"):
        assert check_sha256(path, actual) == actual
    assert not caplog.records


# ----------------------------------------------------------------------------- records and fidelity

def test_release_records_are_complete():
    recs = releases()
    assert {"Cross-scale-QF10-x4.pth", "Dual-Interleaved-QF10-x4.pth", "Swin2SR_CompressedSR_X4_48.pth",
            "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth", "HAT_SRx4.pth", "MambaIR_SR2.pth"} <= set(recs)
    for fname, r in recs.items():
        assert r.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", r.sha256), fname
        assert r.sha256_note, fname
        assert r.url.startswith("https://"), fname
        assert {"scale", "codec", "level"} <= set(r.degradation), fname
        assert {"tile", "tile_overlap", "self_ensemble", "crop_border"} <= set(r.eval), fname
        cfg = models.config_of(r.model, **r.official)   # the overrides are real config fields
        assert getattr(cfg, "upscale") == r.degradation["scale"], fname
    assert recs["Cross-scale-QF10-x4.pth"].official["official_cross_unscan"] is True
    assert release_of("mambacsr", "models/released/Cross-scale-QF10-x4.pth").model == "mambacsr"
    assert release_of("hat", "models/released/Cross-scale-QF10-x4.pth") is None


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_params_entries_point_at_release_records(profile):
    cfg = load(ROOT / "harness" / "profiles" / f"{profile}.yaml")
    assert cfg.released
    for e in cfg.released:
        rel = release_of(e.model, e.file)
        assert rel is not None, e.file
        assert rel.degradation["scale"] == e.scale
        assert (ROOT / e.code).read_text().count(Path(e.file).name) >= 1


def test_official_fidelity_is_default_and_recorded(tmp_path):
    net = _net("mambacsr_smoke")
    path = tmp_path / "m.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    off, info_off = load_released(path, "mambacsr_smoke")
    pap, info_pap = load_released(path, "mambacsr_smoke", fidelity="paper")
    assert info_off["fidelity"] == "official" and info_off["overrides"]["official_cross_unscan"] is True
    assert off.cfg.official_cross_unscan and not pap.cfg.official_cross_unscan
    assert info_pap["overrides"] == {}
    # a non-square window grid (4 x 8 windows of 16 at the cross layer): the un-scans differ
    assert not _same_outputs(off, pap, shape=(1, 3, 64, 128))


# ----------------------------------------------------------------------------- the stage

def _smoke_cfg(entries):
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    return dataclasses.replace(cfg, released=tuple(entries))


def _entry(cfg, **kw):
    base = cfg.released[0]
    return dataclasses.replace(base, **kw)


def test_absent_file_is_skipped_with_where_to_download(tmp_path, caplog):
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    cfg = _smoke_cfg([_entry(cfg, file=str(tmp_path / "models/released/Cross-scale-QF10-x4.pth"))])
    out = tmp_path / "results/metrics/mambacsr_released"
    with caplog.at_level(logging.WARNING, logger="harness.released"):
        assert run(cfg, model="mambacsr", out=out, data=tmp_path / "data", device="cpu") == out
    status = (out / "status.txt").read_text()
    assert status.startswith("skipped mambacsr") and "drive.google.com" in status
    assert not list(out.glob("*.json"))
    assert len([r for r in caplog.records if "skipped" in r.message]) == 1


def test_unknown_model_in_stage_is_an_error(tmp_path):
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    with pytest.raises(ValueError, match="no entry for model 'hat'"):
        run(cfg, model="hat", out=tmp_path, data=tmp_path, device="cpu")


def _tiny_data(root: Path, scale: int = 2) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        hr = rng.integers(0, 256, (16 * scale, 20 * scale, 3), dtype=np.uint8)
        lr = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        (root / "hr/skimage_test").mkdir(parents=True, exist_ok=True)
        (root / f"lr/skimage_test/x{scale}/none_0").mkdir(parents=True, exist_ok=True)
        Image.fromarray(hr).save(root / f"hr/skimage_test/{name}.png")
        Image.fromarray(lr).save(root / f"lr/skimage_test/x{scale}/none_0/{name}.png")
    (root / f"lr/skimage_test/x{scale}/none_0/manifest.json").write_text(json.dumps({"images": {"a": {}, "b": {}}}))


def test_stage_scores_a_present_file_with_provenance(tmp_path):
    _tiny_data(tmp_path / "data")
    path = tmp_path / "w.pth"
    torch.save({"params": _net("swinir_classical_x2_smoke").state_dict()}, path)
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    entry = _entry(cfg, model="swinir_classical_x2_smoke", code="baselines/swinir.py", file=str(path), scale=2,
                   degradations=(Degradation("none", 0),), datasets=("skimage_test",))
    out = tmp_path / "out"
    run(_smoke_cfg([entry]), model="swinir_classical_x2_smoke", out=out, data=tmp_path / "data", device="cpu")
    rec = json.loads((out / "x2_none_0.json").read_text())
    assert rec["model"] == "swinir_classical_x2_smoke_released" and rec["network"] == "swinir_classical_x2_smoke"
    assert rec["released"]["sha256"] == file_sha256(path) == rec["provenance"]["weights_sha256"]
    assert rec["released"]["params_key"] == "params" and rec["released"]["fidelity"] == "official"
    assert set(rec["datasets"]["skimage_test"]["images"]) == {"a", "b"}
    assert (out / "status.txt").read_text().startswith("scored")


def test_cli_evaluate_weights(tmp_path):
    from harness.cli import main
    _tiny_data(tmp_path / "data")
    path = tmp_path / "w.pth"
    torch.save({"params_ema": _net("swinir_classical_x2_smoke").state_dict()}, path)
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--params", str(ROOT / "harness/profiles/smoke.yaml"), "--weights", str(path),
               "--model", "swinir_classical_x2_smoke", "--codec", "none", "--scale", "2",
               "--data", str(tmp_path / "data"), "--dataset", "skimage_test", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["released"]["params_key"] == "params_ema" and rec["ema"] is True
    assert rec["datasets"]["skimage_test"]["psnr_y"] > 0
    # a file for another network: exit 1 with the suggestion, nothing written
    bad = tmp_path / "bad.pth"
    torch.save(_net("mambair_x2_smoke").state_dict(), bad)
    assert main(["evaluate", "--params", str(ROOT / "harness/profiles/smoke.yaml"), "--weights", str(bad),
                 "--model", "swinir_classical_x2_smoke", "--codec", "none", "--scale", "2",
                 "--data", str(tmp_path / "data"), "--dataset", "skimage_test", "--out", str(tmp_path / "n.json"),
                 "--device", "cpu"]) == 1
    assert not (tmp_path / "n.json").exists()


def test_evaluate_weights_scale_mismatch(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(_net("swinir_classical_x2_smoke").state_dict(), path)
    cfg = load(ROOT / "harness" / "profiles" / "smoke.yaml")
    with pytest.raises(CheckpointError, match="x2 network"):
        evaluate_weights(cfg, "swinir_classical_x2_smoke", path, Degradation("none", 0), 4, tmp_path / "o.json",
                         ["skimage_test"], tmp_path, "cpu")


def test_report_shows_released_rows_in_table1_and_classic():
    from harness.report import render
    rec4 = {"model": "mambacsr_released", "network": "mambacsr", "scale": 4, "codec": "jpeg", "level": 10,
            "profile": "paper", "iterations": None, "datasets": {"set5": {"psnr_y": 28.5, "ssim_y": 0.81}},
            "released": {"file": "models/released/Cross-scale-QF10-x4.pth", "sha256": "ab" * 32,
                         "fidelity": "official", "params_key": "params_ema"}}
    rec2 = dict(rec4, model="mambair_x2_released", network="mambair_x2", scale=2, codec="none", level=0,
                datasets={"set5": {"psnr_y": 38.1, "ssim_y": 0.96}})
    metrics = {("mambacsr_released", 4, "jpeg", 10): rec4, ("mambair_x2_released", 2, "none", 0): rec2}
    t1 = render.table1_section(metrics, None, scale=4)
    block = next(b for b in t1["blocks"] if (b["codec"], b["level"]) == ("jpeg", 10))
    row = next(r for r in block["rows"] if r.get("released"))
    assert row["model"] == "MambaCSR — released weights, scored here"
    assert row["cells"][block["datasets"].index("set5")][0]["ours"] == "28.50"
    assert "params_ema" in row["note"] and "official" in row["note"]
    # trained rows are not filled from released metrics
    assert all(r["missing"] for r in block["rows"] if not r.get("released"))
    cl = render.classic_section(metrics)
    row = next(r for r in cl["rows"] if r.get("released"))
    assert row["model"] == "MambaIR — released weights, scored here"
    assert row["cells"][cl["datasets"].index("set5")][0]["ours"] == "38.10"


def test_unknown_released_model_fails_at_load(tmp_path):
    import yaml

    from harness.config import ConfigError, load_dict
    data = yaml.safe_load((ROOT / "harness" / "profiles" / "smoke.yaml").read_text())
    data["released"][0]["model"] = "mambacsrr"
    with pytest.raises(ConfigError, match=r"released\[0\]\.model: unknown model 'mambacsrr'"):
        load_dict(data, "smoke.yaml")
