"""Tests for mambacsr.model: sizes, fidelity to the official key layout, scan structure."""
from __future__ import annotations

import importlib
from dataclasses import replace

import pytest
import torch

import mambacsr.model as mm
from mambacsr import VARIANTS, MambaCSR, MambaCSRConfig, checkpoint_filter_fn, smoke
from mambacsr.layers import pad_symmetric
from mambacsr.ops import selective_scan_ref

# Raw SSM parameters a K=2 -> K=4 block gains: x_proj (44x360), dt_projs (360x12 + 360), A (360x16), D (360).
_PER_EXTRA_DIRECTION = 44 * 360 + 360 * 12 + 360 + 360 * 16 + 360
_WO = 18_372_603  # official figure (options/train/MambaCSR_Q10_wo.yaml)
_FULL = 22_051_842  # official figure (options/train/MambaCSR_Q10_Final.yaml)
EXPECTED_PARAMS = {
    "mambacsr": _FULL,
    "mambacsr_wo_cross": _WO,
    "mambacsr_sequential_cross": _FULL,
    "mambacsr_t3_plain": _WO + 36 * 2 * _PER_EXTRA_DIRECTION,
    "mambacsr_t3_hier": _WO + 36 * 2 * _PER_EXTRA_DIRECTION,
    "mambacsr_t3_h2v": _WO,
    "mambacsr_t3_both": _WO,
    **{f"mambacsr_win{w}": _WO for w in (4, 8, 16, 32, 64)},
}

# Representative official state_dict keys and shapes (read from basicsr/archs/mambacsr_arch.py, f71199e).
_B = "layers.0.residual_group.blocks.0."
OFFICIAL_KEYS = {
    "conv_first.weight": (180, 3, 3, 3),
    "patch_embed.norm.weight": (180,),
    "patch_embed2.norm.bias": (180,),
    _B + "ln_1.weight": (180,),
    _B + "skip_scale": (180,),
    _B + "skip_scale2": (180,),
    _B + "self_attention.in_proj.weight": (720, 180),
    _B + "self_attention.conv2d.weight": (360, 1, 3, 3),
    _B + "self_attention.conv2d.bias": (360,),
    _B + "self_attention.x_proj_weight": (2, 44, 360),
    _B + "self_attention.dt_projs_weight": (2, 360, 12),
    _B + "self_attention.dt_projs_bias": (2, 360),
    _B + "self_attention.A_logs": (720, 16),
    _B + "self_attention.Ds": (720,),
    _B + "self_attention.out_norm.weight": (360,),
    _B + "self_attention.out_proj.weight": (180, 360),
    _B + "self_attention.multi_scan.attn.norm.weight": (360,),
    _B + "self_attention.multi_scan.attn.global_reduce.weight": (45, 360),
    _B + "self_attention.multi_scan.attn.channel_select.bias": (360,),
    _B + "conv_block.cab.0.weight": (7, 180, 3, 3),
    _B + "conv_block.cab.2.weight": (180, 7, 3, 3),
    _B + "conv_block.cab.3.attention.1.weight": (7, 180, 1, 1),
    _B + "conv_block.cab.3.attention.3.bias": (180,),
    _B + "mlp.fc1.weight": (360, 180),
    _B + "mlp.fc2.weight": (180, 360),
    "layers.5.residual_group.blocks.5.ln_2.bias": (180,),
    "layers.5.conv.weight": (180, 180, 3, 3),
    "layers2.0.residual_group.blocks.5.self_attention.A_logs": (720, 16),
    "layers2.0.conv.bias": (180,),
    "layers3.0.in_proj.weight": (720, 180),
    "layers3.0.in_proj_down.weight": (720, 180),
    "layers3.0.ln_1.weight": (180,),
    "layers3.0.conv2d2.weight": (360, 1, 3, 3),
    "layers3.0.x_proj_weight": (4, 44, 360),
    "layers3.0.dt_projs_weight": (4, 360, 12),
    "layers3.0.A_logs": (1440, 16),
    "layers3.0.Ds": (1440,),
    "layers3.0.multi_scan.attn.channel_select.weight": (360, 45),
    "layers3.0.mlp.fc1.weight": (720, 180),
    "layers3.0.skip_scale2": (180,),
    "norm.weight": (180,),
    "conv_after_body.weight": (180, 180, 3, 3),
    "conv_before_upsample.0.weight": (64, 180, 3, 3),
    "upsample.0.weight": (256, 64, 3, 3),
    "upsample.2.weight": (256, 64, 3, 3),
    "conv_last.weight": (3, 64, 3, 3),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _meta(cfg: MambaCSRConfig) -> MambaCSR:
    with torch.device("meta"):
        return MambaCSR(cfg)


def _smoke_model(fn=mm.mambacsr, seed: int = 0, **overrides) -> MambaCSR:
    torch.manual_seed(seed)
    cfg = smoke(fn())
    if overrides:
        cfg = replace(cfg, **overrides)
    return MambaCSR(cfg).eval()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_param_count(name):
    model = _meta(VARIANTS[name]())
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]


