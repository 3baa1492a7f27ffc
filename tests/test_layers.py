"""mambacsr/layers.py: the one copy of each layer the networks share, and the layering rule."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from mambacsr import layers

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = sorted((ROOT / "baselines").glob("*.py")) + sorted((ROOT / "mambacsr").rglob("*.py"))


# ---- checkpoints ---------------------------------------------------------------------------------


def test_unwrap_state_dict_prefers_params_ema_and_strips_module():
    w = torch.ones(2)
    raw = {"params": {"a": torch.zeros(2)}, "params_ema": {"module.a": w, "b": w}, "iter": 5}
    sd, which = layers.unwrap_state_dict(raw)
    assert which == "params_ema"
    assert set(sd) == {"a", "b"} and sd["a"] is w
    assert "module.a" in raw["params_ema"]                     # the input is not modified


@pytest.mark.parametrize("key", ["params", "state_dict", "model"])
def test_unwrap_state_dict_other_containers(key):
    sd, which = layers.unwrap_state_dict({key: {"module.x": torch.zeros(1)}})
    assert which == key and list(sd) == ["x"]


def test_unwrap_state_dict_plain_and_errors():
    sd, which = layers.unwrap_state_dict({"conv.weight": torch.zeros(1), "params": torch.zeros(1)})
    assert which is None and set(sd) == {"conv.weight", "params"}   # a tensor named 'params' is not a container
    with pytest.raises(TypeError, match="net.pth: expected a dict, got list"):
        layers.unwrap_state_dict([1, 2], "net.pth")


# ---- reconstruction ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [-2, 0, 1, 5, 6])
def test_upsample_refuses_unsupported_scales(scale):
    assert not layers.is_pixelshuffle_scale(scale)
    with pytest.raises(ValueError, match=f"scale {scale} is not supported"):
        layers.Upsample(scale, 4)


@pytest.mark.parametrize("scale, keys", [(2, ["0.weight"]), (3, ["0.weight"]), (4, ["0.weight", "2.weight"]),
                                         (8, ["0.weight", "2.weight", "4.weight"])])
def test_upsample_keys_and_shape(scale, keys):
    up = layers.Upsample(scale, 4)
    assert [k for k in up.state_dict() if k.endswith("weight")] == keys
    assert up(torch.rand(1, 4, 3, 5)).shape == (1, 4, 3 * scale, 5 * scale)


def test_upsample_one_step():
    assert layers.UpsampleOneStep(3, 8, 3)(torch.rand(2, 8, 4, 4)).shape == (2, 3, 12, 12)


# ---- blocks --------------------------------------------------------------------------------------


def test_cab_and_channel_attention_keys():
    keys = set(layers.CAB(24, 3, 6).state_dict())
    assert keys == {"cab.0.weight", "cab.0.bias", "cab.2.weight", "cab.2.bias",
                    "cab.3.attention.1.weight", "cab.3.attention.1.bias",
                    "cab.3.attention.3.weight", "cab.3.attention.3.bias"}
    x = torch.rand(2, 24, 5, 6)
    ca = layers.ChannelAttention(24, 6)
    gate = ca.attention(x)
    assert gate.shape == (2, 24, 1, 1) and ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(ca(x), x * gate)


@pytest.mark.parametrize("kind, keys", [("1conv", {"weight", "bias"}),
                                        ("3conv", {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}),
                                        ("identity", set())])
def test_residual_conv(kind, keys):
    m = layers.residual_conv(16, kind)
    assert set(m.state_dict()) == keys
    assert m(torch.rand(1, 16, 5, 5)).shape == (1, 16, 5, 5)


def test_residual_conv_bad_kind():
    with pytest.raises(ValueError, match="'2conv' is not one of"):
        layers.residual_conv(16, "2conv")


def test_patch_embed_layouts_and_keys():
    x = torch.rand(2, 8, 3, 5)
    flat, last = layers.PatchEmbed(8), layers.PatchEmbed(8, flatten=False)
    assert torch.equal(flat(x).view(2, 3, 5, 8), last(x))
    assert set(layers.PatchEmbed(8, proj=True).state_dict()) == {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}
    assert not layers.PatchEmbed(8, norm=False).state_dict()
    assert torch.equal(layers.PatchUnEmbed()(layers.PatchEmbed(8, norm=False)(x), (3, 5)), x)


def test_drop_path():
    x = torch.randn(64, 3, 4)
    dp = layers.DropPath(0.25)
    assert dp.eval()(x) is x and layers.DropPath(0.0).train()(x) is x
    torch.manual_seed(0)
    y = dp.train()(x)
    kept = (y != 0).flatten(1).all(1)
    dropped = (y == 0).flatten(1).all(1)
    assert (kept | dropped).all() and 0 < dropped.sum() < 64      # whole samples, some of each
    torch.testing.assert_close(y[kept], x[kept] / 0.75)


def test_linear_drop_path_rates():
    assert layers.linear_drop_path_rates(0.1, 36) == pytest.approx(torch.linspace(0, 0.1, 36).tolist())
    assert layers.linear_drop_path_rates(0.1, 1) == [0.0]


def test_basic_layer_checkpointing_changes_nothing():
    torch.manual_seed(0)
    blocks = [torch.nn.Linear(6, 6) for _ in range(3)]
    plain = layers.BasicLayer(blocks)
    ckpt = layers.BasicLayer(blocks, use_checkpoint=True)
    x = torch.randn(4, 6, requires_grad=True)
    y1 = plain(x)
    g1 = torch.autograd.grad(y1.sum(), [x, blocks[0].weight])
    y2 = ckpt(x)
    g2 = torch.autograd.grad(y2.sum(), [x, blocks[0].weight])
    assert torch.equal(y1, y2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    assert list(plain.state_dict())[0] == "blocks.0.weight"


def test_residual_group_keys_and_residual():
    class Zero(torch.nn.Module):
        def forward(self, x, x_size):
            return torch.zeros_like(x)

    g = layers.ResidualGroup(Zero(), 8, "1conv", proj=True)
    assert set(g.state_dict()) == {"conv.weight", "conv.bias", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    x = torch.randn(2, 12, 8)
    y = g(x, (3, 4))
    conv_of_zero = g.patch_embed(g.conv(torch.zeros(2, 8, 3, 4)))
    torch.testing.assert_close(y, x + conv_of_zero)


# ---- padding -------------------------------------------------------------------------------------


def test_pad_symmetric_mirror_and_periodic():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    assert layers.pad_symmetric(x, 8)[0, 0, 0].tolist() == [0, 1, 2, 2, 1, 0, 0, 1]
    z = torch.rand(1, 1, 3, 6)
    assert layers.pad_symmetric(z, 3) is z
    y = torch.rand(1, 2, 5, 4)
    assert torch.equal(layers.pad_symmetric(y, 8)[..., :8, :4], torch.cat([y, y.flip(2)], 2)[..., :8, :])


def test_pad_to_multiple_reflect():
    x = torch.rand(1, 3, 5, 7)
    assert torch.equal(layers.pad_to_multiple(x, 4), torch.nn.functional.pad(x, (0, 1, 0, 3), mode="reflect"))
    assert layers.pad_to_multiple(torch.rand(1, 3, 1, 1), 8).shape == (1, 3, 8, 8)


# ---- one copy, one direction ---------------------------------------------------------------------

SHARED = {"DropPath", "drop_path", "Mlp", "PatchEmbed", "PatchUnEmbed", "Upsample", "UpsampleOneStep",
          "ChannelAttention", "CAB", "BasicLayer", "ResidualGroup", "residual_conv", "init_weights",
          "pad_to_multiple", "pad_symmetric", "unwrap_state_dict", "linear_drop_path_rates"}


@pytest.mark.parametrize("path", [p for p in MODEL_FILES if p.name != "layers.py"], ids=lambda p: p.name)
def test_model_files_do_not_redefine_shared_layers(path):
    tree = ast.parse(path.read_text())
    own = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert not own & SHARED, f"{path.name} defines its own {sorted(own & SHARED)}: import them from mambacsr.layers"


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_model_code_imports_no_harness(path):
    """Model code never imports harness or DVC; mambacsr (the lower package) never imports baselines."""
    banned = ("harness", "dvc") + (("baselines",) if path.parent.name != "baselines" else ())
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
