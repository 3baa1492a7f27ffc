"""The training loop: lr schedule, curves, EMA, final.pt, idempotence, NaN stop, settings checks."""
import csv
import dataclasses
import math
import sys
import time

import pytest
import torch

import _trainkit as K
from harness import losses, train
from harness.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from harness.provenance import read_json


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setitem(sys.modules, "harness.models", K.fake_models_module())


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def root(tmp_path, fake_models, one_thread):
    K.make_data(tmp_path / "data")
    return tmp_path


def test_get_lr_matches_multisteplr():
    cfg = K.make_cfg(iterations=40, milestones=(10, 25, 30), lr=2e-4)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 25, 30], gamma=0.5)
    for it in range(40):
        assert train.get_lr(it, cfg.train) == pytest.approx(sched.get_last_lr()[0], rel=1e-12), it
        opt.step()
        sched.step()
    assert train.get_lr(39, cfg.train) == pytest.approx(2e-4 / 8)


def test_losses_known_answers():
    a, b = torch.tensor([[0.0, 1.0, -2.0]]), torch.zeros(1, 3)
    assert losses.l1(a, b).item() == pytest.approx(1.0)
    eps = 1e-3
    want = (eps + math.sqrt(1 + eps ** 2) + math.sqrt(4 + eps ** 2)) / 3
    assert losses.charbonnier(a, b, eps).item() == pytest.approx(want, rel=1e-6)
    assert losses.build_loss("charbonnier", eps)(a, b).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="train.loss"):
        losses.build_loss("l2")


def test_train_writes_curves_checkpoints_final_and_summary(root):
    cfg = K.make_cfg()
    final = train.run(cfg, resume=True, **K.train_kwargs(root))
    assert final == root / "run" / "final.pt"
    # keep_last = 2
    assert [it for it, _ in list_checkpoints(root / "run")] == [8, 12]
    # curves: a row per log point, val_psnr_y only at validation iterations
    rows = list(csv.DictReader(open(root / "run.csv")))
    assert list(rows[0]) == list(train.CURVE_HEADER)
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert [r["val_psnr_y"] != "" for r in rows] == [False, False, True, False, False, True]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4, 2.5e-4])
    # final.pt holds the EMA weights of the last checkpoint, not the raw ones
    fin = load_checkpoint(final)
    last = load_checkpoint(checkpoint_path(root / "run", 12))
    assert fin["ema"] is True and fin["model_name"] == "tiny" and fin["iterations"] == 12
    assert fin["model_config"] == dataclasses.asdict(K.TINY_MODELS["tiny"])
    for k, v in fin["state_dict"].items():
        assert torch.equal(v, last["ema"][k])
    assert any(not torch.equal(v, last["model"][k]) for k, v in fin["state_dict"].items())
    assert fin["history"] == last["history"]
    summary = read_json(root / "run" / "train.json")
    assert summary["iterations"] == 12 and summary["final_loss"] == pytest.approx(float(rows[-1]["loss"]), rel=1e-7)
    assert summary["torch_threads"] == 1 and summary["iterations_per_second"] > 0
    assert "backend" in summary and summary["provenance"]["profile"] == "smoke"


def test_throughput_counts_the_steps_apart_from_validation_and_checkpoints(root, monkeypatch):
    """train.json: iterations_per_second is the steps' throughput; validation and checkpoints only slow the wall one."""
    pause = 0.3
    real_validate = train._validate

    def slow_validate(*args, **kwargs):
        time.sleep(pause)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train, "_validate", slow_validate)
    cfg = K.make_cfg()   # 12 iterations; validation at 6 and 12 (the end)
    train.run(cfg, resume=True, **K.train_kwargs(root))
    s = read_json(root / "run" / "train.json")
    assert s["validation_checkpoint_seconds_this_run"] >= 2 * pause
    assert s["train_seconds_this_run"] + s["validation_checkpoint_seconds_this_run"] == pytest.approx(
        s["wall_seconds_this_run"], rel=1e-9)
    assert s["train_seconds_this_run"] < s["wall_seconds_this_run"] - 2 * pause
    assert s["iterations_per_second"] == pytest.approx(12 / s["train_seconds_this_run"], rel=1e-9)
    assert s["iterations_per_second_wall"] == pytest.approx(12 / s["wall_seconds_this_run"], rel=1e-9)


def test_build_trainer_and_train_step_are_the_loops_step(root):
    """The pieces `csrbench bench train` times reproduce the loop's weights exactly (no EMA, no clipping here)."""
    cfg = K.make_cfg(iterations=4, ckpt_every=4, ema_decay=0.0, milestones=(2,))
    train.run(cfg, resume=True, **K.train_kwargs(root))
    want = load_checkpoint(checkpoint_path(root / "run", 4))["model"]
    tr = train.build_trainer(cfg, "tiny")
    assert tr.net is tr.model and tr.ema is None
    torch.manual_seed(cfg.train.seed)   # the loop's training stream of rank 0
    batches = train.train_batches(cfg, train.image_data(cfg, root / "data", K.SCALE, K.DEG), start=0)
    for it in range(4):
        train.set_lr(tr.optimizer, train.get_lr(it, cfg.train))
        loss = train.train_step(tr, *next(batches))
        assert loss.ndim == 0 and not loss.requires_grad
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_training_reduces_the_loss(root):
    cfg = K.make_cfg(iterations=40, milestones=(), lr=3e-3, val_every=40, ckpt_every=40, log_every=10)
    train.run(cfg, resume=True, **K.train_kwargs(root))
    rows = list(csv.DictReader(open(root / "run.csv")))
    assert float(rows[-1]["loss"]) < 0.7 * float(rows[0]["loss"])


