"""Issue 20 (paper preset on its first real run) and issue 19.3 (honest errors): names are checked
at load, bad CLI input gets one line naming the thing, a missing package names the pip command."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import cli, config, deps, paper_tables
from harness.config import ConfigError
from harness.data import registry
from test_config import _smoke, _write

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "harness" / "profiles").glob("*.yaml"))


# ----------------------------------------------------------------------------- 20.1 / 20.4: names at load

@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_names_registered_datasets_and_models(preset):
    from harness.models import list_models
    cfg = config.load(preset)                      # check_names runs inside
    assert set([cfg.data.train, *cfg.data.test]) <= set(registry.names())
    names = [*cfg.runs.model_names, *cfg.runs.ablation_names, *cfg.runs.classic_x2_names,
             *cfg.textzoom.model_names, *cfg.erf.models]
    assert set(names) <= set(list_models())


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_profile_subcommand_validates_every_preset(preset, tmp_path):
    target = tmp_path / "params.yaml"
    assert cli.main(["profile", preset.stem, "--params", str(target)]) == 0
    assert config.load(target).profile == preset.stem


def test_paper_div2k_is_the_registry_name_and_lands_in_the_div2k_column():
    cfg = config.load(config.profile_path("paper"))
    assert "div2k_valid" in cfg.data.test
    for key in paper_tables.DATASET_COLUMN:       # every mapped name is one the pipeline can produce
        registry.get(key)
    assert paper_tables.dataset_column("div2k_valid") == "div2k"
    from harness.report import render
    rec = {"model": "mambacsr", "datasets": {"div2k_valid": {"psnr_y": 27.5, "ssim_y": 0.75}}}
    assert render._dataset_score(rec, "div2k", "psnr_y") == 27.5
    assert render._extra_datasets([rec], ["set5", "set14", "manga109", "urban100", "div2k"]) == []


@pytest.mark.parametrize("edit,key,pattern", [
    (lambda d: d["data"].__setitem__("test", ["skimage_test", "div2k_val"]), "data.test[1]",
     "unknown dataset 'div2k_val' (did you mean 'div2k_valid'"),
    (lambda d: d["data"].__setitem__("train", "df2kk"), "data.train", "unknown dataset 'df2kk'"),
    (lambda d: d["data"].__setitem__("local", {"set55": "/x"}), "data.local.set55", "unknown dataset or source"),
    (lambda d: d["runs"]["models"][0].__setitem__("name", "hatt_smoke"), "runs.models[0].name",
     "unknown model 'hatt_smoke' (did you mean 'hat_smoke'"),
    (lambda d: d["runs"]["ablations"].append({"name": "mambacsr_win5", "code": "mambacsr/model.py"}),
     "runs.ablations[", "unknown model 'mambacsr_win5'"),
    (lambda d: d["erf"].__setitem__("models", ["swinirr_smoke"]), "erf.models[0]", "unknown model"),
    (lambda d: d["evaluate"].__setitem__("generalize_datasets", ["skimage_tst"]), "evaluate.generalize_datasets[0]",
     "unknown test set 'skimage_tst' (did you mean 'skimage_test'"),
])
def test_unknown_names_fail_at_load_naming_the_key(tmp_path, edit, key, pattern):
    d = _smoke()
    edit(d)
    p = _write(tmp_path, d)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value) and key in str(e.value) and pattern in str(e.value)
    config.load(p, names=False)                    # the schema itself is fine: only the names are wrong


def test_unknown_model_in_runs_stops_a_stage_before_any_work(tmp_path, capsys):
    d = _smoke()
    d["runs"]["ablations"].append({"name": "mambacsr_nope_smoke", "code": "mambacsr/model.py"})
    p = _write(tmp_path, d)
    rc = cli.main(["complexity", "--params", str(p), "--out", str(tmp_path / "c.json")])
    assert rc == 2
    assert "runs.ablations[" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_switch_profile_refuses_a_preset_with_a_bad_name(tmp_path, monkeypatch):
    bad = _smoke()
    bad["data"]["test"] = ["div2k_val"]
    src = _write(tmp_path, bad)
    target = tmp_path / "target.yaml"
    target.write_text("kept")
    monkeypatch.setattr(config, "profile_path", lambda name: src)
    with pytest.raises(ConfigError, match=r"data.test\[0\]: unknown dataset 'div2k_val'"):
        config.switch_profile("smoke", target)
    assert target.read_text() == "kept"


# ----------------------------------------------------------------------------- 20.4 / 20.5: CLI input

@pytest.fixture
def params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(config.profile_path("smoke").read_text())
    return p


@pytest.mark.parametrize("argv,pattern", [
    (["degrade", "--codec", "jpeg"], "--codec jpeg needs --level (JPEG quality factor, 1..100)"),
    (["degrade", "--codec", "hevc"], "--codec hevc needs --level (QP)"),
    (["degrade", "--codec", "hevc", "--level", "60"], "HEVC QP must be in 0..51"),
    (["degrade", "--dataset", "set15"], "--dataset: unknown dataset 'set15' (did you mean 'set5'?); registered: "),
    (["prepare", "--dataset", "set15"], "unknown dataset 'set15'"),
    (["evaluate", "--model", "swinir_smoke", "--codec", "jpeg", "--level", "10", "--dataset", "urban1000"],
     "unknown dataset 'urban1000'"),
    (["train", "--model", "hatt", "--codec", "jpeg", "--level", "10"], "--model: unknown model 'hatt'"),
    (["complexity", "--model", "mambacsr_smok"], "unknown model 'mambacsr_smok'"),
])
def test_bad_cli_input_is_one_line_naming_the_thing(params, tmp_path, capsys, argv, pattern):
    rc = cli.main([*argv, "--params", str(params)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert pattern in err and "Traceback" not in err
    if "set15" in pattern and "registered" in pattern:
        assert "set5" in err.split("registered: ")[1] and "prepare" not in err


def test_data_local_typo_is_a_config_error(tmp_path, capsys):
    d = _smoke()
    d["data"]["local"] = {"skimage_tset": str(tmp_path)}
    rc = cli.main(["prepare", "--params", str(_write(tmp_path, d)), "--out", str(tmp_path / "data")])
    assert rc == 2
    assert "data.local.skimage_tset: unknown dataset or source 'skimage_tset' (did you mean 'skimage_test'" \
        in capsys.readouterr().err


def test_unknown_dataset_error_is_a_value_error_for_the_cli():
    with pytest.raises(ValueError, match="unknown dataset 'set15'"):
        registry.get("set15")


def test_vvc_keeps_qp_up_to_63_and_hevc_stops_at_51():
    from harness.config import Degradation
    assert Degradation("vvc", 63).level == 63 and Degradation("hevc", 51).level == 51
    with pytest.raises(Exception, match="HEVC QP must be in 0..51"):
        Degradation("hevc", 52)
    with pytest.raises(Exception, match="VVC QP must be in 0..63"):
        Degradation("vvc", 64)


# ----------------------------------------------------------------------------- 19.3: honest errors

def test_missing_package_names_itself_and_the_pip_command(tmp_path, monkeypatch):
    (tmp_path / "needs_fvcore_stage.py").write_text("import fvcore_not_installed_h4\ndef run(cfg): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(deps.MissingDependencyError,
                       match="missing Python package 'fvcore_not_installed_h4', needed by needs_fvcore_stage: "
                             "pip install 'fvcore_not_installed_h4'"):
        cli._call("needs_fvcore_stage", None)
    assert deps.pip_requirement("fvcore") == "fvcore==0.1.5.post20221221"   # the pin from pyproject.toml
    assert deps.pip_requirement("cv2").startswith("opencv-python-headless")


def test_missing_package_is_one_error_line_from_the_cli(params, monkeypatch, capsys):
    real = deps.require

    def fake(name, needed_by):
        if name == "fvcore":
            raise deps.MissingDependencyError(f"missing Python package 'fvcore', needed by {needed_by}: "
                                              f"pip install '{deps.pip_requirement('fvcore')}'")
        return real(name, needed_by)
    import harness.complexity as cx
    monkeypatch.setattr(cx, "require", fake)
    rc = cli.main(["complexity", "--params", str(params), "--model", "swinir_smoke", "--out", "/nonexistent/c.json"])
    err = capsys.readouterr().err
    assert rc == 1 and "pip install 'fvcore==0.1.5.post20221221'" in err and "not implemented" not in err


def test_a_broken_project_module_is_not_disguised(tmp_path, monkeypatch):
    pkg = tmp_path / "harness_h4_probe.py"
    pkg.write_text("from harness import no_such_module_h4\ndef run(cfg): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="no_such_module_h4"):
        cli._call("harness_h4_probe", None)
    (tmp_path / "harness_h4_norun.py").write_text("x = 1\n")
    with pytest.raises(AttributeError, match="run"):   # a stage without run() is a bug, not "not implemented"
        cli._call("harness_h4_norun", None)


def test_no_not_implemented_paths_remain():
    for path in [*(ROOT / "harness").rglob("*.py"), *PRESETS]:
        text = path.read_text()
        assert "not implemented yet" not in text, path


def test_scan_backend_errors_are_not_swallowed(monkeypatch):
    import importlib
    from harness import evaluate
    selective_scan = importlib.import_module("mambacsr.ops.selective_scan")
    assert evaluate.scan_backend("cpu") in ("numba", "torch", "ref")

    def broken(device="cpu"):
        raise RuntimeError("backend 'numba' cannot run on cuda")
    monkeypatch.setattr(selective_scan, "current_backend", broken)
    with pytest.raises(RuntimeError, match="cannot run on cuda"):
        evaluate.scan_backend("cpu")


def test_recognizer_import_errors_propagate(monkeypatch, tmp_path):
    from harness import recognition
    w = tmp_path / "crnn.pth"
    w.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "harness.recognizers.crnn", None)   # import raises ImportError
    with pytest.raises(ImportError):
        recognition.build_recognizer("crnn", str(w))
