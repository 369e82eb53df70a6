"""CoLA: weakly-supervised temporal action localization by snippet contrastive learning.

Zhang et al., CVPR 2021 ("CoLA: Weakly-Supervised Temporal Action Localization with Snippet
Contrastive Learning"); FEEL trains it on the pseudo-classes of its clusters.

- Snippet embedding: ``Conv1d(C, E, 3) + ReLU`` over the snippet sequence, whose borders are
  padded by replicating the first and last valid snippet (``border="replicate"``) or with
  zeros (``"zero"``, CoLA's).
- Class activation sequence (CAS): dropout + ``Conv1d(E, K, 1)`` + ReLU (CoLA's; ``cas_relu``)
  -> ``[B, T, K]``, non-negative; actionness = sum of the CAS over classes ``[B, T]``.
- Video-level scores: softmax over classes of the mean of the top-``k_easy`` CAS values per
  class (``k_easy = T // r_easy``); action loss = BCE against the normalised video label,
  summed over classes and averaged over videos (``action_reduction="sum"``) or averaged over
  both (``"mean"``, CoLA's).
- SniCo loss: easy action / background snippets are the top-``k_easy`` by actionness (and by
  reversed actionness) after a random drop of snippets; hard action snippets lie in the inner
  boundary band of the above-median actionness mask (erosion by ``m`` minus erosion by ``M``),
  hard background snippets in the outer band (dilation by ``M`` minus dilation by ``m``). The
  mean hard-action embedding is pulled to the mean easy-action embedding against the easy
  background embeddings (InfoNCE, temperature ``tau``), and symmetrically for background.

Everything handles padding masks (``True`` = valid snippet), so videos of different lengths
share a batch; ``k_easy``/``k_hard`` are computed per video from its valid length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CoLA", "CoLAConfig", "cola_losses", "binary_erode", "binary_dilate"]


@dataclass
class CoLAConfig:
    in_dim: int = 2048
    num_classes: int = 20
    embed_dim: int = 2048
    dropout: float = 0.7
    r_easy: int = 5
    r_hard: int = 20
    m: int = 3
    M: int = 6
    easy_drop: float = 0.6
    tau: float = 0.07
    snico_weight: float = 0.01
    cas_relu: bool = True  # ReLU after the classifier conv (CoLA's)
    border: str = "replicate"  # "replicate" | "zero" (CoLA's): padding of the video borders
    action_reduction: str = "sum"  # "sum" over classes | "mean" over classes (CoLA's)


def binary_dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of ``x`` ``[B, T]`` (0/1 float) with a flat window of ``size`` (outside = 0)."""
    if size <= 1:
        return x
    left = size // 2
    right = size - 1 - left
    return F.max_pool1d(F.pad(x[:, None], (left, right), value=0.0), size, stride=1)[:, 0]


