"""The csrbench CLI lists every stage, validates params before any work, and never fakes output."""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import cli, config

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_help_lists_every_stage(capsys):
    """Every stage is a subcommand entry of --help (not just a word of the description above them)."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    entries = re.findall(r"^    ([a-z][a-z0-9-]*)", out, re.M)
    assert entries == list(_subcommands())
    missing = set(cli.STAGES + ("bench", "profile")) - set(entries)
    assert not missing, f"stages without a subcommand: {sorted(missing)}"


def test_every_dvc_stage_runs_a_subcommand_with_its_options():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    subs = _subcommands()
    for name, stage in stages.items():
        words = stage["cmd"].split()
        assert words[0] == "csrbench", f"dvc.yaml stage {name}: {stage['cmd']!r}"
        assert words[1] in subs, f"dvc.yaml stage {name}: `csrbench {words[1]}` is not a subcommand"
        known = {o for a in subs[words[1]]._actions for o in a.option_strings}
        unknown = [w for w in words[2:] if w.startswith("--") and w not in known]
        assert not unknown, f"dvc.yaml stage {name}: csrbench {words[1]} has no option {unknown}"


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


@pytest.mark.parametrize("profile, preset, expect", [
    ("smoke", {}, ["1", "1", "min2"]),
    ("smoke", {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "3"}, ["3", "1", "1"]),  # the user's choice wins
    ("paper", {}, ["unset", "unset", "unset"]),
])
def test_smoke_thread_limits(profile, preset, expect):
    """Smoke: torch (OpenMP/MKL) one thread, numba's scan kernel min(2, cores); other profiles untouched."""
    code = ("import os, types\n"
            "from harness.cli import _limit_threads\n"
            f"_limit_threads(types.SimpleNamespace(profile={profile!r}), 'train')\n"
            "print(*(os.environ.get(v, 'unset') for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS')))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, **preset}).stdout.split()
    cores = os.cpu_count() or 1
    assert out == [str(min(2, cores)) if e == "min2" else e for e in expect]
