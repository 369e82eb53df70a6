"""roi_align_1d against the gather+lerp reference and torchvision, edge cases, autograd, opcheck."""

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.ops import reference, roi_align_1d

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def adversarial_rois(num, batch, length, generator, dtype=torch.float64):
    """Random rois mixing every case: inside, partly and wholly outside
    [0, T], shorter than one bin, empty, reversed, and long."""
    kind = torch.randint(0, 6, (num,), generator=generator)
    start = torch.rand(num, generator=generator, dtype=dtype) * 2 * length - 0.5 * length
    span = torch.rand(num, generator=generator, dtype=dtype)
    extent = torch.stack(
        [
            span * length / 3,  # ordinary
            span * 0.5,  # shorter than a bin
            torch.zeros_like(span),  # empty
            -span * length / 2,  # reversed
            span * 3 * length,  # long, sticks out
            span * length / 3,  # ordinary
        ]
    )[kind, torch.arange(num)]
    outside = kind == 5
    start = torch.where(outside & (span < 0.5), -start.abs() - 3, start)  # wholly before -1
    start = torch.where(outside & (span >= 0.5), length + 2 + start.abs(), start)  # wholly after T
    index = torch.randint(0, batch, (num,), generator=generator).to(dtype)
    return torch.stack([index, start, start + extent], dim=1)


def _pair(seed, batch=3, channels=4, length=23, num=60, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, channels, length, generator=g, dtype=dtype)
    return feats, adversarial_rois(num, batch, length, g, dtype)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 5, -1])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.37, 2.5])
def test_forward_and_backward_match_reference(aligned, sampling_ratio, spatial_scale):
    feats, rois = _pair(seed=sampling_ratio + 10 * int(aligned))
    rois[:, 1:] /= spatial_scale
    args = (7, spatial_scale, sampling_ratio, aligned)
    x = feats.clone().requires_grad_()
    y = feats.clone().requires_grad_()
    out = roi_align_1d(x, rois, *args)
    expected = reference.roi_align_1d(y, rois, *args)
    torch.testing.assert_close(out, expected)
    assert out.abs().sum() > 0 and (out == 0).any()  # the mix has pooled and empty bins
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (expected * w).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


