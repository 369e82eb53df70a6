"""temporal_nms / soft_nms on CPU, at the sizes TAL post-processing produces.

Run: pytest benchmarks/test_bench_nms.py --benchmark-only
Groups (one table each, so the ratio is read off directly):
- hard NMS, 2000 candidates, 20 labels, float32: ours vs the pure-PyTorch
  reference (pairwise IoU matrix + greedy loop), a pure-Python greedy loop and
  torchvision.ops.batched_nms on unit-height boxes;
- soft-NMS (gaussian, ActionFormer's THUMOS settings), same candidates: ours
  vs a pure-Python loop and the pure-PyTorch reference;
- per-video post-processing: 1000 videos x 2000 candidates through soft-NMS
  with score voting; ``extra_info["videos_per_s"]``;
- scaling with N (2,000 / 10,000 / 100,000) on two distributions: "uniform"
  (centres uniform in [0, 2304], lengths log-uniform in [1, 576], scores
  uniform: the ops-speed issue's inputs) and "localizer" (base_model_candidates:
  the statistics of the synthetic world's base localizer's pre-NMS candidates,
  about 2 per feature step, mostly short low-scoring ones plus clusters around
  each action). One group per
  (case, distribution, N): hard NMS without labels vs torchvision ``nms``,
  with 20 labels vs ``batched_nms``, gaussian soft-NMS vs torchvision's hard
  ``nms`` (the yardstick of the issue's target), soft-NMS with voting and
  20 labels.
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

from stovtal.ops import reference, soft_nms, temporal_nms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _candidates import base_model_candidates, make_candidates  # noqa: E402

N = 2000
NUM_LABELS = 20
NUM_VIDEOS = 1000
NMS_IOU = 0.5
# ActionFormer's THUMOS14 test settings.
SOFT = {"iou_threshold": 0.1, "sigma": 0.5, "min_score": 0.001, "method": "gaussian"}
VOTING = 0.7
MAX_SEGMENTS = 200




def python_nms(segments, scores, labels, iou_threshold):
    """Greedy hard NMS on Python lists, kept segments grouped by label."""
    seg, sc, lab = segments.tolist(), scores.tolist(), labels.tolist()
    kept_by_label: dict[int, list[tuple[float, float, float]]] = {}
    keep = []
    for i in sorted(range(len(sc)), key=lambda k: (-sc[k], k)):
        s, e = seg[i]
        length = max(e - s, 0.0)
        kept = kept_by_label.setdefault(lab[i], [])
        suppressed = False
        for ks, ke, kl in kept:
            inter = max(min(e, ke) - max(s, ks), 0.0)
            union = length + kl - inter
            if union > 0 and inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append((s, e, length))
            keep.append(i)
    return keep


def python_soft_nms(segments, scores, labels, iou_threshold, sigma, min_score, method):
    """ActionFormer-style soft-NMS loop on Python lists, run per label, merged by score."""
    seg, sc, lab = segments.tolist(), scores.tolist(), labels.tolist()
    by_label: dict[int, list[int]] = {}
    for i, value in enumerate(lab):
        by_label.setdefault(value, []).append(i)
    selected = []
    for members in by_label.values():
        remaining = [[seg[i][0], seg[i][1], max(seg[i][1] - seg[i][0], 0.0), sc[i], i] for i in members]
        while remaining:
            best = max(range(len(remaining)), key=lambda r: (remaining[r][3], -remaining[r][4]))
            bs, be, bl, bscore, bi = remaining.pop(best)
            selected.append((bscore, bi))
            survivors = []
            for cand in remaining:
                inter = max(min(be, cand[1]) - max(bs, cand[0]), 0.0)
                union = bl + cand[2] - inter
                iou = inter / union if union > 0 else 0.0
                if method == "linear":
                    weight = 1 - iou if iou >= iou_threshold else 1.0
                else:
                    weight = math.exp(-iou * iou / sigma)
                cand[3] *= weight
                if cand[3] >= min_score:
                    survivors.append(cand)
            remaining = survivors
    selected.sort(key=lambda t: (-t[0], t[1]))
    return [i for _, i in selected]


@pytest.fixture(scope="module")
def candidates():
    return make_candidates(0)


# ---------------------------------------------------------------- hard NMS

HARD = f"temporal_nms-{N}cand-{NUM_LABELS}labels-f32-cpu"


@pytest.mark.benchmark(group=HARD)
def test_hard_stovtal(benchmark, candidates):
    seg, sc, lab = candidates
    keep = benchmark(temporal_nms, seg, sc, NMS_IOU, lab)
    assert torch.equal(keep, reference.temporal_nms(seg, sc, NMS_IOU, lab))


@pytest.mark.benchmark(group=HARD)
def test_hard_reference(benchmark, candidates):
    seg, sc, lab = candidates
    keep = benchmark.pedantic(reference.temporal_nms, (seg, sc, NMS_IOU, lab), rounds=5, iterations=1)
    assert torch.equal(keep, temporal_nms(seg, sc, NMS_IOU, lab))


@pytest.mark.benchmark(group=HARD)
def test_hard_python(benchmark, candidates):
    seg, sc, lab = candidates
    keep = benchmark.pedantic(python_nms, (seg, sc, lab, NMS_IOU), rounds=5, iterations=1)
    assert keep == temporal_nms(seg, sc, NMS_IOU, lab).tolist()


@pytest.mark.benchmark(group=HARD)
def test_hard_torchvision_batched_nms(benchmark, candidates):
    tv = pytest.importorskip("torchvision")
    seg, sc, lab = candidates
    ones = torch.ones(N, 1)
    boxes = torch.cat([seg[:, :1], 0 * ones, seg[:, 1:], ones], 1).contiguous()
    keep = benchmark(tv.ops.batched_nms, boxes, sc, lab, NMS_IOU)
    assert torch.equal(keep, temporal_nms(seg, sc, NMS_IOU, lab))


# ---------------------------------------------------------------- soft-NMS

SOFT_GROUP = f"soft_nms-gaussian-{N}cand-{NUM_LABELS}labels-f32-cpu"


def _soft_ours(seg, sc, lab):
    return soft_nms(seg, sc, labels=lab, **SOFT)


@pytest.mark.benchmark(group=SOFT_GROUP)
def test_soft_stovtal(benchmark, candidates):
    seg, sc, lab = candidates
    _, _, idx = benchmark(_soft_ours, seg, sc, lab)
    assert idx.tolist() == python_soft_nms(seg, sc, lab, **SOFT)


@pytest.mark.benchmark(group=SOFT_GROUP)
def test_soft_python(benchmark, candidates):
    seg, sc, lab = candidates
    order = benchmark.pedantic(python_soft_nms, (seg, sc, lab), SOFT, rounds=3, iterations=1)
    assert order == _soft_ours(seg, sc, lab)[2].tolist()


@pytest.mark.benchmark(group=SOFT_GROUP)
def test_soft_reference(benchmark, candidates):
    seg, sc, lab = candidates
    out = benchmark.pedantic(
        reference.soft_nms, (seg, sc), dict(SOFT, labels=lab), rounds=1, iterations=1
    )
    assert torch.equal(out[2], _soft_ours(seg, sc, lab)[2])


# ---------------------------------------------------------------- per-video post-processing

POST = f"postprocess-{NUM_VIDEOS}videos-x{N}cand-softnms-voting-cpu"


@pytest.fixture(scope="module")
def videos():
    return [make_candidates(1000 + v) for v in range(NUM_VIDEOS)]


def postprocess_all(videos):
    out = []
    for seg, sc, lab in videos:
        out.append(
            soft_nms(seg, sc, labels=lab, max_keep=MAX_SEGMENTS, voting_threshold=VOTING, **SOFT)
        )
    return out


@pytest.mark.benchmark(group=POST)
def test_postprocess_videos(benchmark, videos):
    out = benchmark.pedantic(postprocess_all, (videos,), rounds=3, iterations=1)
    assert len(out) == NUM_VIDEOS and all(len(o[2]) == MAX_SEGMENTS for o in out)
    benchmark.extra_info["videos_per_s"] = NUM_VIDEOS / benchmark.stats.stats.mean


# ---------------------------------------------------------------- scaling with N

SCALE_SIZES = [2000, 10_000, 100_000]
SCALE_DISTRIBUTIONS = ["uniform", "localizer"]


def uniform_candidates(seed: int, n: int, num_labels: int = NUM_LABELS):
    """The ops-speed issue's inputs: centres uniform in [0, 2304], lengths log-uniform
    in [1, 576], scores uniform (no ties), float32."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, generator=g, dtype=torch.float64) * 2304
    length = torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * math.log(576))
    seg = torch.stack([centre - length / 2, centre + length / 2], 1).float().contiguous()
    scores = torch.rand(n, generator=g, dtype=torch.float64).float()
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return seg, scores, labels


