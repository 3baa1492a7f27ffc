"""Text SR training on TextZoom LMDBs: the seeded stream, and `textzoom_train.run` through the shared loop."""
import dataclasses
import sys

import numpy as np
import pytest
import torch

import _trainkit as K
from harness import textzoom_train
from harness.checkpoint import load_checkpoint
from harness.data import textzoom as tz
from harness.provenance import read_json


@pytest.fixture(scope="module")
def tz_root(tmp_path_factory):
    return tz.make_smoke_textzoom(tmp_path_factory.mktemp("tz"), n_train=6, n_test=3, seed=1)


def test_train_stream_is_seeded_whole_crops_without_augmentation(tz_root):
    a, b = tz.TextZoomTrain(tz_root, seed=0), tz.TextZoomTrain(tz_root, seed=0)
    lr, hr = a[5]
    assert lr.shape == (3, 16, 64) and hr.shape == (3, 32, 128)
    assert torch.equal(lr, b[5][0]) and torch.equal(hr, b[5][1])       # a pure function of (seed, k)
    pairs = tz.TextZoomPairs(tz.split_path(tz_root, "train1"))
    stored = [pairs[i][1] for i in range(len(pairs))]
    # every drawn sample is one stored crop as it is (no flip, no crop), and the draw covers several
    drawn = {next(i for i, s in enumerate(stored) if torch.equal(s, a[k][1])) for k in range(40)}
    assert len(drawn) >= 4
    other = tz.TextZoomTrain(tz_root, seed=1)
    assert any(not torch.equal(a[k][1], other[k][1]) for k in range(10))


def test_train_stream_in_forked_loader_workers_after_the_parent_read_it(tz_root):
    """The paper preset loads with 8 workers. The parent reads the LMDB first (sample count, validation
    pairs); a worker forked after that must still open it (LMDB refuses a second open of an env that is
    open in the process, and a forked child inherits the parent's)."""
    ds = tz.TextZoomTrain(tz_root, seed=0)
    expect = [ds[k] for k in range(4)]                  # parent opens the env
    ctx = torch.multiprocessing.get_context("fork")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=ctx,
                                         sampler=range(4))
    got = [t for lr, hr in loader for t in zip(lr, hr)]
    assert len(got) == 4 and all(torch.equal(g[1], e[1]) for g, e in zip(got, expect))
    assert ds[0][1].shape == (3, 32, 128)                # the parent reopens after the fork


def test_train_stream_without_train_split_says_where_textzoom_comes_from(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(tz.TextZoomError, match="JasonBoy1/TextZoom"):
        tz.TextZoomTrain(tmp_path, seed=0)
    with pytest.raises(tz.TextZoomError, match="JasonBoy1/TextZoom"):
        textzoom_train.run(K.make_cfg(), "tiny", tmp_path / "out", tmp_path / "c.csv", root=tmp_path)


def test_uint8_validation_pairs_are_the_stored_images(tz_root):
    ds = tz.TextZoomPairs(tz.split_path(tz_root, "easy"))
    pairs = tz.as_uint8_pairs(ds, 2)
    assert len(pairs) == 2
    name, lr, hr = pairs[1]
    _, lr_png, label = tz.read_sample(tz.split_path(tz_root, "easy"), 2)
    assert name.endswith(label) and lr.dtype == np.uint8 and hr.shape == (32, 128, 3)
    assert np.array_equal(lr, lr_png)  # stored at 64x16 already: no resize, exact


def test_textzoom_train_runs_the_shared_loop_with_textzoom_settings(tz_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "harness.models", K.fake_models_module())
    cfg = K.make_cfg(iterations=999, batch_size=99, loss="l1", val_images=2)
    cfg = dataclasses.replace(cfg, textzoom=dataclasses.replace(cfg.textzoom, iterations=6, batch_size=2,
                                                                loss="charbonnier"))
    torch.set_num_threads(1)
    final = textzoom_train.run(cfg, "tiny", tmp_path / "run", tmp_path / "curve.csv", root=tz_root)
    done = load_checkpoint(final)
    assert done["iterations"] == 6 and done["scale"] == 2
    fp = done["fingerprint"]
    assert fp["train"]["batch_size"] == 2 and fp["train"]["loss"] == "charbonnier"
    assert fp["data"] == {"textzoom": str(tz_root), "train_splits": {"train1": 6}}
    summary = read_json(tmp_path / "run" / "train.json")
    assert summary["iterations"] == 6 and summary["batch_size"] == 2
    assert summary["final_val_psnr_y"] is not None   # validated on test/easy crops
    # idempotent: same settings return at once; other TextZoom settings train again
    assert textzoom_train.run(cfg, "tiny", tmp_path / "run", tmp_path / "curve.csv", root=tz_root) == final
    longer = dataclasses.replace(cfg, textzoom=dataclasses.replace(cfg.textzoom, iterations=8))
    textzoom_train.run(longer, "tiny", tmp_path / "run", tmp_path / "curve.csv", root=tz_root)
    assert load_checkpoint(final)["iterations"] == 8
