"""`csrbench bench rehearsal`'s bookkeeping: the commands' timing log and the split of each stage's seconds.

The benchmark itself (the whole rehearsal, about 50 min) is not run here; its figures are in
results/bench/rehearsal.json.
"""
from __future__ import annotations

import json

import pytest

from harness import cli, config
from harness.bench import rehearsal


def test_each_command_logs_its_times_when_asked(tmp_path, monkeypatch):
    log = tmp_path / "timing.jsonl"
    params = tmp_path / "params.yaml"
    params.write_text(config.profile_path("smoke").read_text())
    monkeypatch.setenv(cli.TIMING_ENV, str(log))
    assert cli.main(["profile", "paper", "--params", str(params)]) == 0
    assert cli.main(["check", "--params", str(tmp_path / "missing.yaml")]) == 2   # a bad input is logged too
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert first["argv"] == ["profile", "paper", "--params", str(params)] and first["rc"] == 0
    assert first["start"] <= first["ready"] <= first["end"]
    assert second["rc"] == 2 and "ready" not in second        # failed before the params were loaded


def test_no_log_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(cli.TIMING_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(config.profile_path("smoke").read_text())
    assert cli.main(["profile", "paper", "--params", str(params)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_seconds_split_into_imports_work_and_dvc():
    windows = [("prepare", 100.0, 110.0), ("train@model0-deg0", 110.0, 130.0), ("train@model1-deg0", 130.0, 131.0)]
    commands = [{"start": 101.0, "ready": 102.5, "end": 108.0},
                {"start": 111.0, "ready": 113.0, "end": 126.0}]      # none in the third stage
    rows = rehearsal.split_stages(windows, commands)
    assert [(r["seconds"], r["imports"], r["work"], r["dvc"], r["commands"]) for r in rows] == [
        (10.0, 1.5, 5.5, 3.0, 1), (20.0, 2.0, 13.0, 5.0, 1), (1.0, 0.0, 0.0, 1.0, 0)]
    groups = rehearsal.by_group(rows)
    assert list(groups) == ["prepare", "train"]
    assert groups["train"] == {"stages": 2, "seconds": 21.0, "imports": 2.0, "work": 13.0, "dvc": 6.0}


def test_a_command_that_died_before_ready_counts_as_imports():
    rows = rehearsal.split_stages([("evaluate@model0-deg0", 0.0, 4.0)], [{"start": 0.5, "end": 2.0}])
    assert (rows[0]["imports"], rows[0]["work"], rows[0]["dvc"]) == (1.5, 0.0, 2.5)


def test_bench_refuses_a_disk_too_small(tmp_path, monkeypatch):
    monkeypatch.setattr(rehearsal, "FREE_DISK_GB", 10 ** 9)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(rehearsal.tempfile, "tempdir", None)    # re-read TMPDIR
    with pytest.raises(RuntimeError, match=r"GB free, the rehearsal needs about .*\(set TMPDIR"):
        rehearsal.run(out=tmp_path / "rehearsal.json")
    assert not (tmp_path / "rehearsal.json").exists()
    assert not list(tmp_path.glob("csrbench-rehearsal-*"))        # its temporary folder is gone too


def test_lock_size_before_each_stage():
    before = "schema: '2.0'\nstages:\n  prepare:\n    cmd: old\n  train@model0-deg0:\n    cmd: old\n"
    after = ("schema: '2.0'\nstages:\n  prepare:\n    cmd: a new and longer command\n"
             "  train@model0-deg0:\n    cmd: new\n  train@model1-deg0:\n    cmd: new\n")
    header = len("schema: '2.0'\nstages:\n")
    old_p, old_t = len("  prepare:\n    cmd: old\n"), len("  train@model0-deg0:\n    cmd: old\n")
    new_p, new_t = len("  prepare:\n    cmd: a new and longer command\n"), len("  train@model0-deg0:\n    cmd: new\n")
    sizes = rehearsal.lock_growth(before, after, ["prepare", "train@model0-deg0", "train@model1-deg0"])
    assert sizes == [header + old_p + old_t, header + new_p + old_t, header + new_p + new_t]
    assert sizes[0] == len(before)


def test_fit_line():
    assert rehearsal.fit_line([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx((1.0, 2.0))
    assert rehearsal.fit_line([1.0, 1.0], [2.0, 4.0]) == (3.0, 0.0)