_scale_cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def scale_candidates(distribution: str, n: int):
    key = (distribution, n)
    if key not in _scale_cache:
        make = uniform_candidates if distribution == "uniform" else base_model_candidates
        _scale_cache[key] = make(7, n)
    return _scale_cache[key]


def unit_boxes(seg):
    ones = torch.ones(seg.shape[0], 1)
    return torch.cat([seg[:, :1], 0 * ones, seg[:, 1:], ones], 1).contiguous()


def assert_same_kept(theirs, ours, scores):
    """The same kept set in the same score order (torchvision's sort is not stable: float32
    scores of 100,000 candidates have ties, which it may order either way)."""
    assert torch.equal(theirs.sort().values, ours.sort().values)
    assert torch.equal(scores[theirs], scores[ours])


def _run(benchmark, n, fn, *args, **kwargs):
    rounds = 3 if n >= 100_000 else 10
    return benchmark.pedantic(fn, args, kwargs, rounds=rounds, iterations=1, warmup_rounds=1)


scale = pytest.mark.parametrize("n", SCALE_SIZES)
distributions = pytest.mark.parametrize("distribution", SCALE_DISTRIBUTIONS)


@scale
@distributions
def test_scale_hard_stovtal(benchmark, distribution, n):
    seg, sc, _ = scale_candidates(distribution, n)
    benchmark.group = f"scale-hard-1label-{distribution}-N{n}"
    keep = _run(benchmark, n, temporal_nms, seg, sc, NMS_IOU)
    benchmark.extra_info["kept"] = len(keep)


