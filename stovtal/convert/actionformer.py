"""ActionFormer / STOV-TAL localizer checkpoints -> :class:`stovtal.models.ActionLocalizer`.

ActionFormer (happyharrycn/actionformer_release) saves ``{"state_dict", "state_dict_ema",
"optimizer", "scheduler", "epoch"}`` with parameter names such as
``backbone.stem.0.attn.query_conv.conv.weight`` (``module.``-prefixed when trained with
``DataParallel``); STOV-TAL (HYUNJS/STOV-TAL) keeps that layout. :func:`convert_state_dict`
renames and reshapes every tensor, :func:`infer_config` reads the architecture sizes from the
tensor shapes and takes the options that shapes do not show (attention windows, heads,
position encodings, ranges, losses, decoding) from the authors' YAML config
(:func:`config_from_actionformer_yaml`) or, without one, from ActionFormer's defaults
(``libs/core/config.py``).

A class-aware checkpoint (``num_classes > 1``) keeps its per-class classification outputs
(``LocalizerConfig.head_num_classes``): the localizer's actionness logit is their maximum,
so its actionness probability is the maximum over classes of the class probabilities, as
ActionFormer's own class-agnostic use of such a model would rank a point.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ACTIONFORMER_DEFAULTS",
    "ConversionError",
    "config_from_actionformer_yaml",
    "convert_state_dict",
    "infer_config",
    "load_actionformer_checkpoint",
]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why."""


# ActionFormer's defaults (libs/core/config.py) for what tensor shapes do not show
ACTIONFORMER_DEFAULTS: dict[str, Any] = {
    "num_heads": 4,
    "window": -1,
    "use_abs_pe": False,
    "max_seq_len": 2304,
    "max_buffer_len_factor": 6.0,
    "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]],
    "proj_drop": 0.1,
    "path_drop": 0.1,
    "prior_prob": 0.01,
    "center_radius": 1.5,
    "label_smoothing": 0.0,
    "reg_loss_weight": 1.0,
    "loss_normalizer_init": 2000.0,
    "pre_nms_threshold": 0.001,
    "pre_nms_topk": 5000,
    "min_duration": 0.05,
    "nms": {"method": "gaussian", "iou_threshold": 0.1, "sigma": 0.5, "min_score": 0.01, "max_keep": 1000,
            "voting_threshold": 0.75},
}

_IGNORED = (re.compile(r"^point_generator\."), re.compile(r"^backbone\.pos_embd$"))
_QKV = {"query": "q", "key": "k", "value": "v"}

# (pattern, replacement, reshape): reshape "flat" -> [C], "squeeze" -> drop the kernel-1 axis
_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"^backbone\.embd\.(\d+)\.conv\.(weight|bias)$"), r"embed.\1.\2", ""),
    (re.compile(r"^backbone\.embd_norm\.(\d+)\.(weight|bias)$"), r"embed_norms.\1.\2", "flat"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.ln([12])\.(weight|bias)$"), r"\1.\2.norm\3.\4", "flat"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.attn\.(query|key|value)_conv\.conv\.weight$"),
     r"\1.\2.attn.<qkv>_conv.weight", ""),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.attn\.(query|key|value)_norm\.(weight|bias)$"),
     r"\1.\2.attn.<qkv>_norm.\4", "flat"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.attn\.(query|key|value)\.(weight|bias)$"),
     r"\1.\2.attn.<qkv>_proj.\4", "squeeze"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.attn\.proj\.(weight|bias)$"), r"\1.\2.attn.out_proj.\3", "squeeze"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.attn\.rel_pe$"), r"\1.\2.attn.rel_pe", "relpe"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.mlp\.([03])\.(weight|bias)$"), r"\1.\2.mlp.\3.\4", "squeeze"),
    (re.compile(r"^backbone\.(stem|branch)\.(\d+)\.drop_path_(attn|mlp)\.scale$"), r"\1.\2.drop_path_\3.scale", "flat"),
    (re.compile(r"^neck\.fpn_norms\.(\d+)\.(weight|bias)$"), r"level_norms.\1.\2", "flat"),
    (re.compile(r"^(cls|reg)_head\.head\.(\d+)\.conv\.(weight|bias)$"), r"\1_head.tower.convs.\2.\3", ""),
    (re.compile(r"^(cls|reg)_head\.norm\.(\d+)\.(weight|bias)$"), r"\1_head.tower.norms.\2.\3", "flat"),
    (re.compile(r"^cls_head\.cls_head\.conv\.(weight|bias)$"), r"cls_head.tower.out.\1", ""),
    (re.compile(r"^reg_head\.offset_head\.conv\.(weight|bias)$"), r"reg_head.tower.out.\1", ""),
]
_SCALE = re.compile(r"^reg_head\.scale\.(\d+)\.scale$")


