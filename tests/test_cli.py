"""The csrbench CLI lists every stage, validates params before any work, and never fakes output."""
import subprocess
import sys

import pytest
import yaml

from harness import cli, config


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for stage in cli.STAGES + ("bench", "profile"):
        assert stage in out


@pytest.mark.parametrize("stage", cli.STAGES + ("bench", "profile"))
def test_every_subcommand_has_help(stage, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([stage, "--help"])
    assert e.value.code == 0
    assert "usage: csrbench " + stage in capsys.readouterr().out


def test_params_typo_fails_before_work(tmp_path, capsys):
    d = yaml.safe_load(config.profile_path("smoke").read_text())
    d["train"]["batch_sise"] = d["train"].pop("batch_size")
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(d))
    rc = cli.main(["complexity", "--params", str(p), "--out", str(tmp_path / "c.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "train.batch_sise" in err and "did you mean 'train.batch_size'" in err
    assert not (tmp_path / "c.json").exists()


def test_bad_level_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text(config.profile_path("smoke").read_text())
    rc = cli.main(["train", "--params", str(p), "--model", "swinir_smoke", "--codec", "jpeg", "--level", "500"])
    assert rc == 2
    assert "JPEG quality must be in 1..100" in capsys.readouterr().err


def test_profile_subcommand(tmp_path):
    p = tmp_path / "params.yaml"
    assert cli.main(["profile", "paper", "--params", str(p)]) == 0
    assert config.load(p).profile == "paper"


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "prepare" in r.stdout
