"""A given base model (``base.checkpoint``): read, checked against the run, described.

:func:`given_base_model` reads the model file with ``weights_only=True``
(:func:`stovtal.engine.checkpoint.load_model`) and checks that it is a class-agnostic
localizer for features of the data's dimension whose weights fit the run's ``model`` section
(the file's model config with the ``model.*`` keys the run sets on top). Every error is a
:class:`ConfigError` naming the key ``base.checkpoint`` and the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

from stovtal.models.localizer import LocalizerConfig

from .config import ConfigError, SelfTrainConfig

__all__ = ["file_sha256", "given_base_model"]

KEY = "base.checkpoint"


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_model_keys(cfg: SelfTrainConfig) -> dict[str, Any]:
    """The ``model.*`` entries of ``cfg`` that differ from selftrain's defaults."""
    own, default = dataclasses.asdict(cfg.model), dataclasses.asdict(SelfTrainConfig().model)
    return {k: v for k, v in own.items() if v != default[k] and k != "input_dim"}


def given_base_model(cfg: SelfTrainConfig, feat_dim: int) -> tuple[LocalizerConfig, dict[str, Any]]:
    """Read and check ``cfg.base.checkpoint`` for features of ``feat_dim`` channels.

    Returns the run's localizer config (the file's, with the run's own ``model.*`` keys on top;
    ``input_dim`` = ``feat_dim``) and the record of the file: ``{"path": absolute path,
    "sha256": hex digest, "meta": the file's source entries (e.g. ``source``, ``source_file``)}``.
    """
    from stovtal.engine.checkpoint import check_state_dict, load_model
    from stovtal.models import ActionLocalizer

    path = os.path.abspath(cfg.base.checkpoint)

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{KEY}: {path}: {msg}")

    if not os.path.isfile(path):
        raise fail("file does not exist")
    try:
        mf = load_model(path)
    except ValueError as exc:  # the message names the file
        raise ConfigError(f"{KEY}: {exc}") from None
    if mf.kind != "localizer" or not mf.model_config:
        raise fail(f"holds a {mf.kind!r} model without its localizer config; expected a localizer model file "
                   "(python -m stovtal.convert actionformer CKPT --out model.pt, or a selftrain base/model.pt)")
    file_cfg = dict(mf.model_config)
    n_cls = file_cfg.get("head_num_classes", 1)
    if n_cls != 1:
        raise fail(f"a class-aware localizer ({n_cls} classes); self-training needs a class-agnostic one "
                   "(head_num_classes 1, ActionFormer's num_classes: 1)")
    if file_cfg.get("input_dim") != feat_dim:
        raise fail(f"a localizer of input_dim {file_cfg.get('input_dim')}, but the data's features have "
                   f"{feat_dim} channels")
    run_keys = _run_model_keys(cfg)
    try:
        lcfg = LocalizerConfig(**{**file_cfg, **run_keys, "input_dim": feat_dim})
    except (TypeError, ValueError) as exc:
        raise fail(f"its model config with the run's model keys {sorted(run_keys)} is invalid: {exc}") from None
    try:
        check_state_dict(ActionLocalizer(lcfg), mf.state_dict, path)
    except ValueError as exc:
        extra = f" (the run sets model keys {sorted(run_keys)})" if run_keys else ""
        raise ConfigError(f"{KEY}: {exc}{extra}") from None
    meta = {k: mf.meta[k] for k in ("source", "source_file", "source_weights", "source_config") if k in mf.meta}
    return lcfg, {"path": path, "sha256": file_sha256(path), "meta": meta}
