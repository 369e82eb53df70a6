"""Open-vocabulary action classifier and score fusion.

For each class-agnostic segment (seconds), the video-language snippet
features are pooled with 1-D RoI-Align (aligned) over the snippets lying fully
inside the segment (as STOV-TAL's ``roi_CLIP_cls``), averaged and L2-normalised; the cosine similarity with the L2-normalised text
embeddings of the vocabulary in use, times the text encoder's logit scale,
gives a softmax over that vocabulary. The vocabulary is only an input, so it
can change at inference time. Final score = fusion of actionness and class
probability (geometric mean by default), then multi-class soft-NMS.

Zero-shot by default (no trainable parameters). An optional residual
adapter on the pooled video embedding (``adapter=True``) can be trained on
base classes with :meth:`OpenVocabClassifier.adapter_loss`; ``stovtal.engine.adapter`` does that
on the ground-truth segments of the labelled base-class videos (``classifier.adapter=true``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import stovtal.ops as ops

from .postprocess import NMSConfig, nms_with_voting, seconds_to_grid

__all__ = ["ClassifierConfig", "OpenVocabClassifier", "Vocabulary", "fuse_scores"]

FUSIONS = ("geometric", "arithmetic", "actionness", "class")


@dataclass
class ClassifierConfig:
    """``roi_size``: RoI-Align bins per segment (averaged); ``context``: widen each
    segment by this fraction of its length on both sides before pooling;
    ``topk``: classes kept per segment; ``fusion``: ``geometric`` sqrt(a*c),
    ``arithmetic`` (a+c)/2, ``actionness`` a, ``class`` c; ``nms``: multi-class
    soft-NMS after fusion; ``adapter``: optional residual MLP ``x + W2 relu(W1 x)`` (hidden
    width ``adapter_hidden``, starts as the identity) on the pooled video features, trained on
    base classes only (off by default: zero-shot, no trainable parameters)."""

    roi_size: int = 1
    context: float = 0.0
    topk: int = 1
    fusion: str = "geometric"
    nms: NMSConfig = field(default_factory=NMSConfig)
    adapter: bool = False
    adapter_hidden: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.nms, dict):
            self.nms = NMSConfig(**self.nms)
        if self.roi_size < 1:
            raise ValueError(f"classifier.roi_size must be >= 1, got {self.roi_size}")
        if self.context < 0:
            raise ValueError(f"classifier.context must be >= 0, got {self.context}")
        if self.topk < 1:
            raise ValueError(f"classifier.topk must be >= 1, got {self.topk}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"classifier.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.adapter_hidden < 1:
            raise ValueError(f"classifier.adapter_hidden must be >= 1, got {self.adapter_hidden}")


@dataclass
class Vocabulary:
    """Class names with their text embeddings ``[K, E]`` (L2-normalised here) and logit scale."""

    names: list[str]
    embeddings: Tensor
    logit_scale: float = 100.0

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        if len(self.names) == 0:
            raise ValueError("a vocabulary needs at least one class name")
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"duplicate class names in vocabulary: {dup}")
        emb = torch.as_tensor(self.embeddings)
        if emb.dim() != 2 or emb.shape[0] != len(self.names):
            raise ValueError(f"embeddings must be [{len(self.names)}, E], got {tuple(emb.shape)}")
        if not emb.is_floating_point() or not torch.isfinite(emb).all():
            raise ValueError("text embeddings must be finite floating point values")
        if (emb.norm(dim=1) == 0).any():
            raise ValueError("a text embedding is all zeros")
        self.embeddings = F.normalize(emb.float(), dim=1)
        self.logit_scale = float(self.logit_scale)
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")

    @classmethod
    def from_encoder(cls, encoder: Any, names: list[str]) -> Vocabulary:
        """Encode ``names`` with a ``stovtal.models.text_encoders`` encoder."""
        names = list(names)
        emb = encoder.encode(names)
        return cls(names, torch.as_tensor(emb), float(encoder.logit_scale))

    def subset(self, names: list[str]) -> Vocabulary:
        """The vocabulary restricted to ``names`` (all must be present)."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"class names not in the vocabulary: {missing}")
        idx = torch.tensor([index[n] for n in names], dtype=torch.long)
        return Vocabulary(list(names), self.embeddings[idx], self.logit_scale)


