import math

import pytest
import torch

import stovtal  # noqa: F401
from stovtal.models import ActionLocalizer, LocalizerConfig, NMSConfig


def small_cfg(**kw):
    base = dict(input_dim=16, embed_dim=32, head_dim=32, num_heads=4, window=5, path_drop=0.0, max_seq_len=128)
    base.update(kw)
    return LocalizerConfig(**base)


def test_default_config_is_the_authors():
    cfg = LocalizerConfig()
    assert (cfg.embed_layers, cfg.stem_layers, cfg.branch_layers) == (2, 2, 5)
    assert cfg.strides == [1, 2, 4, 8, 16, 32] and cfg.window == 19 and cfg.embed_dim == 512
    assert cfg.regression_ranges[-1] == [64.0, 10000.0] and cfg.max_seq_len == 2304
    assert (cfg.proj_drop, cfg.path_drop, cfg.attn_drop, cfg.num_heads) == (0.1, 0.1, 0.0, 4)
    assert cfg.embed_with_ln and cfg.fpn_with_ln and cfg.head_with_ln and not cfg.use_abs_pe and not cfg.use_rel_pe
    assert cfg.max_div_factor == 32 * 18
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
    t_pad = max(-(-t // 128) * 128, 128)  # max_div_factor: stride 32 x (window 5 // 2) x 2; >= max_seq_len
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


# ---------------------------------------------------------------- ActionFormer's architecture


def _perturb(model, seed=0):
    """Trained-like weights: LayerNorm biases, layer scales and head scales away from their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.3))
    return model


@pytest.mark.parametrize("kw", [
    {},  # local attention everywhere
    {"window": [5, 5, 5, 5, 5, -1], "use_abs_pe": True, "max_seq_len": 256},  # ActivityNet-like
    {"window": 5, "use_rel_pe": True, "scale_factor": 4, "branch_layers": 3,
     "regression_ranges": [[0, 4], [4, 16], [16, 64], [64, 10000]], "max_seq_len": 1280},
    {"window": -1, "embed_with_ln": False, "head_with_ln": False, "fpn_with_ln": False, "head_layers": 2},
])
def test_padding_invariance_with_trained_like_weights(kw):
    """A video's outputs do not depend on the padding its batch adds, also when LayerNorm biases
    make padded columns non-zero inside the network (as in ActionFormer)."""
    torch.manual_seed(0)
    model = _perturb(ActionLocalizer(small_cfg(**{"max_seq_len": 256, **kw}))).eval()
    x = torch.randn(2, 16, 300)
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[1, 77:] = False
    x[1, :, 77:] = 5.0  # non-zero values in padded steps must not leak
    batched = model(x, mask)
    alone = model(x[1:, :, :77], mask[1:, :77])
    checked = 0
    for name in ("logits", "offsets"):
        for a, b, m in zip(getattr(batched, name), getattr(alone, name), alone.masks, strict=True):
            n = int(m[0].sum())
            assert torch.allclose(a[1, :n], b[0, :n], rtol=1e-4, atol=1e-5), name
            checked += n
    assert checked > 0
    # the padded steps of the batch are masked out of every level
    assert all(not m[1, -(-77 // s):].any() for m, s in zip(batched.masks, model.cfg.strides, strict=True))


def test_levels_and_strides_follow_scale_factor():
    cfg = small_cfg(scale_factor=4, branch_layers=3, window=3, max_seq_len=512,
                    regression_ranges=[[0, 4], [4, 16], [16, 64], [64, 10000]])
    assert cfg.strides == [1, 4, 16, 64] and cfg.max_div_factor == 128
    model = ActionLocalizer(cfg).eval()
    out = model(torch.randn(1, 16, 200), torch.ones(1, 200, dtype=torch.bool))
    assert [lg.shape[1] for lg in out.logits] == [512, 128, 32, 8]  # padded to max_seq_len
    assert [int(m.sum()) for m in out.masks] == [200, 50, 13, 4]
    # points: (position, range lo, range hi, stride) level by level
    assert torch.equal(out.points[512:516, 0], torch.tensor([0.0, 4.0, 8.0, 12.0]))
    assert torch.equal(out.points[-1], torch.tensor([448.0, 64.0, 10000.0, 64.0]))
    # the downsampling happens inside the attention: strided depthwise convs with kernel stride + 1
    blk = model.branch[0]
    assert blk.attn.q_conv.stride == (4,) and blk.attn.q_conv.kernel_size == (5,) and blk.attn.q_conv.groups == 32


def test_block_parts_are_actionformers():
    model = ActionLocalizer(small_cfg(path_drop=0.1))
    blk = model.stem[0]
    assert blk.drop_path_attn.scale.shape == (32,) and torch.all(blk.drop_path_attn.scale == 1e-4)
    assert isinstance(ActionLocalizer(small_cfg(path_drop=0.0)).stem[0].drop_path_mlp, torch.nn.Identity)
    assert blk.mlp[0].weight.shape == (128, 32) and isinstance(blk.mlp[1], torch.nn.GELU)
    assert model.embed[0].bias is None  # LayerNorm after the embedding convs: no conv bias
    assert ActionLocalizer(small_cfg(embed_with_ln=False)).embed[0].bias is not None
    assert torch.allclose(model.cls_head.tower.out.bias, torch.tensor([math.log(0.01 / 0.99)]))
    assert torch.equal(model.reg_head.scales, torch.ones(6))


@pytest.mark.parametrize(("input_dim", "classes", "expected"), [
    (2048, 20, 29_251_612),  # ActionFormer's THUMOS14 I3D model (configs/thumos_i3d.yaml)
    (512, 1, 26_863_113),    # STOV-TAL's class-agnostic THUMOS14 localizer on 512-d ViFi-CLIP features
])
def test_thumos14_parameter_count_matches_the_reference(input_dim, classes, expected):
    # counts of the reference implementation (happyharrycn/actionformer_release) built with
    # the same configuration
    model = ActionLocalizer(LocalizerConfig(input_dim=input_dim, head_num_classes=classes))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_class_aware_head_takes_the_max_over_classes():
    torch.manual_seed(0)
    model = _perturb(ActionLocalizer(small_cfg(head_num_classes=5))).eval()
    x, mask = torch.randn(1, 16, 64), torch.ones(1, 64, dtype=torch.bool)
    out = model(x, mask)
    x, mask = torch.nn.functional.pad(x, (0, 64)), torch.nn.functional.pad(mask, (0, 64))  # the model's padding
    h = x
    for conv, norm in zip(model.embed, model.embed_norms, strict=True):
        h = torch.relu(norm(conv(h, mask)[0]))
    for blk in model.stem:
        h, _ = blk(h, mask)
    levels = model.cls_head.tower(model.level_norms[0](h), mask)
    assert levels.shape == (1, 5, 128)
    assert torch.allclose(out.logits[0], levels.max(dim=1).values)


def test_label_smoothing_and_adaptive_loss_weight():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 64)
    mask = torch.ones(1, 64, dtype=torch.bool)
    gts = [torch.tensor([[10.0, 30.0]])]
    m0 = ActionLocalizer(small_cfg(proj_drop=0.0, path_drop=0.0)).eval()
    m1 = ActionLocalizer(small_cfg(proj_drop=0.0, path_drop=0.0, label_smoothing=0.2, reg_loss_weight=-1)).eval()
    m1.load_state_dict(m0.state_dict())
    a, b = m0.loss(x, mask, gts), m1.loss(x, mask, gts)
    assert torch.allclose(a["reg_loss"], b["reg_loss"]) and not torch.allclose(a["cls_loss"], b["cls_loss"])
    # adaptive weight: loss = cls + cls / max(reg, 0.01) * reg
    w = b["cls_loss"] / max(b["reg_loss"].item(), 0.01)
    assert torch.allclose(b["loss"], b["cls_loss"] + w * b["reg_loss"])


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match="max_seq_len"):
        small_cfg(max_seq_len=100)
    with pytest.raises(ValueError, match="window"):
        small_cfg(window=[5, 5])
    with pytest.raises(ValueError, match="use_rel_pe"):
        small_cfg(window=-1, use_rel_pe=True)
    with pytest.raises(ValueError, match="scale_factor"):
        small_cfg(scale_factor=3)
    model = ActionLocalizer(small_cfg(max_seq_len=128, max_buffer_len_factor=1.0)).eval()
    with pytest.raises(ValueError, match="max_buffer_len_factor"):
        model(torch.randn(1, 16, 200), torch.ones(1, 200, dtype=torch.bool))
    pe = ActionLocalizer(small_cfg(window=[5, 5, 5, 5, 5, -1], use_abs_pe=True, max_seq_len=128)).train()
    with pytest.raises(ValueError, match="max_seq_len"):
        pe.loss(torch.randn(1, 16, 200), torch.ones(1, 200, dtype=torch.bool), [torch.zeros(0, 2)])
