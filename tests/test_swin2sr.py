"""Swin2SR (baselines/swin2sr.py).

Expected parameter counts and the (key, shape) fingerprints were obtained by
instantiating the official ``models/network_swin2sr.py`` (mv-lab/swin2sr @ 6f25d76)
with the arguments ``main_test_swin2sr.py`` uses, and hashing
``sorted(f"{name}:{list(shape)}" for name, shape in named_parameters())``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest
import torch

from baselines import _swin_common as common
from mambacsr import layers
from baselines import swin2sr as m

VARIANTS = {
    # name: (true params, official parameter fingerprint)
    "swin2sr": (12_239_283, "284bf977067044fade88929b5b5bab7be56f098a582e44d77e95e7b4d524d94a"),
    "swin2sr_compressed_x4": (12_244_598, "bb10d1172b898f09e76d4a807ab553f4a8a2ff40cc1d558f1e5c0c7278812a64"),
}

# representative official keys -> shapes (from upstream network_swin2sr.py)
OFFICIAL_KEYS = {
    "conv_first.weight": (180, 3, 3, 3),
    "patch_embed.proj.weight": (180, 180, 1, 1),
    "patch_embed.norm.weight": (180,),
    "layers.0.residual_group.blocks.0.attn.logit_scale": (6, 1, 1),
    "layers.0.residual_group.blocks.0.attn.cpb_mlp.0.weight": (512, 2),
    "layers.0.residual_group.blocks.0.attn.cpb_mlp.0.bias": (512,),
    "layers.0.residual_group.blocks.0.attn.cpb_mlp.2.weight": (6, 512),
    "layers.0.residual_group.blocks.0.attn.qkv.weight": (540, 180),
    "layers.0.residual_group.blocks.0.attn.q_bias": (180,),
    "layers.0.residual_group.blocks.0.attn.v_bias": (180,),
    "layers.2.residual_group.blocks.3.attn.proj.weight": (180, 180),
    "layers.0.residual_group.blocks.1.mlp.fc1.weight": (360, 180),
    "layers.5.conv.weight": (180, 180, 3, 3),
    "layers.5.patch_embed.proj.weight": (180, 180, 1, 1),
    "conv_after_body.weight": (180, 180, 3, 3),
    "conv_before_upsample.0.weight": (64, 180, 3, 3),
    "upsample.0.weight": (256, 64, 3, 3),
    "upsample.2.weight": (256, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}
AUX_KEYS = {
    "conv_bicubic.weight": (64, 3, 3, 3),
    "conv_aux.weight": (3, 64, 3, 3),
    "conv_after_aux.0.weight": (64, 3, 3, 3),
}


def _build(cfg: m.Swin2SRConfig, seed: int = 0) -> m.Swin2SR:
    torch.manual_seed(seed)
    model = m.Swin2SR(cfg)
    with torch.no_grad():  # move the zero-initialised q/v biases and logit scales off their init
        for k, p in model.named_parameters():
            if k.endswith(("q_bias", "v_bias", "logit_scale")):
                p.add_(0.3 * torch.randn_like(p))
    return model


def _fingerprint(model: torch.nn.Module) -> str:
    lines = sorted(f"{k}:{list(v.shape)}" for k, v in model.named_parameters())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_param_count_and_layout_match_official(name: str) -> None:
    with torch.device("meta"):
        model = m.Swin2SR(getattr(m, name)())
    n_params, fingerprint = VARIANTS[name]
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert _fingerprint(model) == fingerprint
    assert set(model.state_dict()) == {k for k, _ in model.named_parameters()}


def test_official_key_names_and_shapes() -> None:
    with torch.device("meta"):
        sd = m.Swin2SR(m.swin2sr()).state_dict()
        sd_aux = m.Swin2SR(m.swin2sr_compressed_x4()).state_dict()
    for key, shape in OFFICIAL_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
        assert tuple(sd_aux[key].shape) == shape, key
    for key, shape in AUX_KEYS.items():
        assert key not in sd, key
        assert tuple(sd_aux[key].shape) == shape, key
    assert "layers.0.residual_group.blocks.0.attn.qkv.bias" not in sd
    assert "layers.0.residual_group.blocks.0.attn.relative_position_bias_table" not in sd


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("hw", [(13, 11), (3, 2), (4, 17)])
def test_smoke_output_shape_any_size(name: str, hw: tuple[int, int]) -> None:
    full = getattr(m, name)()
    cfg = m.smoke(full)
    assert (cfg.upscale, cfg.upsampler) == (full.upscale, full.upsampler)
    model = _build(cfg).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y, aux = model.forward_with_aux(x)
    assert y.shape == (2, 3, hw[0] * cfg.upscale, hw[1] * cfg.upscale)
    assert torch.isfinite(y).all()
    with torch.no_grad():
        assert torch.equal(model(x), y)
    if cfg.upsampler == "pixelshuffle_aux":
        assert aux is not None and aux.shape == x.shape
    else:
        assert aux is None


@pytest.mark.parametrize("name", list(VARIANTS))
def test_smoke_every_parameter_gets_a_gradient(name: str) -> None:
    model = _build(m.smoke(getattr(m, name)())).eval()
    y, aux = model.forward_with_aux(torch.rand(2, 3, 13, 11))
    loss = y.square().mean() + (aux.square().mean() if aux is not None else 0.0)
    loss.backward()
    for k, p in model.named_parameters():
        assert p.grad is not None, k
        assert torch.isfinite(p.grad).all(), k
        assert p.grad.abs().sum() > 0, k


def test_train_mode_backward_is_finite() -> None:
    cfg = dataclasses.replace(m.smoke(m.swin2sr()), drop_path_rate=0.5, use_checkpoint=True)
    model = _build(cfg).train()
    model(torch.rand(2, 3, 12, 9)).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_deterministic_and_batch_independent() -> None:
    model = _build(m.smoke(m.swin2sr_compressed_x4())).eval()
    x = torch.rand(3, 3, 13, 11)
    with torch.no_grad():
        y1, y2 = model(x), model(x)
        y_single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, y_single, rtol=1e-5, atol=1e-6)


def test_fused_attention_matches_reference_in_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _build(m.smoke(m.swin2sr())).eval()
    x = torch.rand(2, 3, 13, 11)
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setattr(m, "window_attention", common.window_attention_ref)
        ref = model(x)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


def test_cosine_attention_logit_scale_is_clamped_at_100() -> None:
    model = _build(m.smoke(m.swin2sr())).eval()
    attn = model.layers[0].residual_group.blocks[0].attn
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        attn.logit_scale.fill_(math.log(100.0))
        y_at = model(x)
        attn.logit_scale.fill_(math.log(1e4))
        y_above = model(x)
        attn.logit_scale.fill_(math.log(10.0))
        y_below = model(x)
    assert torch.equal(y_at, y_above)
    assert not torch.allclose(y_at, y_below)


def test_relative_coords_table_known_answer() -> None:
    # window 2: offsets -1, 0, 1 -> scaled to -8, 0, 8 -> sign * log2(9) / 3
    t = m.relative_coords_table(2)
    assert t.shape == (1, 3, 3, 2)
    c = math.log2(9.0) / 3.0
    torch.testing.assert_close(t[0, :, 0, 0], torch.tensor([-c, 0.0, c]))
    torch.testing.assert_close(t[0, 0, :, 1], torch.tensor([-c, 0.0, c]))
    assert t.abs().max().item() == pytest.approx(c)


def test_aux_head_equals_model_on_padded_input_cropped() -> None:
    # forward(x) must equal forward(reflect-pad(x)) cropped: the official test-script pipeline
    model = _build(m.smoke(m.swin2sr_compressed_x4())).eval()
    x = torch.rand(1, 3, 13, 11)
    xp = layers.pad_to_multiple(x, model.window_size)
    with torch.no_grad():
        y, aux = model.forward_with_aux(x)
        yp, auxp = model.forward_with_aux(xp)
    torch.testing.assert_close(y, yp[:, :, : 13 * 4, : 11 * 4], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux, auxp[:, :, :13, :11], rtol=1e-5, atol=1e-6)


def _upstream_like_checkpoint(model: m.Swin2SR) -> dict:
    """What an official .pth holds: params + relative_coords_table/index + attn_mask."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ws = model.cfg.window_size
    for name, mod in model.named_modules():
        if isinstance(mod, m.WindowAttention):
            sd[f"{name}.relative_position_index"] = common.relative_position_index(ws, ws)
            sd[f"{name}.relative_coords_table"] = m.relative_coords_table(ws)
        if isinstance(mod, m.SwinTransformerBlock) and mod.shift_size > 0:
            img = model.cfg.img_size
            sd[f"{name}.attn_mask"] = common.shifted_window_mask(img, img, ws, ws // 2)
    return sd


@pytest.mark.parametrize("name", list(VARIANTS))
def test_checkpoint_filter_round_trip(name: str) -> None:
    cfg = m.smoke(getattr(m, name)())
    src, dst = _build(cfg, seed=0).eval(), _build(cfg, seed=1).eval()
    ckpt = {"params": _upstream_like_checkpoint(src)}
    dst.load_state_dict(m.checkpoint_filter_fn(ckpt, dst), strict=True)
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_checkpoint_filter_rejects_other_window_size() -> None:
    model = _build(m.smoke(m.swin2sr()))
    sd = _upstream_like_checkpoint(model)
    key = next(k for k in sd if k.endswith("relative_coords_table"))
    sd[key] = m.relative_coords_table(8)
    with pytest.raises(ValueError, match="relative_coords_table"):
        m.checkpoint_filter_fn({"params": sd}, model)


def test_bad_config_and_input_raise_naming_the_thing() -> None:
    with pytest.raises(NotImplementedError, match="pixelshuffle_hf"):
        m.Swin2SRConfig(upsampler="pixelshuffle_hf")
    with pytest.raises(ValueError, match="upsampler"):
        m.Swin2SRConfig(upsampler="bicubic")
    with pytest.raises(ValueError, match="upscale"):
        m.Swin2SRConfig(upsampler="nearest+conv", upscale=2)
    with pytest.raises(ValueError, match="img_size"):
        m.Swin2SRConfig(img_size=8, window_size=8)
    model = _build(m.smoke(m.swin2sr()))
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        model(torch.rand(3, 8, 8))
