"""CRNN recogniser: official layout and key names, TextZoom's input preparation, CTC decoding, strict loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import recognition as rec
from harness.recognizers import crnn

# key names and shapes of meijieru/crnn.pytorch's CRNN(32, 1, 37, 256) (its crnn.pth)
OFFICIAL = {
    "cnn.conv0.weight": (64, 1, 3, 3), "cnn.conv1.weight": (128, 64, 3, 3), "cnn.conv2.weight": (256, 128, 3, 3),
    "cnn.batchnorm2.running_var": (256,), "cnn.conv3.weight": (256, 256, 3, 3), "cnn.conv4.weight": (512, 256, 3, 3),
    "cnn.batchnorm4.weight": (512,), "cnn.conv5.weight": (512, 512, 3, 3), "cnn.conv6.weight": (512, 512, 2, 2),
    "cnn.batchnorm6.bias": (512,), "rnn.0.rnn.weight_ih_l0": (1024, 512), "rnn.0.rnn.weight_hh_l0_reverse": (1024, 256),
    "rnn.0.embedding.weight": (256, 512), "rnn.1.rnn.weight_ih_l0": (1024, 256), "rnn.1.embedding.weight": (37, 512),
    "rnn.1.embedding.bias": (37,),
}


def test_layout_matches_the_official_checkpoint():
    sd = crnn.CRNNNet().state_dict()
    for k, shape in OFFICIAL.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith(("cnn.batchnorm0", "cnn.batchnorm1", "cnn.batchnorm3")) for k in sd)
    out = crnn.CRNNNet().eval()(torch.rand(2, 1, 32, 100))
    assert out.shape == (26, 2, 37)                      # 26 time steps for a 100-wide input


def test_prepare_is_textzoom_parse_crnn_data():
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (32, 128, 3), dtype=np.uint8) for _ in range(2)]
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in ims])
    x = F.interpolate(x, (32, 100), mode="bicubic")
    want = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    assert torch.allclose(crnn.prepare(ims), want, atol=1e-6)


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    seq = [0, 11, 11, 0, 11, 22, 22, 0, 0, 1, 36]        # a a <blank> a l l <blank> 0 z
    logits = F.one_hot(torch.tensor(seq), 37).float().unsqueeze(1)
    assert crnn.ctc_greedy_decode(logits) == ["aal0z"]


def test_loads_official_format_and_reads(tmp_path):
    torch.manual_seed(0)
    net = crnn.CRNNNet()
    sd = {f"module.{k}": v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "crnn.pth")                 # DataParallel prefix, no num_batches_tracked
    r = rec.build_recognizer("crnn", str(tmp_path / "crnn.pth"))
    ims = [np.full((32, 128, 3), v, np.uint8) for v in (0, 128, 255)]
    out = r.recognize(ims)
    assert len(out) == 3 and all(set(s) <= set(crnn.ALPHABET) for s in out)
    want = crnn.ctc_greedy_decode(net.eval()(crnn.prepare(ims)))
    assert out == want                                    # the file's weights, not a fresh init


def test_weights_of_another_network_are_named(tmp_path):
    sd = crnn.CRNNNet(nclass=11).state_dict()
    torch.save(sd, tmp_path / "crnn.pth")
    with pytest.raises(rec.RecognizerError, match=r"(?s)crnn.pth.*rnn.1.embedding.weight: file \(11, 512\)"):
        rec.build_recognizer("crnn", str(tmp_path / "crnn.pth"))
    torch.save({"cnn.conv0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "part.pth")
    with pytest.raises(rec.RecognizerError, match="missing .*cnn.conv0.bias"):
        rec.build_recognizer("crnn", str(tmp_path / "part.pth"))