def fuse_scores(actionness: Tensor, class_prob: Tensor, method: str = "geometric") -> Tensor:
    """Combine actionness and class probability (both in [0, 1], broadcastable)."""
    if method == "geometric":
        return torch.sqrt(actionness.clamp(min=0) * class_prob.clamp(min=0))
    if method == "arithmetic":
        return 0.5 * (actionness + class_prob)
    if method == "actionness":
        return actionness.expand_as(torch.broadcast_tensors(actionness, class_prob)[0]).clone()
    if method == "class":
        return class_prob.expand_as(torch.broadcast_tensors(actionness, class_prob)[0]).clone()
    raise ValueError(f"unknown fusion {method!r}; choose from {FUSIONS}")


class OpenVocabClassifier(nn.Module):
    """Zero-shot classifier of detected segments (see module docstring)."""

    def __init__(self, cfg: ClassifierConfig | None = None, embed_dim: int | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ClassifierConfig()
        self.adapter: nn.Module | None = None
        if cfg.adapter:
            if embed_dim is None:
                raise ValueError("the classifier adapter needs embed_dim")
            self.adapter = nn.Sequential(
                nn.Linear(embed_dim, cfg.adapter_hidden), nn.ReLU(), nn.Linear(cfg.adapter_hidden, embed_dim)
            )
            nn.init.zeros_(self.adapter[2].weight)
            nn.init.zeros_(self.adapter[2].bias)

    def pool_segments(
        self, feats: Tensor, masks: Tensor, segments: list[Tensor], batch: dict[str, Any]
    ) -> list[Tensor]:
        """Mean video-language feature over each segment (before the adapter and normalisation).

        Args:
            feats: ``[B, C, T]`` video-language snippet features; masks bool ``[B, T]``.
            segments: per video ``[K_i, 2]`` in **seconds**.
            batch: per-video ``fps``, ``feat_stride``, ``feat_num_frames`` (lists) and
                optionally ``offset_snippets``.

        Returns:
            per video ``[K_i, C]``: the average over ``roi_size`` aligned RoI-Align bins of the
            snippets lying fully inside the segment (widened by ``context``), clipped to the
            video's valid snippets and at least one snippet wide.

        Snippet ``i`` covers frames ``[i * stride, i * stride + num_frames)``; it lies inside
        ``[t0, t1]`` s when ``t0 * fps / stride <= i <= (t1 * fps - num_frames) / stride``, and
        the RoI spans those snippets' cells, ``i -/+ 0.5`` (STOV-TAL's coordinates).
        """
        if feats.dim() != 3 or masks.shape != (feats.shape[0], feats.shape[2]):
            raise ValueError(f"feats [B, C, T] and masks [B, T] expected, got {tuple(feats.shape)}, {tuple(masks.shape)}")
        if len(segments) != feats.shape[0]:
            raise ValueError(f"{len(segments)} segment lists for a batch of {feats.shape[0]}")
        rois, counts = [], []
        lengths = masks.sum(dim=1)
        for b, seg in enumerate(segments):
            if seg.dim() != 2 or seg.shape[-1] != 2:
                raise ValueError(f"video {b}: segments must be [K, 2], got {tuple(seg.shape)}")
            if seg.numel() and not torch.isfinite(seg).all():
                raise ValueError(f"video {b}: segments contain NaN or inf")
            offset = float(batch["offset_snippets"][b]) if "offset_snippets" in batch else 0.0
            stride, window = float(batch["feat_stride"][b]), float(batch["feat_num_frames"][b])
            # grid position i = centre of snippet i; the snippets fully inside the segment
            # start half a window (minus half a cell) after its start and end as much before
            # its end
            g = seconds_to_grid(seg.to(feats.device, torch.float64), float(batch["fps"][b]),
                                stride, window) - offset
            shrink = 0.5 * window / stride - 0.5
            g = torch.stack([g[:, 0] + shrink, g[:, 1] - shrink], dim=1)
            if self.cfg.context > 0:
                w = (g[:, 1] - g[:, 0]).clamp(min=0) * self.cfg.context
                g = torch.stack([g[:, 0] - w, g[:, 1] + w], dim=1)
            last = float(max(int(lengths[b]) - 1, 0))
            g = g.clamp(min=-0.5, max=last + 0.5)
            # at least one snippet wide, so that every RoI has samples
            mid = 0.5 * (g[:, 0] + g[:, 1])
            half = torch.maximum(0.5 * (g[:, 1] - g[:, 0]), torch.full_like(mid, 0.5))
            g = torch.stack([mid - half, mid + half], dim=1)
            # grid position i is the centre of snippet i, while aligned RoI-Align samples
            # feature i at continuous coordinate i + 0.5
            idx = torch.full_like(g[:, :1], float(b))
            rois.append(torch.cat([idx, g + 0.5], dim=1))
            counts.append(seg.shape[0])
        rois_t = torch.cat(rois).to(feats.dtype)
        if rois_t.shape[0] == 0:
            return [feats.new_zeros(0, feats.shape[1]) for _ in segments]
        pooled = ops.roi_align_1d(feats.contiguous(), rois_t.contiguous(), self.cfg.roi_size, 1.0, 0, True)
        return list(pooled.mean(dim=2).split(counts))

    def embed_segments(
        self, feats: Tensor, masks: Tensor, segments: list[Tensor], batch: dict[str, Any]
    ) -> list[Tensor]:
        """Unit video embeddings ``[K_i, C]`` of segments (seconds); arguments as :meth:`pool_segments`."""
        pooled = self.pool_segments(feats, masks, segments, batch)
        counts = [p.shape[0] for p in pooled]
        return list(self.embed_pooled(torch.cat(pooled)).split(counts))

    def embed_pooled(self, pooled: Tensor) -> Tensor:
        """``[K, C]`` pooled segment features (:meth:`pool_segments`) -> ``[K, C]`` unit video
        embeddings: ``normalise(x + adapter(x))`` with the adapter, ``normalise(x)`` without."""
        if pooled.dim() != 2:
            raise ValueError(f"pooled features must be [K, C], got {tuple(pooled.shape)}")
        emb = pooled
        if self.adapter is not None:
            emb = emb + self.adapter(emb)
        return F.normalize(emb.float(), dim=1)

    def class_probs(self, embeddings: Tensor, vocab: Vocabulary) -> Tensor:
        """``[K, C]`` unit segment embeddings -> ``[K, V]`` softmax over the vocabulary."""
        text = vocab.embeddings.to(embeddings.device)
        if embeddings.shape[-1] != text.shape[1]:
            raise ValueError(
                f"video embeddings have {embeddings.shape[-1]} dims but the text embeddings "
                f"{text.shape[1]}: the classifier features must live in the text encoder's space"
            )
        return (vocab.logit_scale * embeddings @ text.T).softmax(dim=-1)

    def classify(
        self, segments: Tensor, actionness: Tensor, embeddings: Tensor, vocab: Vocabulary
    ) -> dict[str, Tensor]:
        """Label one video's segments and fuse scores.

        Args:
            segments: ``[K, 2]`` seconds; actionness ``[K]``; embeddings ``[K, C]``.

        Returns:
            dict ``segments`` ``[M, 2]``, ``scores`` ``[M]`` (fused), ``labels`` int64 ``[M]``
            (indices into ``vocab.names``), ``class_probs`` ``[M]``, ``actionness`` ``[M]``,
            after top-k expansion and multi-class soft-NMS, by descending score.
        """
        cfg = self.cfg
        k = segments.shape[0]
        if k == 0:
            z = segments.new_zeros(0)
            return {"segments": segments.new_zeros(0, 2), "scores": z, "labels": z.long(), "class_probs": z, "actionness": z}
        probs = self.class_probs(embeddings, vocab).cpu()
        topk = min(cfg.topk, probs.shape[1])
        cp, labels = probs.topk(topk, dim=1)  # [K, topk]
        act = actionness.cpu().float()[:, None].expand(-1, topk)
        scores = fuse_scores(act, cp, cfg.fusion).reshape(-1)
        segs = segments.cpu().float().repeat_interleave(topk, dim=0)
        labels = labels.reshape(-1)
        out_segs, out_scores, keep = nms_with_voting(segs, scores, cfg.nms, labels=labels)
        return {
            "segments": out_segs,
            "scores": out_scores,
            "labels": labels[keep],
            "class_probs": cp.reshape(-1)[keep],
            "actionness": act.reshape(-1)[keep],
        }

    def adapter_loss(self, feats: Tensor, masks: Tensor, segments: list[Tensor], labels: list[Tensor],
                     batch: dict[str, Any], vocab: Vocabulary) -> Tensor:
        """Cross-entropy of ground-truth segments (seconds) against their labels (indices into
        ``vocab``); trains only the adapter. Use base-class vocabularies only."""
        if self.adapter is None:
            raise RuntimeError("adapter_loss needs ClassifierConfig(adapter=True)")
        pooled = torch.cat(self.pool_segments(feats, masks, segments, batch))
        target = torch.cat([lab.long() for lab in labels]) if labels else torch.zeros(0, dtype=torch.long)
        return self.pooled_adapter_loss(pooled, target, vocab)

    def pooled_adapter_loss(self, pooled: Tensor, labels: Tensor, vocab: Vocabulary) -> Tensor:
        """Mean cross-entropy of ``[K, C]`` pooled segment features against ``[K]`` labels
        (indices into ``vocab``) over ``vocab.logit_scale * cos(embedding, text)``; 0 for K = 0.

        The features are fixed (the video-language encoder is frozen), so they can be pooled
        once and the adapter trained on them directly (see ``stovtal.engine.adapter``).
        """
        if self.adapter is None:
            raise RuntimeError("adapter_loss needs ClassifierConfig(adapter=True)")
        if pooled.dim() != 2 or labels.shape != (pooled.shape[0],):
            raise ValueError(f"pooled [K, C] and labels [K] expected, got {tuple(pooled.shape)}, {tuple(labels.shape)}")
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(vocab.names)):
            raise ValueError(f"labels must index the {len(vocab.names)}-class vocabulary, "
                             f"got values in [{int(labels.min())}, {int(labels.max())}]")
        if pooled.shape[0] == 0:
            return pooled.sum() * 0.0
        emb = self.embed_pooled(pooled)
        text = vocab.embeddings.to(emb.device)
        if emb.shape[1] != text.shape[1]:
            raise ValueError(f"video embeddings have {emb.shape[1]} dims but the text embeddings {text.shape[1]}")
        return F.cross_entropy(vocab.logit_scale * emb @ text.T, labels.to(emb.device).long())


def to_results(detections: dict[str, dict[str, Tensor]], vocab: Vocabulary) -> dict[str, Any]:
    """Per-video :meth:`OpenVocabClassifier.classify` outputs -> ActivityNet predictions JSON."""
    results: dict[str, list[dict[str, Any]]] = {}
    for vid, det in detections.items():
        results[vid] = [
            {"segment": [float(s), float(e)], "label": vocab.names[int(lab)], "score": float(sc)}
            for (s, e), lab, sc in zip(det["segments"].tolist(), det["labels"].tolist(), det["scores"].tolist(), strict=True)
        ]
    return {"results": results}


__all__ += ["to_results"]
