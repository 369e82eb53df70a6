"""Checkpoint files: atomic training states and the one model format every app writes.

Two kinds of file:

* a **training state** (``last.pt`` / ``best.pt`` of :class:`stovtal.engine.Trainer`): model,
  EMA, optimizer, scheduler, ... for an exact resume; read and written with
  :func:`load_checkpoint` / :func:`save_checkpoint`;
* a **model file** (:func:`save_model` / :func:`load_model`): the weights of one model with the
  config that builds it, so that ``python -m stovtal.infer`` runs any model that ``train``,
  ``selftrain``, ``feel`` or ``convert`` wrote::

      {"format": "stovtal.model/1",
       "kind": "localizer" | "cola",          # which model class (see build_model)
       "model_config": {...},                 # kwargs of LocalizerConfig / CoLAConfig
       "model": {name: tensor},               # the state dict
       "meta": {...}}                         # JSON-like extras (tensors allowed), e.g.
                                              #   "run_config": the data/text/classifier settings
                                              #   "classifier": a trained classifier adapter

:func:`load_model` also reads a training state (its EMA or raw weights) and the model files
written by earlier versions of ``selftrain`` (``{"model", "localizer"}``) and ``feel``
(``{"model", "in_dim", "num_classes", ...}``).

Every file is written to a temporary name and renamed; every read uses ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from stovtal.utils.fileio import atomic_write_bytes

__all__ = [
    "MODEL_FORMAT",
    "MODEL_KINDS",
    "ModelFile",
    "build_model",
    "check_state_dict",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_checkpoint",
    "save_model",
]

MODEL_FORMAT = "stovtal.model/1"
MODEL_KINDS = ("localizer", "cola")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts only) atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (no arbitrary unpickling); errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable stovtal checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: checkpoint does not hold a dict")
    return state


def check_state_dict(module: torch.nn.Module, state_dict: Any, path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``path`` if ``state_dict`` does not fit ``module`` (missing or
    unexpected keys, other shapes): a checkpoint of another architecture or configuration."""
    path = os.fspath(path)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: the checkpoint's weights are not a state dict")
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(getattr(state_dict[k], "shape", ())), tuple(v.shape)) for k, v in own.items()
              if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        k, theirs, ours = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {list(theirs)} in the file, {list(ours)} in the model)")
    raise ValueError(f"{path}: the weights do not fit the model: {', '.join(parts)}; the file was made with "
                     "another architecture or model configuration")


def load_weights(module: torch.nn.Module, state_dict: Any, path: str | os.PathLike) -> None:
    """``module.load_state_dict(state_dict)`` after :func:`check_state_dict` (errors name ``path``)."""
    check_state_dict(module, state_dict, path)
    module.load_state_dict(state_dict)


@dataclass
class ModelFile:
    """A model read by :func:`load_model`.

    ``model_config``: kwargs of the model's config dataclass (``LocalizerConfig`` for
    ``kind="localizer"``, ``CoLAConfig`` for ``"cola"``); ``state_dict``: its weights;
    ``meta``: the file's extras (``run_config``, ``classifier``, ...); ``source``: which layout
    the file had (``"model"``, ``"trainer"``, ``"selftrain-v0"``, ``"feel-v0"``).
    """

    kind: str
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "model"


def _as_dict(cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return dict(cfg)
    raise TypeError(f"model_cfg must be a config dataclass or a dict, got {type(cfg).__name__}")


def save_model(path: str | os.PathLike, model_cfg: Any, state_dict: dict[str, torch.Tensor],
               meta: dict[str, Any] | None = None, kind: str = "localizer") -> None:
    """Write one model in the stovtal model format (see the module docstring), atomically.

    Args:
        path: file to write.
        model_cfg: the model's config dataclass (or its dict of kwargs).
        state_dict: the weights (moved to the CPU here).
        meta: JSON-like extras (tensors allowed).
        kind: one of :data:`MODEL_KINDS`.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    save_checkpoint(path, {
        "format": MODEL_FORMAT,
        "kind": kind,
        "model_config": _as_dict(model_cfg),
        "model": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": dict(meta or {}),
    })


def load_model(path: str | os.PathLike, weights: str = "ema",
               map_location: str | torch.device = "cpu") -> ModelFile:
    """Read a model file, a training state or an older app's model file.

    ``weights``: for a training state, ``"ema"`` (the EMA / Mean Teacher weights) or
    ``"model"`` (the raw weights); ignored for model files, which hold one set. A training
    state's ``model_config`` is its run config's ``model`` section (whose ``input_dim`` the
    caller may have to set from the features, as training did).
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    path = os.fspath(path)
    state = load_checkpoint(path, map_location)
    if state.get("format") == MODEL_FORMAT:
        if state.get("kind") not in MODEL_KINDS:
            raise ValueError(f"{path}: unknown model kind {state.get('kind')!r}")
        return ModelFile(state["kind"], dict(state["model_config"]), state["model"], dict(state.get("meta", {})))
    if "format" in state:
        raise ValueError(f"{path}: unsupported model format {state['format']!r} (this stovtal reads {MODEL_FORMAT})")
    if "ema" in state and "optimizer" in state:  # a Trainer state
        sd = state["ema"]["module"] if weights == "ema" else state["model"]
        run_config = state.get("config")
        model_cfg = dict(run_config["model"]) if isinstance(run_config, dict) and "model" in run_config else {}
        meta = {k: state[k] for k in ("config", "classifier") if k in state}
        if "config" in meta:
            meta["run_config"] = meta.pop("config")
        return ModelFile("localizer", model_cfg, sd, meta, source="trainer")
    if "localizer" in state and "model" in state:  # selftrain's export before the model format
        meta = {k: v for k, v in state.items() if k not in ("localizer", "model")}
        return ModelFile("localizer", dict(state["localizer"]), state["model"], meta, source="selftrain-v0")
    if "in_dim" in state and "num_classes" in state and "model" in state:  # feel's iteration file
        meta = {k: v for k, v in state.items() if k not in ("model", "in_dim", "num_classes")}
        return ModelFile("cola", {"in_dim": int(state["in_dim"]), "num_classes": int(state["num_classes"])},
                         state["model"], meta, source="feel-v0")
    raise ValueError(f"{path}: not a stovtal model (no 'format' entry, and not a training state)")


def build_model(mf: ModelFile, path: str = "model", **config_updates: Any) -> torch.nn.Module:
    """The module of ``mf`` with its weights loaded (eval mode, CPU).

    ``config_updates`` replace entries of ``mf.model_config`` (e.g. ``input_dim`` of a
    training state). Errors name ``path``.
    """
    cfg = {**mf.model_config, **config_updates}
    if mf.kind == "localizer":
        from stovtal.models.localizer import ActionLocalizer, LocalizerConfig

        model: torch.nn.Module = ActionLocalizer(LocalizerConfig(**cfg))
    elif mf.kind == "cola":
        from stovtal.models.cola import CoLA, CoLAConfig

        model = CoLA(CoLAConfig(**cfg))
    else:
        raise ValueError(f"{path}: unknown model kind {mf.kind!r}")
    load_weights(model, mf.state_dict, path)
    return model.eval()