@scale
@distributions
def test_scale_hard_torchvision_nms(benchmark, distribution, n):
    tv = pytest.importorskip("torchvision")
    seg, sc, _ = scale_candidates(distribution, n)
    benchmark.group = f"scale-hard-1label-{distribution}-N{n}"
    keep = _run(benchmark, n, tv.ops.nms, unit_boxes(seg), sc, NMS_IOU)
    assert_same_kept(keep, temporal_nms(seg, sc, NMS_IOU), sc)


@scale
@distributions
def test_scale_hard_labels_stovtal(benchmark, distribution, n):
    seg, sc, lab = scale_candidates(distribution, n)
    benchmark.group = f"scale-hard-{NUM_LABELS}labels-{distribution}-N{n}"
    keep = _run(benchmark, n, temporal_nms, seg, sc, NMS_IOU, lab)
    benchmark.extra_info["kept"] = len(keep)


@scale
@distributions
def test_scale_hard_labels_torchvision_batched_nms(benchmark, distribution, n):
    tv = pytest.importorskip("torchvision")
    seg, sc, lab = scale_candidates(distribution, n)
    benchmark.group = f"scale-hard-{NUM_LABELS}labels-{distribution}-N{n}"
    keep = _run(benchmark, n, tv.ops.batched_nms, unit_boxes(seg), sc, lab, NMS_IOU)
    assert_same_kept(keep, temporal_nms(seg, sc, NMS_IOU, lab), sc)


@scale
@distributions
def test_scale_soft_gaussian_stovtal(benchmark, distribution, n):
    seg, sc, _ = scale_candidates(distribution, n)
    benchmark.group = f"scale-soft-gaussian-1label-{distribution}-N{n}"
    out = _run(benchmark, n, soft_nms, seg, sc, **SOFT)
    benchmark.extra_info["selected"] = len(out[2])


@scale
@distributions
def test_scale_soft_gaussian_vs_torchvision_hard_nms(benchmark, distribution, n):
    """torchvision's hard nms at the same N: the yardstick of the issue's soft-NMS target."""
    tv = pytest.importorskip("torchvision")
    seg, sc, _ = scale_candidates(distribution, n)
    benchmark.group = f"scale-soft-gaussian-1label-{distribution}-N{n}"
    _run(benchmark, n, tv.ops.nms, unit_boxes(seg), sc, NMS_IOU)


@scale
@distributions
def test_scale_soft_voting_labels_stovtal(benchmark, distribution, n):
    seg, sc, lab = scale_candidates(distribution, n)
    benchmark.group = f"scale-soft-voting-{NUM_LABELS}labels-{distribution}-N{n}"
    out = _run(benchmark, n, soft_nms, seg, sc, labels=lab, voting_threshold=VOTING, **SOFT)
    benchmark.extra_info["selected"] = len(out[2])
