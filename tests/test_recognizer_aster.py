"""ASTER recogniser: official layout and key names, TextZoom's input preparation, beam-search decoding,
strict loading."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import recognition as rec
from harness.recognizers import aster

# Key names and shapes of TextZoom's RecognizerBuilder('ResNet_ASTER', rec_num_classes=97, sDim=512,
# attDim=512, max_len_labels=100, eos=94, STN_ON=True), read from JasonBoy1/TextZoom @ f5b887b
# src/model/recognizer/{recognizer_builder,stn_head,tps_spatial_transformer,resnet_aster,
# attention_recognition_head}.py (= ayumiymk/aster.pytorch @ be67004 lib/models/, the demo.pth.tar net).
OFFICIAL = {
    "stn_head.stn_convnet.0.0.weight": (32, 3, 3, 3), "stn_head.stn_convnet.0.0.bias": (32,),
    "stn_head.stn_convnet.4.1.running_mean": (128,), "stn_head.stn_convnet.10.0.weight": (256, 256, 3, 3),
    "stn_head.stn_fc1.0.weight": (512, 512), "stn_head.stn_fc1.1.running_var": (512,),
    "stn_head.stn_fc2.weight": (40, 512), "stn_head.stn_fc2.bias": (40,),
    "tps.inverse_kernel": (23, 23), "tps.padding_matrix": (3, 2), "tps.target_coordinate_repr": (3200, 23),
    "tps.target_control_points": (20, 2),
    "encoder.layer0.0.weight": (32, 3, 3, 3), "encoder.layer0.1.running_mean": (32,),
    "encoder.layer1.0.conv1.weight": (32, 32, 1, 1), "encoder.layer1.0.downsample.0.weight": (32, 32, 1, 1),
    "encoder.layer2.3.conv2.weight": (64, 64, 3, 3), "encoder.layer3.0.downsample.0.weight": (128, 64, 1, 1),
    "encoder.layer4.5.bn2.running_var": (256,), "encoder.layer5.0.conv1.weight": (512, 256, 1, 1),
    "encoder.layer5.2.conv2.weight": (512, 512, 3, 3),
    "encoder.rnn.weight_ih_l0": (1024, 512), "encoder.rnn.weight_hh_l0_reverse": (1024, 256),
    "encoder.rnn.weight_ih_l1": (1024, 512), "encoder.rnn.bias_hh_l1_reverse": (1024,),
    "decoder.decoder.attention_unit.sEmbed.weight": (512, 512), "decoder.decoder.attention_unit.xEmbed.bias": (512,),
    "decoder.decoder.attention_unit.wEmbed.weight": (1, 512), "decoder.decoder.tgt_embedding.weight": (98, 512),
    "decoder.decoder.gru.weight_ih_l0": (1536, 1024), "decoder.decoder.gru.weight_hh_l0": (1536, 512),
    "decoder.decoder.fc.weight": (97, 512), "decoder.decoder.fc.bias": (97,),
}
N_OFFICIAL_ENTRIES = 384  # state_dict() entries of that RecognizerBuilder, counted on an instance of it


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _lively_net(seed: int) -> aster.ASTERNet:
    """A random ASTERNet whose reading depends on the image (a default init reads every crop alike)."""
    torch.manual_seed(seed)
    net = aster.ASTERNet()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.encoder.modules():                               # resnet_aster.py's own conv init
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for p in net.decoder.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        net.decoder.decoder.fc.bias[aster.EOS] -= 1.0              # sequences end, at varied lengths
        net.stn_head.stn_fc2.bias.add_(0.05 * torch.randn(40, generator=g))
    return net.eval()


def _crops(n: int, hw: tuple[int, int] = (32, 128), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def test_layout_matches_the_official_checkpoint():
    net = aster.ASTERNet().eval()
    sd = net.state_dict()
    for k, shape in OFFICIAL.items():
        assert tuple(sd[k].shape) == shape, k
    assert len(sd) == N_OFFICIAL_ENTRIES
    assert "encoder.layer1.1.downsample.0.weight" not in sd       # only a stage's first block has one
    assert not any(k.startswith("rec_crit") for k in sd)
    assert (len(aster.VOC), aster.EOS, aster.UNKNOWN) == (97, 94, 96)
    x = torch.rand(2, 3, 32, 128) * 2 - 1                            # TextZoom's SR output size
    with torch.no_grad():
        assert net.rectify(x).shape == (2, 3, 32, 100)
        assert net.encode(x).shape == (2, 25, 512)
        ids = net(x)
    assert ids.shape == (2, 100) and ids.dtype == torch.long and 0 <= ids.min() and ids.max() < 97


def test_tps_at_its_own_control_points_is_a_plain_resize():
    """Source points = target points: the spline is the identity, so TPS = bilinear resize (align_corners=True)."""
    tps = aster.ASTERNet().tps
    x = torch.rand(2, 3, 32, 128)
    pts = tps.target_control_points.expand(2, 20, 2)
    y = torch.cat([pts[:1], tps.padding_matrix[None]], 1)
    coords = tps.target_coordinate_repr @ (tps.inverse_kernel @ y)             # (1, 3200, 2) in [0, 1]
    ys, xs = torch.meshgrid(torch.arange(32) / 31.0, torch.arange(100) / 99.0, indexing="ij")
    assert (coords[0] - torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)).abs().max() < 1e-4   # float32 solve
    want = F.interpolate(x, (32, 100), mode="bilinear", align_corners=True)
    assert (tps(x, pts) - want).abs().max() < 3e-3       # 0.003 px of coordinate error; align_corners=False: 0.14
    k = tps.target_control_points
    assert torch.allclose(k[:10, 1], torch.full((10,), 0.05)) and torch.allclose(k[10:, 1], torch.full((10,), 0.95))
    assert torch.allclose(k[:10, 0], torch.linspace(0.05, 0.95, 10))


def test_prepare_is_textzoom_parse_aster_data():
    ims = _crops(2)
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in ims])   # ToTensor, [0, 1]
    want = x * 2 - 1                                                                        # parse_aster_data
    assert torch.allclose(aster.prepare(ims), want, atol=1e-6)
    assert aster.prepare(_crops(1, (16, 64))).shape == (1, 3, 16, 64)                      # LR: fed as it is
    with pytest.raises(ValueError, match="one size"):
        aster.prepare(_crops(1) + _crops(1, (16, 64)))


def test_ids_to_strings_is_get_str_list():
    v = aster.VOC
    assert v[10] == "a" and v[36] == "A" and v[62] == "!" and v[aster.EOS] == "EOS"
    ids = [v.index(c) for c in ["H", "e", "!", "PADDING", "UNKNOWN", "l", "9", "EOS", "x"]]
    no_eos = [v.index(c) for c in "Ab1"]
    out = aster.ids_to_strings(torch.tensor([ids, no_eos + [v.index("z")] * 6]))
    assert out == ["hel9", "ab1zzzzzz"]
    assert aster.ids_to_strings(torch.tensor([[aster.EOS, 10, 11]])) == [""]


# ---- beam search: a toy decoder whose next-symbol scores depend on (sample, previous symbol, step)


def _toy_step(table: torch.Tensor):
    """table: (B, T, C+1, C) logits; state (1, N, 2) = [sample, step] travels with the beams."""
    def step(y, state):
        b, t = state[0, :, 0].long(), state[0, :, 1].long()
        return table[b, t, y], state + torch.tensor([0.0, 1.0])
    return step


def _toy_state(batch: int, beams: int) -> torch.Tensor:
    b = torch.arange(batch).repeat_interleave(beams).float()
    return torch.stack([b, torch.zeros_like(b)], 1).unsqueeze(0)


def _official_beam_search(step, state, batch_size, beam_width, max_len, num_classes, eos):
    """aster.pytorch's AttentionRecognitionHead.beam_search as written (CPU, '//' for its old integer '/').

    Returns the best sequences and, per sample, how many ended hypotheses the backtracking met.
    """
    k, c = beam_width, num_classes
    pos_index = (torch.arange(batch_size) * k).view(-1, 1)
    sequence_scores = torch.full((batch_size * k, 1), -float("inf"))
    sequence_scores.index_fill_(0, torch.arange(batch_size) * k, 0.0)
    y_prev = torch.full((batch_size * k,), c, dtype=torch.long)
    stored_scores, stored_predecessors, stored_emitted_symbols = [], [], []
    for _ in range(max_len):
        output, state = step(y_prev, state)
        sequence_scores = sequence_scores.repeat(1, c) + F.log_softmax(output, dim=1)
        scores, candidates = sequence_scores.view(batch_size, -1).topk(k, dim=1)
        y_prev = (candidates % c).view(batch_size * k)
        sequence_scores = scores.view(batch_size * k, 1)
        predecessors = (candidates // c + pos_index.expand_as(candidates)).view(batch_size * k, 1)
        state = state.index_select(1, predecessors.squeeze())
        stored_scores.append(sequence_scores.clone())
        sequence_scores.masked_fill_(y_prev.view(-1, 1).eq(eos), -float("inf"))
        stored_predecessors.append(predecessors)
        stored_emitted_symbols.append(y_prev)
    p = []
    sorted_score, sorted_idx = stored_scores[-1].view(batch_size, k).topk(k)
    s = sorted_score.clone()
    batch_eos_found = [0] * batch_size
    t_predecessors = (sorted_idx + pos_index.expand_as(sorted_idx)).view(batch_size * k)
    for t in range(max_len - 1, -1, -1):
        current_symbol = stored_emitted_symbols[t].index_select(0, t_predecessors)
        t_predecessors = stored_predecessors[t].index_select(0, t_predecessors).squeeze()
        eos_indices = stored_emitted_symbols[t].eq(eos).nonzero()
        for i in range(eos_indices.size(0) - 1, -1, -1):
            idx = eos_indices[i]
            b_idx = int(idx[0]) // k
            res_k_idx = k - (batch_eos_found[b_idx] % k) - 1
            batch_eos_found[b_idx] += 1
            res_idx = b_idx * k + res_k_idx
            t_predecessors[res_idx] = stored_predecessors[t][idx[0]]
            current_symbol[res_idx] = stored_emitted_symbols[t][idx[0]]
            s[b_idx, res_k_idx] = stored_scores[t][idx[0], [0]]
        p.append(current_symbol)
    s, re_sorted_idx = s.topk(k)
    re_sorted_idx = (re_sorted_idx + pos_index.expand_as(re_sorted_idx)).view(batch_size * k)
    p = [step_.index_select(0, re_sorted_idx).view(batch_size, k, -1) for step_ in reversed(p)]
    return torch.cat(p, -1)[:, 0, :], batch_eos_found


def test_beam_search_finds_what_greedy_misses():
    # symbols a=0, b=1, EOS=2; start=3. Bigram: start -> a .6 / b .4; a -> a .45 b .3 EOS .25; b -> EOS .9
    probs = torch.tensor([[0.45, 0.30, 0.25], [0.05, 0.05, 0.90], [1 / 3] * 3, [0.6, 0.4, 1e-9]])
    table = probs.log().expand(1, 6, 4, 3)
    voc = ["a", "b", "EOS"]
    beam = aster.beam_search(_toy_step(table), _toy_state(1, 2), 1, 2, 6, 3, eos=2)
    greedy = aster.greedy_search(_toy_step(table), _toy_state(1, 1), 1, 6, 3)
    assert beam[0, :2].tolist() == [1, 2]                              # "b" EOS: p = .36
    assert aster.ids_to_strings(beam, voc, eos=2, unknown=-1) == ["b"]
    assert aster.ids_to_strings(greedy, voc, eos=2, unknown=-1) == ["aaaaaa"]   # a-a-... : .6 x .45^5


@pytest.mark.parametrize("beams,eos_bias", [(2, 1.5), (5, 2.0), (5, 0.0), (3, -1.0)])
def test_beam_search_equals_the_official_one(beams, eos_bias):
    """Random toy decoders; strong EOS biases make many hypotheses end, so the slot replacement is exercised."""
    batch, steps, c, eos = 4, 12, 6, 5
    g = torch.Generator().manual_seed(beams * 10 + int(eos_bias * 2))
    met_ended = 0
    for _ in range(5):
        table = torch.randn(batch, steps, c + 1, c, generator=g)
        table[..., eos] += eos_bias
        want, found = _official_beam_search(_toy_step(table), _toy_state(batch, beams), batch, beams, steps, c, eos)
        got = aster.beam_search(_toy_step(table), _toy_state(batch, beams), batch, beams, steps, c, eos)
        assert torch.equal(got, want)
        met_ended = max(met_ended, max(found))
    if eos_bias > 0:
        assert met_ended > beams                                       # more ended than slots


def test_beam_width_one_reads_as_greedy():
    g = torch.Generator().manual_seed(3)
    voc = list("abcde") + ["EOS"]
    for _ in range(5):
        table = torch.randn(3, 15, 7, 6, generator=g)
        table[..., 5] += 0.5
        beam = aster.beam_search(_toy_step(table), _toy_state(3, 1), 3, 1, 15, 6, eos=5)
        greedy = aster.greedy_search(_toy_step(table), _toy_state(3, 1), 3, 15, 6)
        assert aster.ids_to_strings(beam, voc, 5, -1) == aster.ids_to_strings(greedy, voc, 5, -1)


# ---- the released file's format and strict loading


def test_loads_official_format_and_reads(tmp_path):
    net = _lively_net(0)
    sd = collections.OrderedDict(net.state_dict())
    # aster.pytorch's trainer: torch.save({'state_dict', 'iters', 'best_res'}) under PyTorch 1.1 (no zip)
    torch.save({"state_dict": sd, "iters": 1000, "best_res": 0.9}, tmp_path / "demo.pth.tar",
               _use_new_zipfile_serialization=False)
    r = rec.build_recognizer("aster", str(tmp_path / "demo.pth.tar"))
    loaded = r._impl.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())      # the file's weights, not a fresh init
    big, small = _crops(3), _crops(2, (16, 64), seed=1)
    ims = [big[0], small[0], big[1], big[2], small[1]]                 # mixed sizes, read per size
    out = r.recognize(ims)
    with torch.no_grad():
        want_big = aster.ids_to_strings(net(aster.prepare(big)))
        want_small = aster.ids_to_strings(net(aster.prepare(small)))
    assert out == [want_big[0], want_small[0], want_big[1], want_big[2], want_small[1]]
    assert len(set(out)) > 1 and all(set(s) <= set("0123456789abcdefghijklmnopqrstuvwxyz") for s in out)


def test_weights_of_another_network_are_named(tmp_path):
    sd = aster.ASTERNet(num_classes=39).state_dict()                   # voc_type 'lower': 36 + 3
    torch.save({"state_dict": sd}, tmp_path / "demo.pth.tar")
    with pytest.raises(rec.RecognizerError, match=r"(?s)demo.pth.tar.*decoder.decoder.fc.weight: file \(39, 512\)"):
        rec.build_recognizer("aster", str(tmp_path / "demo.pth.tar"))
    torch.save({"state_dict": {"encoder.layer0.0.weight": torch.zeros(32, 3, 3, 3)}}, tmp_path / "part.pth.tar")
    with pytest.raises(rec.RecognizerError, match=r"missing .*encoder.layer0.1.weight"):
        rec.build_recognizer("aster", str(tmp_path / "part.pth.tar"))


@pytest.mark.cuda
def test_cuda_reads_like_cpu():
    net = _lively_net(0)
    x = aster.prepare(_crops(3))
    with torch.no_grad():
        f_cpu = net.encode(x)
        gpu = net.to("cuda")
        f_gpu = gpu.encode(x.cuda()).cpu()
        ids = gpu(x.cuda())
    assert (f_cpu - f_gpu).abs().max() < 1e-2 * f_cpu.abs().max()
    assert ids.shape == (3, 100) and ids.device.type == "cuda"
