"""Class-agnostic ActionFormer-style action localizer.

Snippet features ``[B, C, T]`` -> masked conv embedding -> local-window
transformer stem -> a pyramid of transformer levels (stride 2 each) ->
shared heads per level: one actionness logit (sigmoid focal loss) and the
distances to the action's start/end (1-D DIoU loss). Positions, targets and
predicted segments are in feature-grid units inside the model; :meth:`predict`
returns seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ChannelLayerNorm, MaskedConv1d, MaskedDownsample, TransformerBlock
from .heads import ActionnessHead, RegressionHead
from .losses import diou_loss_1d, sigmoid_focal_loss
from .postprocess import NMSConfig, grid_to_seconds, nms_with_voting
from .targets import assign_targets, make_points

__all__ = ["ActionLocalizer", "LocalizerConfig", "LocalizerOutput"]


def _default_ranges() -> list[list[float]]:
    return [[0.0, 4.0], [4.0, 8.0], [8.0, 16.0], [16.0, 32.0], [32.0, 64.0], [64.0, math.inf]]


@dataclass
class LocalizerConfig:
    """Sizes and loss/decoding settings. Defaults are the authors' (ActionFormer on THUMOS14).

    Architecture: ``embed_layers`` masked convs, ``stem_layers`` transformer
    blocks at stride 1, then ``branch_layers`` pyramid levels each halving the
    length -> ``branch_layers + 1`` levels with strides ``1, 2, ..., 2**branch_layers``.
    ``regression_ranges`` (grid units, one ``[lo, hi]`` per level, ``hi`` may be
    ``inf``) decide which level learns which action length.
    """

    input_dim: int = 512
    embed_dim: int = 512
    embed_layers: int = 2
    embed_kernel: int = 3
    stem_layers: int = 2
    branch_layers: int = 5
    num_heads: int = 4
    window: int = 19
    mlp_ratio: int = 4
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    path_drop: float = 0.1
    head_dim: int = 512
    head_layers: int = 3
    head_kernel: int = 3
    prior_prob: float = 0.01
    regression_ranges: list[list[float]] = field(default_factory=_default_ranges)
    center_radius: float = 1.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    reg_loss_weight: float = 1.0
    loss_normalizer_init: float = 100.0
    loss_normalizer_momentum: float = 0.9
    # decoding (grid units / probabilities)
    pre_nms_threshold: float = 0.001
    pre_nms_topk: int = 2000
    min_duration: float = 0.05
    nms: NMSConfig = field(default_factory=NMSConfig)

    def __post_init__(self) -> None:
        if isinstance(self.nms, dict):
            self.nms = NMSConfig(**self.nms)
        for name in ("input_dim", "embed_dim", "num_heads", "head_dim", "head_layers", "embed_layers", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"localizer.{name} must be >= 1, got {getattr(self, name)}")
        if self.stem_layers < 0 or self.branch_layers < 0:
            raise ValueError("localizer.stem_layers and branch_layers must be >= 0")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(f"localizer.embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.window % 2 != 1:
            raise ValueError(f"localizer.window must be odd, got {self.window}")
        if len(self.regression_ranges) != self.num_levels:
            raise ValueError(
                f"localizer.regression_ranges has {len(self.regression_ranges)} entries but the "
                f"model has {self.num_levels} levels (branch_layers + 1)"
            )
        for r in self.regression_ranges:
            if len(r) != 2 or not r[0] < r[1]:
                raise ValueError(f"bad regression range {list(r)}: need [lo, hi] with lo < hi")
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"localizer.prior_prob must be in (0, 1), got {self.prior_prob}")
        if self.pre_nms_topk < 1:
            raise ValueError(f"localizer.pre_nms_topk must be >= 1, got {self.pre_nms_topk}")

    @property
    def num_levels(self) -> int:
        return self.branch_layers + 1

    @property
    def strides(self) -> list[int]:
        return [2**i for i in range(self.num_levels)]


@dataclass
class LocalizerOutput:
    """Raw per-level predictions; level l has ``T_l = T_pad / 2**l`` steps."""

    logits: list[Tensor]  # [B, T_l]
    offsets: list[Tensor]  # [B, T_l, 2], in units of the level stride
    masks: list[Tensor]  # [B, T_l] bool
    points: Tensor  # [sum T_l, 4] (position, lo, hi, stride), grid units


def _global_count(num_pos: Tensor) -> tuple[Tensor, int]:
    """(positive count summed over the ranks of the default process group, world size)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return num_pos, 1
    total = num_pos.detach().clone()
    dist.all_reduce(total)
    return total, dist.get_world_size()


