"""Class-agnostic action localizer: ActionFormer's ``LocPointTransformer``, option for option.

Snippet features ``[B, C, T]`` -> masked conv embedding (optional LayerNorm, ReLU, optional
absolute position encoding) -> a stem of transformer blocks at stride 1 -> ``branch_layers``
transformer blocks each downsampling by ``scale_factor`` inside its attention -> identity
FPN (optional LayerNorm per level) -> heads shared across levels: one actionness logit
(sigmoid focal loss) and the distances to the action's start/end (centre-DIoU loss).
Positions, targets and predicted segments are in feature-grid units inside the model;
:meth:`ActionLocalizer.predict` returns seconds.

The reference is happyharrycn/actionformer_release (``libs/modeling/{blocks,backbones,necks,
meta_archs,loc_generators,losses}.py``); ``python -m stovtal.convert actionformer`` loads its
checkpoints into this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stovtal.utils import distributed as D

from .blocks import ChannelLayerNorm, MaskedConv1d, TransformerBlock, sinusoid_encoding
from .heads import ActionnessHead, RegressionHead
from .losses import diou_loss_1d, sigmoid_focal_loss
from .postprocess import NMSConfig, grid_to_seconds, nms_with_voting
from .targets import assign_targets, make_points

__all__ = ["ActionLocalizer", "LocalizerConfig", "LocalizerOutput"]


def _default_ranges() -> list[list[float]]:
    return [[0.0, 4.0], [4.0, 8.0], [8.0, 16.0], [16.0, 32.0], [32.0, 64.0], [64.0, 10000.0]]


@dataclass
class LocalizerConfig:
    """Architecture, loss and decoding settings. Defaults are the authors' THUMOS14 ones
    (ActionFormer's ``configs/thumos_i3d.yaml`` + its ``libs/core/config.py`` defaults).

    ActionFormer name -> field: ``backbone_arch`` = (``embed_layers``, ``stem_layers``,
    ``branch_layers``); ``embd_dim`` = ``embed_dim`` (= ``fpn_dim``); ``embd_kernel_size`` =
    ``embed_kernel``; ``embd_with_ln`` = ``embed_with_ln``; ``n_head`` = ``num_heads``;
    ``n_mha_win_size`` = ``window`` (an int for every level or one value per level; <= 1 =
    global attention); ``scale_factor``; ``use_abs_pe``; ``use_rel_pe``; ``fpn_with_ln``;
    ``head_dim``; ``head_num_layers`` = ``head_layers``; ``head_kernel_size`` = ``head_kernel``;
    ``head_with_ln``; ``num_classes`` = ``head_num_classes`` (1 for a class-agnostic model;
    a converted class-aware checkpoint keeps its per-class outputs and the actionness logit is
    their maximum); ``cls_prior_prob`` = ``prior_prob``; ``regression_range`` =
    ``regression_ranges`` (grid units, one ``[lo, hi]`` per level); ``max_seq_len``;
    ``max_buffer_len_factor``; ``dropout`` = ``proj_drop`` (attention-map dropout
    ``attn_drop`` is 0 in ActionFormer); ``droppath`` = ``path_drop``;
    ``center_sample_radius`` = ``center_radius`` (<= 0: no centre sampling);
    ``label_smoothing``; ``loss_weight`` = ``reg_loss_weight`` (<= 0: adaptive,
    ``cls_loss / max(reg_loss, 0.01)``); ``init_loss_norm`` = ``loss_normalizer_init``;
    ``pre_nms_thresh`` / ``pre_nms_topk`` / ``duration_thresh`` = ``pre_nms_threshold`` /
    ``pre_nms_topk`` / ``min_duration``; the NMS settings are :class:`NMSConfig`.

    The model has ``branch_layers + 1`` levels with strides ``scale_factor ** l``.

    Padding: with ``pad_to_max_seq_len`` (ActionFormer's rule) inputs are padded to at least
    ``max_seq_len`` and to a multiple of :attr:`max_div_factor`; without it (cheaper for short
    videos) only to a multiple of the largest stride. A padded column
    is not zero inside the network (a LayerNorm turns it into its bias) and the convolutions
    read it next to the last valid step, so a video gives ActionFormer's outputs exactly when
    it gets the padding ActionFormer gives it: always with ``pad_to_max_seq_len`` for videos
    of at most ``max_seq_len`` snippets (and for longer ones in a batch of one). Without it,
    the outputs near the end of a video whose length is a multiple of the padding unit
    depend slightly on whether its batch adds padding.
    """

    input_dim: int = 512
    embed_dim: int = 512
    embed_layers: int = 2
    embed_kernel: int = 3
    embed_with_ln: bool = True
    stem_layers: int = 2
    branch_layers: int = 5
    scale_factor: int = 2
    num_heads: int = 4
    window: Any = 19
    use_abs_pe: bool = False
    use_rel_pe: bool = False
    mlp_ratio: int = 4
    attn_drop: float = 0.0
    proj_drop: float = 0.1
    path_drop: float = 0.1
    fpn_with_ln: bool = True
    head_dim: int = 512
    head_layers: int = 3
    head_kernel: int = 3
    head_with_ln: bool = True
    head_num_classes: int = 1
    prior_prob: float = 0.01
    regression_ranges: list[list[float]] = field(default_factory=_default_ranges)
    max_seq_len: int = 2304
    max_buffer_len_factor: float = 6.0
    pad_to_max_seq_len: bool = True
    center_radius: float = 1.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
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
        for name in ("input_dim", "embed_dim", "num_heads", "head_dim", "head_layers", "embed_layers",
                     "max_seq_len", "mlp_ratio", "head_num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"localizer.{name} must be >= 1, got {getattr(self, name)}")
        if self.stem_layers < 0 or self.branch_layers < 0:
            raise ValueError("localizer.stem_layers and branch_layers must be >= 0")
        if self.scale_factor < 2 or self.scale_factor % 2 != 0:
            raise ValueError(f"localizer.scale_factor must be an even integer >= 2, got {self.scale_factor}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(f"localizer.embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.embed_kernel % 2 != 1 or self.head_kernel % 2 != 1:
            raise ValueError("localizer.embed_kernel and head_kernel must be odd")
        windows = self.windows  # validates the length of a per-level list
        for w in windows:
            if w > 1 and w % 2 != 1:
                raise ValueError(f"localizer.window: local attention windows must be odd (or <= 1 for global), got {w}")
        if self.use_rel_pe and any(w <= 1 for w in windows):
            raise ValueError("localizer.use_rel_pe needs local attention (window > 1) at every level")
        if len(self.regression_ranges) != self.num_levels:
            raise ValueError(
                f"localizer.regression_ranges has {len(self.regression_ranges)} entries but the "
                f"model has {self.num_levels} levels (branch_layers + 1)"
            )
        for r in self.regression_ranges:
            if len(r) != 2 or not r[0] < r[1]:
                raise ValueError(f"bad regression range {list(r)}: need [lo, hi] with lo < hi")
        for s, w in zip(self.strides, windows, strict=True):
            step = s * (w // 2) * 2 if w > 1 else s
            if self.max_seq_len % step != 0:
                raise ValueError(
                    f"localizer.max_seq_len {self.max_seq_len} must be divisible by {step} (level stride {s} "
                    f"x window {w} // 2 x 2), as ActionFormer requires"
                )
        if self.max_buffer_len_factor <= 0:
            raise ValueError(f"localizer.max_buffer_len_factor must be > 0, got {self.max_buffer_len_factor}")
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"localizer.prior_prob must be in (0, 1), got {self.prior_prob}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"localizer.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.pre_nms_topk < 1:
            raise ValueError(f"localizer.pre_nms_topk must be >= 1, got {self.pre_nms_topk}")
        if not 0.0 <= self.pre_nms_threshold < 1.0:  # a probability; >= 1 would keep no proposal
            raise ValueError(f"localizer.pre_nms_threshold must be in [0, 1), got {self.pre_nms_threshold}")

    @property
    def num_levels(self) -> int:
        return self.branch_layers + 1

    @property
    def strides(self) -> list[int]:
        return [self.scale_factor**i for i in range(self.num_levels)]

    @property
    def windows(self) -> list[int]:
        """Attention window per level (<= 1: global attention)."""
        if isinstance(self.window, int):
            return [int(self.window)] * self.num_levels
        windows = [int(w) for w in self.window]
        if len(windows) != self.num_levels:
            raise ValueError(f"localizer.window has {len(windows)} entries for {self.num_levels} levels")
        return windows

    @property
    def max_div_factor(self) -> int:
        """Inputs are padded to a multiple of this (every level's stride, and its attention chunks)."""
        return max(s * (w // 2) * 2 if w > 1 else s for s, w in zip(self.strides, self.windows, strict=True))


@dataclass
class LocalizerOutput:
    """Raw per-level predictions; level l has ``T_l = T_pad / 2**l`` steps."""

    logits: list[Tensor]  # [B, T_l]
    offsets: list[Tensor]  # [B, T_l, 2], in units of the level stride
    masks: list[Tensor]  # [B, T_l] bool
    points: Tensor  # [sum T_l, 4] (position, lo, hi, stride), grid units


def _global_count(num_pos: Tensor) -> tuple[Tensor, int]:
    """(positive count summed over the ranks of the default process group, world size)."""
    return D.sum_over_ranks(num_pos), D.get_world_size()


class ActionLocalizer(nn.Module):
    """Class-agnostic action localizer (see module docstring)."""

    def __init__(self, cfg: LocalizerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LocalizerConfig()
        self.embed = nn.ModuleList()
        self.embed_norms = nn.ModuleList()
        in_dim = cfg.input_dim
        for _ in range(cfg.embed_layers):
            self.embed.append(MaskedConv1d(in_dim, cfg.embed_dim, cfg.embed_kernel, bias=not cfg.embed_with_ln))
            self.embed_norms.append(ChannelLayerNorm(cfg.embed_dim) if cfg.embed_with_ln else nn.Identity())
            in_dim = cfg.embed_dim
        if cfg.use_abs_pe:
            pe = sinusoid_encoding(cfg.max_seq_len, cfg.embed_dim) / math.sqrt(cfg.embed_dim)
            self.register_buffer("pos_embed", pe, persistent=False)
        else:
            self.pos_embed = None
        windows = cfg.windows

        def block(window: int, stride: int) -> TransformerBlock:
            return TransformerBlock(
                cfg.embed_dim, cfg.num_heads, window, stride, cfg.mlp_ratio,
                cfg.attn_drop, cfg.proj_drop, cfg.path_drop, cfg.use_rel_pe,
            )

        self.stem = nn.ModuleList(block(windows[0], 1) for _ in range(cfg.stem_layers))
        self.branch = nn.ModuleList(block(windows[1 + i], cfg.scale_factor) for i in range(cfg.branch_layers))
        self.level_norms = nn.ModuleList(
            ChannelLayerNorm(cfg.embed_dim) if cfg.fpn_with_ln else nn.Identity() for _ in range(cfg.num_levels)
        )
        self.cls_head = ActionnessHead(cfg.embed_dim, cfg.head_dim, cfg.head_layers, cfg.head_kernel, cfg.prior_prob,
                                       cfg.head_with_ln, cfg.head_num_classes)
        self.reg_head = RegressionHead(cfg.embed_dim, cfg.head_dim, cfg.num_levels, cfg.head_layers, cfg.head_kernel,
                                       cfg.head_with_ln)
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

    def _position_encoding(self, masks: Tensor) -> Tensor:
        """Absolute position encoding ``[B, C, T]`` (zero at padded steps), as ActionFormer adds it.

        Training: the table's first ``T`` columns (a video may not exceed ``max_seq_len``).
        Inference: a video of ``L <= max_seq_len`` snippets gets the table as is; a longer one
        gets the table linearly resized to ``L`` rounded up to ``max_div_factor`` (the length
        ActionFormer pads it to), so that a video's encoding does not depend on its batch.
        """
        cfg = self.cfg
        pe = self.pos_embed
        assert pe is not None
        b, t = masks.shape
        lengths = masks.sum(dim=1).tolist()
        out = pe.new_zeros(b, pe.shape[0], t)
        for i, n in enumerate(lengths):
            if n <= cfg.max_seq_len:
                table = pe
            elif self.training:
                raise ValueError(
                    f"a training video has {n} snippets, more than localizer.max_seq_len={cfg.max_seq_len} "
                    "(required with use_abs_pe: crop training videos to max_seq_len)"
                )
            else:
                t_i = -(-n // cfg.max_div_factor) * cfg.max_div_factor
                table = F.interpolate(pe[None], size=t_i, mode="linear", align_corners=False)[0]
            k = min(t, table.shape[1])
            out[i, :, :k] = table[:, :k]
        return out * masks.unsqueeze(1).to(out.dtype)

    def forward(self, feats: Tensor, masks: Tensor) -> LocalizerOutput:
        """``feats`` ``[B, C, T]``, ``masks`` bool ``[B, T]`` (True = valid) -> :class:`LocalizerOutput`.

        The input is zeroed at padded steps and padded as :class:`LocalizerConfig` describes.
        """
        self._check_inputs(feats, masks)
        cfg = self.cfg
        div = cfg.max_div_factor
        t = feats.shape[2]
        if cfg.pad_to_max_seq_len:
            t_pad = max(-(-t // div) * div, cfg.max_seq_len)
        else:
            t_pad = -(-t // cfg.strides[-1]) * cfg.strides[-1]
        buffer_len = cfg.max_seq_len * cfg.max_buffer_len_factor
        if t_pad > buffer_len:
            raise ValueError(
                f"input of {t} snippets (padded to {t_pad}) exceeds localizer.max_seq_len x max_buffer_len_factor "
                f"= {buffer_len:g}; raise max_buffer_len_factor"
            )
        if t_pad != t:
            feats = F.pad(feats, (0, t_pad - t))
            masks = F.pad(masks, (0, t_pad - t), value=False)
        x = feats * masks.unsqueeze(1).to(feats.dtype)
        for conv, norm in zip(self.embed, self.embed_norms, strict=True):
            x = F.relu(norm(conv(x, masks)[0]))
        if self.pos_embed is not None:
            x = x + self._position_encoding(masks).to(x.dtype)
        for blk in self.stem:
            x, masks = blk(x, masks)
        levels, level_masks = [x], [masks]
        for blk in self.branch:
            x, masks = blk(x, masks)
            levels.append(x)
            level_masks.append(masks)
        levels = [norm(f) for norm, f in zip(self.level_norms, levels, strict=True)]
        logits = self.cls_head(levels, level_masks)
        offsets = self.reg_head(levels, level_masks)
        points = make_points(
            [f.shape[2] for f in levels], cfg.strides, [tuple(r) for r in cfg.regression_ranges], feats.device
        )
        return LocalizerOutput(logits, offsets, level_masks, points)

    # ------------------------------------------------------------------ training
    def loss(self, feats: Tensor, masks: Tensor, gt_segments: list[Tensor]) -> dict[str, Tensor]:
        """Training losses (ActionFormer's ``losses``).

        Args:
            gt_segments: per video ``[N_i, 2]`` action segments in grid units (labels are
                ignored: the localizer is class-agnostic).

        Returns:
            dict with ``loss`` (to minimise) = ``cls_loss + w * reg_loss``, ``cls_loss`` (focal,
            on targets smoothed to ``y (1 - ls) + ls / 2``), ``reg_loss`` (centre-DIoU), both
            summed and divided by the normaliser, and ``num_pos``. ``w`` is ``reg_loss_weight``,
            or ``cls_loss / max(reg_loss, 0.01)`` (detached) when that is <= 0. In training mode
            the normaliser, an EMA of the positive count, is updated first.

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
        norm = self.loss_normalizer
        target = cls_t[valid] * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / 2.0
        cls_loss = sigmoid_focal_loss(logits[valid], target, cfg.focal_alpha, cfg.focal_gamma, "sum") / norm
        if num_pos > 0:
            reg_loss = diou_loss_1d(offsets[pos], reg_t[pos], "sum") / norm
        else:
            reg_loss = offsets[pos].sum() * 0.0
        if world > 1:
            cls_loss, reg_loss = cls_loss * world, reg_loss * world
        if cfg.reg_loss_weight > 0:
            weight: float | Tensor = cfg.reg_loss_weight
        else:
            weight = cls_loss.detach() / max(float(reg_loss.detach()), 0.01)
        loss = cls_loss + weight * reg_loss
        return {"loss": loss, "cls_loss": cls_loss.detach(), "reg_loss": reg_loss.detach(), "num_pos": num_pos.detach()}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def decode(self, out: LocalizerOutput, index: int) -> tuple[Tensor, Tensor]:
        """Candidate segments of video ``index`` before NMS: ``([M, 2] grid units, [M] actionness)``.

        Per level (ActionFormer's ``inference_single_video``): the valid steps with probability
        above ``pre_nms_threshold``, the ``pre_nms_topk`` most probable in descending order,
        decoded as ``position -/+ offset * stride``, segments no longer than ``min_duration``
        dropped.
        """
        cfg = self.cfg
        segs, scores = [], []
        start = 0
        for logit, off, mask in zip(out.logits, out.offsets, out.masks, strict=True):
            n = logit.shape[1]
            pts = out.points[start : start + n]
            start += n
            prob = torch.sigmoid(logit[index].float()) * mask[index]
            idx = (prob > cfg.pre_nms_threshold).nonzero()[:, 0]
            order = prob[idx].argsort(descending=True, stable=True)[: cfg.pre_nms_topk]
            idx = idx[order]
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
