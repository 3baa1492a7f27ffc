"""The PSNR regression gate fails on a planted regression and names what regressed."""
import json
import subprocess

import pytest

from harness import check, cli, config


def _metrics(folder, model="mambacsr_smoke", psnr=25.0, ssim=0.70, profile="smoke", ds="skimage_test"):
    p = folder / model / "x4_jpeg_10.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"model": model, "scale": 4, "codec": "jpeg", "level": 10, "profile": profile,
                             "datasets": {ds: {"psnr_y": psnr, "ssim_y": ssim, "images": {}}}}))
    return p


@pytest.fixture
def params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(config.profile_path("smoke").read_text())
    return p


def test_no_regression_passes(tmp_path, params, capsys):
    _metrics(tmp_path / "ref", psnr=25.0)
    _metrics(tmp_path / "results" / "metrics", psnr=24.96)  # within 0.05 dB
    rc = cli.main(["check", "--params", str(params), "--results", str(tmp_path / "results"),
                   "--baseline", str(tmp_path / "ref")])
    assert rc == 0
    assert "check OK" in capsys.readouterr().out


def test_planted_regression_fails_and_names_it(tmp_path, params, capsys):
    _metrics(tmp_path / "ref", psnr=25.0)
    _metrics(tmp_path / "results" / "metrics", psnr=24.90)
    rc = cli.main(["check", "--params", str(params), "--results", str(tmp_path / "results"),
                   "--baseline", str(tmp_path / "ref")])
    assert rc == 1
    out = capsys.readouterr().out
    assert "REGRESSION model=mambacsr_smoke dataset=skimage_test codec=jpeg level=10" in out
    assert "25.0000 -> 24.9000" in out


def test_ssim_regression_and_missing_row(tmp_path):
    _metrics(tmp_path / "ref", ssim=0.70)
    _metrics(tmp_path / "ref", model="hat_smoke")
    _metrics(tmp_path / "new", ssim=0.69)
    f = check.compare(check.collect(tmp_path / "ref"), check.collect(tmp_path / "new"), 0.05, 0.002)
    text = "\n".join(map(str, f))
    assert "ssim_y 0.7000 -> 0.6900" in text
    assert "MISSING model=hat_smoke" in text


def test_profiles_are_never_compared(tmp_path):
    _metrics(tmp_path / "ref", profile="paper")
    _metrics(tmp_path / "new", profile="smoke")
    with pytest.raises(ValueError, match="not comparable"):
        check.compare(check.collect(tmp_path / "ref"), check.collect(tmp_path / "new"), 0.05, 0.002)


def test_against_git_revision(tmp_path, params, capsys, monkeypatch):
    repo = tmp_path / "repo"
    _metrics(repo / "results" / "metrics", psnr=25.0)
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
    run("init", "-q")
    run("add", "-A")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    _metrics(repo / "results" / "metrics", psnr=24.0)
    monkeypatch.chdir(repo)
    rc = cli.main(["check", "--params", str(params), "--results", "results", "--against", "HEAD"])
    assert rc == 1 and "25.0000 -> 24.0000" in capsys.readouterr().out
    rc = cli.main(["check", "--params", str(params), "--results", "results", "--against", "nope"])
    assert rc == 1


def test_update_reference_and_corrupt_file(tmp_path, params, capsys):
    _metrics(tmp_path / "results" / "metrics", psnr=25.0)
    ref = tmp_path / "ref"
    assert cli.main(["check", "--params", str(params), "--results", str(tmp_path / "results"),
                     "--baseline", str(ref), "--update"]) == 0
    assert check.collect(ref)
    (tmp_path / "results" / "metrics" / "mambacsr_smoke" / "x4_jpeg_10.json").write_text("{")
    rc = cli.main(["check", "--params", str(params), "--results", str(tmp_path / "results"), "--baseline", str(ref)])
    assert rc == 1 and "x4_jpeg_10.json: not valid JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one reference per profile

def _params_with(tmp_path, profile="smoke", **check_keys):
    import yaml
    d = yaml.safe_load(config.profile_path(profile).read_text())
    d["check"].update(check_keys)
    p = tmp_path / f"{profile}_params.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("choice,rc", [("pass", 0), ("fail", 1)])
def test_missing_reference_says_so_and_obeys_the_param(tmp_path, capsys, choice, rc):
    _metrics(tmp_path / "results" / "metrics", model="mambacsr", profile="paper")
    p = _params_with(tmp_path, "paper", reference=str(tmp_path / "reference" / "paper"), missing_reference=choice)
    assert cli.main(["check", "--params", str(p), "--results", str(tmp_path / "results")]) == rc
    out = capsys.readouterr().out
    assert f"no reference for profile 'paper' in {tmp_path / 'reference' / 'paper'}" in out
    assert "csrbench check --update" in out and "MISSING" not in out


def test_reference_of_another_profile_is_refused(tmp_path, capsys):
    _metrics(tmp_path / "ref", profile="smoke")
    _metrics(tmp_path / "results" / "metrics", model="mambacsr", profile="paper")
    p = _params_with(tmp_path, "paper", reference=str(tmp_path / "ref"))
    assert cli.main(["check", "--params", str(p), "--results", str(tmp_path / "results")]) == 1
    assert "reference holds profile 'smoke' figures, the params profile is 'paper'" in capsys.readouterr().err


def test_each_preset_has_its_own_reference_folder_and_smoke_is_committed():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for preset in sorted((root / "harness" / "profiles").glob("*.yaml")):
        cfg = config.load(preset)
        assert Path(cfg.check.reference) == Path("results/reference") / cfg.profile, preset
    smoke = check.collect(root / config.load(config.profile_path("smoke")).check.reference)
    assert smoke and {r.profile for r in smoke.values()} == {"smoke"}
    assert not list((root / "results" / "reference").glob("*_smoke")), "smoke rows belong in reference/smoke/"
