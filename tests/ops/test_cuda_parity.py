"""Each CUDA kernel against the CPU kernel at realistic sizes (run by tools/gpu_check.sh).

- temporal_nms / soft_nms: N = 2,000 and 100,000 localizer-like candidates, with labels,
  score voting and max_keep; kept indices must be identical.
- roi_align_1d: forward and backward at the benchmark shape (B=8, C=512, T=2304, K=2000,
  L=16) in float32, float16 and bfloat16.
- jaccard_distance (dense, batched, float16) and jaccard_distance_topk at N = 10,000 and
  100,000, with TF32 matmuls off and on, and under ``NVIDIA_TF32_OVERRIDE=1``.
- segment_iou at 4096 x 4096, forward and gradients.
- torch.compile (inductor) of code using every op, on CUDA.

The CPU result is the oracle: both backends implement one contract (``stovtal.ops``), the
CPU kernels are tested against the pure-PyTorch references in the other files.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest
import torch

from stovtal.ops import (
    jaccard_distance,
    jaccard_distance_topk,
    roi_align_1d,
    segment_iou,
    soft_nms,
    temporal_nms,
)

pytestmark = pytest.mark.cuda

# ---------------------------------------------------------------- inputs


def candidates(n: int, seed: int, num_labels: int = 20):
    """Localizer-like candidates: jittered copies of actions (~15 per 2,000 candidates,
    often under several labels, as top-k (position, class) pairs are) plus low-scoring
    background, over a video whose length grows with n (float32)."""
    g = torch.Generator().manual_seed(seed)
    num_actions = max(15, 15 * n // 2000)
    duration = 1000.0 * n / 2000
    centre = torch.rand(num_actions, generator=g, dtype=torch.float64) * duration
    length = 2 + torch.rand(num_actions, generator=g, dtype=torch.float64) * 60
    action_label = torch.randint(0, num_labels, (num_actions,), generator=g)
    confidence = 0.3 + 0.7 * torch.rand(num_actions, generator=g, dtype=torch.float64)
    n_fg = int(0.8 * n)
    a = torch.randint(0, num_actions, (n_fg,), generator=g)
    jitter = torch.randn(n_fg, 2, generator=g, dtype=torch.float64) * 0.15 * length[a, None]
    fg = torch.stack([centre[a] - length[a] / 2, centre[a] + length[a] / 2], 1) + jitter
    other = torch.randint(0, num_labels, (n_fg,), generator=g)
    fg_label = torch.where(torch.rand(n_fg, generator=g) < 0.7, action_label[a], other)
    fg_score = confidence[a] * torch.rand(n_fg, generator=g, dtype=torch.float64)
    n_bg = n - n_fg
    start = torch.rand(n_bg, generator=g, dtype=torch.float64) * duration
    bg = torch.stack([start, start + 1 + torch.rand(n_bg, generator=g, dtype=torch.float64) * 80], 1)
    bg_score = 0.2 * torch.rand(n_bg, generator=g, dtype=torch.float64)
    seg = torch.cat([fg, bg]).sort(dim=1).values.float().contiguous()
    scores = torch.cat([fg_score, bg_score]).float().contiguous()
    labels = torch.cat([fg_label, torch.randint(0, num_labels, (n_bg,), generator=g)])
    return seg, scores, labels


def clustered_features(n: int, d: int, seed: int, clusters: int | None = None,
                       dtype=torch.float32) -> torch.Tensor:
    """L2-normalised features around ``clusters`` centres (default n / 50): video-feature-like
    neighbourhoods, with many near-ties in the kNN ranking."""
    g = torch.Generator().manual_seed(seed)
    clusters = clusters or max(n // 50, 4)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + 0.6 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


@contextmanager
def tf32_matmuls(enabled: bool):
    """float32 CUDA matmuls in TF32 (``enabled``) or in IEEE float32, restored afterwards."""
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        old = m.fp32_precision
        m.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            m.fp32_precision = old
    else:  # pragma: no cover - torch without the fp32_precision API
        old = m.allow_tf32
        m.allow_tf32 = enabled
        try:
            yield
        finally:
            m.allow_tf32 = old


# ---------------------------------------------------------------- NMS

NMS_SIZES = [2000, 100_000]


@pytest.mark.parametrize("n", NMS_SIZES)
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("max_keep", [-1, 500])
def test_temporal_nms_matches_cpu(n, with_labels, max_keep):
    seg, sc, lab = candidates(n, seed=n + 1)
    lab = lab if with_labels else None
    cpu = temporal_nms(seg, sc, 0.5, lab, max_keep)
    gpu = temporal_nms(seg.cuda(), sc.cuda(), 0.5, None if lab is None else lab.cuda(), max_keep)
    assert gpu.device.type == "cuda"
    assert len(cpu) > (100 if n == 2000 else 1000) or max_keep > 0
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("n", NMS_SIZES)
@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("voting", [None, 0.7])
def test_soft_nms_matches_cpu(n, method, voting):
    seg, sc, lab = candidates(n, seed=n + 2)
    # unlimited selections at 2,000 candidates; at 100,000 a post-processing budget
    max_keep = -1 if n == 2000 else 2000
    args = (0.1, 0.5, 0.001, method)
    cpu = soft_nms(seg, sc, *args, lab, max_keep, voting)
    gpu = soft_nms(seg.cuda(), sc.cuda(), *args, lab.cuda(), max_keep, voting)
    assert torch.equal(gpu[2].cpu(), cpu[2]), "selection order differs"
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=0, atol=0)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=2e-6, atol=1e-5)


# ---------------------------------------------------------------- roi_align_1d

B, C, T, K, L = 8, 512, 2304, 2000, 16


@functools.lru_cache(maxsize=1)
def _roi_inputs():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(B, C, T, generator=g)
    length = torch.exp(torch.empty(K).uniform_(0.693, 7.05, generator=g))  # 2 .. T/2 snippets
    start = torch.rand(K, generator=g) * (T - length)
    rois = torch.stack([torch.randint(0, B, (K,), generator=g).float(), start, start + length], 1)
    weight = torch.randn(K, C, L, generator=g)
    return features, rois, weight


def _roi_fwd_bwd(features, rois, weight):
    x = features.clone().requires_grad_()
    out = roi_align_1d(x, rois, L)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_roi_align_1d_benchmark_shape_matches_cpu(dtype):
    features, rois, weight = (t.to(dtype) for t in _roi_inputs())
    out_cpu, grad_cpu = _roi_fwd_bwd(features, rois, weight)
    out_gpu, grad_gpu = _roi_fwd_bwd(features.cuda(), rois.cuda(), weight.cuda())
    # both accumulate in float32 (opmath) and round once; the backward sums in another
    # order (atomics), so the roundings of the two may differ by an ulp of the dtype
    eps = torch.finfo(dtype).eps
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2 * eps, "atol": 2 * eps}
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, **tol)
    scale = grad_cpu.float().abs().max().item()
    torch.testing.assert_close(grad_gpu.cpu().float(), grad_cpu.float(), rtol=tol["rtol"],
                               atol=tol["atol"] * scale)
    assert grad_cpu.float().abs().sum() > 0


# ---------------------------------------------------------------- jaccard

K1, K2, M = 20, 6, 50


@functools.cache
def _jaccard_cpu(kind: str, n: int, dtype_name: str):
    dtype = getattr(torch, dtype_name)
    if kind == "batched":
        x = torch.stack([clustered_features(n, 128, seed=s, dtype=dtype) for s in range(4)])
    else:
        x = clustered_features(n, 256, seed=n, dtype=dtype)
    if kind == "topk":
        return x, jaccard_distance_topk(x, K1, K2, M)
    return x, jaccard_distance(x, K1, K2)


def assert_topk_match(gpu, cpu, atol):
    """Distances close; indices equal except inside runs of tied distances."""
    (dg, ig), (dc, ic) = (t.cpu() for t in gpu), cpu
    torch.testing.assert_close(dg.double(), dc.double(), rtol=0, atol=atol)
    diff = ig != ic
    if diff.any():
        d = dc.double()
        tied_prev = torch.zeros_like(diff)
        tied_next = torch.zeros_like(diff)
        tied_prev[:, 1:] = (d[:, 1:] - d[:, :-1]).abs() <= atol
        tied_next[:, :-1] = (d[:, 1:] - d[:, :-1]).abs() <= atol
        untied = diff & ~(tied_prev | tied_next)
        assert not untied.any(), f"{int(untied.sum())} indices differ outside ties, e.g. row {untied.nonzero()[0, 0]}"


def _jaccard_atol(dtype) -> float:
    # float64 inside both kernels, rounded once to the dtype
    return {torch.float32: 1e-6, torch.float16: 1e-3, torch.float64: 1e-12}[dtype]


@pytest.mark.parametrize("tf32", [False, True])
def test_jaccard_dense_matches_cpu_10k(tf32):
    x, cpu = _jaccard_cpu("dense", 10_000, "float32")
    with tf32_matmuls(tf32):
        gpu = jaccard_distance(x.cuda(), K1, K2)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=_jaccard_atol(torch.float32))
    assert (cpu < 1).float().mean() < 0.05 and (cpu < 0.5).sum() > 10_000  # sparse, non-trivial


@pytest.mark.parametrize("n", [10_000, 100_000])
@pytest.mark.parametrize("tf32", [False, True])
def test_jaccard_topk_matches_cpu(n, tf32):
    x, cpu = _jaccard_cpu("topk", n, "float32")
    with tf32_matmuls(tf32):
        gpu = jaccard_distance_topk(x.cuda(), K1, K2, M)
    assert_topk_match(gpu, cpu, _jaccard_atol(torch.float32))


def test_jaccard_float16_matches_cpu_10k():
    x, cpu_dense = _jaccard_cpu("dense", 10_000, "float16")
    gpu_dense = jaccard_distance(x.cuda(), K1, K2)
    assert gpu_dense.dtype == torch.float16
    torch.testing.assert_close(gpu_dense.cpu(), cpu_dense, rtol=0, atol=_jaccard_atol(torch.float16))
    _, cpu_topk = _jaccard_cpu("topk", 10_000, "float16")
    assert_topk_match(jaccard_distance_topk(x.cuda(), K1, K2, M), cpu_topk, _jaccard_atol(torch.float16))


@pytest.mark.parametrize("tf32", [False, True])
def test_jaccard_batched_matches_cpu(tf32):
    x, cpu = _jaccard_cpu("batched", 2500, "float32")
    with tf32_matmuls(tf32):
        gpu = jaccard_distance(x.cuda(), K1, K2)
        gpu_topk = jaccard_distance_topk(x.cuda(), K1, K2, M)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=_jaccard_atol(torch.float32))
    cpu_topk = jaccard_distance_topk(x, K1, K2, M)
    for b in range(x.shape[0]):
        assert_topk_match((gpu_topk[0][b], gpu_topk[1][b]), (cpu_topk[0][b], cpu_topk[1][b]),
                          _jaccard_atol(torch.float32))


def test_jaccard_under_nvidia_tf32_override():
    # NVIDIA_TF32_OVERRIDE=1 makes cuBLAS use TF32 behind torch's back: it must be read when
    # the process starts, so the check runs in a child process with the variable set
    x, cpu = _jaccard_cpu("topk", 10_000, "float32")
    code = textwrap.dedent(f"""
        import sys, torch, stovtal
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_cuda_parity import clustered_features, K1, K2, M
        x = clustered_features(10_000, 256, seed=10_000)
        d, i = stovtal.ops.jaccard_distance_topk(x.cuda(), K1, K2, M)
        torch.save((d.cpu(), i.cpu()), sys.argv[1])
    """)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"stovtal_tf32_override_{os.getpid()}.pt")
    env = dict(os.environ, NVIDIA_TF32_OVERRIDE="1")
    subprocess.run([sys.executable, "-c", code, path], env=env, check=True, timeout=300)
    try:
        gpu = torch.load(path)
    finally:
        os.remove(path)
    assert_topk_match(gpu, cpu, _jaccard_atol(torch.float32))


# ---------------------------------------------------------------- segment_iou


def _segment_pairs(n: int, seed: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    seg, _, _ = candidates(2 * n, seed=seed)
    perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed))
    seg = seg.to(dtype)[perm]
    return seg[:n].contiguous(), seg[n:].contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_segment_iou_4096_matches_cpu_with_gradients(dtype):
    a, b = _segment_pairs(4096, seed=7, dtype=dtype)
    w = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(8), dtype=dtype)

    def run(a, b, w):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        iou = segment_iou(a, b)
        ga, gb = torch.autograd.grad((iou * w).sum(), (a, b))
        return iou.detach(), ga, gb

    cpu = run(a, b, w)
    gpu = run(a.cuda(), b.cuda(), w.cuda())
    assert (cpu[0] > 0).float().mean() > 0.001  # overlaps exist
    fwd = {"rtol": 0, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 0, "atol": 1e-14}
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], **fwd)
    # each gradient entry sums 4096 terms, in another order on the GPU
    bwd = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], **bwd)
    torch.testing.assert_close(gpu[2].cpu(), cpu[2], **bwd)
    aligned_cpu = segment_iou(a, b, aligned=True)
    torch.testing.assert_close(segment_iou(a.cuda(), b.cuda(), aligned=True).cpu(), aligned_cpu, **fwd)


# ---------------------------------------------------------------- torch.compile


def _postprocess(features, rois, boundaries, seg, scores, labels, x):
    pooled = roi_align_1d(features, rois, 8)
    iou = segment_iou(boundaries, boundaries[:64])
    keep = temporal_nms(seg, scores, 0.5, labels)
    soft_seg, soft_scores, _ = soft_nms(seg, scores, 0.1, 0.5, 0.001, "gaussian", labels, 100, 0.7)
    dist, _ = jaccard_distance_topk(x, 10, 3, 5)
    return pooled.sum() + iou.sum() + scores[keep].sum() + soft_seg.sum() + soft_scores.sum() + dist.sum()


def test_torch_compile_inductor_on_cuda():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 16, 300, generator=g).cuda().requires_grad_()
    start = torch.rand(50, generator=g) * 250
    rois = torch.stack([torch.randint(0, 2, (50,), generator=g).float(), start, start + 30], 1).cuda()
    seg, scores, labels = (t.cuda() for t in candidates(2000, seed=9))
    boundaries = seg[:300].clone().requires_grad_()  # differentiable ops take gradients
    x = clustered_features(500, 32, seed=4).cuda()
    args = (features, rois, boundaries, seg, scores, labels, x)
    eager = _postprocess(*args)
    eager_grads = torch.autograd.grad(eager, (features, boundaries))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(_postprocess, fullgraph=True)  # inductor
        out = compiled(*args)
        grads = torch.autograd.grad(out, (features, boundaries))
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-3)
    for got, want in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
