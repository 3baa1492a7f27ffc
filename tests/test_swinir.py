"""SwinIR (baselines/swinir.py) and the shared window helpers (baselines/_swin_common.py).

Expected parameter counts and the (key, shape) fingerprints were obtained by
instantiating the official ``models/network_swinir.py`` (JingyunLiang/SwinIR @ 6545850)
with the arguments ``main_test_swinir.py`` uses, and hashing
``sorted(f"{name}:{list(shape)}" for name, shape in named_parameters())``.
"""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from baselines import _swin_common as common
from mambacsr import layers
from baselines import swinir as m

VARIANTS = {
    # name: (true params, official parameter fingerprint)
    "swinir": (11_715_559, "23f6169d8b639c0b07b8dab154c8dea73ef243974a37a5ae5e00ff61230a0139"),
    "swinir_classical_x4": (11_900_199, "e082e8d2d6c26dba398a135c2cab66f65957475c85752cc253d562e2d96d0bf0"),
    "swinir_classical_x2": (11_752_487, "097d696948acf3b0a1d3f91c958f3f948d99b714c1f0f95f1adead09ce3823c1"),
}

# representative official keys -> shapes (from upstream network_swinir.py, real_sr x4)
OFFICIAL_KEYS = {
    "conv_first.weight": (180, 3, 3, 3),
    "patch_embed.norm.weight": (180,),
    "layers.0.residual_group.blocks.0.norm1.weight": (180,),
    "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (225, 6),
    "layers.0.residual_group.blocks.0.attn.qkv.weight": (540, 180),
    "layers.0.residual_group.blocks.0.attn.qkv.bias": (540,),
    "layers.5.residual_group.blocks.5.attn.proj.weight": (180, 180),
    "layers.0.residual_group.blocks.1.mlp.fc1.weight": (360, 180),
    "layers.0.residual_group.blocks.1.mlp.fc2.weight": (180, 360),
    "layers.3.conv.weight": (180, 180, 3, 3),
    "norm.bias": (180,),
    "conv_after_body.weight": (180, 180, 3, 3),
    "conv_before_upsample.0.weight": (64, 180, 3, 3),
    "conv_up1.weight": (64, 64, 3, 3),
    "conv_up2.weight": (64, 64, 3, 3),
    "conv_hr.weight": (64, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}


def _build(cfg: m.SwinIRConfig, seed: int = 0) -> m.SwinIR:
    torch.manual_seed(seed)
    return m.SwinIR(cfg)


def _fingerprint(model: torch.nn.Module) -> str:
    lines = sorted(f"{k}:{list(v.shape)}" for k, v in model.named_parameters())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_param_count_and_layout_match_official(name: str) -> None:
    cfg = getattr(m, name)()
    with torch.device("meta"):
        model = m.SwinIR(cfg)
    n_params, fingerprint = VARIANTS[name]
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert _fingerprint(model) == fingerprint
    # no persistent buffers: state_dict == parameters (mask/index/mean are recomputed)
    assert set(model.state_dict()) == {k for k, _ in model.named_parameters()}


def test_official_key_names_and_shapes() -> None:
    with torch.device("meta"):
        sd = m.SwinIR(m.swinir()).state_dict()
    for key, shape in OFFICIAL_KEYS.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    with torch.device("meta"):
        sd4 = m.SwinIR(m.swinir_classical_x4()).state_dict()
        sd2 = m.SwinIR(m.swinir_classical_x2()).state_dict()
    assert tuple(sd4["upsample.0.weight"].shape) == (256, 64, 3, 3) and "upsample.2.weight" in sd4
    assert "upsample.0.weight" in sd2 and "upsample.2.weight" not in sd2
    assert "conv_up1.weight" not in sd4


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("hw", [(13, 11), (3, 2), (4, 17)])
def test_smoke_output_shape_any_size(name: str, hw: tuple[int, int]) -> None:
    cfg = m.smoke(getattr(m, name)())
    assert cfg.upscale == getattr(m, name)().upscale and cfg.upsampler == getattr(m, name)().upsampler
    model = _build(cfg).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, hw[0] * cfg.upscale, hw[1] * cfg.upscale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_smoke_every_parameter_gets_a_gradient(name: str) -> None:
    model = _build(m.smoke(getattr(m, name)())).eval()   # eval: no stochastic depth, same graph
    model(torch.rand(2, 3, 13, 11)).square().mean().backward()
    for k, p in model.named_parameters():
        assert p.grad is not None, k
        assert torch.isfinite(p.grad).all(), k
        assert p.grad.abs().sum() > 0, k


def test_train_mode_backward_is_finite() -> None:
    cfg = dataclasses.replace(m.smoke(m.swinir()), drop_path_rate=0.5, use_checkpoint=True)
    model = _build(cfg).train()
    model(torch.rand(2, 3, 12, 9)).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_deterministic_and_batch_independent() -> None:
    model = _build(m.smoke(m.swinir_classical_x4())).eval()
    x = torch.rand(3, 3, 13, 11)
    with torch.no_grad():
        y1, y2 = model(x), model(x)
        y_single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, y_single, rtol=1e-5, atol=1e-6)


def test_fused_attention_matches_reference_in_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _build(m.smoke(m.swinir())).eval()
    x = torch.rand(2, 3, 13, 11)
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setattr(common, "window_attention", common.window_attention_ref)
        ref = model(x)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


