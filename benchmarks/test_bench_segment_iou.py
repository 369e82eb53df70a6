"""segment_iou, N = M = 4096 float32 on CPU: our kernel vs the vectorised reference.

Run: pytest benchmarks/test_bench_segment_iou.py --benchmark-only
Each benchmark's ``extra_info["peak_rss_bytes"]`` is the peak memory of one
call beyond its inputs, measured in a fresh process (benchmarks/conftest.py).
"""

import pytest
import torch

from stovtal.ops import reference, segment_iou

N = M = 4096
GROUP = "segment_iou-4096x4096-f32-cpu"
SETUP = f"""
g = torch.Generator().manual_seed(0)
start = torch.rand({N + M}, generator=g) * 1000
seg = torch.stack([start, start + torch.rand({N + M}, generator=g) * 100], dim=1)
a, b = seg[:{N}].contiguous(), seg[{N}:].contiguous()
"""


@pytest.fixture(scope="module")
def segments():
    scope: dict = {"torch": torch}
    exec(SETUP, scope)
    return scope["a"], scope["b"]


@pytest.mark.benchmark(group=GROUP)
def test_stovtal(benchmark, segments, peak_rss):
    a, b = segments
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(SETUP, "out = stovtal.ops.segment_iou(a, b)")
    out = benchmark(segment_iou, a, b)
    assert out.shape == (N, M)


@pytest.mark.benchmark(group=GROUP)
def test_reference(benchmark, segments, peak_rss):
    a, b = segments
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        SETUP, "out = stovtal.ops.reference.segment_iou(a, b)"
    )
    out = benchmark(reference.segment_iou, a, b)
    assert out.shape == (N, M)
