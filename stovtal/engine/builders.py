"""From a :class:`stovtal.config.Config` to datasets, loaders, models and evaluations.

Shared by ``python -m stovtal.train``, ``python -m stovtal.infer`` and the
self-training pipeline, so that they all read data and evaluate the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from torch.utils.data import DataLoader

from stovtal.data import VideoFeatureDataset, collate_videos
from stovtal.data.crop import crop_settings
from stovtal.data.formats import FeatureGrid, load_annotations
from stovtal.data.splits import class_split, partition_videos
from stovtal.eval import detection_map, open_vocab_breakdown
from stovtal.models.classifier import OpenVocabClassifier, Vocabulary
from stovtal.models.localizer import ActionLocalizer

from .inference import classify_segments, segments_to_json

__all__ = [
    "DataSpec",
    "build_classifier",
    "build_dataset",
    "build_loader",
    "build_localizer",
    "build_vocabulary",
    "class_agnostic_map",
    "evaluate_open_vocab",
    "resolve_data",
    "subset_database",
]


@dataclass
class DataSpec:
    """Resolved data settings (everything a run needs to read the features)."""

    annotation_file: str
    feature_dir: str
    grid: FeatureGrid
    feat_dim: int
    base: list[str]
    novel: list[str]
    train_subset: str
    val_subset: str
    test_subset: str
    max_seq_len: int
    vocab_npz: str = ""
    crop_ratio: tuple[float, float] | None = None  # training crops (stovtal.data.crop)
    trunc_thresh: float = 0.5

    @property
    def classes(self) -> list[str]:
        return self.base + self.novel


def resolve_data(cfg: Any, progress: bool = False) -> DataSpec:
    """``cfg``: a :class:`stovtal.config.DataConfig`. For the synthetic world, writes it if needed."""
    if cfg.is_synthetic:
        from stovtal.data.synthetic import SyntheticConfig, ensure_world

        world_cfg = SyntheticConfig.from_dict(dict(cfg.world)) if cfg.world else SyntheticConfig()
        root = os.fspath(cfg.world_dir or "runs/synthetic_world")
        meta = ensure_world(root, world_cfg, progress=progress)
        return DataSpec(
            annotation_file=os.path.join(root, "annotations.json"),
            feature_dir=os.path.join(root, "features"),
            grid=FeatureGrid(float(meta["fps"]), int(meta["feature_stride"]), int(meta["num_frames"])),
            feat_dim=int(meta["feat_dim"]),
            base=list(meta["base"]),
            novel=list(meta["novel"]),
            train_subset="train",
            val_subset="",
            test_subset="test",
            max_seq_len=cfg.max_seq_len,
            vocab_npz=os.path.join(root, "vocab.npz"),
            **crop_settings(cfg),
        )
    if cfg.base_classes:
        base, novel = list(cfg.base_classes), list(cfg.novel_classes)
    else:
        split = class_split(cfg.vocabulary, cfg.split, cfg.split_seed)
        base, novel = list(split.base), list(split.novel)
    overlap = set(base) & set(novel)
    if overlap:
        raise ValueError(f"classes both base and novel: {sorted(overlap)}")
    if not cfg.annotations or not os.path.isfile(cfg.annotations):
        raise FileNotFoundError(f"{cfg.annotations}: annotation file not found (data.annotations)")
    if not cfg.feature_dir or not os.path.isdir(cfg.feature_dir):
        raise FileNotFoundError(f"{cfg.feature_dir}: feature directory not found (data.feature_dir)")
    return DataSpec(
        annotation_file=cfg.annotations,
        feature_dir=cfg.feature_dir,
        grid=FeatureGrid(float(cfg.fps), int(cfg.feature_stride), int(cfg.num_frames)),
        feat_dim=int(cfg.feat_dim),
        base=base,
        novel=novel,
        train_subset=cfg.train_subset,
        val_subset=cfg.val_subset,
        test_subset=cfg.test_subset,
        max_seq_len=cfg.max_seq_len,
        **crop_settings(cfg),
    )


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


def class_agnostic_map(proposals: dict[str, dict[str, Any]], database: dict[str, Any],
                       tious: list[float]) -> dict[str, Any]:
    """mAP of class-agnostic proposals against all ground-truth actions (labels merged)."""
    gt = {"database": {
        vid: {**info, "annotations": [{**a, "label": "action"} for a in info["annotations"]]}
        for vid, info in database.items() if vid in proposals
    }}
    preds = segments_to_json({vid: proposals[vid] for vid in gt["database"]})
    return detection_map(gt, preds, tious, classes=["action"])


def evaluate_open_vocab(
    proposals: dict[str, dict[str, Any]],
    classifier: OpenVocabClassifier,
    vocab: Vocabulary,
    database: dict[str, Any],
    base: list[str],
    novel: list[str],
    tious: list[float],
) -> dict[str, Any]:
    """CB, CN and GZSL detection mAP of one set of class-agnostic proposals.

    The proposals are classified three times: base vocabulary on the base-only videos (CB),
    novel vocabulary on the novel-only videos (CN), full vocabulary on all videos (GZSL); the
    scoring is :func:`stovtal.eval.open_vocab_breakdown`'s. Adds ``"summary"``: the average
    mAPs (``CB``, ``CN``, ``GZSL``, ``GZSL_base``, ``GZSL_novel``) of the parts that exist.
    """
    parts = partition_videos(database, base, novel)
    vids = list(database)
    cb = classify_segments(proposals, classifier, vocab.subset(base), parts["base"]) if base else None
    cn = classify_segments(proposals, classifier, vocab.subset(novel), parts["novel"]) if novel else None
    gzsl = classify_segments(proposals, classifier, vocab.subset(base + novel), vids)
    out = open_vocab_breakdown({"database": database}, tious, base, novel, gzsl=gzsl, cb=cb, cn=cn)
    summary: dict[str, float] = {}
    for key in ("CB", "CN", "GZSL"):
        if out.get(key) is not None:
            summary[key] = out[key]["average_mAP"]
    g = out.get("GZSL")
    if g is not None:
        for key, src in (("GZSL_base", "average_base_mAP"), ("GZSL_novel", "average_novel_mAP")):
            if g.get(src) is not None:
                summary[key] = g[src]
    out["summary"] = summary
    return out
