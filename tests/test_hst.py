"""HST baseline: true sizes, any-size forward, gradients, keys, padding, checkpoint round trip."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from baselines import _swin_common, hst
from baselines.hst import HST, HSTConfig, checkpoint_filter_fn, pad_symmetric

# (variant function, true parameter count of the official HST(img_size=64), upstream @ 48f37ba)
VARIANTS = [(hst.hst, 16_582_179)]


def _smoke(**kw) -> HSTConfig:
    return dataclasses.replace(hst.smoke(hst.hst()), **kw)


def _model(seed: int = 0, **kw) -> HST:
    torch.manual_seed(seed)
    return HST(_smoke(**kw))


@pytest.mark.parametrize("variant,n_params", VARIANTS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_true_param_count_on_meta(variant, n_params):
    with torch.device("meta"):
        model = HST(variant())
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_smoke_keeps_upscale_and_hierarchy():
    cfg = hst.smoke(hst.hst())
    assert cfg.upscale == 4
    with torch.device("meta"):
        model = HST(cfg)
    for name in ("GRSTB_1", "GRSTB_2", "GRSTB_3", "conv_fuse_1", "conv_fuse_2", "upconv1", "upconv2"):
        assert hasattr(model, name), name
    assert sum(p.numel() for p in model.parameters()) < 200_000


@pytest.mark.parametrize("scale", [4, 2])
@pytest.mark.parametrize("hw", [(13, 11), (5, 17), (16, 16), (1, 1)])
def test_output_shape_any_size(scale, hw):
    model = _model(upscale=scale).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, scale * hw[0], scale * hw[1])
    assert torch.isfinite(y).all()


def test_every_parameter_gets_a_finite_nonzero_gradient():
    model = _model(drop_path_rate=0.0).train()
    model(torch.rand(2, 3, 9, 7)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not bad, f"zero or non-finite gradient: {bad}"


def test_deterministic_forward_and_seeded_init():
    model = _model().eval()
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        a, b = model(x), model(x)
        c = _model().eval()(x)
    assert torch.equal(a, b)
    assert torch.equal(a, c)


def test_fused_attention_matches_reference(monkeypatch):
    model = _model().eval()
    x = torch.rand(1, 3, 12, 9)
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setattr(_swin_common, "window_attention", _swin_common.window_attention_ref)
        ref = model(x)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)


def test_official_key_names_and_shapes():
    with torch.device("meta"):
        sd = HST(hst.hst()).state_dict()
    expected = {  # from the official HST(img_size=64).state_dict()
        "conv1.weight": (60, 3, 5, 5),
        "conv2.weight": (60, 60, 3, 3),
        "conv3.weight": (60, 3, 7, 7),
        "GRSTB_1.patch_embed.norm.weight": (60,),
        "GRSTB_1.layers.1.residual_group.blocks.5.attn.relative_position_bias_table": (225, 6),
        "GRSTB_1.layers.0.residual_group.blocks.0.attn.qkv.weight": (180, 60),
        "GRSTB_1.layers.1.conv.weight": (60, 60, 3, 3),
        "GRSTB_1.norm.weight": (60,),
        "conv_after_grstb1.weight": (60, 60, 3, 3),
        "upconv1.weight": (240, 60, 3, 3),
        "conv_fuse_1.weight": (120, 120, 1, 1),
        "GRSTB_2.layers.3.residual_group.blocks.2.mlp.fc1.weight": (240, 120),
        "conv_after_grstb2.weight": (120, 120, 3, 3),
        "upconv2.weight": (480, 120, 3, 3),
        "conv_fuse_2.weight": (180, 180, 1, 1),
        "GRSTB_3.layers.5.residual_group.blocks.5.attn.proj.weight": (180, 180),
        "GRSTB_3.layers.5.residual_group.blocks.5.norm2.bias": (180,),
        "conv_after_grstb3.weight": (180, 180, 3, 3),
        "conv_before_up.0.weight": (64, 180, 3, 3),
        "upsample.0.weight": (256, 64, 3, 3),
        "upsample.2.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }
    for k, shape in expected.items():
        assert k in sd, k
        assert tuple(sd[k].shape) == shape, (k, tuple(sd[k].shape))
    # upstream also holds 72 relative_position_index and 36 attn_mask buffers
    assert len(sd) == 1000  # upstream: 1108
    assert not any("relative_position_index" in k or "attn_mask" in k or k == "mean" for k in sd)


def _test_script_pad(img: torch.Tensor, multiple: int) -> torch.Tensor:
    """``test_HST.py``'s padding (flip-concat, always 1..multiple rows/cols) as the oracle."""
    _, _, h, w = img.shape
    hp = (h // multiple + 1) * multiple - h
    wp = (w // multiple + 1) * multiple - w
    img = torch.cat([img, torch.flip(img, [2])], 2)[:, :, :h + hp, :]
    return torch.cat([img, torch.flip(img, [3])], 3)[:, :, :, :w + wp]


@pytest.mark.parametrize("hw", [(20, 37), (31, 17), (3, 2)])
def test_pad_symmetric_matches_test_script(hw):
    x = torch.rand(1, 3, *hw)
    assert torch.equal(pad_symmetric(x, 32 if min(hw) > 16 else 4), _test_script_pad(x, 32 if min(hw) > 16 else 4))


def test_pad_symmetric_larger_than_map_and_noop():
    x = torch.rand(1, 2, 3, 5)
    y = pad_symmetric(x, 16)
    assert y.shape == (1, 2, 16, 16)
    assert torch.equal(y[..., :3, :5], x)
    assert torch.equal(y[..., 3:6, :5], x.flip(-2))           # mirrored copy, edge row repeated
    assert pad_symmetric(y, 16) is y


def _upstream_mask(h: int, w: int, ws: int, s: int) -> torch.Tensor:
    """Upstream ``calculate_mask`` (slice loops) as the oracle."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


@pytest.mark.parametrize("hw", [(8, 24), (24, 8), (16, 16)])
def test_shift_mask_matches_upstream(hw):
    torch.testing.assert_close(_swin_common.shifted_window_mask(*hw, 8, 4), _upstream_mask(*hw, 8, 4), rtol=0, atol=0)


def _as_upstream_checkpoint(model: HST) -> dict:
    """What an official ``model_comp*.pt`` holds: a plain state dict with the persistent buffers."""
    ws = model.cfg.window_size
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for name, mod in model.named_modules():
        if isinstance(mod, _swin_common.WindowAttention):
            sd[f"{name}.relative_position_index"] = _swin_common.relative_position_index(ws, ws)
        if isinstance(mod, _swin_common.SwinTransformerBlock) and mod.shift_size > 0:
            sd[f"{name}.attn_mask"] = _upstream_mask(8, 8, ws, mod.shift_size)
    return sd


def test_checkpoint_filter_round_trip():
    src, dst = _model(seed=1).eval(), _model(seed=2).eval()
    ckpt = _as_upstream_checkpoint(src)
    assert any(k.endswith("attn_mask") for k in ckpt) and any(k.endswith("relative_position_index") for k in ckpt)
    filtered = checkpoint_filter_fn(ckpt, dst)
    assert set(filtered) == set(dst.state_dict())
    dst.load_state_dict(filtered, strict=True)
    x = torch.rand(1, 3, 7, 10)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    wrapped = {"params": {f"module.{k}": v for k, v in ckpt.items()}}
    assert set(checkpoint_filter_fn(wrapped, dst)) == set(dst.state_dict())


def test_checkpoint_filter_rejects_other_window():
    ckpt = _as_upstream_checkpoint(_model(window_size=2, img_size=32))
    with pytest.raises(ValueError, match="relative_position_index"):
        checkpoint_filter_fn(ckpt, _model())
    with pytest.raises(TypeError):
        checkpoint_filter_fn("model.pt", _model())


def test_bad_input_and_config_raise_clearly():
    with pytest.raises(ValueError, match=r"HST expects \(B, 3, h, w\)"):
        _model()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="img_size"):
        _smoke(img_size=16)
    with pytest.raises(ValueError, match="num_heads_high"):
        _smoke(num_heads_high=(5,))
    with pytest.raises(ValueError, match="num_features"):
        _smoke(num_features=(8, 8))
