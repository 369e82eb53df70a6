"""roi_align_1d at ActionFormer scale on CPU: ours vs the pure-PyTorch reference
vs torchvision.ops.roi_align on [B, C, 1, T] (a 2-D kernel doing 1-D work).

B=8 videos, C=512 channels, T=2304 snippets, K=2000 rois over the batch,
output_size=16, float32, adaptive sampling, aligned. Roi lengths are
log-uniform in [2, T/2] snippets (short and long detections alike), starts
uniform so that every roi lies inside its video.

Run: pytest benchmarks/test_bench_roi_align_1d.py --benchmark-only
The reference takes tens of seconds per call, so it and torchvision run a
single round. ``extra_info["peak_rss_bytes"]`` is the peak memory of one
forward call beyond its inputs, in a fresh process (benchmarks/conftest.py).
"""

import importlib.util

import pytest
import torch

from stovtal.ops import reference, roi_align_1d

B, C, T, K, L = 8, 512, 2304, 2000, 16
SETUP = f"""
import math
g = torch.Generator().manual_seed(0)
features = torch.randn({B}, {C}, {T}, generator=g)
length = torch.exp(torch.empty({K}).uniform_(math.log(2.0), math.log({T} / 2), generator=g))
start = torch.rand({K}, generator=g) * ({T} - length)
batch_index = torch.randint(0, {B}, ({K},), generator=g).float()
rois = torch.stack([batch_index, start, start + length], dim=1)
boxes = torch.stack([batch_index, start, torch.zeros({K}), start + length, torch.ones({K})], dim=1)
"""
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
FWD = "roi_align_1d-fwd-B8-C512-T2304-K2000-L16-f32-cpu"
FWD_BWD = "roi_align_1d-fwd+bwd-B8-C512-T2304-K2000-L16-f32-cpu"


@pytest.fixture(scope="module")
def data():
    scope: dict = {"torch": torch}
    exec(SETUP, scope)
    scope["weight"] = torch.randn(K, C, L, generator=scope["g"])  # fwd+bwd only
    return scope


def ours(d):
    return roi_align_1d(d["features"], d["rois"], L)


def ref(d):
    return reference.roi_align_1d(d["features"], d["rois"], L)


def tv(d):
    import torchvision

    return torchvision.ops.roi_align(d["features"][:, :, None], d["boxes"], (1, L), 1.0, 0, True)[
        :, :, 0
    ]


def fwd_bwd(fn, d):
    x = d["features"].clone().requires_grad_()
    out = fn({**d, "features": x})
    (grad,) = torch.autograd.grad((out * d["weight"]).sum(), x)
    return grad


CALLS = {
    "ours": "stovtal.ops.roi_align_1d(features, rois, 16)",
    "reference": "stovtal.ops.reference.roi_align_1d(features, rois, 16)",
    "torchvision": "torchvision.ops.roi_align(features[:, :, None], boxes, (1, 16), 1.0, 0, True)",
}


def _run(benchmark, fn, d, rounds):
    return benchmark.pedantic(
        fn, args=(d,), rounds=rounds, iterations=1, warmup_rounds=min(rounds, 1)
    )


@pytest.mark.benchmark(group=FWD)
def test_fwd_stovtal(benchmark, data, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(SETUP, CALLS["ours"])
    assert _run(benchmark, ours, data, 5).shape == (K, C, L)


@pytest.mark.benchmark(group=FWD)
def test_fwd_reference(benchmark, data, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(SETUP, CALLS["reference"])
    assert _run(benchmark, ref, data, 1).shape == (K, C, L)


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not importable")
@pytest.mark.benchmark(group=FWD)
def test_fwd_torchvision(benchmark, data, peak_rss):
    benchmark.extra_info["peak_rss_bytes"] = peak_rss(
        SETUP + "import torchvision\n", CALLS["torchvision"]
    )
    assert _run(benchmark, tv, data, 2).shape == (K, C, L)


@pytest.mark.benchmark(group=FWD_BWD)
def test_fwd_bwd_stovtal(benchmark, data):
    assert _run(benchmark, lambda d: fwd_bwd(ours, d), data, 3).shape == (B, C, T)


@pytest.mark.benchmark(group=FWD_BWD)
def test_fwd_bwd_reference(benchmark, data):
    assert _run(benchmark, lambda d: fwd_bwd(ref, d), data, 1).shape == (B, C, T)


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not importable")
@pytest.mark.benchmark(group=FWD_BWD)
def test_fwd_bwd_torchvision(benchmark, data):
    assert _run(benchmark, lambda d: fwd_bwd(tv, d), data, 1).shape == (B, C, T)