def test_paper_param_count_is_leaf_module_count():
    """Table 1's 19.69 M = parameters of leaf modules only (raw nn.Parameters missed)."""
    model = _meta(mm.mambacsr())
    leaf = sum(p.numel() for m in model.modules() if not any(True for _ in m.children())
               for p in m.parameters(recurse=False))
    assert leaf == 19_692_042


def test_official_state_dict_layout():
    sd = _meta(mm.mambacsr()).state_dict()
    for key, shape in OFFICIAL_KEYS.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert "mean" not in sd
    # 35 tensors per RLM block, 6*35+2 per group, 16 outside; cross adds 2 + 212 + 30.
    assert len(sd) == 1288 + 2 + 212 + 30
    assert len(_meta(mm.mambacsr_wo_cross()).state_dict()) == 1288


def test_block_directions_dual_interleaved():
    cycle = [("w8", "w8_flip"), ("c_w8", "c_w8_flip"), ("w64", "w64_flip"), ("c_w64", "c_w64_flip")]
    group = tuple(tuple(cycle[i % 4]) for i in range(6))
    expected = {"layers": (group,) * 6, "layers2": (group,),
                "layers3": (("w16", "w16_flip", "c_w16", "c_w16_flip"),)}
    assert mm.mambacsr().block_directions() == expected
    assert _meta(mm.mambacsr()).block_directions == expected
    wo = _meta(mm.mambacsr_wo_cross()).block_directions
    assert wo == {"layers": (group,) * 6, "layers2": (), "layers3": ()}
    four = ("w8", "w8_flip", "c_w8", "c_w8_flip")
    assert mm.mambacsr_t3_plain().block_directions()["layers"][0] == (four,) * 6
    assert mm.mambacsr_t3_h2v().block_directions()["layers"][0][:2] == (("w8", "w8_flip"), ("c_w8", "c_w8_flip"))
    assert mm.mambacsr_win32().block_directions()["layers"][0][:3] == (
        ("w32", "w32_flip"), ("c_w32", "c_w32_flip"), ("w64", "w64_flip"))


def test_smoke_keeps_scan_structure():
    s = smoke(mm.mambacsr())
    dirs = s.block_directions()
    assert s.cross_scale and s.upscale == 4 and s.embed_dim < 32
    assert dirs["layers"][0] == (("w8", "w8_flip"), ("c_w8", "c_w8_flip"), ("w16", "w16_flip"), ("c_w16", "c_w16_flip"))
    assert len(dirs["layers2"]) == 1 and len(dirs["layers3"]) == 1
    assert not smoke(mm.mambacsr_wo_cross()).cross_scale


@pytest.mark.parametrize("fn", [mm.mambacsr, mm.mambacsr_wo_cross])
@pytest.mark.parametrize("hw", [(13, 11), (20, 17)])
def test_output_shape_odd_sizes(fn, hw):
    model = _smoke_model(fn)
    with torch.no_grad():
        y = model(torch.rand(1, 3, *hw))
    assert y.shape == (1, 3, 4 * hw[0], 4 * hw[1])
    assert torch.isfinite(y).all()


