"""Tests for mambacsr.scan_orders.

The oracle `_official_*` functions below re-express, with reshape/permute only, what
the official MambaCSR ``basicsr/archs/mamba/local_scan.py`` (commit f71199e) does, as read
from that file; the library computes its orders by index arithmetic instead, so the
two are independent.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mambacsr.scan_orders import cross_scan_order, parse_direction, scan, scan_length, scan_order, unscan


# ----------------------------------------------------------------------------- official oracle


def _official_local_scan(x, w, flip, column_first):
    B, C, H, W = x.shape
    hg, wg = math.ceil(H / w), math.ceil(W / w)
    x = F.pad(x, (0, wg * w - W, 0, hg * w - H))
    x = x.view(B, C, hg, w, wg, w)
    x = x.permute(0, 1, 4, 2, 5, 3) if column_first else x.permute(0, 1, 2, 4, 3, 5)
    x = x.reshape(B, C, -1)
    return x.flip(-1) if flip else x


def _official_local_reverse(x, w, H, W, flip, column_first):
    B, C, L = x.shape
    hg, wg = math.ceil(H / w), math.ceil(W / w)
    if flip:
        x = x.flip(-1)
    if column_first:
        x = x.view(B, C, wg, hg, w, w).permute(0, 1, 3, 5, 2, 4)
    else:
        x = x.view(B, C, hg, wg, w, w).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(B, C, hg * w, wg * w)[:, :, :H, :W]


def _official_nested(x, w1, flip, column_first):
    B, C, H, W = x.shape
    hg, wg = H // w1, W // w1
    x = x.view(B, C, hg, w1, wg, w1)
    x = x.permute(0, 1, 4, 2, 5, 3) if column_first else x.permute(0, 1, 2, 4, 3, 5)
    n = w1 // 2
    x = x.reshape(B, C, hg * wg, n, 2, n, 2).permute(0, 1, 2, 3, 5, 4, 6).reshape(B, C, -1)
    return x.flip(-1) if flip else x


def _official_nested_reverse(x, w1, H, W, flip, column_first):
    B, C, L = x.shape
    hg, wg = H // w1, W // w1
    n = w1 // 2
    if flip:
        x = x.flip(-1)
    x = x.view(B, C, hg * wg, n, n, 2, 2).permute(0, 1, 2, 3, 5, 4, 6).reshape(B, C, hg, w1, wg, w1)
    x = x.reshape(B, C, hg, wg, w1, w1)  # upstream's .view: the window index read row-major
    x = x.permute(0, 1, 3, 5, 2, 4) if column_first else x.permute(0, 1, 2, 4, 3, 5)
    return x.reshape(B, C, L)


def _official_cross_scan(x, x_down, w1, flip, column_first):
    hi = _official_nested(x, w1, flip, column_first)
    lo = _official_local_scan(x_down, w1 // 2, flip, column_first)
    B, C, L = lo.shape
    return torch.cat([lo.unsqueeze(-1), hi.view(B, C, L, 4)], dim=-1).view(B, C, -1)


def _official_cross_reverse(seq, H, W, w1, flip, column_first):
    B, C, L = seq.shape
    hi = seq.view(B, C, L // 5, 5)[:, :, :, 1:].reshape(B, C, -1)
    return _official_nested_reverse(hi, w1, H, W, flip, column_first).view(B, C, H, W)


NAMES = ["w{}", "w{}_flip", "c_w{}", "c_w{}_flip"]


# ----------------------------------------------------------------------------- windowed / global


@pytest.mark.parametrize("H,W", [(8, 8), (13, 11), (16, 24), (5, 9), (24, 8)])
@pytest.mark.parametrize("w", [2, 4, 8])
@pytest.mark.parametrize("form", NAMES)
def test_window_scan_matches_official(H, W, w, form):
    name = form.format(w)
    _, _, column_first, flip = parse_direction(name)
    x = torch.randn(2, 3, H, W)
    order = scan_order(name, H, W)
    seq = scan(x, order)
    ref = _official_local_scan(x, w, flip, column_first)
    assert torch.equal(seq, ref)
    assert order.length == scan_length(name, H, W) == ref.shape[-1]
    y = torch.randn_like(seq)
    assert torch.equal(unscan(y, order, H, W), _official_local_reverse(y, w, H, W, flip, column_first))


@pytest.mark.parametrize("H,W", [(5, 7), (4, 4)])
def test_global_scans(H, W):
    x = torch.randn(1, 2, H, W)
    assert torch.equal(scan(x, scan_order("h", H, W)), x.flatten(2))
    assert torch.equal(scan(x, scan_order("h_flip", H, W)), x.flatten(2).flip(-1))
    assert torch.equal(scan(x, scan_order("v", H, W)), x.transpose(2, 3).flatten(2))
    assert torch.equal(scan(x, scan_order("v_flip", H, W)), x.transpose(2, 3).flatten(2).flip(-1))


def _coords(order):
    """(row, col) on the padded grid of each sequence position."""
    idx = order.index
    return idx // order.padded_width, idx % order.padded_width


@settings(max_examples=60, deadline=None)
@given(H=st.integers(1, 20), W=st.integers(1, 20), w=st.sampled_from([1, 2, 3, 4, 8]),
       form=st.sampled_from(NAMES + ["h", "h_flip", "v", "v_flip"]))
def test_inverse_and_permutation(H, W, w, form):
    name = form.format(w) if "{}" in form else form
    order = scan_order(name, H, W)
    L = order.length
    assert torch.equal(order.index[order.inverse], torch.arange(L))
    assert torch.equal(torch.sort(order.index).values, torch.arange(L))
    x = torch.randn(1, 2, H, W)
    assert torch.equal(unscan(scan(x, order), order, H, W), x)


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 20), W=st.integers(1, 20), w=st.sampled_from([1, 2, 3, 4, 8]),
       form=st.sampled_from(NAMES))
def test_window_neighbours(H, W, w, form):
    """Each window is one contiguous chunk of w*w tokens; inside it consecutive tokens are
    horizontal (row-major) or vertical (column-major) neighbours except at line wraps;
    windows are visited row-major (w) or column-major (c_w)."""
    name = form.format(w)
    _, _, column_first, flip = parse_direction(name)
    order = scan_order(name, H, W)
    r, c = _coords(order)
    if flip:
        r, c = r.flip(0), c.flip(0)
    hg, wg = order.padded_height // w, order.padded_width // w
    for k in range(hg * wg):
        rr, cc = r[k * w * w:(k + 1) * w * w], c[k * w * w:(k + 1) * w * w]
        win = (k % hg, k // hg) if column_first else (k // wg, k % wg)
        assert set((rr // w).tolist()) == {win[0]} and set((cc // w).tolist()) == {win[1]}
        dr, dc = rr.diff(), cc.diff()
        for t in range(w * w - 1):
            wrap = (t + 1) % w == 0
            if column_first:
                assert (dr[t], dc[t]) == ((-(w - 1), 1) if wrap else (1, 0))
            else:
                assert (dr[t], dc[t]) == ((1, -(w - 1)) if wrap else (0, 1))


def test_padding_rule_zero_pads_bottom_right():
    order = scan_order("w8", 13, 11)
    assert (order.padded_height, order.padded_width, order.length) == (16, 16, 256)
    x = torch.ones(1, 1, 13, 11)
    seq = scan(x, order)
    assert seq.sum() == 13 * 11  # pads are zeros
    assert scan_order("w64", 32, 32).length == 64 * 64  # the half-resolution w64 case


# ----------------------------------------------------------------------------- cross-scale


@pytest.mark.parametrize("H,W", [(16, 16), (32, 32), (32, 16), (16, 48)])
@pytest.mark.parametrize("form", NAMES)
@pytest.mark.parametrize("w", [8, 16])
def test_cross_scan_matches_official(H, W, form, w):
    if H % w or W % w:
        pytest.skip("not a valid cross-scale size")
    name = form.format(w)
    _, _, column_first, flip = parse_direction(name)
    x, xd = torch.randn(1, 2, H, W), torch.randn(1, 2, H // 2, W // 2)
    seq = scan(x, cross_scan_order(name, H, W), xd)
    assert torch.equal(seq, _official_cross_scan(x, xd, w, flip, column_first))
    y = torch.randn_like(seq)
    official = _official_cross_reverse(y, H, W, w, flip, column_first)
    compat = cross_scan_order(name, H, W, official_unscan=True)
    assert torch.equal(unscan(y, compat, H, W), official)
    exact = cross_scan_order(name, H, W)
    assert torch.equal(unscan(scan(x, exact, xd), exact, H, W), x)  # true inverse on the HR part
    square = (H // w) == (W // w)
    assert torch.equal(unscan(y, exact, H, W), official) == (square or not column_first)


@settings(max_examples=30, deadline=None)
@given(hb=st.integers(1, 3), wb=st.integers(1, 3), w=st.sampled_from([2, 4, 8]),
       form=st.sampled_from(NAMES), mode=st.sampled_from(["aligned", "sequential"]))
def test_cross_alignment_and_inverse(hb, wb, w, form, mode):
    name = form.format(w)
    _, _, column_first, flip = parse_direction(name)
    H, W = hb * w, wb * w
    h, wl = H // 2, W // 2
    order = cross_scan_order(name, H, W, mode=mode)
    n_lr, L = h * wl, order.length
    assert L == 5 * H * W // 4
    assert torch.equal(order.index[order.inverse], torch.arange(L))
    idx = order.index
    is_lr = idx < n_lr
    if mode == "aligned":
        assert torch.equal(is_lr, torch.arange(L) % 5 == 0)
        within = [(0, 0), (1, 0), (0, 1), (1, 1)] if column_first else [(0, 0), (0, 1), (1, 0), (1, 1)]
        if flip:
            within = within[::-1]
        for l in range(n_lr):
            i, j = divmod(int(idx[5 * l]), wl)
            hr = [divmod(int(t) - n_lr, W) for t in idx[5 * l + 1:5 * l + 5]]
            assert hr == [(2 * i + a, 2 * j + b) for a, b in within]
    else:
        assert bool(is_lr[:n_lr].all()) and not bool(is_lr[n_lr:].any())
        aligned = cross_scan_order(name, H, W, mode="aligned").index
        assert torch.equal(idx[:n_lr], aligned[aligned < n_lr])
        assert torch.equal(idx[n_lr:], aligned[aligned >= n_lr])
    x, xd = torch.randn(1, 2, H, W), torch.randn(1, 2, h, wl)
    assert torch.equal(unscan(scan(x, order, xd), order, H, W), x)


# ----------------------------------------------------------------------------- API


def test_bad_input_raises():
    with pytest.raises(ValueError, match="unknown scan direction 'diag'"):
        scan_order("diag", 4, 4)
    with pytest.raises(ValueError, match="divisible by 16"):
        cross_scan_order("w16", 24, 16)
    with pytest.raises(ValueError, match="even K"):
        cross_scan_order("h", 16, 16)
    with pytest.raises(ValueError, match="built for 8x8"):
        scan(torch.zeros(1, 1, 8, 9), scan_order("w4", 8, 8))
    with pytest.raises(ValueError, match="needs x_lr"):
        scan(torch.zeros(1, 1, 16, 16), cross_scan_order("w16", 16, 16))


def test_orders_are_cached():
    a = scan_order("c_w8_flip", 24, 16)
    assert scan_order("c_w8_flip", 24, 16) is a
    assert a.on("cpu", "index") is a.on(torch.device("cpu"), "index")
    assert cross_scan_order("w16", 32, 32) is cross_scan_order("w16", 32, 32)
