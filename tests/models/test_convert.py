"""``python -m stovtal.convert actionformer``: round trip through ActionFormer's checkpoint layout,
refusal of pickled files, unmapped / missing tensors, class-aware heads, config options."""

from __future__ import annotations

import re

import pytest
import torch

from stovtal.convert import ConversionError, convert_state_dict, infer_config
from stovtal.convert.__main__ import main
from stovtal.engine.checkpoint import build_model, load_model
from stovtal.models import ActionLocalizer, LocalizerConfig

# test oracle: stovtal name -> ActionFormer name (happyharrycn/actionformer_release, libs/modeling)
_INVERSE = [
    (r"^embed\.(\d+)\.(weight|bias)$", r"backbone.embd.\1.conv.\2", ""),
    (r"^embed_norms\.(\d+)\.(weight|bias)$", r"backbone.embd_norm.\1.\2", "ln"),
    (r"^(stem|branch)\.(\d+)\.norm([12])\.(weight|bias)$", r"backbone.\1.\2.ln\3.\4", "ln"),
    (r"^(stem|branch)\.(\d+)\.attn\.q_conv\.weight$", r"backbone.\1.\2.attn.query_conv.conv.weight", ""),
    (r"^(stem|branch)\.(\d+)\.attn\.k_conv\.weight$", r"backbone.\1.\2.attn.key_conv.conv.weight", ""),
    (r"^(stem|branch)\.(\d+)\.attn\.v_conv\.weight$", r"backbone.\1.\2.attn.value_conv.conv.weight", ""),
    (r"^(stem|branch)\.(\d+)\.attn\.q_norm\.(weight|bias)$", r"backbone.\1.\2.attn.query_norm.\3", "ln"),
    (r"^(stem|branch)\.(\d+)\.attn\.k_norm\.(weight|bias)$", r"backbone.\1.\2.attn.key_norm.\3", "ln"),
    (r"^(stem|branch)\.(\d+)\.attn\.v_norm\.(weight|bias)$", r"backbone.\1.\2.attn.value_norm.\3", "ln"),
    (r"^(stem|branch)\.(\d+)\.attn\.q_proj\.(weight|bias)$", r"backbone.\1.\2.attn.query.\3", "conv1"),
    (r"^(stem|branch)\.(\d+)\.attn\.k_proj\.(weight|bias)$", r"backbone.\1.\2.attn.key.\3", "conv1"),
    (r"^(stem|branch)\.(\d+)\.attn\.v_proj\.(weight|bias)$", r"backbone.\1.\2.attn.value.\3", "conv1"),
    (r"^(stem|branch)\.(\d+)\.attn\.out_proj\.(weight|bias)$", r"backbone.\1.\2.attn.proj.\3", "conv1"),
    (r"^(stem|branch)\.(\d+)\.attn\.rel_pe$", r"backbone.\1.\2.attn.rel_pe", "relpe"),
    (r"^(stem|branch)\.(\d+)\.mlp\.([03])\.(weight|bias)$", r"backbone.\1.\2.mlp.\3.\4", "conv1"),
    (r"^(stem|branch)\.(\d+)\.drop_path_(attn|mlp)\.scale$", r"backbone.\1.\2.drop_path_\3.scale", "ln"),
    (r"^level_norms\.(\d+)\.(weight|bias)$", r"neck.fpn_norms.\1.\2", "ln"),
    (r"^(cls|reg)_head\.tower\.convs\.(\d+)\.(weight|bias)$", r"\1_head.head.\2.conv.\3", ""),
    (r"^(cls|reg)_head\.tower\.norms\.(\d+)\.(weight|bias)$", r"\1_head.norm.\2.\3", "ln"),
    (r"^cls_head\.tower\.out\.(weight|bias)$", r"cls_head.cls_head.conv.\1", ""),
    (r"^reg_head\.tower\.out\.(weight|bias)$", r"reg_head.offset_head.conv.\1", ""),
]


def to_actionformer(model: ActionLocalizer) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        if k == "loss_normalizer":
            continue
        if k == "reg_head.scales":
            out.update({f"reg_head.scale.{i}.scale": s.clone() for i, s in enumerate(v)})
            continue
        for pat, repl, kind in _INVERSE:
            if re.match(pat, k):
                name = re.sub(pat, repl, k)
                if kind == "ln":
                    v = v.reshape(1, -1, 1)
                elif kind == "conv1" and v.dim() == 2:
                    v = v[:, :, None]
                elif kind == "relpe":
                    v = v[None, None]
                out[name] = v.clone()
                break
        else:
            raise AssertionError(f"no ActionFormer name for {k}")
    # non-learned buffers an ActionFormer state dict may hold
    out["point_generator.buffer_points.0"] = torch.zeros(4, 4)
    return out


def _model(**kw):
    base = dict(input_dim=16, embed_dim=32, head_dim=32, num_heads=4, window=[5, 5, 5, 5, 5, -1], max_seq_len=256,
                use_abs_pe=True, label_smoothing=0.1, reg_loss_weight=2.0, loss_normalizer_init=200.0)
    base.update(kw)
    torch.manual_seed(0)
    m = ActionLocalizer(LocalizerConfig(**base))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


YAML = """dataset: {max_seq_len: 256, input_dim: 16, num_classes: 1}
model: {n_mha_win_size: [5, 5, 5, 5, 5, -1], n_head: 4, embd_dim: 32, fpn_dim: 32, head_dim: 32, use_abs_pe: true,
        max_buffer_len_factor: 6.0}
train_cfg: {init_loss_norm: 200, label_smoothing: 0.1, loss_weight: 2.0, droppath: 0.1}
test_cfg: {voting_thresh: 0.9, pre_nms_topk: 2000, max_seg_num: 100, min_score: 0.001, nms_sigma: 0.75,
           duration_thresh: 0.001}
"""