def test_every_parameter_gets_a_gradient():
    model = _smoke_model(mm.mambacsr)
    model(torch.rand(1, 3, 16, 16)).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_fast_scan_matches_ref(monkeypatch):
    """The default (fast) selective scan and selective_scan_ref give the same network output."""
    ss = importlib.import_module("mambacsr.ops.selective_scan")
    if hasattr(ss, "current_backend") and ss.current_backend("cpu") == "ref":
        pytest.skip("the default CPU backend is 'ref' here (CSRBENCH_SCAN_BACKEND?): nothing to compare")
    model = _smoke_model(mm.mambacsr)
    x = torch.rand(1, 3, 16, 12)
    with torch.no_grad():
        fast = model(x)
        if hasattr(ss, "use_backend"):
            with ss.use_backend("ref"):
                ref = model(x)
        else:
            monkeypatch.setattr(mm, "selective_scan", selective_scan_ref)
            ref = model(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_deterministic_forward():
    model = _smoke_model(mm.mambacsr_wo_cross)
    x = torch.rand(2, 3, 9, 10)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_checkpoint_filter_round_trip():
    a = _smoke_model(mm.mambacsr, seed=1)
    b = _smoke_model(mm.mambacsr, seed=2)
    wrapped = {"params": {}, "params_ema": {"module." + k: v for k, v in a.state_dict().items()}}
    b.load_state_dict(checkpoint_filter_fn(wrapped, b), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_cross_options_change_the_output():
    """Sequential vs aligned order, and the official un-scan quirk, reach the cross layer."""
    torch.manual_seed(3)
    cfg = smoke(mm.mambacsr())
    aligned = mm.CrossScaleSS2D(cfg).eval()
    seq = mm.CrossScaleSS2D(replace(cfg, cross_mode="sequential")).eval()
    compat = mm.CrossScaleSS2D(replace(cfg, official_cross_unscan=True)).eval()
    seq.load_state_dict(aligned.state_dict(), strict=True)
    compat.load_state_dict(aligned.state_dict(), strict=True)
    C = cfg.embed_dim
    sq = (torch.randn(1, 16, 16, C), torch.randn(1, 8, 8, C))  # HR 16-window grid 1x1
    wide = (torch.randn(1, 16, 32, C), torch.randn(1, 8, 16, C))  # 1x2: official un-scan misplaces windows
    with torch.no_grad():
        assert (aligned(*sq) - seq(*sq)).abs().max() > 1e-4
        assert torch.equal(aligned(*sq), compat(*sq))
        assert (aligned(*wide) - compat(*wide)).abs().max() > 1e-4


def test_cross_model_mirror_pads_like_official_test():
    model = _smoke_model(mm.mambacsr)
    x = torch.rand(1, 3, 13, 11)
    padded = torch.cat([x, x.flip(2)], 2)[:, :, :16]
    padded = torch.cat([padded, padded.flip(3)], 3)[:, :, :, :16]
    assert torch.equal(pad_symmetric(x, 16), padded)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :52, :44], rtol=0, atol=1e-6)


def test_bad_input_raises():
    model = _smoke_model(mm.mambacsr_wo_cross)
    with pytest.raises(ValueError, match=r"expects \(B, 3, h, w\)"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="MambaCSRConfig.pad_multiple"):
        replace(mm.mambacsr(), pad_multiple=8)
    with pytest.raises(ValueError, match="unknown scan direction"):
        replace(mm.mambacsr(), directions=(("zigzag",),))
    with pytest.raises(TypeError, match="MambaCSRConfig"):
        MambaCSR({"embed_dim": 180})


# ---- packed padding (issue 20.10): w64 on small maps scans its zero-padding as one step per run ----


