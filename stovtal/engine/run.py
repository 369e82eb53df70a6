"""Run-level helpers shared by the CLIs: config <-> checkpoint, base-class training set,
test-set evaluation (class-agnostic mAP + CB / CN / GZSL)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch

from stovtal.data.resolve import DataSpec
from stovtal.models.classifier import OpenVocabClassifier
from stovtal.models.localizer import ActionLocalizer

from .builders import build_classifier, build_dataset, build_vocabulary, subset_database
from .checkpoint import ModelFile, build_model, load_model
from .evaluation import evaluate_localizer

__all__ = [
    "base_training_annotations",
    "evaluate_on_test",
    "load_localizer",
    "localizer_from_file",
]


def base_training_annotations(spec: DataSpec) -> dict[str, Any]:
    """Annotations of the training subset restricted to videos whose actions are all base
    classes (videos with a novel action are dropped, so novel actions never act as background).
    A label that is neither base nor novel is an error naming the video and the file."""
    from stovtal.data.formats import load_annotations

    db = load_annotations(spec.annotation_file, subset=spec.train_subset, classes=spec.classes)["database"]
    base = set(spec.base)
    keep = {
        vid: info for vid, info in db.items()
        if info.get("subset") == spec.train_subset and info.get("annotations")
        and all(a["label"] in base for a in info["annotations"])
    }
    if not keep:
        raise ValueError(
            f"{spec.annotation_file}: no video of subset {spec.train_subset!r} has only base-class actions"
        )
    return {"database": keep}


def localizer_from_file(mf: ModelFile, cfg: Any, spec: DataSpec, path: str) -> ActionLocalizer:
    """The localizer of a file read by :func:`stovtal.engine.checkpoint.load_model` (eval mode).

    A model file carries its model config; a training state was trained with the run config's
    ``model`` section and the features' dimension as ``input_dim``, so that is used for it.
    """
    if mf.kind != "localizer":
        raise ValueError(f"{path}: a {mf.kind!r} model, not a localizer")
    if mf.source == "trainer":
        model = build_model(mf, path, **{**asdict(cfg.model), "input_dim": spec.feat_dim})
    else:
        model = build_model(mf, path)
    if model.cfg.input_dim != spec.feat_dim:
        raise ValueError(f"{path}: the model takes {model.cfg.input_dim}-d features, the data has "
                         f"{spec.feat_dim}-d ones")
    assert isinstance(model, ActionLocalizer)
    return model


def load_localizer(cfg: Any, spec: DataSpec, ckpt_path: str, which: str = "ema",
                   device: torch.device | str = "cpu") -> ActionLocalizer:
    """The localizer of a checkpoint (any file :func:`load_model` reads): its EMA weights
    (``which="ema"``) or, for a training state, the raw model's."""
    return localizer_from_file(load_model(ckpt_path, which), cfg, spec, ckpt_path).to(device).eval()


def evaluate_on_test(cfg: Any, spec: DataSpec, model: ActionLocalizer, progress: bool = True,
                     subset: str | None = None, classifier: OpenVocabClassifier | None = None
                     ) -> dict[str, Any] | None:
    """Class-agnostic mAP and CB / CN / GZSL mAP of ``model`` on the test subset
    (:func:`stovtal.engine.evaluation.evaluate_localizer`; every rank of a distributed run calls
    it, rank 0 gets the results, the others None).

    ``classifier``: e.g. one with a trained adapter (``stovtal.engine.adapter``); default: the
    configured classifier as built (zero-shot).
    """
    subset = spec.test_subset if subset is None else subset
    dataset = build_dataset(spec, subset)
    if classifier is None:
        if cfg.classifier.adapter:
            raise ValueError("classifier.adapter=true: pass the classifier with its trained adapter "
                             "(stovtal.engine.adapter.classifier_from_checkpoint)")
        classifier = build_classifier(cfg, spec)
    vocab = build_vocabulary(cfg, spec)
    t0 = time.time()
    out = evaluate_localizer(model, dataset, subset_database(spec, subset), classifier, vocab, spec.base,
                             spec.novel, list(cfg.eval.tiou_thresholds), batch_size=cfg.eval.batch_size,
                             num_workers=cfg.train.num_workers, progress=progress, desc=f"infer {subset}",
                             class_agnostic=True)
    if out is None:
        return None
    out["inference_time_s"] = time.time() - t0
    out["num_videos"] = len(dataset)
    return out