def binary_erode(x: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion of ``x`` ``[B, T]`` (0/1 float) with a flat window of ``size`` (outside = 0)."""
    if size <= 1:
        return x
    left = size // 2
    right = size - 1 - left
    return -F.max_pool1d(F.pad(-x[:, None], (left, right), value=0.0), size, stride=1)[:, 0]


def _topk_mean(scores: torch.Tensor, values: torch.Tensor, k: torch.Tensor, valid: torch.Tensor):
    """Mean of ``values`` ``[B, T, E]`` over each row's top-``k[b]`` ``scores`` ``[B, T]``.

    Only positions where ``valid`` is True compete; a row with fewer valid positions than
    ``k[b]`` averages those it has. Returns (mean ``[B, E]``, selected ``[B, kmax, E]``,
    selection mask ``[B, kmax]``, number selected ``[B]``).
    """
    kmax = max(int(k.max()), 1)
    kmax = min(kmax, scores.shape[1])
    s = scores.masked_fill(~valid, float("-inf"))
    top = s.topk(kmax, dim=1)
    sel = torch.gather(values, 1, top.indices[..., None].expand(-1, -1, values.shape[2]))
    take = (torch.arange(kmax, device=scores.device)[None] < k[:, None]) & torch.isfinite(top.values)
    n = take.sum(1)
    mean = (sel * take[..., None]).sum(1) / n.clamp_min(1)[:, None]
    return mean, sel, take, n


class CoLA(nn.Module):
    """CoLA localizer. ``forward(feats [B, C, T], mask [B, T] | None)`` -> dict of
    ``embeddings [B, T, E]``, ``cas [B, T, K]``, ``actionness [B, T]``,
    ``video_scores [B, K]`` (probabilities), ``mask [B, T]``.
    """

    def __init__(self, cfg: CoLAConfig):
        super().__init__()
        if cfg.num_classes < 1 or cfg.in_dim < 1 or cfg.embed_dim < 1:
            raise ValueError(f"CoLA: bad sizes in {cfg}")
        if cfg.border not in ("replicate", "zero"):
            raise ValueError(f"CoLA: border must be 'replicate' or 'zero', got {cfg.border!r}")
        if cfg.action_reduction not in ("sum", "mean"):
            raise ValueError(f"CoLA: action_reduction must be 'sum' or 'mean', got {cfg.action_reduction!r}")
        self.cfg = cfg
        # the borders are padded in forward (replicated, or zeros over the padding too)
        self.embed = nn.Conv1d(cfg.in_dim, cfg.embed_dim, 3, padding=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Conv1d(cfg.embed_dim, cfg.num_classes, 1, bias=False)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if feats.dim() != 3 or feats.shape[1] != self.cfg.in_dim:
            raise ValueError(f"CoLA: feats must be [B, {self.cfg.in_dim}, T], got {tuple(feats.shape)}")
        b, _, t = feats.shape
        if t == 0:
            raise ValueError("CoLA: empty snippet sequence")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=feats.device)
        if mask.shape != (b, t) or mask.dtype != torch.bool:
            raise ValueError(f"CoLA: mask must be bool [B, T] = {(b, t)}, got {mask.dtype} {tuple(mask.shape)}")
        if self.cfg.border == "replicate":
            padded = _replicate_borders(feats, mask)
        else:
            padded = F.pad(feats * mask[:, None].to(feats.dtype), (1, 1))
        emb = F.relu(self.embed(padded))
        cas = self.classifier(self.drop(emb))
        if self.cfg.cas_relu:
            cas = F.relu(cas)
        cas = cas.transpose(1, 2)  # [B, T, K]
        emb = emb.transpose(1, 2)  # [B, T, E]
        actionness = cas.sum(2)
        k_easy = self.k_easy(mask)
        video_logits, _, _, _ = _topk_mean_per_class(cas, k_easy, mask)
        return {
            "embeddings": emb,
            "cas": cas,
            "actionness": actionness,
            "video_scores": video_logits.softmax(1),
            "mask": mask,
        }

    def k_easy(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask.sum(1) // self.cfg.r_easy).clamp_min(1)

    def k_hard(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask.sum(1) // self.cfg.r_hard).clamp_min(1)

    def video_embedding(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Actionness-weighted mean snippet embedding ``[B, E]`` (weights = per-video min-max
        normalised actionness over the valid snippets), the video feature FEEL clusters."""
        a, mask = out["actionness"].detach(), out["mask"]
        lo = a.masked_fill(~mask, float("inf")).min(1, keepdim=True).values
        hi = a.masked_fill(~mask, float("-inf")).max(1, keepdim=True).values
        w = ((a - lo) / (hi - lo).clamp_min(1e-12)) * mask
        w = torch.where(w.sum(1, keepdim=True) > 0, w, mask.to(w.dtype))  # constant actionness
        return (out["embeddings"] * w[..., None]).sum(1) / w.sum(1, keepdim=True)


def _replicate_borders(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``feats`` ``[B, C, T]`` -> ``[B, C, T + 2]``: each video's first snippet repeated
    before it and its last valid snippet repeated over the padding and one step beyond.

    Zero padding would make the border snippets' activations systematically lower than the
    interior's, and a per-video min-max normalisation at inference would then be set by the
    borders rather than by the video's content. Masks must be prefixes (valid snippets
    first), as :func:`stovtal.feel.cola.pad_batch` makes them.
    """
    b, _, t = feats.shape
    length = mask.sum(1)
    steps = torch.arange(t, device=mask.device)
    if (length < 1).any() or not torch.equal(mask, steps[None] < length[:, None]):
        raise ValueError("CoLA: mask must mark a non-empty prefix of valid snippets in every video")
    idx = torch.minimum(torch.arange(-1, t + 1, device=mask.device).clamp_min(0)[None], (length - 1)[:, None])
    return torch.gather(feats, 2, idx[:, None, :].expand(b, feats.shape[1], t + 2))


def _topk_mean_per_class(cas: torch.Tensor, k: torch.Tensor, mask: torch.Tensor):
    """Mean of the top-``k[b]`` CAS values of every class over the valid snippets -> ``[B, K]``."""
    kmax = min(max(int(k.max()), 1), cas.shape[1])
    s = cas.masked_fill(~mask[..., None], float("-inf"))
    top = s.topk(kmax, dim=1).values  # [B, kmax, K]
    take = torch.arange(kmax, device=cas.device)[None] < k[:, None]
    take = take[..., None] & torch.isfinite(top)
    n = take.sum(1).clamp_min(1)
    return (top.masked_fill(~take, 0.0)).sum(1) / n, top, take, n


def _info_nce(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor, tau: float):
    """Per-row InfoNCE: q, pos ``[B, E]``; neg ``[B, N, E]`` with ``neg_mask`` ``[B, N]``."""
    q = F.normalize(q, dim=1)
    pos = F.normalize(pos, dim=1)
    neg = F.normalize(neg, dim=2)
    l_pos = (q * pos).sum(1, keepdim=True)
    l_neg = torch.einsum("be,bne->bn", q, neg).masked_fill(~neg_mask, float("-inf"))
    logits = torch.cat([l_pos, l_neg], 1) / tau
    return -F.log_softmax(logits, 1)[:, 0]


def cola_losses(
    model: CoLA, out: dict[str, torch.Tensor], labels: torch.Tensor, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Action (video-level BCE) + SniCo losses for a batch.

    ``labels``: ``[B]`` int64 (one pseudo-class per video) or ``[B, K]`` multi-hot.
    Returns ``{"action", "snico", "total"}`` scalars; ``total = action + snico_weight * snico``.
    ``generator`` drives the random drop used for easy-snippet mining (CPU generator).
    """
    cfg = model.cfg
    mask, act, emb, cas = out["mask"], out["actionness"], out["embeddings"], out["cas"]
    b, t = mask.shape
    if labels.dim() == 1:
        if labels.shape[0] != b or labels.min() < 0 or labels.max() >= cfg.num_classes:
            raise ValueError(f"cola_losses: labels must be [B={b}] in [0, {cfg.num_classes}), got {labels.tolist()}")
        target = F.one_hot(labels, cfg.num_classes).to(cas.dtype)
    else:
        if labels.shape != (b, cfg.num_classes):
            raise ValueError(f"cola_losses: labels must be [B, K] = {(b, cfg.num_classes)}, got {tuple(labels.shape)}")
        target = labels.to(cas.dtype)
    if (target.sum(1) <= 0).any():
        raise ValueError("cola_losses: a video has no label")
    target = target / target.sum(1, keepdim=True)
    scores = out["video_scores"].clamp(1e-7, 1 - 1e-7)
    # "sum": summed over classes, averaged over videos (CoLA averages over both, which shrinks
    # the gradient by a factor K and ties the usable learning rate to the number of classes)
    action = F.binary_cross_entropy(scores, target, reduction="sum") / b
    if cfg.action_reduction == "mean":
        action = action / cfg.num_classes

    k_easy, k_hard = model.k_easy(mask), model.k_hard(mask)
    keep = torch.rand(b, t, generator=generator).to(mask.device) >= cfg.easy_drop
    keep = keep & mask
    keep = torch.where(keep.any(1, keepdim=True), keep, mask)  # never drop a whole video
    rev = act.masked_fill(~mask, float("-inf")).max(1, keepdim=True).values - act
    ea_mean, ea, ea_take, _ = _topk_mean(act, emb, k_easy, keep)
    eb_mean, eb, eb_take, _ = _topk_mean(rev, emb, k_easy, keep)

    with torch.no_grad():
        a = act.detach().masked_fill(~mask, float("nan"))
        med = a.nanmedian(1, keepdim=True).values
        binary = ((act.detach() > med) & mask).to(act.dtype)
        inner = (binary_erode(binary, cfg.m) - binary_erode(binary, cfg.M)) > 0
        outer = (binary_dilate(binary, cfg.M) - binary_dilate(binary, cfg.m)) > 0
        inner &= mask
        outer &= mask
    ha_mean, _, _, n_ha = _topk_mean(act, emb, k_hard, inner)
    hb_mean, _, _, n_hb = _topk_mean(act, emb, k_hard, outer)
    l_ha = _info_nce(ha_mean, ea_mean, eb, eb_take, cfg.tau)
    l_hb = _info_nce(hb_mean, eb_mean, ea, ea_take, cfg.tau)
    # a video without hard snippets in a band contributes no term for it
    w_ha, w_hb = (n_ha > 0).to(act.dtype), (n_hb > 0).to(act.dtype)
    snico = (l_ha * w_ha).sum() / w_ha.sum().clamp_min(1) + (l_hb * w_hb).sum() / w_hb.sum().clamp_min(1)
    return {"action": action, "snico": snico, "total": action + cfg.snico_weight * snico}