@pytest.mark.parametrize("name, H, W", [("w64", 16, 16), ("c_w64_flip", 16, 16), ("w8", 13, 11), ("c_w16", 20, 9)])
def test_packed_scan_order_keeps_real_tokens_and_counts_runs(name, H, W):
    order = mm.scan_order(name, H, W)
    packed = mm.packed_scan_order(name, H, W)
    x = torch.randn(1, 2, H, W)
    padded = mm.scan(x, order)[0, 0]                                 # (L,) zeros at padded tokens
    real = mm.unscan(torch.arange(order.length, dtype=torch.float32).view(1, 1, -1), order, H, W).flatten().long()
    seq = packed.scan(x)[0, 0]
    assert torch.equal(seq[packed.run == 0], padded[real.sort().values])          # real tokens, same order
    assert torch.equal(seq[packed.run > 0], torch.zeros(int((packed.run > 0).sum())))
    first, last = int(real.min()), int(real.max())
    assert int(packed.run.sum()) + H * W == last - first + 1                      # inner runs all counted
    assert torch.equal(packed.unscan(packed.scan(x)), x)
    assert packed.length < order.length


def test_packed_scan_order_without_padding_is_the_plain_order():
    assert mm.packed_scan_order("w8", 16, 24) is mm.scan_order("w8", 16, 24)


def test_padding_run_dt_decays_like_the_run():
    bias = torch.tensor([[-6.9, -2.3, 1.0, 4.0]])
    run = torch.tensor([[1.0, 48.0, 1000.0]])
    dt = mm.padding_run_dt(bias, run)                                            # (1, 4, 3)
    torch.testing.assert_close(torch.nn.functional.softplus(dt + bias[:, :, None]),
                               run[:, None, :] * torch.nn.functional.softplus(bias)[:, :, None], rtol=1e-5, atol=0)


@pytest.mark.parametrize("fn, hw", [(mm.mambacsr, (13, 11)), (mm.mambacsr_wo_cross, (13, 11))])
def test_packed_padding_equals_scanning_the_padding(monkeypatch, fn, hw):
    """Output and every gradient equal the padded scan's (w16 on the 8x8 half-resolution map, w8/w16 on 13x11)."""
    model = _smoke_model(fn).train()
    for m in model.modules():
        if isinstance(m, mm.DropPath):
            m.p = 0.0
    x = torch.rand(2, 3, *hw)

    def run():
        model.zero_grad()
        y = model(x)
        y.square().mean().backward()
        return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    y_packed, g_packed = run()
    monkeypatch.setattr(mm, "PACK_PADDING", False)
    y_padded, g_padded = run()
    torch.testing.assert_close(y_packed, y_padded, rtol=1e-5, atol=1e-6)
    for name, g in g_padded.items():
        torch.testing.assert_close(g_packed[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()) + 1e-9,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("directions", [("w16", "c_w16_flip"), ("c_w16", "w16_flip")])
def test_packed_padding_in_one_block(monkeypatch, directions):
    """One SS2D on an 8 x 6 map with 16-windows (58 of 64 tokens padding): output, input and dt-bias
    gradients equal the padded scan's; one padded token per run instead of the run's length would be off by ~1e-3."""
    torch.manual_seed(0)
    ss = mm.LocalWindowSS2D(smoke(mm.mambacsr()), directions)
    x = torch.randn(2, 8, 6, ss.in_proj.in_features, requires_grad=True)

    def run():
        y = ss(x)
        gx, gb = torch.autograd.grad(y.square().sum(), [x, ss.dt_projs_bias])
        return y.detach(), gx, gb

    packed = run()
    monkeypatch.setattr(mm, "PACK_PADDING", False)
    padded = run()
    for a, b in zip(packed, padded):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_traced_scan_counts_the_padding_like_upstream(monkeypatch):
    """fvcore traces the model: the trace scans padded tokens one by one (official MACs, Table 1)."""
    ss = mm.LocalWindowSS2D(smoke(mm.mambacsr()), ("w16", "w16_flip")).eval()
    x = torch.randn(1, 8, 8, ss.in_proj.in_features)

    def refuse(*args):
        raise AssertionError("packed scan used while tracing")

    monkeypatch.setattr(mm, "packed_scan_order", refuse)
    with torch.no_grad():
        traced = torch.jit.trace(ss, x, check_trace=False)
        with pytest.raises(AssertionError, match="packed scan used"):
            ss(x)
    assert traced is not None
