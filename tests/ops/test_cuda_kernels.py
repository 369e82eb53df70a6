"""What the CUDA kernels must get right before they meet a GPU, and the host
side of it that the CPU can check:

- dtypes: exactly float16/bfloat16/float32/float64, never float8, on every op
  and in the fake kernels;
- devices: mixed devices (also one meta tensor with a CPU one) raise on every
  op, including the backward ops, instead of returning uninitialised memory;
- roi_align_1d: a bounded fixed sampling_ratio;
- temporal_nms on CUDA: the banded suppression mask (csrc/nms/nms_banded.h),
  whose host side runs on the CPU through the private op
  ``_temporal_nms_banded`` with bands forced small;
- CUDA-marked: CPU-vs-CUDA equality where the kernels must agree bit for bit
  (soft-NMS selections and scores, hard-NMS across band edges), the
  sample-position decisions of roi_align_1d, the tiled segment_iou backward
  and jaccard under NVIDIA_TF32_OVERRIDE.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import stovtal  # noqa: F401  (loads the operator library)
from stovtal.ops import (
    reference,
    roi_align_1d,
    segment_iou,
    soft_nms,
    temporal_nms,
)
from stovtal.ops.roi_align import MAX_SAMPLING_RATIO

from .candidates import clustered_candidates

OPS = torch.ops.stovtal
FLOAT8 = [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)]


# One call of every op (forward and backward) on tensors built by `make(shape, dtype)`.
def _calls(make, dtype):
    seg = make((5, 2), dtype)
    feats = make((2, 3, 8), dtype)
    rois = make((4, 3), dtype)
    return {
        "segment_iou": lambda: OPS.segment_iou(seg, make((3, 2), dtype)),
        "segment_iou_aligned": lambda: OPS.segment_iou_aligned(seg, seg),
        "segment_iou_backward": lambda: OPS.segment_iou_backward(make((5, 3), dtype), seg, make((3, 2), dtype)),
        "segment_iou_aligned_backward": lambda: OPS.segment_iou_aligned_backward(make((5,), dtype), seg, seg),
        "roi_align_1d": lambda: OPS.roi_align_1d(feats, rois, 2, 1.0, 0, True),
        "roi_align_1d_backward": lambda: OPS.roi_align_1d_backward(make((4, 3, 2), dtype), rois, 2, 8, 1.0, 0, True),
        "temporal_nms": lambda: OPS.temporal_nms(seg, make((5,), dtype), 0.5, None, -1),
        "soft_nms": lambda: OPS.soft_nms(seg, make((5,), dtype), 0.5, 0.5, 0.1, 2, None, -1, None),
        "jaccard_distance": lambda: OPS.jaccard_distance(make((6, 4), dtype), 2, 1),
        "jaccard_distance_topk": lambda: OPS.jaccard_distance_topk(make((6, 4), dtype), 2, 1, 2),
        "_temporal_nms_banded": lambda: OPS._temporal_nms_banded(seg, make((5,), dtype), 0.5, None, -1, 64),
    }


# ---------------------------------------------------------------- dtypes


@pytest.mark.skipif(not FLOAT8, reason="this torch has no float8 dtypes")
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("dtype", FLOAT8)
def test_float8_is_rejected_by_every_op(device, dtype):
    def make(shape, dt):
        return torch.zeros(shape, device=device).to(dt)

    for call in _calls(make, dtype).values():
        with pytest.raises(RuntimeError, match=r"must be a floating-point tensor \(float16, bfloat16, float32 or float64\)"):
            call()


def test_every_op_is_covered_by_the_dtype_and_device_checks():
    names = {op.split("::")[1] for op in stovtal.ops.registered_ops()}
    assert names == set(_calls(lambda shape, dt: torch.zeros(shape, dtype=dt), torch.float32))
    # the jaccard ops take one tensor: nothing to mix
    mixed = {name.split()[0] for name, _ in _mixed_calls()}
    assert names - {"jaccard_distance", "jaccard_distance_topk"} == mixed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_four_documented_dtypes_pass(dtype):
    def make(shape, dt):
        return torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dt)

    for name, call in _calls(make, dtype).items():
        if name.startswith("roi_align"):
            continue  # needs valid batch indices: covered by its own tests
        call()


# ---------------------------------------------------------------- devices


def _mixed_calls():
    """(op name, call) for each op with one argument on meta, the rest on the CPU."""
    cpu = torch.zeros
    meta = lambda *s, **k: torch.zeros(*s, device="meta", **k)  # noqa: E731
    seg2, seg3 = torch.rand(5, 2), torch.rand(3, 2)
    feats, rois = torch.rand(2, 3, 8), torch.tensor([[0.0, 1.0, 4.0]])
    return [
        ("segment_iou a", lambda: segment_iou(seg2, meta(3, 2))),
        ("segment_iou b", lambda: segment_iou(meta(5, 2), seg3)),
        ("segment_iou_aligned", lambda: segment_iou(seg2, meta(5, 2), aligned=True)),
        ("segment_iou_backward grad", lambda: OPS.segment_iou_backward(meta(5, 3), seg2, seg3)),
        ("segment_iou_backward b", lambda: OPS.segment_iou_backward(cpu(5, 3), seg2, meta(3, 2))),
        ("segment_iou_aligned_backward", lambda: OPS.segment_iou_aligned_backward(meta(5), seg2, seg2)),
        ("roi_align_1d rois", lambda: roi_align_1d(feats, meta(1, 3), 2)),
        ("roi_align_1d features", lambda: roi_align_1d(meta(2, 3, 8), rois, 2)),
        ("roi_align_1d_backward", lambda: OPS.roi_align_1d_backward(meta(1, 3, 2), rois, 2, 8, 1.0, 0, True)),
        ("temporal_nms scores", lambda: temporal_nms(seg2, meta(5), 0.5)),
        ("temporal_nms labels", lambda: temporal_nms(seg2, cpu(5), 0.5, meta(5, dtype=torch.long))),
        ("soft_nms scores", lambda: soft_nms(seg2, meta(5), 0.5, 0.5, 0.1, "linear")),
        ("soft_nms labels", lambda: soft_nms(seg2, cpu(5), 0.5, 0.5, 0.1, "linear", meta(5, dtype=torch.long))),
        ("_temporal_nms_banded", lambda: OPS._temporal_nms_banded(seg2, meta(5), 0.5, None, -1, 64)),
    ]


@pytest.mark.parametrize("case", _mixed_calls(), ids=lambda c: c[0])
def test_a_meta_tensor_mixed_with_a_cpu_tensor_raises(case):
    _, call = case
    with pytest.raises(RuntimeError, match="must be on the same device"):
        call()


def test_all_meta_inputs_still_give_shapes():
    meta = lambda *s: torch.zeros(*s, device="meta")  # noqa: E731
    assert segment_iou(meta(5, 2), meta(3, 2)).shape == (5, 3)
    assert roi_align_1d(meta(2, 3, 8), meta(4, 3), 6).shape == (4, 3, 6)
    ga, gb = OPS.segment_iou_backward(meta(5, 3), meta(5, 2), meta(3, 2))
    assert ga.shape == (5, 2) and gb.shape == (3, 2) and ga.device.type == "meta"
    assert OPS.roi_align_1d_backward(meta(4, 3, 6), meta(4, 3), 2, 8, 1.0, 0, True).shape == (2, 3, 8)


# ---------------------------------------------------------------- roi_align_1d sampling_ratio


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("ratio", [MAX_SAMPLING_RATIO + 1, 10**9, 2**62])
def test_roi_align_sampling_ratio_is_bounded(device, ratio):
    feats = torch.rand(1, 2, 16, device=device)
    rois = torch.tensor([[0.0, 1.0, 9.0]], device=device)
    msg = rf"sampling_ratio must be <= {MAX_SAMPLING_RATIO}"
    with pytest.raises(RuntimeError, match=msg):
        roi_align_1d(feats, rois, 4, sampling_ratio=ratio)
    with pytest.raises(RuntimeError, match=msg):
        OPS.roi_align_1d_backward(torch.rand(1, 2, 4, device=device), rois, 1, 16, 1.0, ratio, True)


def test_roi_align_largest_sampling_ratio_is_accepted_and_exact():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 3, 16, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0.0, 1.25, 9.5], [0.0, -3.0, 20.0]], dtype=torch.float64)
    out = roi_align_1d(feats, rois, 2, sampling_ratio=MAX_SAMPLING_RATIO)
    torch.testing.assert_close(out, reference.roi_align_1d(feats, rois, 2, 1.0, MAX_SAMPLING_RATIO, True))


# ---------------------------------------------------------------- banded hard NMS (host side)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 130, 700])
@pytest.mark.parametrize("band_bytes", [1, 8 * 64 * 2, 8 * 64 * 5, 1 << 30])
@pytest.mark.parametrize("num_labels", [None, 3])
def test_banded_nms_equals_temporal_nms_across_band_edges(n, band_bytes, num_labels):
    # band_bytes = 1 forces the smallest band (64 rows); 8*64*k bytes gives k
    # words per row: several 64-row blocks per band while rows are short
    g = torch.Generator().manual_seed(n + band_bytes % 1000)
    seg, sc, lab = clustered_candidates(n, g, num_labels)
    for dtype in (torch.float32, torch.float64, torch.float16):
        s, c = seg.to(dtype), sc.to(dtype)
        for thr in (0.0, 0.3, 0.7):
            for max_keep in (-1, 1, 5, 70):
                expected = temporal_nms(s, c, thr, lab, max_keep)
                got = OPS._temporal_nms_banded(s, c, thr, lab, max_keep, band_bytes)
                assert torch.equal(got, expected), (dtype, thr, max_keep)


def test_banded_nms_matches_reference_when_most_rows_are_removed_early():
    # one long dominant segment suppresses nearly everything: later bands
    # start with few live rows
    g = torch.Generator().manual_seed(5)
    seg, sc, _ = clustered_candidates(500, g)
    seg = torch.cat([torch.tensor([[0.0, 120.0]], dtype=torch.float64), seg])
    sc = torch.cat([torch.tensor([2.0], dtype=torch.float64), sc])
    for thr in (0.05, 0.2):
        got = OPS._temporal_nms_banded(seg, sc, thr, None, -1, 1)
        assert torch.equal(got, reference.temporal_nms(seg, sc, thr))


def test_banded_nms_bad_band_and_values():
    seg, sc = torch.tensor([[0.0, 1.0]]), torch.tensor([0.5])
    with pytest.raises(RuntimeError, match="band_bytes must be > 0"):
        OPS._temporal_nms_banded(seg, sc, 0.5, None, -1, 0)
    with pytest.raises(RuntimeError, match="scores must not contain NaN"):
        OPS._temporal_nms_banded(seg, torch.tensor([float("nan")]), 0.5, None, -1, 64)
    with pytest.raises(RuntimeError, match="segments must be finite"):
        OPS._temporal_nms_banded(torch.tensor([[0.0, float("inf")]]), sc, 0.5, None, -1, 64)
    assert OPS._temporal_nms_banded(seg[:0], sc[:0], 0.5, None, -1, 64).shape == (0,)


def test_banded_nms_opcheck():
    g = torch.Generator().manual_seed(2)
    seg, sc, lab = clustered_candidates(100, g, 3)
    torch.library.opcheck(OPS._temporal_nms_banded.default, (seg, sc, 0.4, lab, -1, 8 * 64))


# ---------------------------------------------------------------- CUDA


def _cuda(*tensors):
    return [None if t is None else t.cuda() for t in tensors]


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 64, 65, 1000, 5000])
@pytest.mark.parametrize("num_labels", [None, 5])
def test_cuda_banded_nms_across_band_edges(n, num_labels):
    g = torch.Generator().manual_seed(n)
    seg, sc, lab = clustered_candidates(n, g, num_labels, torch.float32)
    dseg, dsc, dlab = _cuda(seg, sc, lab)
    for band_bytes in (1, 8 * 64 * 3, 1 << 30):
        for max_keep in (-1, 7, 200):
            expected = temporal_nms(seg, sc, 0.35, lab, max_keep)
            got = OPS._temporal_nms_banded(dseg, dsc, 0.35, dlab, max_keep, band_bytes)
            assert torch.equal(got.cpu(), expected), (band_bytes, max_keep)
            assert torch.equal(temporal_nms(dseg, dsc, 0.35, dlab, max_keep).cpu(), expected)


@pytest.mark.cuda
def test_cuda_hard_nms_beyond_the_old_grid_limit():
    # 65535 * 64 candidates were the old bitmask's limit; a banded mask only
    # needs one band in memory
    n = 65535 * 64 + 100
    g = torch.Generator().manual_seed(1)
    start = torch.rand(n, generator=g) * 1e6
    seg = torch.stack([start, start + 1 + torch.rand(n, generator=g) * 50], 1)
    sc = torch.rand(n, generator=g)
    got = temporal_nms(seg.cuda(), sc.cuda(), 0.5, max_keep=2000).cpu()
    assert torch.equal(got, temporal_nms(seg, sc, 0.5, max_keep=2000))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_labels", [None, 1, 40])
def test_cuda_soft_nms_selects_and_scores_bit_for_bit(dtype, num_labels):
    # decays use the shared soft_nms_weight (gaussian: a libm-free exp in
    # double, rounded once) without fused multiply-adds, so the selections and
    # the selection scores are identical; near-ties abound at 4000 candidates
    g = torch.Generator().manual_seed(7)
    seg, sc, lab = clustered_candidates(4000, g, num_labels, dtype)
    dseg, dsc, dlab = _cuda(seg, sc, lab)
    for method in ("gaussian", "linear"):
        for max_keep in (-1, 50):
            cpu = soft_nms(seg, sc, 0.3, 0.5, 0.001, method, lab, max_keep)
            gpu = soft_nms(dseg, dsc, 0.3, 0.5, 0.001, method, dlab, max_keep)
            assert torch.equal(gpu[2].cpu(), cpu[2])
            assert torch.equal(gpu[1].cpu(), cpu[1])
            assert torch.equal(gpu[0].cpu(), cpu[0])


@pytest.mark.cuda
@pytest.mark.parametrize("num_labels", [None, 6])
def test_cuda_score_voting_matches_cpu(num_labels):
    # voting sums run in another order on the GPU (one warp per selection)
    g = torch.Generator().manual_seed(8)
    seg, sc, lab = clustered_candidates(3000, g, num_labels)
    dseg, dsc, dlab = _cuda(seg, sc, lab)
    for thr in (0.5, 0.75, 1.0):
        cpu = soft_nms(seg, sc, 0.3, 0.5, 0.01, "gaussian", lab, 300, thr)
        gpu = soft_nms(dseg, dsc, 0.3, 0.5, 0.01, "gaussian", dlab, 300, thr)
        assert torch.equal(gpu[2].cpu(), cpu[2])
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_roi_align_sample_decisions_match_cpu(dtype):
    # rois whose bin size is within an ulp of an integer (adaptive ceil) and
    # whose samples land on -1 and T exactly: any rounding difference between
    # the backends changes a sample count or a validity test, which changes
    # the output by far more than the tolerance
    length, out_size = 50, 7
    g = torch.Generator().manual_seed(4)
    widths = torch.arange(1, 40, dtype=torch.float64) * out_size
    eps = torch.finfo(dtype).eps
    w = torch.cat([widths, widths * (1 + eps), widths * (1 - eps)]).to(dtype)
    start = (torch.rand(w.shape[0], generator=g, dtype=torch.float64) * 60 - 10).to(dtype)
    start = torch.cat([start, torch.full((5,), -0.5, dtype=dtype)])
    w = torch.cat([w, torch.tensor([length + 1.0] * 5, dtype=dtype)])
    rois = torch.stack([torch.zeros_like(w), start, start + w], 1)
    feats = torch.randn(1, 3, length, generator=g, dtype=dtype)
    for ratio in (0, 3):
        for aligned in (True, False):
            cpu = roi_align_1d(feats, rois, out_size, 1.0, ratio, aligned)
            gpu = roi_align_1d(feats.cuda(), rois.cuda(), out_size, 1.0, ratio, aligned).cpu()
            torch.testing.assert_close(gpu, cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 200_000), (200_000, 1), (37, 53), (300, 700)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_segment_iou_backward_tiles(shape, dtype):
    n, m = shape
    g = torch.Generator().manual_seed(n + m)
    a = torch.sort(torch.rand(n, 2, generator=g) * 100, 1).values.to(dtype)
    b = torch.sort(torch.rand(m, 2, generator=g) * 100, 1).values.to(dtype)
    grad = torch.randn(n, m, generator=g).to(dtype)
    # truth in float64; the backends sum up to 2e5 terms in different orders
    ga, gb = OPS.segment_iou_backward(grad.double(), a.double(), b.double())
    dga, dgb = OPS.segment_iou_backward(grad.cuda(), a.cuda(), b.cuda())
    tol = {torch.float16: 1e-2, torch.float32: 1e-4, torch.float64: 1e-10}[dtype]
    scale = max(ga.abs().max().item(), gb.abs().max().item())
    torch.testing.assert_close(dga.cpu().double(), ga, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(dgb.cpu().double(), gb, rtol=tol, atol=tol * scale)
    # deterministic: the same bits on a second run
    again = OPS.segment_iou_backward(grad.cuda(), a.cuda(), b.cuda())
    assert torch.equal(again[0], dga) and torch.equal(again[1], dgb)


@pytest.mark.cuda
def test_cuda_mixed_devices_raise_for_every_op():
    c = torch.rand(5, 2)
    d = c.cuda()
    calls = [
        lambda: segment_iou(d, c),
        lambda: segment_iou(c, d, aligned=True),
        lambda: OPS.segment_iou_backward(torch.zeros(5, 5, device="cuda"), d, c),
        lambda: roi_align_1d(torch.rand(1, 2, 8, device="cuda"), torch.tensor([[0.0, 1.0, 3.0]]), 2),
        lambda: temporal_nms(d, torch.rand(5), 0.5),
        lambda: soft_nms(d, torch.rand(5, device="cuda"), 0.5, 0.5, 0.1, "linear", torch.zeros(5, dtype=torch.long)),
        lambda: OPS._temporal_nms_banded(d, torch.rand(5), 0.5, None, -1, 64),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="same device"):
            call()


_TF32_SCRIPT = textwrap.dedent(
    """
    import torch, stovtal
    from stovtal.ops import jaccard_distance, jaccard_distance_topk
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(40, 64, generator=g), dim=1)
    # near-duplicates that differ below TF32's 10-bit mantissa: their ranking
    # is decided by bits that a TF32 matmul rounds away
    x = base.repeat_interleave(8, 0) + 1e-5 * torch.randn(320, 64, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    # a neighbour set changed by TF32 moves distances by far more than this
    cpu = jaccard_distance(x, 20, 6)
    gpu = jaccard_distance(x.cuda(), 20, 6).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-6)
    d, _ = jaccard_distance_topk(x.cuda(), 20, 6, 10)
    dc, _ = jaccard_distance_topk(x, 20, 6, 10)
    torch.testing.assert_close(d.cpu(), dc, rtol=1e-6, atol=1e-6)
    print("ok")
    """
)


@pytest.mark.cuda
@pytest.mark.parametrize("env", [{"NVIDIA_TF32_OVERRIDE": "1"}, {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}])
def test_cuda_jaccard_takes_the_float64_path_when_tf32_is_forced_by_the_environment(env):
    # a fresh process: cuBLAS reads NVIDIA_TF32_OVERRIDE when it starts
    result = subprocess.run(
        [sys.executable, "-c", _TF32_SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
