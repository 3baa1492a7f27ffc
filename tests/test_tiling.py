"""Tiled inference equals whole-image inference when the receptive field fits in the overlap."""
import pytest
import torch
from torch import nn

from harness.tiling import tile_starts, tiled_forward


class ConvSR(nn.Module):
    """3 layers of 3x3 conv + PixelShuffle: LR receptive field 7 px (radius 3)."""

    def __init__(self, scale: int = 2, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ConvSR(scale=2).eval()


@pytest.mark.parametrize("h,w,tile", [(37, 50, 16), (24, 24, 12), (16, 41, 16), (9, 9, 16)])
def test_centre_blend_is_exact_for_receptive_field_within_overlap(net, h, w, tile):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    with torch.no_grad():
        whole = net(x)
    tiled = tiled_forward(net, x, scale=2, tile=tile, overlap=8, blend="centre")
    assert tiled.shape == whole.shape
    print("max |tiled - whole|", (tiled - whole).abs().max().item())
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_too_small_overlap_is_not_exact(net):
    """A test that can fail: with overlap 2 (< 2 * radius 3) the seams show."""
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(x)
    tiled = tiled_forward(net, x, scale=2, tile=12, overlap=2, blend="centre")
    assert (tiled - whole).abs().max().item() > 1e-4


def test_average_blend_is_exact_for_pointwise_and_close_otherwise(net):
    torch.manual_seed(0)
    point = nn.Sequential(nn.Conv2d(3, 12, 1), nn.PixelShuffle(2)).eval()
    x = torch.rand(1, 3, 30, 45, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(point, x, 2, 16, 8, blend="average"), point(x), rtol=0, atol=1e-6)
        err = (tiled_forward(net, x, 2, 16, 8, blend="average") - net(x)).abs()
    assert err.max().item() > 1e-5      # context near tile edges leaks into the mean
    assert err.mean().item() < 0.05


def test_tile_zero_or_large_runs_whole_image(net):
    x = torch.rand(1, 3, 10, 13)
    calls = []

    def counting(t):
        calls.append(tuple(t.shape))
        return net(t)

    tiled_forward(counting, x, 2, 0, 0)
    tiled_forward(counting, x, 2, 64, 8)
    assert calls == [(1, 3, 10, 13)] * 2


def test_tile_starts_cover_and_end_at_edge():
    s = tile_starts(37, 16, 8)
    assert s[0] == 0 and s[-1] == 37 - 16 and all(b - a <= 8 for a, b in zip(s, s[1:]))
    assert tile_starts(10, 16, 8) == [0]


def test_bad_settings_and_wrong_scale_raise(net):
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="tile_overlap"):
        tiled_forward(net, x, 2, 8, 8)
    with pytest.raises(ValueError, match="scale 3"):
        tiled_forward(net, x, 3, 8, 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tiled_forward(net, x[0], 2, 8, 4)
