import math

import pytest
import torch

import stovtal  # noqa: F401
from stovtal.models import ActionLocalizer, LocalizerConfig, NMSConfig


def small_cfg(**kw):
    base = dict(input_dim=16, embed_dim=32, head_dim=32, num_heads=4, window=5, path_drop=0.0)
    base.update(kw)
    return LocalizerConfig(**base)


def test_default_config_is_the_authors():
    cfg = LocalizerConfig()
    assert (cfg.embed_layers, cfg.stem_layers, cfg.branch_layers) == (2, 2, 5)
    assert cfg.strides == [1, 2, 4, 8, 16, 32] and cfg.window == 19 and cfg.embed_dim == 512
    assert cfg.regression_ranges[-1] == [64.0, math.inf]
    assert (cfg.nms.sigma, cfg.nms.iou_threshold, cfg.nms.min_score, cfg.nms.max_keep, cfg.nms.voting_threshold) == (
        0.5, 0.1, 0.001, 200, 0.7)


@pytest.mark.parametrize("t", [1, 37, 64, 100])
def test_shapes_with_padding(t):
    torch.manual_seed(0)
    model = ActionLocalizer(small_cfg()).eval()
    x = torch.randn(3, 16, t)
    mask = torch.ones(3, t, dtype=torch.bool)
    mask[1, t // 2 + 1:] = False
    out = model(x, mask)
    t_pad = -(-t // 32) * 32
    assert [lg.shape for lg in out.logits] == [(3, t_pad // 2**i) for i in range(6)]
    assert [o.shape for o in out.offsets] == [(3, t_pad // 2**i, 2) for i in range(6)]
    assert out.points.shape == (sum(t_pad // 2**i for i in range(6)), 4)
    assert all((o >= 0).all() for o in out.offsets)
    # level masks: position i of level l is valid iff i * 2**l < the video's length
    for lvl, m in enumerate(out.masks):
        pos = torch.arange(m.shape[1]) * 2**lvl
        assert torch.equal(m[0], pos < t)
        assert torch.equal(m[1], pos < t // 2 + 1)


def test_padding_does_not_change_predictions():
    torch.manual_seed(1)
    model = ActionLocalizer(small_cfg()).eval()
    x = torch.randn(2, 16, 100)
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, 45:] = False
    x[1, :, 45:] = 1e3  # garbage in padded steps must not leak
    batched = model(x, mask)
    alone = model(x[1:, :, :45], mask[1:, :45])
    for a, b, m in zip(batched.logits, alone.logits, alone.masks, strict=True):
        assert torch.allclose(a[1, : b.shape[1]][m[0]], b[0][m[0]], atol=1e-4)
    for a, b, m in zip(batched.offsets, alone.offsets, alone.masks, strict=True):
        assert torch.allclose(a[1, : b.shape[1]][m[0]], b[0][m[0]], atol=1e-4)


def test_loss_and_gradients():
    torch.manual_seed(0)
    model = ActionLocalizer(small_cfg()).train()
    x = torch.randn(2, 16, 80)
    mask = torch.ones(2, 80, dtype=torch.bool)
    gts = [torch.tensor([[10.0, 25.0], [40.0, 70.0]]), torch.zeros(0, 2)]
    before = model.loss_normalizer.item()
    out = model.loss(x, mask, gts)
    assert out["num_pos"] > 0 and torch.isfinite(out["loss"])
    assert out["cls_loss"] > 0 and out["reg_loss"] > 0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the positive-count EMA moved towards the batch count (training mode only)
    mom = model.cfg.loss_normalizer_momentum
    assert math.isclose(model.loss_normalizer.item(), mom * before + (1 - mom) * out["num_pos"].item(), rel_tol=1e-6)
    model.eval()
    frozen = model.loss_normalizer.clone()
    model.loss(x, mask, gts)
    assert torch.equal(frozen, model.loss_normalizer)


def test_bad_inputs_are_rejected():
    model = ActionLocalizer(small_cfg())
    x = torch.randn(1, 16, 20)
    m = torch.ones(1, 20, dtype=torch.bool)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 8, 20), m)
    with pytest.raises(ValueError, match="masks"):
        model(x, m.float())
    with pytest.raises(ValueError, match="NaN"):
        model(x.masked_fill(x > 1, float("nan")), m)
    with pytest.raises(TypeError):
        model(x.long(), m)
    with pytest.raises(ValueError, match="non-empty"):
        model(torch.randn(1, 16, 0), torch.ones(1, 0, dtype=torch.bool))
    with pytest.raises(ValueError, match="segment lists"):
        model.loss(x, m, [])


def test_config_validation():
    with pytest.raises(ValueError, match="regression_ranges"):
        small_cfg(branch_layers=3)
    with pytest.raises(ValueError, match="odd"):
        small_cfg(window=4)
    with pytest.raises(ValueError, match="divisible"):
        small_cfg(embed_dim=30)
    with pytest.raises(ValueError, match="method"):
        NMSConfig(method="box")


def test_predict_returns_seconds_inside_the_video():
    torch.manual_seed(0)
    model = ActionLocalizer(small_cfg()).eval()
    x = torch.randn(2, 16, 64)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 30:] = False
    batch = {"feats": x, "masks": mask, "fps": [30.0, 25.0], "feat_stride": [4, 4],
             "feat_num_frames": [16, 16], "duration": [9.0, 5.0]}
    preds = model.predict(batch)
    for p, dur in zip(preds, [9.0, 5.0], strict=True):
        s = p["segments"]
        assert s.shape[0] > 0 and s.shape[0] <= 200
        assert (s[:, 0] >= 0).all() and (s[:, 1] <= dur).all() and (s[:, 1] > s[:, 0]).all()
        assert (p["scores"][:-1] >= p["scores"][1:]).all()