def test_without_ema_final_holds_the_raw_weights(root):
    cfg = K.make_cfg(ema_decay=0.0)
    fin = load_checkpoint(train.run(cfg, resume=True, **K.train_kwargs(root)))
    last = load_checkpoint(checkpoint_path(root / "run", 12))
    assert fin["ema"] is False
    assert all(torch.equal(v, last["model"][k]) for k, v in fin["state_dict"].items())


def test_complete_run_returns_at_once_and_more_iterations_continue(root):
    cfg = K.make_cfg()
    final = train.run(cfg, resume=True, **K.train_kwargs(root))
    stamp = final.stat().st_mtime_ns, (root / "run" / "train.json").read_text()
    train.run(cfg, resume=True, **K.train_kwargs(root))
    assert (final.stat().st_mtime_ns, (root / "run" / "train.json").read_text()) == stamp
    longer = K.make_cfg(iterations=16)
    train.run(longer, resume=True, **K.train_kwargs(root))
    summary = read_json(root / "run" / "train.json")
    assert (summary["resumed_from"], summary["iterations"]) == (12, 16)
    assert load_checkpoint(final)["iterations"] == 16


def test_nan_loss_stops_naming_iteration_and_last_good_checkpoint(root):
    cfg = K.make_cfg()   # tiny_nan: the 7th training forward returns NaN; checkpoints every 4
    with pytest.raises(RuntimeError, match=r"iteration 7 .*ckpt_00000004\.pt"):
        train.run(cfg, resume=True, **K.train_kwargs(root, model="tiny_nan"))
    assert [it for it, _ in list_checkpoints(root / "run")] == [4]
    good = load_checkpoint(checkpoint_path(root / "run", 4))
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert not (root / "run" / "final.pt").exists()


def test_other_settings_set_the_old_run_aside_and_no_resume_starts_afresh(root, caplog):
    train.run(K.make_cfg(iterations=8), resume=True, **K.train_kwargs(root))
    (root / "run" / "final.pt").unlink()
    old = sorted(p.name for _, p in list_checkpoints(root / "run"))
    other = K.make_cfg(iterations=8, lr=5e-4)
    train.run(other, resume=True, **K.train_kwargs(root))
    assert "train.lr: 0.001 -> 0.0005" in caplog.text and "superseded" in caplog.text
    assert read_json(root / "run" / "train.json")["resumed_from"] == 0           # trained afresh
    kept = sorted(p.name for p in (root / "run" / "superseded").iterdir())
    assert kept == sorted(old + ["train.json"])                                  # the old run is kept
    assert load_checkpoint(root / "run" / "superseded" / old[-1])["fingerprint"]["train"]["lr"] == 1e-3
    train.run(other, resume=False, **K.train_kwargs(root))
    assert load_checkpoint(root / "run" / "final.pt")["fingerprint"]["train"]["lr"] == 5e-4
    assert read_json(root / "run" / "train.json")["resumed_from"] == 0


def test_charbonnier_clip_and_bf16_autocast_run(root):
    cfg = K.make_cfg(iterations=4, loss="charbonnier", grad_clip=0.05, amp="bf16")
    train.run(cfg, resume=True, **K.train_kwargs(root))
    rows = list(csv.DictReader(open(root / "run.csv")))
    assert all(math.isfinite(float(r["loss"])) for r in rows)


def test_missing_training_data_names_the_folder(tmp_path, fake_models):
    with pytest.raises(FileNotFoundError, match="toytrain"):
        train.run(K.make_cfg(), resume=True, **K.train_kwargs(tmp_path))


@pytest.mark.parametrize("name", ["swinir_smoke"])
def test_real_smoke_model_trains_a_few_iterations(tmp_path, one_thread, name):
    models = pytest.importorskip("harness.models", reason="model files not importable yet")
    if name not in models.list_models():
        pytest.skip(f"{name} not registered")
    scale = models.config_of(name).upscale
    K.make_data(tmp_path / "data", size=16, scale=scale)
    cfg = K.make_cfg(iterations=2, batch_size=2, val_every=2, ckpt_every=2, log_every=1, val_images=1)
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, crop_border=scale))
    final = train.run(cfg, resume=True, **K.train_kwargs(tmp_path, model=name, scale=scale))
    fin = load_checkpoint(final)
    assert fin["model_name"] == name and fin["iterations"] == 2
    assert all(torch.isfinite(v).all() for v in fin["state_dict"].values() if v.is_floating_point())