def load_actionformer_checkpoint(path: str | os.PathLike, weights: str = "ema") -> dict[str, Tensor]:
    """The state dict of an ActionFormer / STOV-TAL checkpoint file.

    Reads with ``torch.load(weights_only=True)``: a file that needs unpickling of arbitrary
    objects is refused, never unpickled. ``weights``: ``"ema"`` (``state_dict_ema``, the
    weights ActionFormer evaluates) or ``"model"`` (``state_dict``); a file that is a bare
    state dict is accepted as is. ``module.`` prefixes are removed.
    """
    path = os.fspath(path)
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled objects with an UnpicklingError
        if not any(tag in str(exc) for tag in ("Unsupported global", "Can only")):
            raise ConversionError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[-1] if str(exc) else ''})") from None
        raise ConversionError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). The file needs unpickling of Python objects, "
            "which stovtal refuses to do (it can run arbitrary code). If you trust the file, extract its "
            "weights once in a Python session of your own: ckpt = torch.load(path, weights_only=False); "
            "torch.save({'state_dict_ema': ckpt['state_dict_ema']}, 'weights.pt') and convert weights.pt"
        ) from None
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    key = "state_dict_ema" if weights == "ema" else "state_dict"
    if key in state:
        sd = state[key]
    elif "state_dict" in state or "state_dict_ema" in state:
        raise ConversionError(f"{path}: has no {key!r} (keys: {sorted(state)}); use --weights "
                              f"{'model' if weights == 'ema' else 'ema'}")
    elif all(isinstance(v, Tensor) for v in state.values()):
        sd = state
    else:
        raise ConversionError(f"{path}: neither an ActionFormer checkpoint (state_dict / state_dict_ema) "
                              f"nor a state dict (keys: {sorted(state)[:10]})")
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ConversionError(f"{path}: {key!r} is not a dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    if idx and idx != set(range(len(idx))):
        raise ConversionError(f"non-contiguous layer indices for {pattern}: {sorted(idx)}")
    return len(idx)


def _get(sd: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise ConversionError(f"the checkpoint has no {key!r}: not an ActionFormer localizer "
                              "(convTransformer backbone, identity FPN, point heads)")
    return sd[key]


def infer_config(sd: Mapping[str, Tensor], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``LocalizerConfig`` kwargs: sizes read from the tensors, the rest from ``options``
    (e.g. :func:`config_from_actionformer_yaml`) over :data:`ACTIONFORMER_DEFAULTS`.

    A size given in ``options`` that contradicts the tensors is an error.
    """
    w0 = _get(sd, "backbone.embd.0.conv.weight")
    shapes: dict[str, Any] = {
        "input_dim": int(w0.shape[1]),
        "embed_dim": int(w0.shape[0]),
        "embed_kernel": int(w0.shape[2]),
        "embed_layers": _count(sd, r"^backbone\.embd\.(\d+)\.conv\.weight$"),
        "embed_with_ln": "backbone.embd_norm.0.weight" in sd,
        "stem_layers": _count(sd, r"^backbone\.stem\.(\d+)\.ln1\.weight$"),
        "branch_layers": _count(sd, r"^backbone\.branch\.(\d+)\.ln1\.weight$"),
        "use_rel_pe": any(k.endswith("attn.rel_pe") for k in sd),
        "fpn_with_ln": "neck.fpn_norms.0.weight" in sd,
        "head_layers": _count(sd, r"^cls_head\.head\.(\d+)\.conv\.weight$") + 1,
        "head_kernel": int(_get(sd, "cls_head.cls_head.conv.weight").shape[2]),
        "head_with_ln": "cls_head.norm.0.weight" in sd,
        "head_num_classes": int(_get(sd, "cls_head.cls_head.conv.weight").shape[0]),
    }
    if "backbone.embd.0.conv.bias" in sd and shapes["embed_with_ln"]:
        raise ConversionError("embedding convs with both a bias and a LayerNorm: not an ActionFormer layout")
    head_in = _get(sd, "cls_head.cls_head.conv.weight").shape[1]
    shapes["head_dim"] = int(head_in)
    if shapes["branch_layers"] > 0:
        shapes["scale_factor"] = int(_get(sd, "backbone.branch.0.attn.query_conv.conv.weight").shape[2]) - 1
    if shapes["use_rel_pe"]:
        pes = [sd[f"backbone.stem.{i}.attn.rel_pe"] for i in range(shapes["stem_layers"])]
        pes += [sd[f"backbone.branch.{i}.attn.rel_pe"] for i in range(shapes["branch_layers"])]
        shapes["num_heads"] = int(pes[0].shape[2])
        stem_w = int(pes[0].shape[3]) if shapes["stem_layers"] else None
        branch_w = [int(p.shape[3]) for p in pes[shapes["stem_layers"]:]]
        shapes["window"] = [stem_w if stem_w is not None else branch_w[0], *branch_w]
    drop_path = any(".drop_path_attn.scale" in k for k in sd)
    cfg: dict[str, Any] = {**ACTIONFORMER_DEFAULTS, **dict(options or {})}
    for key, value in shapes.items():
        given = (options or {}).get(key)
        if given is not None and given != value and not (key == "window" and _same_windows(given, value, shapes)):
            raise ConversionError(f"the config says {key}={given!r} but the checkpoint's tensors say {value!r}")
        cfg[key] = value
    if drop_path and not cfg.get("path_drop", 0) > 0:
        cfg["path_drop"] = 0.1  # the layer-scale parameters exist only with drop-path
    if not drop_path:
        cfg["path_drop"] = 0.0
    return cfg


def _same_windows(given: Any, value: list[int], shapes: Mapping[str, Any]) -> bool:
    n = shapes["branch_layers"] + 1
    g = [int(given)] * n if isinstance(given, int) else [int(w) for w in given]
    return g == value


def config_from_actionformer_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """``LocalizerConfig`` options from an ActionFormer / STOV-TAL YAML config file
    (its ``dataset``, ``model``, ``train_cfg`` and ``test_cfg`` sections; keys it does not set
    keep ActionFormer's defaults)."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: config not found")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConversionError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: expected a mapping at the top level")
    ds, model = raw.get("dataset") or {}, raw.get("model") or {}
    train, test = raw.get("train_cfg") or {}, raw.get("test_cfg") or {}
    out: dict[str, Any] = {}

    def put(dst: str, section: Mapping[str, Any], key: str, fn: Any = None) -> None:
        if key in section and section[key] is not None:
            out[dst] = fn(section[key]) if fn else section[key]

    if model.get("backbone_type", "convTransformer") != "convTransformer":
        raise ConversionError(f"{path}: backbone_type {model['backbone_type']!r}; stovtal's localizer is convTransformer")
    if model.get("fpn_type", "identity") != "identity":
        raise ConversionError(f"{path}: fpn_type {model['fpn_type']!r}; stovtal's localizer has the identity FPN")
    if model.get("fpn_start_level", 0) not in (0, None):
        raise ConversionError(f"{path}: fpn_start_level {model['fpn_start_level']} is not supported (0 only)")
    if "embd_dim" in model and "fpn_dim" in model and model["embd_dim"] != model["fpn_dim"]:
        raise ConversionError(f"{path}: fpn_dim must equal embd_dim with the identity FPN")
    put("max_seq_len", ds, "max_seq_len", int)
    if "backbone_arch" in model:
        a = [int(v) for v in model["backbone_arch"]]
        out.update(embed_layers=a[0], stem_layers=a[1], branch_layers=a[2])
    put("scale_factor", model, "scale_factor", int)
    put("num_heads", model, "n_head", int)
    put("window", model, "n_mha_win_size", lambda w: int(w) if isinstance(w, int) else [int(v) for v in w])
    put("embed_kernel", model, "embd_kernel_size", int)
    put("embed_dim", model, "embd_dim", int)
    put("embed_with_ln", model, "embd_with_ln", bool)
    put("fpn_with_ln", model, "fpn_with_ln", bool)
    put("head_dim", model, "head_dim", int)
    put("head_kernel", model, "head_kernel_size", int)
    put("head_with_ln", model, "head_with_ln", bool)
    put("head_layers", model, "head_num_layers", int)
    put("max_buffer_len_factor", model, "max_buffer_len_factor", float)
    put("use_abs_pe", model, "use_abs_pe", bool)
    put("use_rel_pe", model, "use_rel_pe", bool)
    put("regression_ranges", model, "regression_range", lambda r: [[float(a), float(b)] for a, b in r])
    if train.get("center_sample", "radius") == "none":
        out["center_radius"] = 0.0
    else:
        put("center_radius", train, "center_sample_radius", float)
    put("reg_loss_weight", train, "loss_weight", float)
    put("prior_prob", train, "cls_prior_prob", float)
    put("loss_normalizer_init", train, "init_loss_norm", float)
    put("proj_drop", train, "dropout", float)
    put("path_drop", train, "droppath", float)
    put("label_smoothing", train, "label_smoothing", float)
    put("pre_nms_threshold", test, "pre_nms_thresh", float)
    put("pre_nms_topk", test, "pre_nms_topk", int)
    put("min_duration", test, "duration_thresh", float)
    method = test.get("nms_method", "soft")
    if method != "soft":
        raise ConversionError(f"{path}: test_cfg.nms_method {method!r}; stovtal decodes with soft-NMS only")
    nms = dict(ACTIONFORMER_DEFAULTS["nms"])
    for dst, key in (("iou_threshold", "iou_threshold"), ("min_score", "min_score"), ("max_keep", "max_seg_num"),
                     ("sigma", "nms_sigma"), ("voting_threshold", "voting_thresh")):
        if test.get(key) is not None:
            nms[dst] = test[key]
    out["nms"] = nms
    return out


def convert_state_dict(sd: Mapping[str, Tensor], model_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename and reshape ActionFormer tensors to the names of ``model_state`` (a fresh
    ``ActionLocalizer(...).state_dict()``).

    Raises :class:`ConversionError` listing every checkpoint tensor left unmapped and every
    localizer parameter or buffer left unset (the loss normaliser buffer, which ActionFormer
    keeps as a plain number, keeps its configured initial value).
    """
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    scales: dict[int, Tensor] = {}
    for key, value in sd.items():
        if any(rx.match(key) for rx in _IGNORED):
            continue
        m = _SCALE.match(key)
        if m:
            scales[int(m.group(1))] = value
            continue
        for rx, repl, reshape in _RULES:
            m = rx.match(key)
            if not m:
                continue
            name = m.expand(repl)
            if "<qkv>" in name:
                name = name.replace("<qkv>", _QKV[m.group(3)])
            v = value
            if reshape == "flat":
                v = v.reshape(-1)
            elif reshape == "squeeze" and v.dim() == 3:
                v = v.squeeze(-1)
            elif reshape == "relpe":
                v = v.reshape(v.shape[-2], v.shape[-1])
            out[name] = v
            break
        else:
            unmapped.append(key)
    if scales:
        n = max(scales) + 1
        if set(scales) != set(range(n)):
            unmapped += [f"reg_head.scale.{i}.scale" for i in sorted(scales)]
        else:
            out["reg_head.scales"] = torch.stack([scales[i].reshape(()) for i in range(n)])
    problems = []
    if unmapped:
        problems.append("checkpoint tensors with no stovtal counterpart: " + ", ".join(sorted(unmapped)))
    missing = sorted(k for k in model_state if k not in out and k != "loss_normalizer")
    if missing:
        problems.append("localizer parameters the checkpoint does not set: " + ", ".join(missing))
    extra = sorted(k for k in out if k not in model_state)
    if extra:
        problems.append("converted tensors the configured localizer does not have (config mismatch?): " + ", ".join(extra))
    bad = sorted(f"{k} {tuple(out[k].shape)} vs {tuple(model_state[k].shape)}"
                 for k in out if k in model_state and out[k].shape != model_state[k].shape)
    if bad:
        problems.append("shape mismatches (checkpoint vs localizer): " + "; ".join(bad))
    if problems:
        raise ConversionError("cannot convert the checkpoint:\n  " + "\n  ".join(problems))
    if "loss_normalizer" in model_state:
        out["loss_normalizer"] = model_state["loss_normalizer"].clone()
    return {k: v.detach().clone().contiguous().float() if v.is_floating_point() else v.clone() for k, v in out.items()}
