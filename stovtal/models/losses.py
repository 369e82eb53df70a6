"""Losses of the localizer: sigmoid focal loss (actionness) and 1-D DIoU (boundaries)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["diou_loss_1d", "sigmoid_focal_loss"]


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "sum"
) -> Tensor:
    """Focal loss (Lin et al. 2017) on sigmoid logits.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` for positives
    and ``1 - p`` for negatives; ``alpha < 0`` disables the alpha weighting.

    Args:
        logits: any shape, raw scores.
        targets: same shape, values in [0, 1] (soft targets allowed).
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"focal loss: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")


def diou_loss_1d(pred: Tensor, target: Tensor, reduction: str = "sum", eps: float = 1e-8) -> Tensor:
    """Distance-IoU loss between 1-D segments given as distances from a shared point.

    Args:
        pred, target: ``[N, 2]`` non-negative (distance to start, distance to end)
            measured from the same anchor point, in the same unit.

    Returns:
        ``1 - IoU + (centre distance / enclosing length)^2`` per pair, reduced (ActionFormer's
        ``ctr_diou_loss_1d``; lengths below ``eps`` are clamped to ``eps``).
        For identical segments it is 0; for disjoint ones it exceeds 1.
    """
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != 2:
        raise ValueError(f"diou_loss_1d: expected two [N, 2] tensors, got {tuple(pred.shape)}, {tuple(target.shape)}")
    lp, rp = pred[:, 0], pred[:, 1]
    lg, rg = target[:, 0], target[:, 1]
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    # centre of [-l, r] is (r - l) / 2
    centre_dist = 0.5 * ((rp - lp) - (rg - lg))
    loss = 1.0 - iou + (centre_dist / enclosing.clamp(min=eps)).pow(2)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")
