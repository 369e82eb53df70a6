"""From a :class:`stovtal.config.Config` and its :class:`stovtal.data.resolve.DataSpec` to
datasets, loaders, models and vocabularies (``python -m stovtal.train`` and ``stovtal.infer``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch.utils.data import DataLoader

from stovtal.data import VideoFeatureDataset, collate_videos
from stovtal.data.formats import load_annotations
from stovtal.data.resolve import DataSpec
from stovtal.models.classifier import OpenVocabClassifier, Vocabulary
from stovtal.models.localizer import ActionLocalizer

__all__ = [
    "build_classifier",
    "build_dataset",
    "build_loader",
    "build_localizer",
    "build_vocabulary",
    "subset_database",
]


def build_dataset(spec: DataSpec, subset: str, *, training: bool = False, classes: list[str] | None = None,
                  annotations: Any = None) -> VideoFeatureDataset:
    """Videos of ``subset``; ``training`` enables the random crops (``max_seq_len``,
    ``crop_ratio``, ``trunc_thresh``) and drops videos without annotations. ``classes``
    default: base + novel."""
    return VideoFeatureDataset(
        annotations if annotations is not None else spec.annotation_file,
        spec.feature_dir,
        classes=classes if classes is not None else spec.classes,
        grid=spec.grid,
        subset=subset or None,
        feat_dim=spec.feat_dim,
        max_seq_len=spec.max_seq_len if training else None,
        training=training,
        crop_ratio=spec.crop_ratio,
        trunc_thresh=spec.trunc_thresh,
        require_annotations=training,
    )


def build_loader(dataset: Any, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Sequential loader for inference (training loaders are made by the Trainer)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_videos,
                      num_workers=num_workers)


def build_localizer(cfg: Any, spec: DataSpec) -> ActionLocalizer:
    """The localizer of ``cfg.model`` with ``input_dim`` set to the features' dimension."""
    return ActionLocalizer(replace(cfg.model, input_dim=spec.feat_dim))


def build_classifier(cfg: Any, spec: DataSpec) -> OpenVocabClassifier:
    return OpenVocabClassifier(cfg.classifier, embed_dim=spec.feat_dim)


def _text_encoder(cfg: Any, spec: DataSpec) -> Any:
    from stovtal.models.text_encoders import NpzTextEncoder, OpenClipTextEncoder

    t = cfg.text
    if t.kind == "npz":
        path = t.npz or spec.vocab_npz
        if not path:
            raise ValueError("text.npz is required with text.kind=npz (a .npz of names + embeddings)")
        return NpzTextEncoder(path, logit_scale=t.logit_scale)
    if not t.checkpoint:
        raise ValueError("text.checkpoint (a local open_clip checkpoint file) is required with text.kind=open_clip")
    enc = OpenClipTextEncoder(t.model, t.checkpoint, templates=t.templates)
    if t.logit_scale is not None:
        enc.logit_scale = float(t.logit_scale)
    return enc


def build_vocabulary(cfg: Any, spec: DataSpec, names: list[str] | None = None) -> Vocabulary:
    """Text embeddings of ``names`` (default base + novel) from the configured encoder."""
    return Vocabulary.from_encoder(_text_encoder(cfg, spec), names if names is not None else spec.classes)


def subset_database(spec: DataSpec, subset: str) -> dict[str, Any]:
    db = load_annotations(spec.annotation_file)["database"]
    return {vid: info for vid, info in db.items() if not subset or info.get("subset") == subset}