class ActionLocalizer(nn.Module):
    """Class-agnostic action localizer (see module docstring)."""

    def __init__(self, cfg: LocalizerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LocalizerConfig()
        self.embed = nn.ModuleList()
        self.embed_norms = nn.ModuleList()
        in_dim = cfg.input_dim
        for _ in range(cfg.embed_layers):
            self.embed.append(MaskedConv1d(in_dim, cfg.embed_dim, cfg.embed_kernel, bias=False))
            self.embed_norms.append(ChannelLayerNorm(cfg.embed_dim))
            in_dim = cfg.embed_dim

        def block() -> TransformerBlock:
            return TransformerBlock(
                cfg.embed_dim, cfg.num_heads, cfg.window, cfg.mlp_ratio,
                cfg.attn_drop, cfg.proj_drop, cfg.path_drop,
            )

        self.stem = nn.ModuleList(block() for _ in range(cfg.stem_layers))
        self.downsample = MaskedDownsample()
        self.branch = nn.ModuleList(block() for _ in range(cfg.branch_layers))
        self.level_norms = nn.ModuleList(ChannelLayerNorm(cfg.embed_dim) for _ in range(cfg.num_levels))
        self.cls_head = ActionnessHead(cfg.embed_dim, cfg.head_dim, cfg.head_layers, cfg.head_kernel, cfg.prior_prob)
        self.reg_head = RegressionHead(cfg.embed_dim, cfg.head_dim, cfg.num_levels, cfg.head_layers, cfg.head_kernel)
        # EMA of the number of positive points, to normalise the losses (a buffer so that
        # it is checkpointed and resumed exactly)
        self.register_buffer("loss_normalizer", torch.tensor(float(cfg.loss_normalizer_init)))

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, feats: Tensor, masks: Tensor) -> None:
        if not isinstance(feats, Tensor) or feats.dim() != 3:
            raise ValueError(f"feats must be a [B, C, T] tensor, got {getattr(feats, 'shape', type(feats))}")
        if not feats.is_floating_point():
            raise TypeError(f"feats must be floating point, got {feats.dtype}")
        if feats.shape[1] != self.cfg.input_dim:
            raise ValueError(f"feats have {feats.shape[1]} channels, the localizer expects {self.cfg.input_dim}")
        if feats.shape[0] == 0 or feats.shape[2] == 0:
            raise ValueError(f"feats must be non-empty, got shape {tuple(feats.shape)}")
        if masks.dtype != torch.bool or masks.shape != (feats.shape[0], feats.shape[2]):
            raise ValueError(f"masks must be bool [B, T] = {(feats.shape[0], feats.shape[2])}, got {masks.dtype} {tuple(masks.shape)}")
        if not torch.isfinite(feats).all():
            raise ValueError("feats contain NaN or inf")

    def forward(self, feats: Tensor, masks: Tensor) -> LocalizerOutput:
        """``feats`` ``[B, C, T]``, ``masks`` bool ``[B, T]`` (True = valid) -> :class:`LocalizerOutput`."""
        self._check_inputs(feats, masks)
        cfg = self.cfg
        div = 2 ** cfg.branch_layers
        t = feats.shape[2]
        t_pad = -(-t // div) * div
        if t_pad != t:
            feats = F.pad(feats, (0, t_pad - t))
            masks = F.pad(masks, (0, t_pad - t), value=False)
        m = masks.unsqueeze(1).to(feats.dtype)
        x = feats * m
        for conv, norm in zip(self.embed, self.embed_norms, strict=True):
            x = F.relu(norm(conv(x, masks))) * m
        for blk in self.stem:
            x = blk(x, masks)
        levels, level_masks = [x], [masks]
        for blk in self.branch:
            x, masks = self.downsample(x, masks)
            x = blk(x, masks)
            levels.append(x)
            level_masks.append(masks)
        levels = [
            norm(f) * lm.unsqueeze(1).to(f.dtype)
            for norm, f, lm in zip(self.level_norms, levels, level_masks, strict=True)
        ]
        logits = self.cls_head(levels, level_masks)
        offsets = self.reg_head(levels, level_masks)
        points = make_points(
            [f.shape[2] for f in levels], cfg.strides, [tuple(r) for r in cfg.regression_ranges], feats.device
        )
        return LocalizerOutput(logits, offsets, level_masks, points)

    # ------------------------------------------------------------------ training
    def loss(self, feats: Tensor, masks: Tensor, gt_segments: list[Tensor]) -> dict[str, Tensor]:
        """Training losses.

        Args:
            gt_segments: per video ``[N_i, 2]`` action segments in grid units (labels are
                ignored: the localizer is class-agnostic).

        Returns:
            dict with ``loss`` (to minimise), ``cls_loss``, ``reg_loss``, ``num_pos``.
            In training mode the positive-count EMA used as normaliser is updated.

        Under ``torch.distributed`` (world size W > 1, training mode) the normaliser is updated
        with the positive count summed over all ranks and the loss is multiplied by W, so that
        DDP's averaging of the ranks' gradients gives exactly the gradient of the loss of the
        global batch (as in one process); every rank must then call ``loss`` equally often.
        """
        if len(gt_segments) != feats.shape[0]:
            raise ValueError(f"{len(gt_segments)} segment lists for a batch of {feats.shape[0]}")
        out = self(feats, masks)
        cfg = self.cfg
        logits = torch.cat(out.logits, dim=1).float()  # [B, P]
        offsets = torch.cat(out.offsets, dim=1).float()  # [B, P, 2]
        valid = torch.cat(out.masks, dim=1)
        cls_t, reg_t = zip(
            *(assign_targets(out.points, g.to(out.points.device, torch.float32), cfg.center_radius) for g in gt_segments),
            strict=True,
        )
        cls_t = torch.stack(cls_t)
        reg_t = torch.stack(reg_t)
        pos = (cls_t > 0) & valid
        num_pos = pos.sum()
        world = 1
        if self.training:
            count, world = _global_count(num_pos)
            mom = cfg.loss_normalizer_momentum
            self.loss_normalizer.mul_(mom).add_((1 - mom) * count.clamp(min=1).to(self.loss_normalizer.dtype))
        norm = self.loss_normalizer.clamp(min=1.0)
        cls_loss = sigmoid_focal_loss(logits[valid], cls_t[valid], cfg.focal_alpha, cfg.focal_gamma, "sum") / norm
        if num_pos > 0:
            reg_loss = diou_loss_1d(offsets[pos], reg_t[pos], "sum") / norm
        else:
            reg_loss = offsets.sum() * 0.0
        if world > 1:
            cls_loss, reg_loss = cls_loss * world, reg_loss * world
        loss = cls_loss + cfg.reg_loss_weight * reg_loss
        return {"loss": loss, "cls_loss": cls_loss.detach(), "reg_loss": reg_loss.detach(), "num_pos": num_pos.detach()}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def decode(self, out: LocalizerOutput, index: int) -> tuple[Tensor, Tensor]:
        """Candidate segments of video ``index`` before NMS: ``([M, 2] grid units, [M] actionness)``."""
        cfg = self.cfg
        segs, scores = [], []
        start = 0
        for logit, off, mask in zip(out.logits, out.offsets, out.masks, strict=True):
            n = logit.shape[1]
            pts = out.points[start : start + n]
            start += n
            prob = torch.sigmoid(logit[index].float())
            keep = mask[index] & (prob > cfg.pre_nms_threshold)
            idx = keep.nonzero()[:, 0]
            if idx.numel() > cfg.pre_nms_topk:
                idx = idx[prob[idx].topk(cfg.pre_nms_topk).indices]
            o = off[index, idx].float()
            p = pts[idx]
            seg = torch.stack([p[:, 0] - o[:, 0] * p[:, 3], p[:, 0] + o[:, 1] * p[:, 3]], dim=1)
            ok = (seg[:, 1] - seg[:, 0]) > cfg.min_duration
            segs.append(seg[ok])
            scores.append(prob[idx][ok])
        return torch.cat(segs), torch.cat(scores)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        """Detect class-agnostic actions in a collated batch.

        ``batch`` needs ``feats``, ``masks`` and per-video ``fps``, ``feat_stride``,
        ``feat_num_frames``, ``duration`` (and ``offset_snippets`` if the features were cropped). Returns one dict per video with
        ``segments`` ``[K, 2]`` in **seconds** (clipped to ``[0, duration]``) and
        ``scores`` ``[K]`` (actionness after soft-NMS), sorted by descending score.
        """
        out = self(batch["feats"], batch["masks"])
        results = []
        for b in range(batch["feats"].shape[0]):
            segs, scores = self.decode(out, b)
            segs, scores, _ = nms_with_voting(segs.cpu(), scores.cpu(), self.cfg.nms)
            offset = float(batch["offset_snippets"][b]) if "offset_snippets" in batch else 0.0
            secs = grid_to_seconds(
                segs.double() + offset, float(batch["fps"][b]), float(batch["feat_stride"][b]),
                float(batch["feat_num_frames"][b]),
            )
            secs = secs.clamp(min=0.0, max=float(batch["duration"][b])).float()
            ok = secs[:, 1] > secs[:, 0]
            results.append({"segments": secs[ok], "scores": scores[ok].float()})
        return results
