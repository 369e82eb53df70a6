"""The CUDA kernels against torchvision's CUDA ops and against our CPU kernels, at the
README's benchmark sizes (run by tools/gpu_check.sh; needs a GPU for the CUDA half).

Run: pytest benchmarks/test_bench_cuda.py --benchmark-only   (``-m "not cuda"``: CPU half;
``STOVTAL_BENCH_QUICK=1``: each CPU entry timed once)
Groups (one table each; ``extra_info["backend"]`` names the entry):
- temporal_nms, 2,000 candidates, 20 labels: ours (CUDA, CPU) vs ``torchvision.ops.batched_nms``
  (CUDA) on unit-height boxes; one label: vs ``torchvision.ops.nms``;
- soft_nms gaussian with score voting, 2,000 candidates, 20 labels: CUDA vs CPU;
- roi_align_1d B=8 C=512 T=2304 K=2000 L=16, forward and forward+backward: ours (CUDA, CPU) vs
  ``torchvision.ops.roi_align`` (CUDA) on ``[B, C, 1, T]``;
- segment_iou 4096 x 4096: ours (CUDA, CPU) vs the vectorised PyTorch reference on CUDA;
- jaccard_distance_topk N=10,000 D=256 k1=20 k2=6 m=50 (and the dense op on CUDA): CUDA vs CPU.

CUDA entries are timed with CUDA events after warm-up: ``extra_info["cuda_event_ms"]`` is the
median over ``REPS`` calls (the time between events recorded before and after each call, so
the host work and the synchronisations inside an op count). pytest-benchmark's own columns
for them are wall times of the call plus a synchronize. Every entry checks its result.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import sys

import pytest
import torch

from stovtal.ops import (
    jaccard_distance,
    jaccard_distance_topk,
    reference,
    roi_align_1d,
    segment_iou,
    soft_nms,
    temporal_nms,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _candidates import make_candidates  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def cuda_only(fn):
    """Marked ``cuda`` (``-m "not cuda"`` runs the CPU half) and skipped without a GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")(fn))


needs_tv = pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not importable")

WARMUP, REPS = 3, 20
N, NUM_LABELS, NMS_IOU = 2000, 20, 0.5
SOFT = {"iou_threshold": 0.1, "sigma": 0.5, "min_score": 0.001, "method": "gaussian"}
B, C, T, K, L = 8, 512, 2304, 2000, 16
JN, JD, K1, K2, JM = 10_000, 256, 20, 6, 50


def cuda_event_ms(fn, warmup: int = WARMUP, reps: int = REPS) -> float:
    """Median milliseconds of ``fn()`` between two CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_cuda(benchmark, fn, backend: str, rounds: int = REPS):
    """CUDA-event median into extra_info, then pytest-benchmark's rounds (call + sync)."""
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["cuda_event_ms"] = cuda_event_ms(fn)

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)


# STOVTAL_BENCH_QUICK=1 (the GPU check's dry run): each CPU entry is timed once, no warm-up
QUICK = os.environ.get("STOVTAL_BENCH_QUICK") == "1"


def bench_cpu(benchmark, fn, rounds: int):
    benchmark.extra_info["backend"] = "stovtal-cpu"
    if QUICK:
        return benchmark.pedantic(fn, rounds=1, iterations=1)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


# ---------------------------------------------------------------- inputs




def unit_boxes(seg: torch.Tensor) -> torch.Tensor:
    ones = torch.ones_like(seg[:, :1])
    return torch.cat([seg[:, :1], 0 * ones, seg[:, 1:], ones], 1).contiguous()


@pytest.fixture(scope="module")
def nms_inputs():
    return make_candidates(0)


@pytest.fixture(scope="module")
def nms_inputs_cuda(nms_inputs):
    return tuple(t.cuda() for t in nms_inputs)


@pytest.fixture(scope="module")
def roi_inputs():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(B, C, T, generator=g)
    length = torch.exp(torch.empty(K).uniform_(math.log(2.0), math.log(T / 2), generator=g))
    start = torch.rand(K, generator=g) * (T - length)
    batch_index = torch.randint(0, B, (K,), generator=g).float()
    rois = torch.stack([batch_index, start, start + length], dim=1)
    boxes = torch.stack([batch_index, start, torch.zeros(K), start + length, torch.ones(K)], dim=1)
    weight = torch.randn(K, C, L, generator=g)
    return {"features": features, "rois": rois, "boxes": boxes, "weight": weight}


@pytest.fixture(scope="module")
def roi_inputs_cuda(roi_inputs):
    return {k: v.cuda() for k, v in roi_inputs.items()}


def roi_ours(d):
    return roi_align_1d(d["features"], d["rois"], L)


def roi_tv(d):
    import torchvision

    return torchvision.ops.roi_align(d["features"][:, :, None], d["boxes"], (1, L), 1.0, 0, True)[:, :, 0]


def fwd_bwd(fn, d):
    x = d["features"].detach().requires_grad_()
    out = fn({**d, "features": x})
    (grad,) = torch.autograd.grad((out * d["weight"]).sum(), x)
    return grad


