"""HAT baseline: true sizes, any-size forward, gradients, keys, upstream-checkpoint round trip."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from baselines import _swin_common, hat
from baselines.hat import HAT, HATConfig, checkpoint_filter_fn

# (variant function, true parameter count of the official module, upstream @ 1638a9a)
VARIANTS = [(hat.hat, 20_772_507)]


def _smoke(**kw) -> HATConfig:
    return dataclasses.replace(hat.smoke(hat.hat()), **kw)


def _model(seed: int = 0, **kw) -> HAT:
    torch.manual_seed(seed)
    return HAT(_smoke(**kw))


@pytest.mark.parametrize("variant,n_params", VARIANTS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_true_param_count_on_meta(variant, n_params):
    with torch.device("meta"):
        model = HAT(variant())
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_smoke_keeps_upscale_and_code_path():
    for scale in (2, 3, 4):
        cfg = hat.smoke(dataclasses.replace(hat.hat(), upscale=scale))
        assert cfg.upscale == scale
        assert cfg.embed_dim <= 32 and len(cfg.depths) <= 2 and max(cfg.depths) == 2


@pytest.mark.parametrize("scale", [4, 2])
@pytest.mark.parametrize("hw", [(13, 11), (3, 9), (8, 8), (1, 1)])
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
        monkeypatch.setattr(hat, "window_attention", _swin_common.window_attention_ref)  # OCAB
        monkeypatch.setattr(_swin_common, "window_attention", _swin_common.window_attention_ref)  # HAB
        ref = model(x)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)


def test_official_key_names_and_shapes():
    with torch.device("meta"):
        sd = HAT(hat.hat()).state_dict()
    expected = {  # from the official HAT(**HAT_SRx4.yml) state_dict
        "conv_first.weight": (180, 3, 3, 3),
        "patch_embed.norm.weight": (180,),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (961, 6),
        "layers.0.residual_group.blocks.0.attn.qkv.weight": (540, 180),
        "layers.0.residual_group.blocks.1.conv_block.cab.0.weight": (60, 180, 3, 3),
        "layers.0.residual_group.blocks.1.conv_block.cab.3.attention.1.weight": (6, 180, 1, 1),
        "layers.5.residual_group.blocks.5.mlp.fc2.weight": (180, 360),
        "layers.2.residual_group.overlap_attn.relative_position_bias_table": (1521, 6),
        "layers.2.residual_group.overlap_attn.qkv.weight": (540, 180),
        "layers.2.residual_group.overlap_attn.mlp.fc1.weight": (360, 180),
        "layers.3.conv.weight": (180, 180, 3, 3),
        "norm.bias": (180,),
        "conv_after_body.weight": (180, 180, 3, 3),
        "conv_before_upsample.0.weight": (64, 180, 3, 3),
        "upsample.0.weight": (256, 64, 3, 3),
        "upsample.2.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }
    for k, shape in expected.items():
        assert k in sd, k
        assert tuple(sd[k].shape) == shape, (k, tuple(sd[k].shape))
    assert len(sd) == 862  # upstream: 864, plus relative_position_index_SA / _OCA
    assert not any("relative_position_index" in k or "attn_mask" in k or k == "mean" for k in sd)


def _upstream_rpi_oca(ws: int, wse: int) -> torch.Tensor:
    """Upstream ``calculate_rpi_oca``, negative entries and all (the oracle)."""
    ch, cw = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ori = torch.stack([ch, cw]).flatten(1)
    ch, cw = torch.meshgrid(torch.arange(wse), torch.arange(wse), indexing="ij")
    ext = torch.stack([ch, cw]).flatten(1)
    rel = (ext[:, None, :] - ori[:, :, None]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - wse + 1
    rel[:, :, 1] += ws - wse + 1
    rel[:, :, 0] *= ws + wse - 1
    return rel.sum(-1)


@pytest.mark.parametrize("ws", [4, 16])
def test_oca_index_selects_upstream_rows(ws):
    wse = ws + ws // 2
    theirs = _upstream_rpi_oca(ws, wse)
    mine = hat.oca_relative_position_index(ws, wse)
    assert theirs.min() < 0  # upstream relies on negative-index wrap-around
    table = torch.randn((ws + wse - 1) ** 2, 3)
    assert torch.equal(table[theirs.view(-1)], table[mine.view(-1)])
    assert mine.min() >= 0 and mine.max() < table.shape[0]


def test_ocab_matches_naive_overlapping_windows():
    """OCAB vs a loop over windows that slices each zero-padded key/value window directly."""
    torch.manual_seed(0)
    ws, nh, c, h, w = 4, 2, 8, 8, 12
    blk = hat.OCAB(c, ws, 0.5, nh).eval()
    ows, p = blk.overlap_win_size, (blk.overlap_win_size - ws) // 2
    with torch.no_grad():
        blk.relative_position_bias_table.normal_()
    x = torch.randn(2, h * w, c)
    rpi = _upstream_rpi_oca(ws, ows)
    with torch.no_grad():
        got = blk(x, (h, w), hat.oca_relative_position_index(ws, ows))
        q, k, v = blk.qkv(blk.norm1(x)).view(2, h, w, 3, nh, c // nh).unbind(3)   # B, H, W, nH, d
        kp = torch.nn.functional.pad(k, (0, 0, 0, 0, p, p, p, p))
        vp = torch.nn.functional.pad(v, (0, 0, 0, 0, p, p, p, p))
        bias = blk.relative_position_bias_table[rpi.view(-1)].view(ws * ws, ows * ows, nh).permute(2, 0, 1)
        out = torch.zeros(2, h, w, nh, c // nh)
        for i in range(0, h, ws):
            for j in range(0, w, ws):
                qw = q[:, i:i + ws, j:j + ws].reshape(2, ws * ws, nh, -1).transpose(1, 2)
                kw = kp[:, i:i + ows, j:j + ows].reshape(2, ows * ows, nh, -1).transpose(1, 2)
                vw = vp[:, i:i + ows, j:j + ows].reshape(2, ows * ows, nh, -1).transpose(1, 2)
                a = (qw * (c // nh) ** -0.5 @ kw.transpose(-2, -1) + bias).softmax(-1)
                out[:, i:i + ws, j:j + ws] = (a @ vw).transpose(1, 2).reshape(2, ws, ws, nh, -1)
        y = x + blk.proj(out.reshape(2, h * w, c))
        want = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("hw", [(4, 12), (12, 4), (8, 16), (16, 16)])
def test_shift_mask_matches_upstream(hw):
    torch.testing.assert_close(_swin_common.shifted_window_mask(*hw, 4, 2), _upstream_mask(*hw, 4, 2), rtol=0, atol=0)


def _as_upstream_checkpoint(model: HAT) -> dict:
    """What an official ``.pth`` holds: ``params_ema`` with the persistent index buffers."""
    cfg = model.cfg
    ws = cfg.window_size
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["module.relative_position_index_SA"] = _swin_common.relative_position_index(ws, ws)
    sd["module.relative_position_index_OCA"] = _upstream_rpi_oca(ws, ws + int(ws * cfg.overlap_ratio))
    return {"params_ema": sd, "params": {}}


def test_checkpoint_filter_round_trip():
    src, dst = _model(seed=1).eval(), _model(seed=2).eval()
    filtered = checkpoint_filter_fn(_as_upstream_checkpoint(src), dst)
    assert set(filtered) == set(dst.state_dict())
    dst.load_state_dict(filtered, strict=True)
    x = torch.rand(1, 3, 7, 10)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_checkpoint_filter_rejects_other_window():
    ckpt = _as_upstream_checkpoint(_model(window_size=8))
    with pytest.raises(ValueError, match="relative_position_index_SA"):
        checkpoint_filter_fn(ckpt, _model())
    with pytest.raises(TypeError):
        checkpoint_filter_fn([1, 2], _model())


def test_bad_input_and_config_raise_clearly():
    with pytest.raises(ValueError, match=r"HAT expects \(B, 3, h, w\)"):
        _model()(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="squeeze_factor"):
        _smoke(squeeze_factor=30)
    with pytest.raises(ValueError, match="img_size"):
        _smoke(img_size=4)
    with pytest.raises(ValueError, match="num_heads"):
        _smoke(num_heads=(5, 5))
