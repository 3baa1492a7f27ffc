"""The rehearsal profile: the paper preset on stand-in data (issue 17.2).

Fast tests: the preset differs from paper.yaml only in data and length; `csrbench profile
rehearsal` accepts it; the stand-in archives have the published names, layout and counts, are
deterministic, and go through the real prepare path. The whole `dvc repro` on the preset is
the opt-in slow test at the end (CSRBENCH_REHEARSAL=1; see README "Rehearsal before the GPU").
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.config import PROFILES, load, profile_path
from harness.data import prepare, registry, standin

#: Every key in which rehearsal.yaml may differ from paper.yaml: data (stand-ins) or length.
OVERRIDES = {
    "profile": "rehearsal",
    "data.standin": True,
    "data.train_images": 128,
    "data.patch_size": 16,
    "train.iterations": 2,
    "train.batch_size": 2,
    "train.milestones": [1],
    "train.val_every": 2,
    "train.val_images": 1,
    "train.ckpt_every": 2,
    "train.log_every": 1,
    "evaluate.max_images": 1,
    "evaluate.generalize_datasets": ["set5"],
    "report.visual_images": 1,
    "complexity.latency_repeats": 1,
    "erf.num_images": 2,
    "erf.crop": 32,
    "check.reference": "results/reference/rehearsal",
    "textzoom.root": "",
    "textzoom.iterations": 3,
    "textzoom.batch_size": 2,
}
PAPER_SETS = ("df2k", "set5", "set14", "bsd100", "urban100", "manga109", "div2k_valid")
REPO = Path(__file__).resolve().parents[1]


def test_rehearsal_is_the_paper_preset_except_data_and_length():
    paper, rehearsal = load(profile_path("paper")).to_dict(), load(profile_path("rehearsal")).to_dict()
    expected = copy.deepcopy(paper)
    for dotted, value in OVERRIDES.items():
        *path, key = dotted.split(".")
        d = expected
        for p in path:
            d = d[p]
        assert key in d, dotted
        d[key] = value
    assert rehearsal == expected
    assert "rehearsal" in PROFILES           # `csrbench profile rehearsal` (tests/test_paper_path.py runs it)
    assert set(load(profile_path("rehearsal")).data.test) | {"df2k"} == set(PAPER_SETS)


@pytest.mark.parametrize("source", [s for d in PAPER_SETS for s in registry.get(d).sources], ids=lambda s: s.name)
def test_standin_names_match_the_registry(source):
    names = standin.names_of(source)
    assert len(names) == len(set(names)) == source.count
    assert (not source.first or min(names) == source.first) and (not source.last or max(names) == source.last)


def test_standin_archive_has_the_published_layout_and_is_deterministic(tmp_path):
    for name, expect in (("set5", ["Set5_HR/baby.png", "Set5_HR/bird.png", "Set5_HR/butterfly.png",
                                   "Set5_HR/head.png", "Set5_HR/woman.png"]),
                         ("manga109", None)):
        src = registry.get(name).sources[0]
        a = standin.write_archive(src, tmp_path / "a" / src.archive)
        b = standin.write_archive(src, tmp_path / "b" / src.archive)
        assert a.read_bytes() == b.read_bytes()
        if a.name.endswith(".zip"):
            members = sorted(zipfile.ZipFile(a).namelist())
        else:
            members = sorted(tarfile.open(a).getnames())
        assert len(members) == src.count
        assert all(m.startswith(src.hr_glob.split("*")[0]) and m.endswith(".png") for m in members)
        if expect:
            assert members == expect
    assert "Manga109/YumeiroCooking.png" in members and "Manga109/ARMS.png" in members


def test_standin_sizes_cover_the_cases_that_matter():
    big_h, big_w = standin.size_of("div2k_valid", "0801")
    assert max(big_h, big_w) // 4 > 192                  # wider than the paper's 192-px LR tile: two tiles
    assert standin.STANDIN_NAMES["div2k_valid"][0] == "0801"   # scored under evaluate.max_images: 1
    assert standin.synth_image("div2k_valid", "0801").shape == (big_h, big_w, 3)
    sizes = [standin.size_of(s, n) for s in ("set14", "bsd100", "urban100", "manga109")
             for n in standin.STANDIN_NAMES[s]]
    lr = [(h - h % 4) // 4 for hw in sizes for h in hw]
    assert any(h % 4 for hw in sizes for h in hw)       # mod-crop runs
    assert sum(x % 8 != 0 for x in lr) > len(lr) // 2   # LR sides off the 8 / 16 window grids
    df2k = [standin.size_of("flickr2k", n) for n in standin.STANDIN_NAMES["flickr2k"][:200]]
    assert min(min(hw) for hw in df2k) >= 96 and max(max(hw) for hw in df2k) <= 160
    erf_crop = load(profile_path("rehearsal")).erf.crop     # baby (Set5's first) holds an ERF crop
    assert min(standin.size_of("set5", "baby")) // 4 >= erf_crop and standin.STANDIN_NAMES["set5"][0] == "baby"
    img = standin.synth_image("urban100", "img_007")
    assert img.dtype == np.uint8 and img.std() > 20       # structure, not a flat image
    assert standin.synth_image("set14", "man").ndim == 2   # grayscale, as in some Set14 copies


def test_prepare_runs_the_real_path_on_the_standins(tmp_path, caplog):
    cfg = load(profile_path("rehearsal"))
    cfg = dataclasses.replace(cfg, degrade=dataclasses.replace(cfg.degrade, workers=1))
    t = time.perf_counter()
    prepare.run(cfg, datasets=["set5", "set14"], out=tmp_path / "data")
    seconds = time.perf_counter() - t
    raw = tmp_path / "data" / "raw"
    assert (raw / "standin" / "set5" / "Set5_HR.tar.gz").is_file()
    assert sorted(p.name for p in (raw / "standin" / "set5" / "extracted" / "Set5_HR").iterdir()) == \
        [f"{n}.png" for n in ("baby", "bird", "butterfly", "head", "woman")]
    assert not (raw / "set5").exists()                   # the real-data folder is untouched
    man = json.loads((tmp_path / "data" / "hr" / "set14" / "manifest.json").read_text())
    assert man["standin"]["seed"] == standin.SEED and man["count"] == 14
    assert man["images"]["man"]["conversions"] == ["grayscale -> RGB (channel replicated)"]
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in (r["size"] for r in man["images"].values()))
    woman = json.loads((tmp_path / "data" / "hr" / "set5" / "manifest.json").read_text())["images"]["woman"]
    assert woman["source_size"] == [86, 57] and woman["size"] == [84, 56]
    # a real copy's manifest key differs: the stand-in is never taken for the real data, nor back
    real = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, standin=False))
    assert prepare._key(registry.get("set5"), 4, real.data.standin) != prepare._key(registry.get("set5"), 4, True)
    # a second run keeps everything (manifest + sha256 check)
    before = (tmp_path / "data" / "hr" / "set5" / "baby.png").stat().st_mtime_ns
    prepare.run(cfg, datasets=["set5"], out=tmp_path / "data")
    assert (tmp_path / "data" / "hr" / "set5" / "baby.png").stat().st_mtime_ns == before
    assert seconds < 60


def test_rehearsal_training_subset_holds_the_image_cut_into_sub_images():
    """data.train_images keeps the first N DF2K names; DIV2K 0001 (1020x700, several 480-px sub-images) and
    Flickr2K images must both be among them, so the sub-image path runs on both sources."""
    cfg = load(profile_path("rehearsal"))
    names = [n for s in registry.get("df2k").sources for n in standin.names_of(s)]
    kept = cfg.data.first_train_images(names)
    assert 0 < len(kept) == cfg.data.train_images < len(names)
    assert "0001" in kept and any(len(n) == 6 for n in kept)
    assert min(standin.size_of("div2k_train", "0001")) > 480


def test_standin_refuses_a_real_copy_at_the_same_time(tmp_path):
    cfg = load(profile_path("rehearsal"))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, local={"set5": str(tmp_path)}))
    with pytest.raises(prepare.DatasetError, match="data.standin is true"):
        prepare.run(cfg, datasets=["set5"], out=tmp_path / "data")


# ----------------------------------------------------------------------------- the whole rehearsal

@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CSRBENCH_REHEARSAL"),
                    reason="the full rehearsal (`csrbench profile rehearsal && dvc repro` in a fresh clone) takes "
                           "about 50 min on 2 CPU cores (152 stages, 146 of them paper-size networks; measured in "
                           "README: Rehearsal before the GPU), too long for CI; set CSRBENCH_REHEARSAL=1 to run it")
def test_rehearsal_pipeline_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = dict(os.environ, PYTHONPATH=str(clone))
    subprocess.run([sys.executable, "-m", "harness.cli", "profile", "rehearsal"], cwd=clone, env=env, check=True)
    t = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True)
    print(f"rehearsal dvc repro: {time.perf_counter() - t:.0f} s")
    assert (clone / "results" / "report" / "index.html").is_file()


def test_standin_archive_is_rewritten_when_the_generator_changes(tmp_path):
    src = registry.get("set5").sources[0]
    raw = tmp_path / "raw"
    files = prepare.standin_source(src, raw)
    assert [p.stem for p in files] == list(standin.STANDIN_NAMES["set5"])
    archive = raw / "set5" / src.archive
    stamp = archive.with_name(archive.name + ".json")
    mtime = archive.stat().st_mtime_ns
    prepare.standin_source(src, raw)
    assert archive.stat().st_mtime_ns == mtime            # same generator: kept
    stamp.write_text(json.dumps({"generator_sha256": "an older generator", "seed": standin.SEED}))
    prepare.standin_source(src, raw)
    assert archive.stat().st_mtime_ns != mtime            # stale stamp: written again
    assert json.loads(stamp.read_text())["generator_sha256"] != "an older generator"
