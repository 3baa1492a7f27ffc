"""Checkpoints: atomic writes, keep-last, skipping corrupt files, and exact resume after SIGKILL."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import _trainkit as K
from harness import checkpoint as C
from harness import train

TESTS = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- checkpoint.py

def test_save_is_atomic_and_leaves_no_temp_on_failure(tmp_path):
    target = C.save_checkpoint(tmp_path / "ckpt_00000004.pt", {"iteration": 4, "w": torch.arange(3)})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom while pickling")

    with pytest.raises(RuntimeError, match="boom"):
        C.save_checkpoint(target, {"iteration": 4, "bad": Boom()})
    assert torch.equal(C.load_checkpoint(target)["w"], torch.arange(3))   # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000004.pt"]


def test_keep_last_and_newest_valid_skips_corrupt_with_warning(tmp_path, caplog):
    for it in (4, 8, 12):
        C.save_checkpoint(C.checkpoint_path(tmp_path, it), {"iteration": it})
    assert [p.name for p in C.prune_checkpoints(tmp_path, 2)] == ["ckpt_00000004.pt"]
    good = C.checkpoint_path(tmp_path, 12).read_bytes()
    C.checkpoint_path(tmp_path, 16).write_bytes(good[: len(good) // 2])       # truncated
    C.checkpoint_path(tmp_path, 20).write_bytes(good)                         # says 12 inside
    (tmp_path / ".ckpt_00000024.pt.abc.tmp").write_bytes(b"partial")          # a killed write
    with caplog.at_level(logging.WARNING):
        path, state = C.find_newest_valid(tmp_path)
    assert path.name == "ckpt_00000012.pt" and state["iteration"] == 12
    assert "ckpt_00000016.pt" in caplog.text and "ckpt_00000020.pt" in caplog.text
    with pytest.raises(C.CheckpointError, match="ckpt_00000016.pt: unreadable"):
        C.load_checkpoint(C.checkpoint_path(tmp_path, 16))
    with pytest.raises(C.CheckpointError, match="lacks key"):
        C.load_checkpoint(C.checkpoint_path(tmp_path, 12), required=("model",))
    assert C.find_newest_valid(tmp_path / "nowhere") is None


# ----------------------------------------------------------------------------- exact resume

DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    import _trainkit as K
    K.install_fake_models()
    from harness import train
    root = Path(sys.argv[1])
    cfg = K.make_cfg(iterations={iters}, ckpt_every=4, log_every=3, val_every=5)
    train.run(cfg, resume=True, **K.train_kwargs(root, model="tiny_slow", out=sys.argv[2]))
""")

ITERS = 20


@pytest.fixture
def deterministic(monkeypatch):
    monkeypatch.setitem(sys.modules, "harness.models", K.fake_models_module())
    n, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(det)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, deterministic, caplog):
    K.make_data(tmp_path / "data")
    cfg = K.make_cfg(iterations=ITERS, ckpt_every=4, log_every=3, val_every=5)

    # the run that gets killed: a subprocess, SIGKILLed once its second checkpoint exists
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(TESTS), iters=ITERS))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "killed"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while not C.checkpoint_path(tmp_path / "killed", 8).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final.pt").exists(), "the run finished before the kill"
    newest = C.list_checkpoints(tmp_path / "killed")[-1][0]
    assert newest < ITERS
    # a corrupt "newer" checkpoint must be skipped with a warning naming it
    bad = C.checkpoint_path(tmp_path / "killed", newest + 4)
    bad.write_bytes(C.checkpoint_path(tmp_path / "killed", newest).read_bytes()[:1000])

    with caplog.at_level(logging.WARNING):
        resumed = train.run(cfg, resume=True, **K.train_kwargs(tmp_path, model="tiny_slow", out="killed"))
    assert bad.name in caplog.text
    summary = __import__("json").loads((tmp_path / "killed" / "train.json").read_text())
    assert summary["resumed_from"] == newest

    straight = train.run(cfg, resume=True, **K.train_kwargs(tmp_path, model="tiny_slow", out="straight"))

    a, b = C.load_checkpoint(resumed), C.load_checkpoint(straight)
    assert a["history"] == b["history"]                         # loss, lr and val rows, exactly
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ca = C.load_checkpoint(C.checkpoint_path(tmp_path / "killed", ITERS))
    cb = C.load_checkpoint(C.checkpoint_path(tmp_path / "straight", ITERS))
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert (tmp_path / "killed.csv").read_text() == (tmp_path / "straight.csv").read_text()
    # and the comparison can fail: the weights did move during training
    first = C.load_checkpoint(C.checkpoint_path(tmp_path / "straight", ITERS - 4))
    assert any(not torch.equal(first["model"][k], cb["model"][k]) for k in cb["model"])
