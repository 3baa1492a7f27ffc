"""MORAN recogniser: official layout and key names, MORN's grid, the greedy attention decoder, TextZoom's
input preparation and decoding, strict loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import recognition as rec
from harness.recognizers import moran

# key names and shapes of Canjie-Luo/MORAN_v2's MORAN(1, 37, 256, 32, 100, BidirDecoder=True), read off
# models/morn.py (MORN.cnn Sequential indices), models/asrn_res.py (ResNet / Residual_block / BidirectionalLSTM /
# Attention / AttentionCell) @ 410596fda22a4746ef83301928de1e91e7d012f7
OFFICIAL = {
    "MORN.cnn.1.weight": (64, 1, 3, 3), "MORN.cnn.2.running_mean": (64,), "MORN.cnn.5.weight": (128, 64, 3, 3),
    "MORN.cnn.9.weight": (64, 128, 3, 3), "MORN.cnn.12.weight": (16, 64, 3, 3), "MORN.cnn.15.weight": (1, 16, 3, 3),
    "MORN.cnn.16.bias": (1,),
    "ASRN.cnn.block0.0.weight": (32, 1, 3, 3), "ASRN.cnn.block0.1.running_var": (32,),
    "ASRN.cnn.block1.0.downsample.0.weight": (32, 32, 3, 3), "ASRN.cnn.block1.0.conv1.0.weight": (32, 32, 3, 3),
    "ASRN.cnn.block1.2.conv1.0.weight": (32, 32, 1, 1), "ASRN.cnn.block2.3.conv2.1.weight": (64,),
    "ASRN.cnn.block3.0.downsample.1.bias": (128,), "ASRN.cnn.block4.5.conv2.0.weight": (256, 256, 3, 3),
    "ASRN.cnn.block5.0.conv1.0.weight": (512, 256, 3, 3), "ASRN.cnn.block5.2.conv1.0.bias": (512,),
    "ASRN.rnn.0.rnn.weight_ih_l0": (1024, 512), "ASRN.rnn.0.rnn.weight_hh_l0_reverse": (1024, 256),
    "ASRN.rnn.0.embedding.weight": (256, 512), "ASRN.rnn.1.rnn.weight_ih_l0": (1024, 256),
    "ASRN.rnn.1.embedding.bias": (256,),
    "ASRN.attentionL2R.attention_cell.i2h.weight": (256, 256), "ASRN.attentionL2R.attention_cell.h2h.bias": (256,),
    "ASRN.attentionL2R.attention_cell.score.weight": (1, 256),
    "ASRN.attentionL2R.attention_cell.rnn.weight_ih": (768, 512),
    "ASRN.attentionL2R.attention_cell.rnn.weight_hh": (768, 256), "ASRN.attentionL2R.generator.weight": (37, 256),
    "ASRN.attentionL2R.char_embeddings": (38, 256), "ASRN.attentionR2L.generator.bias": (37,),
    "ASRN.attentionR2L.char_embeddings": (38, 256),
}
ABSENT = ("ASRN.attentionL2R.attention_cell.i2h.bias", "ASRN.attentionL2R.attention_cell.score.bias",
          "ASRN.cnn.block1.1.downsample.0.weight", "ASRN.cnn.block0.2.weight", "MORN.cnn.0.weight")


@pytest.fixture(scope="module")
def net() -> moran.MORANNet:
    torch.manual_seed(0)
    return moran.MORANNet().eval()


def test_layout_matches_the_official_checkpoint(net):
    sd = net.state_dict()
    for k, shape in OFFICIAL.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k in sd for k in ABSENT)
    assert sum(k.endswith("num_batches_tracked") for k in sd) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())   # the only non-official keys
    x = torch.rand(2, 1, 32, 100)
    with torch.no_grad():
        assert net.ASRN.cnn(x).shape == (2, 512, 1, 25)               # 25 time steps for a 100-wide input
        assert net.MORN.cnn(x).shape == (2, 1, 4, 12)
        out = net(x)
        l2r, r2l = net(x, reverse=True)
    assert out.shape == (2, moran.MAX_STEPS, 37) and torch.equal(out, l2r) and r2l.shape == out.shape
    assert not torch.allclose(l2r, r2l)                               # two decoders, L2R is the one read


def test_morn_grid_is_the_official_one_and_offsets_shift_rows():
    # official grid: np.meshgrid(w_list, h_list, indexing='ij'), stacked, transposed to (H, W, 2), cast to float32
    h_list, w_list = np.arange(32) * 2. / 31 - 1, np.arange(100) * 2. / 99 - 1
    grid = np.transpose(np.stack(np.meshgrid(w_list, h_list, indexing="ij"), axis=-1), (1, 0, 2))
    assert torch.equal(moran._identity_grid(2, 32, 100, torch.device("cpu")),
                       torch.from_numpy(grid).float().expand(2, 32, 100, 2))
    torch.manual_seed(2)
    morn = moran.MORN().eval()
    x = torch.rand(2, 1, 32, 100)
    with torch.no_grad():
        morn.cnn[16].weight.zero_()
        morn.cnn[16].bias.zero_()                                     # zero offsets: the identity resampling
        assert torch.allclose(morn(x), x, atol=2e-5)                  # float32 grid rounding ~7e-6; 0.7 if
                                                                      # align_corners=False
        morn.cnn[16].bias.fill_(1 / 31)                               # +1/31 per pass, 2 passes: one row down
        y = morn(x)
    assert torch.allclose(y[:, :, :-1], x[:, :, 1:], atol=2e-5)
    assert torch.allclose(y[:, :, -1], torch.zeros_like(y[:, :, -1]), atol=2e-5)   # zero padding below


def _official_attention_test(dec: moran.AttentionDecoder, feats: torch.Tensor, steps: int) -> torch.Tensor:
    """asrn_res.py ``Attention.forward(test=True)`` + ``AttentionCell.forward(test=True)`` written out."""
    cell, (n_t, n_b, n_c), h = dec.attention_cell, feats.shape, dec.hidden_size
    hidden, targets, probs = torch.zeros(n_b, h), torch.zeros(n_b, dtype=torch.long), []
    for _ in range(steps):
        emb = dec.char_embeddings.index_select(0, targets)
        feats_proj = cell.i2h(feats.view(-1, n_c))
        prev = cell.h2h(hidden).view(1, n_b, h).expand(n_t, n_b, h).contiguous().view(-1, h)
        alpha = F.softmax(cell.score(torch.tanh(feats_proj + prev).view(-1, h)).view(n_t, n_b), 0)
        context = (feats * alpha.view(n_t, n_b, 1).expand(n_t, n_b, n_c)).sum(0)
        hidden = cell.rnn(torch.cat([context, emb], 1), hidden)
        p = dec.generator(hidden)
        probs.append(p)
        targets = p.max(1)[1] + 1
    return torch.stack(probs, 1)


def test_greedy_decoder_is_the_official_test_loop():
    torch.manual_seed(1)
    dec = moran.AttentionDecoder().eval()
    feats = torch.randn(25, 3, 256)
    with torch.no_grad():
        got, want = dec(feats, 20), _official_attention_test(dec, feats, 20)
    assert got.shape == (3, 20, 37)
    assert (got - want).abs().max() < 1e-5


def test_prepare_is_textzoom_parse_moran_data():
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (32, 128, 3), dtype=np.uint8) for _ in range(2)]
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in ims])
    x = F.interpolate(x, (32, 100), mode="bicubic")
    want = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]     # no (x - 0.5) / 0.5
    assert torch.allclose(moran.prepare(ims), want, atol=1e-6)


def test_decode_maps_the_alphabet_and_cuts_at_the_first_eos():
    def one_hot(word: str) -> torch.Tensor:
        return F.one_hot(torch.tensor([moran.ALPHABET.index(c) for c in word]), 37).float()

    words = ["0az9$$b$" + "$" * 12, "mor$an" + "x" * 14, "$abc" + "$" * 16, "0123456789abcdefghij"]
    got = moran.attention_decode(torch.stack([one_hot(w) for w in words]))
    assert got == ["0az9", "mor", "", "0123456789abcdefghij"]
    assert moran.ALPHABET[0] == "0" and moran.ALPHABET[10] == "a" and moran.ALPHABET[35] == "z"
    assert moran.ALPHABET[36] == moran.EOS == "$"


def test_loads_official_format_and_reads(tmp_path, net):
    sd = {f"module.{k}": v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "moran.pth", _use_new_zipfile_serialization=False)  # DataParallel, old format
    r = rec.build_recognizer("moran", str(tmp_path / "moran.pth"))
    r._impl.batch_size = 2                                             # 3 crops -> two batches
    rng = np.random.default_rng(1)
    ims = [rng.integers(0, 256, (32, 128, 3), dtype=np.uint8) for _ in range(3)]
    out = r.recognize(ims)
    assert len(out) == 3 and all(set(s) <= set(moran.ALPHABET[:36]) for s in out)
    with torch.no_grad():
        want = moran.attention_decode(net(moran.prepare(ims)))
    assert out == want                                                 # the file's weights, not a fresh init


def test_weights_of_another_network_are_named(tmp_path, net):
    torch.save(moran.MORANNet(nclass=11).state_dict(), tmp_path / "moran.pth")
    with pytest.raises(rec.RecognizerError,
                       match=r"(?s)moran.pth.*ASRN.attentionL2R.generator.weight: file \(11, 256\)"):
        rec.build_recognizer("moran", str(tmp_path / "moran.pth"))
    # a single-decoder MORAN (BidirDecoder=False) names its decoder ASRN.attention
    single = {k.replace("attentionL2R", "attention"): v for k, v in net.state_dict().items() if "R2L" not in k}
    torch.save(single, tmp_path / "single.pth")
    with pytest.raises(rec.RecognizerError, match=r"missing \['ASRN.attentionL2R.*unexpected \['ASRN.attention\."):
        rec.build_recognizer("moran", str(tmp_path / "single.pth"))