def _upstream_like_checkpoint(model: m.SwinIR) -> dict:
    """What an official .pth holds: params + relative_position_index + attn_mask (shifted blocks)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ws = model.cfg.window_size
    for name, mod in model.named_modules():
        if isinstance(mod, common.WindowAttention):
            sd[f"{name}.relative_position_index"] = common.relative_position_index(ws, ws)
        if isinstance(mod, common.SwinTransformerBlock) and mod.shift_size > 0:
            img = model.cfg.img_size
            sd[f"{name}.attn_mask"] = common.shifted_window_mask(img, img, ws, ws // 2)
    return sd


def test_checkpoint_filter_round_trip() -> None:
    cfg = m.smoke(m.swinir())
    src, dst = _build(cfg, seed=0).eval(), _build(cfg, seed=1).eval()
    official = _upstream_like_checkpoint(src)
    assert any(k.endswith("attn_mask") for k in official)
    # params_ema wins over params; DataParallel prefix stripped
    ckpt = {"params": {k: torch.zeros_like(v) for k, v in official.items()},
            "params_ema": {f"module.{k}": v for k, v in official.items()}}
    sd = m.checkpoint_filter_fn(ckpt, dst)
    dst.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_checkpoint_filter_rejects_other_window_size() -> None:
    model = _build(m.smoke(m.swinir()))
    sd = _upstream_like_checkpoint(model)
    key = next(k for k in sd if k.endswith("relative_position_index"))
    sd[key] = common.relative_position_index(8, 8)
    with pytest.raises(ValueError, match="relative_position_index"):
        m.checkpoint_filter_fn({"params": sd}, model)


def test_bad_config_and_input_raise_naming_the_thing() -> None:
    with pytest.raises(ValueError, match="upsampler"):
        m.SwinIRConfig(upsampler="bilinear")
    with pytest.raises(ValueError, match="upscale"):
        m.SwinIRConfig(upsampler="nearest+conv", upscale=3)
    with pytest.raises(ValueError, match="embed_dim"):
        m.SwinIRConfig(embed_dim=100, num_heads=(6,) * 6)
    model = _build(m.smoke(m.swinir()))
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        model(torch.rand(1, 1, 8, 8))


# ---- shared helpers (baselines/_swin_common.py) ----------------------------------------

def test_relative_position_index_known_answer() -> None:
    # window 2: index = (dy + 1) * 3 + (dx + 1) for tokens (0,0), (0,1), (1,0), (1,1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(common.relative_position_index(2, 2), expected)


def _mask_upstream_way(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Transcription of upstream's calculate_mask (slice assignment)."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = common.window_partition(img, ws).view(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


@pytest.mark.parametrize("h,w,ws", [(16, 16, 8), (8, 24, 8), (12, 8, 4), (4, 4, 4)])
def test_shifted_window_mask_matches_upstream_algorithm(h: int, w: int, ws: int) -> None:
    torch.testing.assert_close(common.shifted_window_mask(h, w, ws, ws // 2), _mask_upstream_way(h, w, ws, ws // 2),
                               rtol=0, atol=0)


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 8, 12, 5)
    win = common.window_partition(x, 4)
    assert win.shape == (2 * 6, 4, 4, 5)
    assert torch.equal(win[6], x[1, :4, :4])            # batch-major order
    assert torch.equal(common.window_reverse(win, 4, 8, 12), x)


@pytest.mark.parametrize("with_mask", [False, True])
def test_window_attention_fused_matches_ref_with_grads(with_mask: bool) -> None:
    torch.manual_seed(0)
    b, nw, nh, n, d = 2, 4, 3, 16, 8
    q, k, v = (torch.randn(b * nw, nh, n, d, requires_grad=True) for _ in range(3))
    bias = torch.randn(nh, n, n, requires_grad=True)
    mask = common.shifted_window_mask(8, 8, 4, 2) if with_mask else None
    outs, grads = [], []
    for fn in (common.window_attention, common.window_attention_ref):
        out = fn(q, k, v, bias=bias, mask=mask)
        g = torch.autograd.grad(out.square().sum(), (q, k, v, bias))
        outs.append(out)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for g_fast, g_ref in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-4)


def test_pad_to_multiple_reflect_and_tiny() -> None:
    x = torch.arange(6.0).view(1, 1, 2, 3)
    y = layers.pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4)
    assert torch.equal(y, torch.nn.functional.pad(x, (0, 1, 0, 0), mode="reflect")[..., [0, 1, 0, 1], :])
    x = torch.rand(1, 3, 5, 7)
    assert torch.equal(layers.pad_to_multiple(x, 8)[..., :5, :7], x)
    assert torch.equal(layers.pad_to_multiple(x, 4), torch.nn.functional.pad(x, (0, 1, 0, 3), mode="reflect"))
    assert layers.pad_to_multiple(torch.rand(1, 3, 1, 1), 8).shape == (1, 3, 8, 8)


def test_linear_drop_path_rates_match_linspace() -> None:
    assert layers.linear_drop_path_rates(0.1, 36) == pytest.approx(torch.linspace(0, 0.1, 36).tolist())
    assert layers.linear_drop_path_rates(0.1, 1) == [0.0]