def _torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision.ops.roi_align on [B, C, 1, T]: a box of height 1 whose
    samples all land on the single row."""
    import torchvision

    zero = torch.zeros_like(rois[:, 1])
    one = torch.full_like(zero, 1.0 / spatial_scale)
    boxes = torch.stack([rois[:, 0], rois[:, 1], zero, rois[:, 2], one], dim=1)
    out = torchvision.ops.roi_align(
        features[:, :, None], boxes, (1, output_size), spatial_scale, sampling_ratio, aligned
    )
    return out[:, :, 0]


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not importable")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2, 3])
def test_matches_torchvision(dtype, aligned, sampling_ratio):
    feats, rois = _pair(seed=100 + sampling_ratio, dtype=dtype, num=80)
    if aligned and sampling_ratio <= 0:
        # torchvision sizes a buffer by the (negative) sample count of a long
        # reversed aligned roi and fails; compare reversed rois elsewhere.
        rois = torch.where((rois[:, 2] < rois[:, 1])[:, None], rois[:, [0, 2, 1]], rois)
    for scale in (1.0, 0.5):
        args = (9, scale, sampling_ratio, aligned)
        x = feats.clone().requires_grad_()
        y = feats.clone().requires_grad_()
        out = roi_align_1d(x, rois / torch.tensor([1.0, scale, scale], dtype=dtype), *args)
        expected = _torchvision_roi_align(
            y, rois / torch.tensor([1.0, scale, scale], dtype=dtype), *args
        )
        torch.testing.assert_close(out, expected)
        w = torch.randn_like(out)
        (out * w).sum().backward()
        (expected * w).sum().backward()
        torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_wide_channels_vector_path(dtype, channels_last):
    # C = 80: full 256-byte channel tiles (the vectorised CPU path) plus a
    # partial tile; batch element 1 has no rois (its gradient must be 0).
    feats, rois = _pair(seed=21, batch=3, channels=80, length=40, num=50, dtype=dtype)
    rois[:, 0] = torch.where(rois[:, 0] == 1, 2, rois[:, 0])
    if channels_last:
        feats = feats.transpose(1, 2).contiguous().transpose(1, 2)
    for args in [(6, 1.0, 0, True), (5, 0.5, 2, False)]:
        x = feats.clone().requires_grad_()
        y = feats.clone().requires_grad_()
        out = roi_align_1d(x, rois, *args)
        expected = reference.roi_align_1d(y, rois, *args)
        torch.testing.assert_close(out, expected)
        w = torch.randn_like(out)
        (out * w).sum().backward()
        (expected * w).sum().backward()
        torch.testing.assert_close(x.grad, y.grad)
        assert x.grad[1].abs().max() == 0 and x.grad[0].abs().max() > 0


def test_linear_ramp_gives_bin_centres():
    # Interpolating f(t) = t is exact, so a bin inside [0, T-1] averages its
    # sample positions: the bin centre (independent of the reference).
    length = 40
    feats = torch.arange(length, dtype=torch.float64).expand(2, 3, length).contiguous()
    rois = torch.tensor([[0, 2.0, 6.0], [1, 5.25, 31.5], [1, 10.0, 10.4]], dtype=torch.float64)
    for sr in (0, 1, 4):
        out = roi_align_1d(feats, rois, 4, sampling_ratio=sr)
        start, end = rois[:, 1] - 0.5, rois[:, 2] - 0.5
        centres = start[:, None] + (torch.arange(4) + 0.5) * ((end - start) / 4)[:, None]
        torch.testing.assert_close(out, centres[:, None].expand(3, 3, 4))
    # Hand computed: roi [2, 6], aligned, 2 bins, 2 samples: positions 2,3 | 4,5.
    out = roi_align_1d(feats[:1, :1], rois[:1], 2, sampling_ratio=2)
    assert out.flatten().tolist() == [2.5, 4.5]


def test_reversed_rois():
    feats, _ = _pair(seed=3)
    fwd = torch.tensor([[0, 3.0, 17.5], [2, -4.0, 9.0]], dtype=torch.float64)
    rev = fwd[:, [0, 2, 1]]
    # aligned + adaptive: negative width -> no samples -> zeros.
    assert roi_align_1d(feats, rev, 5).abs().max() == 0
    # aligned + fixed sampling ratio: the mirrored bins of the forward roi.
    torch.testing.assert_close(
        roi_align_1d(feats, rev, 5, sampling_ratio=2).flip(-1),
        roi_align_1d(feats, fwd, 5, sampling_ratio=2),
    )
    # not aligned: widened to width 1 from start.
    widened = torch.stack([rev[:, 0], rev[:, 1], rev[:, 1] + 1], dim=1)
    for sr in (0, 2):
        torch.testing.assert_close(
            roi_align_1d(feats, rev, 5, sampling_ratio=sr, aligned=False),
            roi_align_1d(feats, widened, 5, sampling_ratio=sr, aligned=False),
            rtol=0,
            atol=0,
        )


def test_rois_outside_and_empty():
    feats, _ = _pair(seed=4, length=20)
    rois = torch.tensor(
        [[0, 22.0, 30.0], [1, -40.0, -1.6], [2, 5.0, 5.0]], dtype=torch.float64
    )  # after T + 1, before -1, empty
    x = feats.clone().requires_grad_()
    out = roi_align_1d(x, rois, 4)
    assert out.abs().max() == 0
    out.sum().backward()
    assert x.grad.abs().max() == 0
    # An empty roi with fixed samples is the value interpolated at its start.
    point = roi_align_1d(feats, rois[2:], 4, sampling_ratio=3)
    value = torch.lerp(feats[2, :, 4], feats[2, :, 5], 0.5)
    torch.testing.assert_close(point, value[None, :, None].expand(1, 4, 4))


def test_huge_roi_is_fast_and_correct():
    # Adaptive sampling takes ~10^4 samples per bin here (10^11 in the last
    # roi); only the ~T that fall into [-1, T] are visited (binary search
    # over the sample range), so the kernel's cost does not grow with width.
    feats = torch.randn(1, 2, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    rois = torch.tensor([[0, -3.0e4, 5.0e4], [0, -10.0, 1.0e5]], dtype=torch.float64)
    out = roi_align_1d(feats, rois, 8)
    torch.testing.assert_close(out, reference.roi_align_1d(feats, rois, 8))
    assert out.abs().sum() > 0
    # [-4e12, 4e12] in 8 bins of 10^12 samples at integer positions (after
    # the -0.5 offset): bin 3 ends with the sample at -1 (clamped to t=0),
    # bin 4 starts with samples at 0, 1, ..., 50 (the last clamped to T-1).
    huge = roi_align_1d(feats, torch.tensor([[0, -4.0e12, 4.0e12]], dtype=torch.float64), 8)
    assert huge[..., [0, 1, 2, 5, 6, 7]].abs().max() == 0
    torch.testing.assert_close(huge[0, :, 3], feats[0, :, 0] / 1e12)
    torch.testing.assert_close(huge[0, :, 4], (feats[0].sum(-1) + feats[0, :, -1]) / 1e12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_lower_precision_accumulates_in_float32(dtype):
    feats, rois = _pair(seed=6, dtype=torch.float64)
    f, r = feats.to(dtype), rois.to(dtype)
    out = roi_align_1d(f, r, 6)
    assert out.dtype == dtype
    expected = reference.roi_align_1d(f.double(), r.double(), 6).to(dtype)
    torch.testing.assert_close(out, expected)
    x = f.clone().requires_grad_()
    roi_align_1d(x, r, 6).sum().backward()
    y = f.double().requires_grad_()
    reference.roi_align_1d(y, r.double(), 6).sum().backward()
    torch.testing.assert_close(x.grad, y.grad.to(dtype))


def test_nan_features_propagate_like_reference():
    feats, rois = _pair(seed=7)
    feats[1, 2, 5] = float("nan")
    out = roi_align_1d(feats, rois, 6, sampling_ratio=1)
    expected = reference.roi_align_1d(feats, rois, 6, sampling_ratio=1)
    torch.testing.assert_close(out, expected, equal_nan=True)
    assert torch.isnan(out).any() and not torch.isnan(out[:, [0, 1, 3]]).any()


def test_non_contiguous_inputs():
    feats, rois = _pair(seed=8)
    channels_last = feats.transpose(1, 2).contiguous().transpose(1, 2)
    strided_rois = torch.cat([rois, rois], dim=1)[:, :3]
    assert not channels_last.is_contiguous() and not strided_rois.is_contiguous()
    torch.testing.assert_close(
        roi_align_1d(channels_last, strided_rois, 5), reference.roi_align_1d(feats, rois, 5)
    )


def test_empty_shapes():
    feats = torch.randn(2, 3, 10)
    out = roi_align_1d(feats, torch.zeros(0, 3), 4)
    assert out.shape == (0, 3, 4)
    x = feats.clone().requires_grad_()
    roi_align_1d(x, torch.zeros(0, 3), 4).sum().backward()
    assert x.grad.shape == feats.shape and x.grad.abs().max() == 0
    assert roi_align_1d(torch.randn(2, 0, 10), torch.tensor([[1.0, 0, 5]]), 4).shape == (1, 0, 4)


def test_meta_device_shapes():
    feats = torch.empty(2, 5, 30, device="meta")
    assert roi_align_1d(feats, torch.empty(7, 3, device="meta"), 8).shape == (7, 5, 8)


GOOD_F, GOOD_R = torch.zeros(2, 3, 10), torch.tensor([[0.0, 1.0, 5.0]])


@pytest.mark.parametrize(
    "features,rois,kwargs,match",
    [
        (GOOD_F, torch.tensor([[2.0, 1, 5]]), {}, r"batch index in \[0, 2\); row 0 has 2"),
        (GOOD_F, torch.tensor([[0.0, 1, 5], [-1.0, 1, 5]]), {}, "row 1 has -1"),
        (GOOD_F, torch.tensor([[0.5, 1, 5]]), {}, "integer batch index"),
        (GOOD_F, torch.tensor([[0.0, float("nan"), 5]]), {}, "rois must be finite; row 0"),
        (GOOD_F, torch.tensor([[0.0, 1, float("inf")]]), {}, "rois must be finite"),
        (GOOD_F, torch.tensor([[float("nan"), 1, 2]]), {}, "rois must be finite"),
        (torch.zeros(3, 10), GOOD_R, {}, "features must be 3-D"),
        (GOOD_F, torch.zeros(1, 4), {}, r"rois must have shape \[K, 3\]"),
        (GOOD_F, torch.zeros(3), {}, "rois must be 2-D"),
        (GOOD_F, GOOD_R.double(), {}, "same dtype"),
        (GOOD_F.long(), GOOD_R.long(), {}, "floating-point"),
        (GOOD_F, GOOD_R, {"output_size": 0}, "output_size must be >= 1"),
        (GOOD_F, GOOD_R, {"spatial_scale": 0.0}, "spatial_scale must be finite and > 0"),
        (GOOD_F, GOOD_R, {"spatial_scale": float("nan")}, "spatial_scale"),
        (torch.zeros(2, 3, 0), GOOD_R, {}, "at least one time step"),
    ],
)
def test_bad_inputs_raise_clear_errors(features, rois, kwargs, match):
    kwargs = {"output_size": 4, **kwargs}
    with pytest.raises(RuntimeError, match=match):
        roi_align_1d(features, rois, **kwargs)


def test_backward_op_validates_its_inputs():
    grad = torch.zeros(1, 3, 4)
    with pytest.raises(RuntimeError, match="batch index"):
        torch.ops.stovtal.roi_align_1d_backward(
            grad, torch.tensor([[3.0, 0, 1]]), 2, 10, 1.0, 0, True
        )
    with pytest.raises(RuntimeError, match="with K = 2 rois"):
        torch.ops.stovtal.roi_align_1d_backward(grad, torch.zeros(2, 3), 2, 10, 1.0, 0, True)
    with pytest.raises(RuntimeError, match="length must be >= 1"):
        torch.ops.stovtal.roi_align_1d_backward(grad, torch.zeros(1, 3), 2, 0, 1.0, 0, True)


def test_rois_get_no_gradient():
    feats, rois = _pair(seed=9)
    rois.requires_grad_()
    x = feats.clone().requires_grad_()
    roi_align_1d(x, rois, 4).sum().backward()
    assert rois.grad is None and x.grad is not None


@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 0), (False, 2), (True, 3)])
def test_gradcheck_and_gradgradcheck(aligned, sampling_ratio):
    feats, rois = _pair(seed=11, batch=2, channels=2, length=12, num=6)
    x = feats.requires_grad_()

    def fn(f):
        return roi_align_1d(f, rois, 4, 0.8, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_opcheck():
    feats, rois = _pair(seed=12, batch=2, channels=3, length=15, num=8)
    f = feats.requires_grad_()
    torch.library.opcheck(torch.ops.stovtal.roi_align_1d.default, (f, rois, 5, 0.7, 2, True))
    grad = torch.randn(8, 3, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.stovtal.roi_align_1d_backward.default, (grad, rois, 2, 15, 0.7, 0, False)
    )


def test_torch_compile_fullgraph_forward_and_backward():
    def pooled_score(f, r):
        return roi_align_1d(f, r, 8, 0.5, 0, True).mean(-1).square().sum()

    compiled = torch.compile(pooled_score, fullgraph=True)
    feats, rois = _pair(seed=13, dtype=torch.float32)
    rois[:, 1:] *= 2
    x = feats.clone().requires_grad_()
    y = feats.clone().requires_grad_()
    a, b = compiled(x, rois), pooled_score(y, rois)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(x.grad, y.grad)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 30),
    output_size=st.integers(1, 9),
    sampling_ratio=st.integers(-1, 4),
    aligned=st.booleans(),
    spatial_scale=st.sampled_from([1.0, 0.25, 1.5]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_configurations(
    batch, length, output_size, sampling_ratio, aligned, spatial_scale, seed
):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, 2, length, generator=g, dtype=torch.float64)
    rois = adversarial_rois(12, batch, length, g)
    args = (output_size, spatial_scale, sampling_ratio, aligned)
    torch.testing.assert_close(
        roi_align_1d(feats, rois, *args), reference.roi_align_1d(feats, rois, *args)
    )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    feats, rois = _pair(seed=14, channels=16, dtype=torch.float32)
    f, r = feats.to(dtype), rois.to(dtype)
    for aligned, sr in [(True, 0), (False, 2)]:
        x = f.cuda().requires_grad_()
        out = roi_align_1d(x, r.cuda(), 7, 0.9, sr, aligned)
        torch.testing.assert_close(out.cpu(), roi_align_1d(f, r, 7, 0.9, sr, aligned))
        w = torch.randn(out.shape, dtype=dtype)
        (out * w.cuda()).sum().backward()
        y = f.clone().requires_grad_()
        (roi_align_1d(y, r, 7, 0.9, sr, aligned) * w).sum().backward()
        torch.testing.assert_close(x.grad.cpu(), y.grad)


@pytest.mark.cuda
def test_cuda_gradcheck_opcheck_and_errors():
    feats, rois = _pair(seed=15, batch=2, channels=2, length=12, num=6)
    x = feats.cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: roi_align_1d(f, rois.cuda(), 4), (x,))
    torch.library.opcheck(torch.ops.stovtal.roi_align_1d.default, (x, rois.cuda(), 4, 1.0, 0, True))
    with pytest.raises(RuntimeError, match="same device"):
        roi_align_1d(x, rois, 4)
    with pytest.raises(RuntimeError, match="batch index"):
        roi_align_1d(x, torch.tensor([[5.0, 0, 1]], dtype=torch.float64, device="cuda"), 4)
