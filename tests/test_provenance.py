"""Results files carry provenance and are written atomically."""
import json
import os

import pytest

from harness import config, provenance


def test_write_json_adds_provenance(tmp_path):
    cfg = config.load(config.profile_path("smoke"))
    p = provenance.write_json(tmp_path / "a" / "m.json", {"psnr_y": 25.0, "nan": float("nan")}, cfg=cfg,
                              device="cpu", scan_backend="numba")
    d = json.loads(p.read_text())
    prov = d["provenance"]
    for key in ("git", "profile", "seed", "versions", "device", "device_name", "host", "utc"):
        assert key in prov, key
    assert prov["profile"] == "smoke" and prov["seed"] == 0 and prov["scan_backend"] == "numba"
    assert prov["host"]["cpu_count"] == os.cpu_count()
    assert prov["versions"]["torch"]
    assert d["psnr_y"] == 25.0 and d["nan"] is None
    assert list(tmp_path.joinpath("a").iterdir()) == [p]  # no temp file left behind


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    provenance.write_json(target, {"x": 1})
    with pytest.raises(TypeError):
        provenance.write_json(target, {"x": object()})
    assert json.loads(target.read_text())["x"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]


def test_write_csv_and_read_json_errors(tmp_path):
    p = provenance.write_csv(tmp_path / "c.csv", ["iteration", "loss"], [(1, 0.5), (2, 0.25)])
    assert p.read_text() == "iteration,loss\n1,0.5\n2,0.25\n"
    with pytest.raises(FileNotFoundError, match="results file not found"):
        provenance.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        provenance.read_json(tmp_path / "bad.json")
