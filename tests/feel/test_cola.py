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


def test_cas_is_non_negative_with_the_classifier_relu():
    model, feats, mask, _ = _tiny()
    out = model(feats, mask)
    assert (out["cas"] >= 0).all() and (out["actionness"] >= 0).all()
    assert (out["cas"] > 0).any()
    model.cfg.cas_relu = False
    assert (model(feats, mask)["cas"] < 0).any()


def test_zero_border_padding_is_colas_conv():
    model, feats, _, _ = _tiny()
    model.cfg.border = "zero"
    model.eval()
    mask = torch.ones(feats.shape[0], feats.shape[2], dtype=torch.bool)
    emb = torch.relu(torch.nn.functional.conv1d(feats, model.embed.weight, model.embed.bias, padding=1))
    torch.testing.assert_close(model(feats, mask)["embeddings"], emb.transpose(1, 2))


def test_thumos14_inference_matches_colas_rules():
    """Proposals before NMS with the THUMOS14 config's settings against an oracle written from
    CoLA's ``core/utils.py`` (16-frame snippets at 25 fps, upsampling x24)."""
    import numpy as np

    from stovtal.feel.config import load_config
    from stovtal.models.cola_inference import video_proposals

    from .cola_reference import cola_proposals

    loc = load_config("stovtal/feel/configs/thumos14.yaml").localize
    cfg = LocalizeConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(loc).items()})
    g = torch.Generator().manual_seed(3)
    for trial in range(6):
        t, k = 20 + 7 * trial, 4
        cas = torch.relu(torch.randn(t, k, generator=g)).double()
        cas[5:12, trial % k] += 2.0
        scores = torch.softmax(torch.randn(k, generator=g) * 2, 0).double()
        ours = video_proposals(cas, cas.sum(1), scores, fps=25.0, stride=16, num_frames=16,
                               duration=1e6, cfg=cfg)
        ref = cola_proposals(cas.numpy(), cas.sum(1).numpy(), scores.numpy(), cfg.thresholds,
                             cfg.actionness_thresholds, cfg.upscale, 25.0)
        got = sorted(zip(ours["labels"].tolist(), ours["segments"][:, 0].tolist(),
                         ours["segments"][:, 1].tolist(), ours["scores"].tolist(), strict=True))
        want = sorted((c, s, e, sc) for c, sc, s, e in ref)
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-5)


def test_train_iterations_and_colas_optimizer():
    from stovtal.feel.cola import train_cola
    from stovtal.feel.config import load_config

    model, feats, _, labels = _tiny()
    cfg = load_config(None, ["train.iterations=5", "train.batch_size=2", "train.optimizer=adam",
                             "train.schedule=constant", "train.grad_clip=0", "progress=false"])
    steps = []
    model.register_forward_hook(lambda *_: steps.append(1))
    history = train_cola(model, [f for f in feats], labels, cfg, seed=0, device=torch.device("cpu"))
    assert len(steps) == 5 and len(history) == 3  # 2 batches per pass: 2 + 2 + 1
    with pytest.raises(ValueError, match="optimizer"):
        load_config(None, ["train.optimizer=sgd"])