def test_round_trip_through_the_actionformer_layout(tmp_path):
    model = _model()
    af = to_actionformer(model)
    ckpt = tmp_path / "epoch_010.pth.tar"
    torch.save({"epoch": 10, "state_dict": {"module." + k: v * 0 for k, v in af.items()},
                "state_dict_ema": {"module." + k: v for k, v in af.items()}}, ckpt)
    cfg_file = tmp_path / "anet.yaml"
    cfg_file.write_text(YAML)
    out = tmp_path / "model.pt"
    assert main(["actionformer", str(ckpt), "--out", str(out), "--config", str(cfg_file)]) == 0
    mf = load_model(out)
    assert mf.kind == "localizer" and mf.meta["source"] == "actionformer"
    c = mf.model_config
    assert c["window"] == [5, 5, 5, 5, 5, -1] and c["use_abs_pe"] and c["label_smoothing"] == 0.1
    assert c["reg_loss_weight"] == 2.0 and c["loss_normalizer_init"] == 200.0 and c["nms"]["max_keep"] == 100
    assert c["nms"]["sigma"] == 0.75 and c["nms"]["voting_threshold"] == 0.9 and c["min_duration"] == 0.001
    loaded = build_model(mf, str(out))
    x, mask = torch.randn(2, 16, 120), torch.ones(2, 120, dtype=torch.bool)
    mask[1, 70:] = False
    a, b = model(x, mask), loaded(x, mask)
    for la, lb in zip(a.logits + a.offsets, b.logits + b.offsets, strict=True):
        assert torch.equal(la, lb)
    # --weights model takes state_dict (zeroed above): different weights
    out2 = tmp_path / "raw.pt"
    assert main(["actionformer", str(ckpt), "--out", str(out2), "--config", str(cfg_file), "--weights", "model"]) == 0
    assert torch.count_nonzero(load_model(out2).state_dict["embed.0.weight"]) == 0


class Opaque:
    """An object that only unpickling could rebuild (as ActionFormer's yacs / argparse objects)."""


def test_file_needing_pickle_is_refused_not_unpickled(tmp_path):
    ckpt = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict_ema": to_actionformer(_model()), "config": Opaque()}, ckpt)
    with pytest.raises(ConversionError, match="weights_only=True.*refuses"):
        from stovtal.convert import load_actionformer_checkpoint
        load_actionformer_checkpoint(ckpt)
    assert main(["actionformer", str(ckpt), "--out", str(tmp_path / "m.pt")]) == 2
    assert not (tmp_path / "m.pt").exists()


def test_unmapped_and_missing_tensors_are_listed():
    model = _model()
    af = to_actionformer(model)
    af["backbone.extra_proj.weight"] = torch.zeros(3)
    del af["backbone.stem.1.attn.key_norm.bias"]
    cfg = infer_config(af, {"window": [5, 5, 5, 5, 5, -1], "max_seq_len": 256, "use_abs_pe": True})
    fresh = ActionLocalizer(LocalizerConfig(**cfg))
    with pytest.raises(ConversionError) as err:
        convert_state_dict(af, fresh.state_dict())
    msg = str(err.value)
    assert "backbone.extra_proj.weight" in msg and "stem.1.attn.k_norm.bias" in msg


def test_shapes_decide_the_sizes_and_contradictions_are_errors():
    af = to_actionformer(_model(embed_with_ln=False, head_layers=2, use_rel_pe=True, window=5, use_abs_pe=False))
    cfg = infer_config(af, {"max_seq_len": 256})
    assert (cfg["input_dim"], cfg["embed_dim"], cfg["head_dim"], cfg["head_layers"]) == (16, 32, 32, 2)
    assert not cfg["embed_with_ln"] and cfg["use_rel_pe"] and cfg["window"] == [5] * 6 and cfg["num_heads"] == 4
    assert cfg["scale_factor"] == 2 and (cfg["stem_layers"], cfg["branch_layers"]) == (2, 5)
    with pytest.raises(ConversionError, match="embed_dim"):
        infer_config(af, {"embed_dim": 64})


def test_class_aware_checkpoint_becomes_max_over_class_probabilities(tmp_path):
    model = _model(head_num_classes=20)
    ckpt = tmp_path / "thumos_i3d.pth.tar"
    torch.save({"state_dict_ema": to_actionformer(model)}, ckpt)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(YAML)
    out = tmp_path / "model.pt"
    assert main(["actionformer", str(ckpt), "--out", str(out), "--config", str(cfg_file)]) == 0
    mf = load_model(out)
    assert mf.model_config["head_num_classes"] == 20
    loaded = build_model(mf)
    x, mask = torch.randn(1, 16, 90), torch.ones(1, 90, dtype=torch.bool)
    ref = model(x, mask)
    for a, b in zip(ref.logits, loaded(x, mask).logits, strict=True):
        assert torch.equal(a, b)
    assert loaded.cls_head.tower.out.weight.shape[0] == 20


def test_unsupported_reference_options_are_refused(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: {backbone_type: conv}\n")
    ckpt = tmp_path / "x.pth.tar"
    torch.save({"state_dict_ema": to_actionformer(_model())}, ckpt)
    assert main(["actionformer", str(ckpt), "--out", str(tmp_path / "m.pt"), "--config", str(cfg_file)]) == 2
    with pytest.raises(FileNotFoundError):
        from stovtal.convert import load_actionformer_checkpoint
        load_actionformer_checkpoint(tmp_path / "missing.pth.tar")
