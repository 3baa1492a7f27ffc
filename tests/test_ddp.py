"""DDP on CPU (gloo, 2 ranks via torchrun) gives the same training as 1 process with the same global batch."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import _trainkit as K
from harness import checkpoint as C
from harness import train

TESTS = Path(__file__).resolve().parent
ITERS = 8

DRIVER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    import _trainkit as K
    K.install_fake_models()
    from harness import train
    assert os.environ["WORLD_SIZE"] == "2"
    root = Path(sys.argv[1])
    cfg = K.make_cfg(iterations={iters}, batch_size=4, ckpt_every=4, log_every=2, val_every=4)
    train.run(cfg, resume=True, **K.train_kwargs(root, out="ddp"))
""")


def test_two_gloo_ranks_match_one_process(tmp_path, monkeypatch):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    K.make_data(tmp_path / "data")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(TESTS), iters=ITERS))
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-4000:]

    monkeypatch.setitem(sys.modules, "harness.models", K.fake_models_module())
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = K.make_cfg(iterations=ITERS, batch_size=4, ckpt_every=4, log_every=2, val_every=4)
        single = train.run(cfg, resume=True, **K.train_kwargs(tmp_path, out="single"))
    finally:
        torch.set_num_threads(n)

    d, s = C.load_checkpoint(tmp_path / "ddp" / "final.pt"), C.load_checkpoint(single)
    for k in s["state_dict"]:
        torch.testing.assert_close(d["state_dict"][k], s["state_dict"][k], rtol=1e-5, atol=1e-6)
    dl = [r[1] for r in d["history"] if r[1] is not None]
    sl = [r[1] for r in s["history"] if r[1] is not None]
    assert len(dl) == len(sl) == ITERS // 2
    assert dl == pytest.approx(sl, rel=1e-5)
    dv = [r[3] for r in d["history"] if r[3] is not None]
    assert dv == pytest.approx([r[3] for r in s["history"] if r[3] is not None], abs=1e-4)
    # both ranks' RNG states went into rank 0's checkpoint; only rank 0 wrote files
    ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "ddp", ITERS))
    assert len(ck["rng"]) == 2 and ck["world_size"] == 2
    assert (tmp_path / "ddp.csv").is_file() and (tmp_path / "ddp" / "train.json").is_file()
    # the comparison can fail: training moved the weights away from the initial ones
    torch.manual_seed(0)   # train.seed: the initial weights of both runs
    fresh = K.TinySR(K.TINY_MODELS["tiny"]).state_dict()
    assert any(not torch.allclose(v, s["state_dict"][k], atol=1e-4) for k, v in fresh.items())
