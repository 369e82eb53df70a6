"""CoLA model, losses and inference on tiny inputs."""

import pytest
import torch

from stovtal.models.cola import CoLA, CoLAConfig, binary_dilate, binary_erode, cola_losses
from stovtal.models.cola_inference import LocalizeConfig, localize_video, runs_above


def _tiny(k=3, c=8, t=40, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = CoLAConfig(in_dim=c, num_classes=k, embed_dim=16, dropout=0.0, r_easy=5, r_hard=10, m=2, M=4)
    torch.manual_seed(seed)
    model = CoLA(cfg)
    protos = torch.randn(k, c, generator=g) * 2
    labels = torch.arange(b) % k
    feats = 0.3 * torch.randn(b, c, t, generator=g)
    for i in range(b):
        s = 10 + 3 * i
        feats[i, :, s : s + 12] += protos[labels[i]][:, None]
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 30:] = False
    return model, feats, mask, labels


def test_morphology_matches_definition():
    x = torch.tensor([[0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1.0]])
    # erosion with 3: keep a point only if its whole window (outside = 0) is 1
    assert binary_erode(x, 3).tolist() == [[0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0]]
    assert binary_dilate(x, 3).tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]
    assert binary_dilate(torch.tensor([[0, 0, 0, 1.0, 0, 0, 0]]), 5).tolist() == [[0, 1, 1, 1, 1, 1, 0]]


def test_shapes_and_finite_losses_with_padding():
    model, feats, mask, labels = _tiny()
    out = model(feats, mask)
    assert out["cas"].shape == (4, 40, 3) and out["actionness"].shape == (4, 40)
    assert out["embeddings"].shape == (4, 40, 16)
    torch.testing.assert_close(out["video_scores"].sum(1), torch.ones(4))
    losses = cola_losses(model, out, labels, torch.Generator().manual_seed(0))
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    assert losses["snico"] > 0 and losses["action"] > 0
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # padded positions never influence the output of the valid ones beyond the conv border
    feats2 = feats.clone()
    feats2[1, :, 30:] = 100.0
    out2 = model(feats2, mask)
    torch.testing.assert_close(out2["video_scores"], out["video_scores"])


def test_video_borders_are_replicated_not_zero_padded():
    model, feats, mask, _ = _tiny()
    model.eval()
    # a constant video has constant activations, borders included (zero padding would not)
    const = feats[:1, :, :1].expand(1, 8, 25).contiguous()
    cas = model(const)["cas"][0]
    torch.testing.assert_close(cas, cas[12:13].expand_as(cas))
    # a video alone == the same video padded in a batch, on its valid snippets
    with torch.no_grad():
        batch = model(feats, mask)
        alone = model(feats[1:2, :, :30])
    for key in ("cas", "embeddings", "actionness"):
        torch.testing.assert_close(batch[key][1, :30], alone[key][0])
    torch.testing.assert_close(batch["video_scores"][1], alone["video_scores"][0])
    holes = mask.clone()
    holes[0, 5] = False
    with pytest.raises(ValueError, match="prefix"):
        model(feats, holes)


def test_fit_one_batch_decreases_losses():
    model, feats, mask, labels = _tiny(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(60):
        out = model(feats, mask)
        losses = cola_losses(model, out, labels, gen)
        if first is None:
            first = {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(feats, mask)
        last = cola_losses(model, out, labels, torch.Generator().manual_seed(0))
    assert float(last["action"]) < 0.5 * first["action"]
    assert float(last["total"]) < first["total"]
    assert torch.equal(out["video_scores"].argmax(1), labels)


def test_bad_inputs():
    model, feats, mask, labels = _tiny()
    with pytest.raises(ValueError, match="feats must be"):
        model(feats[:, :5])
    with pytest.raises(ValueError, match="mask"):
        model(feats, mask.float())
    out = model(feats, mask)
    with pytest.raises(ValueError, match="labels"):
        cola_losses(model, out, torch.tensor([0, 1, 2, 3]))


def test_runs_above():
    sig = torch.tensor([0.9, 0.1, 0.6, 0.7, 0.2, 0.8])
    assert runs_above(sig, 0.5).tolist() == [[0, 0], [2, 3], [5, 5]]
    assert runs_above(sig, 0.95).shape == (0, 2)


def test_localize_finds_the_activated_span_in_seconds():
    t, k = 50, 2
    cas = torch.full((t, k), -2.0)
    cas[20:30, 1] = 3.0
    act = cas.sum(1)
    scores = torch.tensor([0.1, 0.9])
    fps, stride, nf = 10.0, 4.0, 8.0
    out = localize_video(cas, act, scores, fps=fps, stride=stride, num_frames=nf, duration=25.0,
                         cfg=LocalizeConfig(thresholds=(0.5,), use_actionness=False))
    assert out["labels"].tolist() == [1]
    start = (20 * stride + nf / 2) / fps - stride / (2 * fps)
    end = (29 * stride + nf / 2) / fps + stride / (2 * fps)
    torch.testing.assert_close(out["segments"], torch.tensor([[start, end]]))
    assert out["scores"][0] > 0.9  # inside 1, outside 0 (+ gamma * 0.9)
