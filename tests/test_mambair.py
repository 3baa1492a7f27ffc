"""MambaIR baseline: sizes, key names, shapes, gradients, scan orders, checkpoint filter.

Expected parameter counts and key shapes were read off the official
``basicsr/archs/mambair_arch.py`` (csguoh/MambaIR @ 33d7b34) instantiated with each
option file's ``network_g`` (sum of numel over ``parameters()``).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from baselines import mambair as m
from mambacsr.ops import selective_scan_ref

VARIANTS = {
    "mambair": (m.mambair, 20_569_575),
    "mambair_x2": (m.mambair_x2, 20_421_863),
    "mambair_light_x2": (m.mambair_light_x2, 905_016),
}

# A few official keys and shapes per variant (from the official state_dict).
OFFICIAL_KEYS = {
    "mambair": {
        "conv_first.weight": (180, 3, 3, 3),
        "patch_embed.norm.weight": (180,),
        "layers.0.residual_group.blocks.0.ln_1.weight": (180,),
        "layers.0.residual_group.blocks.0.self_attention.in_proj.weight": (720, 180),
        "layers.0.residual_group.blocks.0.self_attention.conv2d.weight": (360, 1, 3, 3),
        "layers.0.residual_group.blocks.0.self_attention.conv2d.bias": (360,),
        "layers.0.residual_group.blocks.0.self_attention.x_proj_weight": (4, 44, 360),
        "layers.0.residual_group.blocks.0.self_attention.dt_projs_weight": (4, 360, 12),
        "layers.0.residual_group.blocks.0.self_attention.dt_projs_bias": (4, 360),
        "layers.0.residual_group.blocks.0.self_attention.A_logs": (1440, 16),
        "layers.0.residual_group.blocks.0.self_attention.Ds": (1440,),
        "layers.0.residual_group.blocks.0.self_attention.out_norm.weight": (360,),
        "layers.0.residual_group.blocks.0.self_attention.out_proj.weight": (180, 360),
        "layers.0.residual_group.blocks.0.skip_scale": (180,),
        "layers.0.residual_group.blocks.0.conv_blk.cab.0.weight": (60, 180, 3, 3),
        "layers.0.residual_group.blocks.0.conv_blk.cab.3.attention.1.weight": (6, 180, 1, 1),
        "layers.0.residual_group.blocks.0.ln_2.bias": (180,),
        "layers.5.residual_group.blocks.5.skip_scale2": (180,),
        "layers.5.conv.weight": (180, 180, 3, 3),
        "norm.weight": (180,),
        "conv_after_body.weight": (180, 180, 3, 3),
        "conv_before_upsample.0.weight": (64, 180, 3, 3),
        "upsample.0.weight": (256, 64, 3, 3),
        "upsample.2.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    },
    "mambair_x2": {
        "upsample.0.weight": (256, 64, 3, 3),
        "conv_last.bias": (3,),
    },
    "mambair_light_x2": {
        "layers.3.residual_group.blocks.5.self_attention.x_proj_weight": (4, 24, 72),
        "layers.0.residual_group.blocks.0.self_attention.dt_projs_weight": (4, 72, 4),
        "layers.0.residual_group.blocks.0.self_attention.A_logs": (288, 10),
        "layers.0.residual_group.blocks.0.conv_blk.cab.0.weight": (30, 60, 1, 1),
        "layers.0.residual_group.blocks.0.conv_blk.cab.1.weight": (30, 1, 3, 3),
        "layers.0.residual_group.blocks.0.conv_blk.cab.4.weight": (60, 1, 3, 3),
        "layers.0.residual_group.blocks.0.conv_blk.cab.5.attention.1.weight": (2, 60, 1, 1),
        "upsample.0.weight": (12, 60, 3, 3),
    },
}
# Official state_dict sizes: 36 blocks x 25 tensors + 6 RSSG convs x 2 + 16 others (x2: one
# upsample stage fewer); light: 24 blocks x 29 + 4 x 2 + 10.
OFFICIAL_NUM_KEYS = {"mambair": 928, "mambair_x2": 926, "mambair_light_x2": 714}
ABSENT_KEYS = ("conv_before_upsample.0.weight", "conv_last.weight")  # not in the light model


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _meta_model(name: str) -> m.MambaIR:
    with torch.device("meta"):
        return m.MambaIR(VARIANTS[name][0]())


def _smoke_model(name: str, seed: int = 0, **over) -> m.MambaIR:
    torch.manual_seed(seed)
    return m.MambaIR(dataclasses.replace(m.smoke(VARIANTS[name][0]()), **over))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_param_count_matches_official(name: str) -> None:
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == VARIANTS[name][1]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_official_key_names_and_shapes(name: str) -> None:
    sd = _meta_model(name).state_dict()
    for k, shape in OFFICIAL_KEYS[name].items():
        assert k in sd, f"missing official key {k}"
        assert tuple(sd[k].shape) == shape, f"{k}: {tuple(sd[k].shape)} != {shape}"
    assert len(sd) == OFFICIAL_NUM_KEYS[name]
    assert "mean" not in sd
    if name == "mambair_light_x2":
        assert not any(k in sd for k in ABSENT_KEYS)


@pytest.mark.parametrize("name", ["mambair", "mambair_light_x2"])
def test_smoke_odd_size_shape(name: str) -> None:
    model = _smoke_model(name).eval()
    s = model.upscale
    with torch.no_grad():
        y = model(torch.rand(1, 3, 13, 11))
    assert y.shape == (1, 3, 13 * s, 11 * s)
    assert torch.isfinite(y).all()


def test_single_channel_and_bad_input() -> None:
    model = _smoke_model("mambair_x2", in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 5, 7)).shape == (2, 1, 10, 14)
    with pytest.raises(ValueError, match="expects"):
        model(torch.rand(1, 3, 5, 7))


@pytest.mark.parametrize("name", ["mambair", "mambair_light_x2"])
def test_every_parameter_gets_a_finite_gradient(name: str) -> None:
    model = _smoke_model(name, drop_path_rate=0.0).train()
    model(torch.rand(2, 3, 8, 6)).abs().mean().backward()
    squeeze_live = []
    for k, p in model.named_parameters():
        assert p.grad is not None, f"{k}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{k}: non-finite gradient"
        if ".attention.1." in k:  # channel-attention squeeze conv sits behind a ReLU: may be dead at init
            squeeze_live.append(bool(p.grad.abs().sum() > 0))
        else:
            assert p.grad.abs().sum() > 0, f"{k}: zero gradient"
    assert any(squeeze_live)


def test_deterministic_eval_and_stochastic_depth_in_train() -> None:
    model = _smoke_model("mambair_x2", drop_path_rate=0.5).eval()
    x = torch.rand(8, 3, 6, 5)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(1)
        c = model(x)
    assert not torch.allclose(a, c)  # 8 samples, two blocks at p=0 and 0.5: some branch dropped


def test_gradient_checkpointing_is_exact() -> None:
    x = torch.rand(1, 3, 6, 7)
    ref = _smoke_model("mambair", drop_path_rate=0.0)
    ckp = _smoke_model("mambair", drop_path_rate=0.0, use_checkpoint=True)
    ckp.load_state_dict(ref.state_dict())
    ya, yb = ref(x), ckp(x)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(ya, yb)
    for (k, pa), (_, pb) in zip(ref.named_parameters(), ckp.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=k)


def test_cross_scan_orders_and_merge() -> None:
    h, w = 3, 5
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    xs = m.cross_scan(x)[0, :, 0]                                        # 4, L
    row = torch.arange(h * w, dtype=torch.float32)
    col = row.view(h, w).t().reshape(-1)
    expected = torch.stack([row, col, row.flip(0), col.flip(0)])
    assert torch.equal(xs, expected)
    y = torch.randn(2, 4, h, w)
    merged = m.cross_merge(m.cross_scan(y), h, w)
    torch.testing.assert_close(merged, 4 * y.reshape(2, 4, h * w))
    with pytest.raises(ValueError, match="cross_merge"):
        m.cross_merge(torch.zeros(1, 3, 2, h * w), h, w)


def test_ss2d_equals_four_independent_directional_scans() -> None:
    """SS2D's fused 4-group scan == 4 separate scans along index-permuted sequences."""
    torch.manual_seed(0)
    ss = m.SS2D(d_model=8, d_state=4, expand=1.5)
    b, d, h, w = 2, ss.d_inner, 4, 3
    x = torch.randn(b, d, h, w)
    got = ss.forward_core(x)

    rm = torch.arange(h * w)
    cm = rm.view(h, w).t().reshape(-1)
    perms = [rm, cm, rm.flip(0), cm.flip(0)]
    flat = x.reshape(b, d, h * w)
    want = torch.zeros(b, d, h * w)
    r, n = ss.dt_rank, ss.d_state
    for k, perm in enumerate(perms):
        seq = flat[:, :, perm]                                            # B, D, L in scan order
        dbl = torch.einsum("bdl,cd->bcl", seq, ss.x_proj_weight[k])
        dt, bb, cc = dbl.split([r, n, n], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, ss.dt_projs_weight[k])
        sl = slice(k * d, (k + 1) * d)
        y = selective_scan_ref(seq, dt, -torch.exp(ss.A_logs[sl]), bb, cc, ss.Ds[sl],
                               delta_bias=ss.dt_projs_bias[k], delta_softplus=True)
        out = torch.empty_like(y)
        out[:, :, perm] = y                                               # back to row-major
        want += out
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_checkpoint_filter_round_trip() -> None:
    src = _smoke_model("mambair_light_x2", seed=0).eval()
    dst = _smoke_model("mambair_light_x2", seed=1).eval()
    wrapped = {"params": {"module." + k: v for k, v in src.state_dict().items()},
               "params_ema": {k: v.clone() for k, v in src.state_dict().items()}}
    dst.load_state_dict(m.checkpoint_filter_fn(wrapped, dst), strict=True)
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    # DataParallel prefix alone is stripped, too
    dst.load_state_dict(m.checkpoint_filter_fn({"params": wrapped["params"]}, dst), strict=True)

    other = _smoke_model("mambair_light_x2", d_state=4)
    with pytest.raises(ValueError, match="x_proj_weight.*has shape"):
        m.checkpoint_filter_fn(wrapped, other)
    with pytest.raises(TypeError, match="expected a dict"):
        m.checkpoint_filter_fn([1, 2], dst)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="upsampler"):
        m.MambaIRConfig(upsampler="nearest+conv")
    with pytest.raises(ValueError, match="squeeze_factor"):
        m.MambaIRConfig(embed_dim=24)
    with pytest.raises(ValueError, match="upscale"):
        m.MambaIRConfig(upscale=5)
    with pytest.raises(TypeError, match="MambaIRConfig"):
        m.MambaIR({"embed_dim": 24})


def test_smoke_keeps_upscale_and_code_path() -> None:
    for name, (fn, _) in VARIANTS.items():
        cfg, small = fn(), m.smoke(fn())
        assert (small.upscale, small.upsampler, small.is_light_sr) == (cfg.upscale, cfg.upsampler, cfg.is_light_sr)
        assert sum(p.numel() for p in m.MambaIR(small).parameters()) < 100_000
