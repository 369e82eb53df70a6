"""Batched inference: class-agnostic segments, then open-vocabulary detections.

Two steps so that one localizer pass serves several vocabularies (CB, CN,
GZSL use different ones on the same proposals) and so that pseudo-labelling
can use the class-agnostic step alone:

1. :func:`predict_segments` runs the localizer over a loader and returns per
   video the segments (seconds) with their actionness, and, if a classifier is
   given, the pooled video-language embedding of every segment;
2. :func:`classify_segments` labels them with any :class:`Vocabulary` and
   returns the ActivityNet predictions JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from stovtal.models.classifier import OpenVocabClassifier, Vocabulary, to_results

from .trainer import move_to_device

__all__ = ["classify_segments", "predict_segments", "segments_to_json"]


@torch.no_grad()
def predict_segments(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device | str | None = None,
    classifier: OpenVocabClassifier | None = None,
    feature_key: str = "feats",
    progress: bool = False,
    desc: str = "inference",
) -> dict[str, dict[str, Any]]:
    """Class-agnostic detection over a data loader.

    Args:
        model: an ``ActionLocalizer`` (e.g. the EMA weights); put in eval mode here.
        loader: yields batches from ``stovtal.data.collate_videos``.
        classifier: if given, each segment's unit video embedding is computed from
            ``batch[feature_key]`` ``[B, C, T]`` too (key ``"embeddings"``).

    Returns:
        ``{video_id: {"segments": [K, 2] seconds, "scores": [K] actionness,
        "duration": float, ["embeddings": [K, C]]}}`` on the CPU, by descending score.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.eval()
    if classifier is not None:
        classifier.to(device).eval()
    iterator: Any = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc=desc, dynamic_ncols=True)
    out: dict[str, dict[str, Any]] = {}
    for batch in iterator:
        batch = move_to_device(batch, device)
        preds = model.predict(batch)
        embs = None
        if classifier is not None:
            embs = classifier.embed_segments(
                batch[feature_key], batch["masks"], [p["segments"] for p in preds], batch
            )
        for b, (vid, p) in enumerate(zip(batch["video_id"], preds, strict=True)):
            if vid in out:
                raise ValueError(f"video {vid!r} appears twice in the loader")
            entry = {"segments": p["segments"].cpu(), "scores": p["scores"].cpu(), "duration": float(batch["duration"][b])}
            if embs is not None:
                entry["embeddings"] = embs[b].cpu()
            out[vid] = entry
    return out


def classify_segments(
    proposals: dict[str, dict[str, Any]],
    classifier: OpenVocabClassifier,
    vocab: Vocabulary,
    video_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Label proposals from :func:`predict_segments` (run with the classifier) with ``vocab``.

    Returns the ActivityNet predictions JSON ``{"results": {vid: [{"segment", "label", "score"}]}}``
    over ``video_ids`` (default: all proposals).
    """
    ids = list(proposals) if video_ids is None else list(video_ids)
    detections: dict[str, dict[str, Tensor]] = {}
    for vid in ids:
        if vid not in proposals:
            raise KeyError(f"no proposals for video {vid!r}")
        p = proposals[vid]
        if "embeddings" not in p:
            raise ValueError("proposals lack embeddings: run predict_segments with a classifier")
        detections[vid] = classifier.classify(p["segments"], p["scores"], p["embeddings"], vocab)
    return to_results(detections, vocab)


def segments_to_json(proposals: dict[str, dict[str, Any]], label: str = "action") -> dict[str, Any]:
    """Class-agnostic proposals -> predictions JSON with one label (for class-agnostic mAP)."""
    return {
        "results": {
            vid: [
                {"segment": [float(s), float(e)], "label": label, "score": float(sc)}
                for (s, e), sc in zip(p["segments"].tolist(), p["scores"].tolist(), strict=True)
            ]
            for vid, p in proposals.items()
        }
    }