@pytest.fixture(scope="module")
def iou_inputs():
    g = torch.Generator().manual_seed(0)
    start = torch.rand(2, 4096, generator=g) * 1000
    seg = torch.stack([start, start + torch.rand(2, 4096, generator=g) * 100], -1)
    return seg[0].contiguous(), seg[1].contiguous()


@pytest.fixture(scope="module")
def jaccard_inputs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(JN // 50, JD, generator=g)
    x = centres[torch.randint(0, JN // 50, (JN,), generator=g)] + 0.6 * torch.randn(JN, JD, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


# ---------------------------------------------------------------- hard NMS

HARD = f"cuda-temporal_nms-{N}cand-{NUM_LABELS}labels-f32"
HARD1 = f"cuda-temporal_nms-{N}cand-1label-f32"


@pytest.mark.benchmark(group=HARD)
def test_hard_cpu(benchmark, nms_inputs):
    seg, sc, lab = nms_inputs
    keep = bench_cpu(benchmark, lambda: temporal_nms(seg, sc, NMS_IOU, lab), 50)
    assert len(keep) > 100


@cuda_only
@pytest.mark.benchmark(group=HARD)
def test_hard_cuda(benchmark, nms_inputs, nms_inputs_cuda):
    seg, sc, lab = nms_inputs_cuda
    keep = bench_cuda(benchmark, lambda: temporal_nms(seg, sc, NMS_IOU, lab), "stovtal-cuda")
    assert torch.equal(keep.cpu(), temporal_nms(*nms_inputs[:2], NMS_IOU, nms_inputs[2]))


@needs_tv
@cuda_only
@pytest.mark.benchmark(group=HARD)
def test_hard_torchvision_batched_nms_cuda(benchmark, nms_inputs, nms_inputs_cuda):
    import torchvision

    seg, sc, lab = nms_inputs_cuda
    boxes = unit_boxes(seg)
    keep = bench_cuda(benchmark, lambda: torchvision.ops.batched_nms(boxes, sc, lab, NMS_IOU),
                      "torchvision-cuda")
    assert torch.equal(keep.cpu(), temporal_nms(*nms_inputs[:2], NMS_IOU, nms_inputs[2]))


@pytest.mark.benchmark(group=HARD1)
def test_hard_one_label_cpu(benchmark, nms_inputs):
    seg, sc, _ = nms_inputs
    keep = bench_cpu(benchmark, lambda: temporal_nms(seg, sc, NMS_IOU), 50)
    assert len(keep) > 15


@cuda_only
@pytest.mark.benchmark(group=HARD1)
def test_hard_one_label_cuda(benchmark, nms_inputs, nms_inputs_cuda):
    seg, sc, _lab = nms_inputs_cuda
    keep = bench_cuda(benchmark, lambda: temporal_nms(seg, sc, NMS_IOU), "stovtal-cuda")
    assert torch.equal(keep.cpu(), temporal_nms(nms_inputs[0], nms_inputs[1], NMS_IOU))


@needs_tv
@cuda_only
@pytest.mark.benchmark(group=HARD1)
def test_hard_one_label_torchvision_nms_cuda(benchmark, nms_inputs, nms_inputs_cuda):
    import torchvision

    seg, sc, _lab = nms_inputs_cuda
    boxes = unit_boxes(seg)
    keep = bench_cuda(benchmark, lambda: torchvision.ops.nms(boxes, sc, NMS_IOU), "torchvision-cuda")
    assert torch.equal(keep.cpu(), temporal_nms(nms_inputs[0], nms_inputs[1], NMS_IOU))


# ---------------------------------------------------------------- soft-NMS

SOFT_GROUP = f"cuda-soft_nms-gaussian-voting-{N}cand-{NUM_LABELS}labels-f32"


def _soft(seg, sc, lab):
    return soft_nms(seg, sc, labels=lab, max_keep=200, voting_threshold=0.7, **SOFT)


@pytest.mark.benchmark(group=SOFT_GROUP)
def test_soft_cpu(benchmark, nms_inputs):
    out = bench_cpu(benchmark, lambda: _soft(*nms_inputs), 20)
    assert len(out[2]) == 200


@cuda_only
@pytest.mark.benchmark(group=SOFT_GROUP)
def test_soft_cuda(benchmark, nms_inputs, nms_inputs_cuda):
    out = bench_cuda(benchmark, lambda: _soft(*nms_inputs_cuda), "stovtal-cuda")
    assert torch.equal(out[2].cpu(), _soft(*nms_inputs)[2])


# ---------------------------------------------------------------- roi_align_1d

FWD = f"cuda-roi_align_1d-fwd-B{B}-C{C}-T{T}-K{K}-L{L}-f32"
FWD_BWD = f"cuda-roi_align_1d-fwd+bwd-B{B}-C{C}-T{T}-K{K}-L{L}-f32"


@pytest.mark.benchmark(group=FWD)
def test_roi_fwd_cpu(benchmark, roi_inputs):
    assert bench_cpu(benchmark, lambda: roi_ours(roi_inputs), 3).shape == (K, C, L)


@cuda_only
@pytest.mark.benchmark(group=FWD)
def test_roi_fwd_cuda(benchmark, roi_inputs_cuda):
    out = bench_cuda(benchmark, lambda: roi_ours(roi_inputs_cuda), "stovtal-cuda")
    if HAS_TORCHVISION:  # same semantics as torchvision's roi_align on one axis
        torch.testing.assert_close(out, roi_tv(roi_inputs_cuda), rtol=1e-4, atol=1e-5)


@needs_tv
@cuda_only
@pytest.mark.benchmark(group=FWD)
def test_roi_fwd_torchvision_cuda(benchmark, roi_inputs_cuda):
    assert bench_cuda(benchmark, lambda: roi_tv(roi_inputs_cuda), "torchvision-cuda").shape == (K, C, L)


@pytest.mark.benchmark(group=FWD_BWD)
def test_roi_fwd_bwd_cpu(benchmark, roi_inputs):
    assert bench_cpu(benchmark, lambda: fwd_bwd(roi_ours, roi_inputs), 2).shape == (B, C, T)


@cuda_only
@pytest.mark.benchmark(group=FWD_BWD)
def test_roi_fwd_bwd_cuda(benchmark, roi_inputs_cuda):
    grad = bench_cuda(benchmark, lambda: fwd_bwd(roi_ours, roi_inputs_cuda), "stovtal-cuda")
    if HAS_TORCHVISION:
        torch.testing.assert_close(grad, fwd_bwd(roi_tv, roi_inputs_cuda), rtol=1e-4, atol=1e-4)


@needs_tv
@cuda_only
@pytest.mark.benchmark(group=FWD_BWD)
def test_roi_fwd_bwd_torchvision_cuda(benchmark, roi_inputs_cuda):
    grad = bench_cuda(benchmark, lambda: fwd_bwd(roi_tv, roi_inputs_cuda), "torchvision-cuda")
    assert grad.shape == (B, C, T)


# ---------------------------------------------------------------- segment_iou

IOU = "cuda-segment_iou-4096x4096-f32"


@pytest.mark.benchmark(group=IOU)
def test_iou_cpu(benchmark, iou_inputs):
    assert bench_cpu(benchmark, lambda: segment_iou(*iou_inputs), 10).shape == (4096, 4096)


@cuda_only
@pytest.mark.benchmark(group=IOU)
def test_iou_cuda(benchmark, iou_inputs):
    a, b = (t.cuda() for t in iou_inputs)
    out = bench_cuda(benchmark, lambda: segment_iou(a, b), "stovtal-cuda")
    torch.testing.assert_close(out.cpu(), segment_iou(*iou_inputs), rtol=0, atol=1e-6)


@cuda_only
@pytest.mark.benchmark(group=IOU)
def test_iou_torch_reference_cuda(benchmark, iou_inputs):
    a, b = (t.cuda() for t in iou_inputs)
    out = bench_cuda(benchmark, lambda: reference.segment_iou(a, b), "torch-cuda")
    assert out.shape == (4096, 4096)


# ---------------------------------------------------------------- jaccard

JACCARD = f"cuda-jaccard_distance_topk-N{JN}-D{JD}-k1={K1}-k2={K2}-m{JM}-f32"
JACCARD_DENSE = f"cuda-jaccard_distance-dense-N{JN}-D{JD}-k1={K1}-k2={K2}-f32"


@pytest.mark.benchmark(group=JACCARD)
def test_jaccard_topk_cpu(benchmark, jaccard_inputs):
    d, _ = bench_cpu(benchmark, lambda: jaccard_distance_topk(jaccard_inputs, K1, K2, JM), 2)
    assert d.shape == (JN, JM)


@cuda_only
@pytest.mark.benchmark(group=JACCARD)
def test_jaccard_topk_cuda(benchmark, jaccard_inputs):
    x = jaccard_inputs.cuda()
    d, _i = bench_cuda(benchmark, lambda: jaccard_distance_topk(x, K1, K2, JM), "stovtal-cuda", rounds=5)
    torch.testing.assert_close(d.cpu(), jaccard_distance_topk(jaccard_inputs, K1, K2, JM)[0], rtol=0, atol=1e-6)


@pytest.mark.benchmark(group=JACCARD_DENSE)
def test_jaccard_dense_cpu(benchmark, jaccard_inputs):
    assert bench_cpu(benchmark, lambda: jaccard_distance(jaccard_inputs, K1, K2), 2).shape == (JN, JN)


@cuda_only
@pytest.mark.benchmark(group=JACCARD_DENSE)
def test_jaccard_dense_cuda(benchmark, jaccard_inputs):
    x = jaccard_inputs.cuda()
    out = bench_cuda(benchmark, lambda: jaccard_distance(x, K1, K2), "stovtal-cuda", rounds=5)
    assert out.shape == (JN, JN)
