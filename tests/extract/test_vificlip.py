"""ViFi-CLIP checkpoints (muzairkhattak/ViFi-CLIP key layout) load onto open_clip: the same
image and text features as the open_clip checkpoint they were built from."""

from __future__ import annotations

import sys
import types

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from stovtal.models import OpenClipTextEncoder  # noqa: E402
from stovtal.models.open_clip_loading import load_open_clip  # noqa: E402
from stovtal.models.vificlip import is_vificlip, vificlip_to_open_clip  # noqa: E402

_TEXT = ("transformer.", "positional_embedding", "ln_final.", "text_projection")


def to_vificlip_layout(sd):
    """ViFi-CLIP's names (trainers/vificlip.py: image_encoder = clip.visual, text_encoder =
    TextEncoder(clip), logit_scale, prompt_learner buffers), DDP-prefixed; no token embedding."""
    out = {}
    for k, v in sd.items():
        if k.startswith("visual."):
            out["module.image_encoder." + k[len("visual."):]] = v.clone()
        elif k.startswith(_TEXT):
            out["module.text_encoder." + k] = v.clone()
        elif k == "logit_scale":
            out["module.logit_scale"] = v.clone()
    out["module.prompt_learner.complete_text_embeddings"] = torch.zeros(3, 77, sd["ln_final.weight"].shape[0])
    return out


def _save_with_yacs_config(path, state_dict, cls_module="yacs.config", cls_name="CfgNode"):
    """torch.save a ViFi-CLIP-like file whose 'config' is an instance of a class importable as
    ``cls_module.cls_name`` only while saving (as a yacs CfgNode in a real ViFi-CLIP file)."""
    mod = types.ModuleType(cls_module)
    cfg_cls = type(cls_name, (dict,), {"__module__": cls_module})
    cfg_cls.__qualname__ = cls_name
    setattr(mod, cls_name, cfg_cls)
    saved = {name: sys.modules.get(name) for name in ("yacs", cls_module)}
    sys.modules.setdefault(cls_module.split(".")[0], types.ModuleType(cls_module.split(".")[0]))
    sys.modules[cls_module] = mod
    try:
        cfg = cfg_cls(MODEL=cfg_cls(ARCH="ViT-B/16"), TRAIN=cfg_cls(EPOCHS=10))
        cfg.__dict__["__immutable__"] = True
        torch.save({"model": state_dict, "epoch": 10, "max_accuracy": 0.5, "config": cfg}, path)
    finally:
        for name, m in saved.items():
            if m is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = m


@pytest.fixture()
def vifi(tmp_path, tiny_clip):
    cfg_json, ckpt = tiny_clip
    ref = load_open_clip(cfg_json, ckpt)
    path = tmp_path / "vificlip_k400.pth"
    _save_with_yacs_config(path, to_vificlip_layout(ref.model.state_dict()))
    return cfg_json, ckpt, path, ref


def test_mapping_accounts_for_every_tensor(vifi):
    _, _, _, ref = vifi
    sd = to_vificlip_layout(ref.model.state_dict())
    assert is_vificlip(sd) and not is_vificlip(ref.model.state_dict())
    mapped, unmapped = vificlip_to_open_clip(sd)
    assert unmapped == []
    own = ref.model.state_dict()
    assert set(own) - set(mapped) == {"token_embedding.weight"} and set(mapped) <= set(own)


def test_same_image_features_with_either_format(vifi):
    cfg_json, _, path, ref = vifi
    loaded = load_open_clip(cfg_json, path, require_text=False)  # what python -m stovtal.extract does
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(x), ref.model.encode_image(x))


def test_same_text_embeddings_with_a_base_checkpoint(vifi):
    cfg_json, ckpt, path, ref = vifi
    names = ["high jump", "pole vault"]
    a = OpenClipTextEncoder(cfg_json, path, "a video of {}.", base_checkpoint=ckpt).encode(names)
    b = OpenClipTextEncoder(cfg_json, ckpt, "a video of {}.").encode(names)
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_text_without_a_base_checkpoint_says_what_is_missing(vifi):
    cfg_json, _, path, _ = vifi
    with pytest.raises(RuntimeError, match="token_embedding.weight.*base checkpoint"):
        load_open_clip(cfg_json, path)


def test_unmapped_tensors_are_listed(tmp_path, vifi):
    cfg_json, _, _, ref = vifi
    sd = to_vificlip_layout(ref.model.state_dict())
    sd["module.temporal_head.weight"] = torch.zeros(2)
    path = tmp_path / "odd.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(RuntimeError, match="module.temporal_head.weight"):
        load_open_clip(cfg_json, path, require_text=False)


def test_other_pickled_objects_are_refused(tmp_path, vifi):
    cfg_json, _, _, ref = vifi
    path = tmp_path / "evil.pth"
    _save_with_yacs_config(path, to_vificlip_layout(ref.model.state_dict()), cls_module="someproject.cfg",
                           cls_name="Config")
    with pytest.raises(RuntimeError, match="weights_only=True.*torch.save\\(ck\\['model'\\]"):
        load_open_clip(cfg_json, path, require_text=False)
