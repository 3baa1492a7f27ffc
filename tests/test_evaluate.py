"""csrbench evaluate: metrics JSON schema, hand-computable scores, tiling / self-ensemble, clear errors."""
import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

import _trainkit as K
from harness import evaluate, train, visual
from harness.checkpoint import CheckpointError, file_sha256
from harness.data.images import read_png_rgb
from harness.provenance import read_json

Y_GAIN = (65.481 + 128.553 + 24.966) / 255


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A 'nearest' net trained on data where HR == nearest_up(LR): its weights stay exactly zero."""
    monkeypatch.setitem(sys.modules, "harness.models", K.fake_models_module())
    K.make_data(tmp_path / "data", offsets=(0, 6))
    cfg = K.make_cfg(iterations=4, ckpt_every=4, val_every=4)
    final = train.run(cfg, resume=True, **K.train_kwargs(tmp_path, model="nearest"))
    return tmp_path, cfg, final


def _evaluate(root, cfg, out="m.json", model="nearest", **ev):
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, **ev))
    return read_json(evaluate.run(cfg, model=model, degradation=K.DEG, scale=K.SCALE, checkpoint=root / "run",
                                  out=root / out, datasets=None, data=root / "data", device=torch.device("cpu")))


def test_metrics_json_schema_and_known_answers(trained):
    root, cfg, final = trained
    res = _evaluate(root, cfg)
    for key in ("provenance", "model", "scale", "codec", "level", "profile", "iterations", "tile", "datasets",
                "backend", "checkpoint", "ema", "self_ensemble"):
        assert key in res, key
    assert (res["model"], res["scale"], res["codec"], res["level"]) == ("nearest", 2, "jpeg", 10)
    assert res["iterations"] == 4 and res["ema"] is True and res["profile"] == "smoke"
    assert res["tile"]["size"] == 0 and res["tile"]["overlap"] == 8
    assert res["checkpoint"] == {"path": str(final), "sha256": file_sha256(final)}
    ds = res["datasets"][K.TEST_SET]
    img0, img1 = ds["images"]["img00"], ds["images"]["img01"]
    # img00: SR == HR exactly -> PSNR inf (stored as null), SSIM 1
    assert img0["psnr_y"] is None and img0["ssim_y"] == pytest.approx(1.0, abs=1e-12)
    # img01: HR = SR + 6 on every channel -> Y differs by 6 * 219/255 everywhere
    assert img1["psnr_y"] == pytest.approx(20 * math.log10(255 / (6 * Y_GAIN)), abs=1e-9)
    assert 0.9 < img1["ssim_y"] < 1.0
    assert ds["psnr_y"] is None      # the mean with an inf is inf -> null
    assert ds["ssim_y"] == pytest.approx((img0["ssim_y"] + img1["ssim_y"]) / 2)
    assert all(v["seconds"] > 0 for v in ds["images"].values())


def test_tiled_and_self_ensemble_give_the_same_scores_for_a_pointwise_net(trained):
    root, cfg, _ = trained
    base = _evaluate(root, cfg)["datasets"][K.TEST_SET]["images"]
    res = _evaluate(root, cfg, out="t.json", tile=8, tile_overlap=4, self_ensemble=True)
    assert res["tile"] == {"size": 8, "overlap": 4, "blend": "centre"} and res["self_ensemble"] is True
    got = res["datasets"][K.TEST_SET]["images"]
    for name in base:
        assert got[name]["psnr_y"] == base[name]["psnr_y"]
        assert got[name]["ssim_y"] == pytest.approx(base[name]["ssim_y"], abs=1e-12)


def test_wrong_model_or_scale_is_refused(trained):
    root, cfg, final = trained
    with pytest.raises(CheckpointError, match="holds model 'nearest', not 'tiny'"):
        _evaluate(root, cfg, model="tiny")
    with pytest.raises(CheckpointError, match="x2"):
        evaluate.run(cfg, model="nearest", degradation=K.DEG, scale=4, checkpoint=final, out=root / "x.json",
                     datasets=None, data=root / "data", device=torch.device("cpu"))


def test_changed_model_config_is_refused(trained, monkeypatch):
    root, cfg, final = trained
    mod = K.fake_models_module()
    real = mod.config_of
    mod.config_of = lambda name, **o: dataclasses.replace(real(name, **o), width=16)
    monkeypatch.setitem(sys.modules, "harness.models", mod)
    with pytest.raises(CheckpointError, match="width: trained 8, now 16"):
        evaluate.load_final(final)


def test_missing_test_set_names_the_folder(trained):
    root, cfg, _ = trained
    with pytest.raises(FileNotFoundError, match="nosuchset"):
        evaluate.run(cfg, model="nearest", degradation=K.DEG, scale=K.SCALE, checkpoint=root / "run",
                     out=root / "x.json", datasets=["nosuchset"], data=root / "data", device=torch.device("cpu"))


def test_visual_crops_are_the_scored_sr_output_cut_out(trained):
    """evaluate --visual: centre crops of the SR the metrics scored (plus LR enlarged and HR), PSNR-Y of the crop."""
    root, cfg, _ = trained
    run = dict(model="nearest", degradation=K.DEG, scale=K.SCALE, checkpoint=root / "run", out=root / "m.json",
               datasets=None, data=root / "data", device=torch.device("cpu"), visual=root / "vis")
    cfg2 = dataclasses.replace(cfg, report=dataclasses.replace(cfg.report, visual_images=2, crop=21))
    evaluate.run(cfg2, **run)
    rec = read_json(root / "vis" / visual.CROPS_JSON)
    assert (rec["model"], rec["dataset"], rec["iterations"], rec["crop"]) == ("nearest", K.TEST_SET, 4, 21)
    assert list(rec["images"]) == ["img00", "img01"]
    # img01: LR 26x28 -> HR crop side 20 (21 rounded down to x2), centred on the LR grid
    assert rec["images"]["img01"]["box"] == [16, 18, 20]
    lr = read_png_rgb(root / "data" / "lr" / K.TEST_SET / "x2" / K.DEG.tag / "img01.png")
    hr = read_png_rgb(root / "data" / "hr" / K.TEST_SET / "img01.png")
    crops = {k: read_png_rgb(p) for k, p in visual.crop_paths(root / "vis", "img01").items()}
    want_sr = K.nearest_up(lr)[16:36, 18:38]               # the 'nearest' net: SR = nearest_up(LR) exactly
    assert np.array_equal(crops["sr"], want_sr) and np.array_equal(crops["lr"], want_sr)
    assert np.array_equal(crops["hr"], hr[16:36, 18:38])
    assert rec["images"]["img01"]["psnr_y"] == pytest.approx(20 * math.log10(255 / (6 * Y_GAIN)), abs=1e-9)
    assert rec["images"]["img00"]["psnr_y"] is None          # SR == HR: inf, stored as null
    # fewer images later: no stale crops left behind
    evaluate.run(dataclasses.replace(cfg2, report=dataclasses.replace(cfg2.report, visual_images=1)), **run)
    assert sorted(p.name for p in (root / "vis").glob("*.png")) == ["img00_hr.png", "img00_lr.png", "img00_sr.png"]


def test_tensor_to_image_clamps_and_rounds_like_basicsr():
    vals = torch.tensor([-0.2, 1.3, 10.4 / 255, 10.6 / 255, 0.5]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    img = evaluate.tensor_to_image(vals)
    assert img.dtype == np.uint8 and img.shape == (1, 5, 3)
    assert img[0, :, 0].tolist() == [0, 255, 10, 11, 128]
    lr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(evaluate.tensor_to_image(evaluate.image_to_tensor(lr)), lr)


def test_self_ensemble_undoes_each_transform():
    x = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")
    torch.testing.assert_close(evaluate.self_ensemble_forward(up, x), up(x), rtol=0, atol=1e-6)
    ramp = lambda t: up(t) * torch.linspace(0, 1, 2 * t.shape[-1])   # not flip-equivariant
    assert (evaluate.self_ensemble_forward(ramp, x) - ramp(x)).abs().max() > 0.05


def test_max_images_scores_the_first_images_in_name_order(trained):
    """evaluate.max_images (the rehearsal's length knob): only the first N images of each test set are
    scored, and the JSON says how many there were."""
    root, cfg, _ = trained
    full = _evaluate(root, cfg, out="all.json")["datasets"][K.TEST_SET]
    one = _evaluate(root, cfg, out="one.json", max_images=1)
    ds = one["datasets"][K.TEST_SET]
    assert one["max_images"] == 1 and full["images_available"] == ds["images_available"] == len(full["images"]) > 1
    first = sorted(full["images"])[0]
    assert list(ds["images"]) == [first]
    assert ds["ssim_y"] == full["images"][first]["ssim_y"]


def test_one_forward_per_scored_image_plus_a_small_warmup(trained, monkeypatch):
    """The untimed warm-up runs on a WARMUP_SIDE corner; the visual crops reuse the scored SR (no 2nd forward)."""
    root, cfg, _ = trained
    shapes = []
    real_load = evaluate.load_final

    def counting_load(path, device="cpu"):
        net, final = real_load(path, device)
        net.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape[-2:])))
        return net, final

    monkeypatch.setattr(evaluate, "load_final", counting_load)
    monkeypatch.setattr(evaluate, "WARMUP_SIDE", 8)
    run = dict(model="nearest", degradation=K.DEG, scale=K.SCALE, checkpoint=root / "run", out=root / "m.json",
               datasets=None, data=root / "data", device=torch.device("cpu"), visual=root / "vis")
    both = dataclasses.replace(cfg, report=dataclasses.replace(cfg.report, visual_images=2))
    evaluate.run(both, **run)
    lr_shapes = [read_png_rgb(p).shape[:2] for p in
                 sorted((root / "data" / "lr" / K.TEST_SET / "x2" / K.DEG.tag).glob("*.png"))]
    assert shapes == [(8, 8)] + lr_shapes        # warm-up corner, then each image once; visuals reused
    rec = read_json(root / "vis" / visual.CROPS_JSON)
    assert list(rec["images"]) == ["img00", "img01"]
    # an image shown but not scored (max_images 1) is super-resolved for its crop
    shapes.clear()
    one = dataclasses.replace(both, evaluate=dataclasses.replace(both.evaluate, max_images=1))
    evaluate.run(one, **run)
    assert shapes == [(8, 8), lr_shapes[0], lr_shapes[1]]
    assert list(read_json(root / "vis" / visual.CROPS_JSON)["images"]) == ["img00", "img01"]
