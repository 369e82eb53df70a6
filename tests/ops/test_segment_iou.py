"""segment_iou against the pure-PyTorch reference, properties, autograd, opcheck."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stovtal.ops import reference, segment_iou


def random_segments(n, generator, scale=10.0, dtype=torch.float64):
    start = torch.rand(n, generator=generator, dtype=dtype) * scale
    length = torch.rand(n, generator=generator, dtype=dtype) * scale / 3
    return torch.stack([start, start + length], dim=1)


def degenerate_segments(dtype=torch.float64):
    """Reversed, zero-length, identical, nested, touching and far-apart segments."""
    return torch.tensor(
        [
            [0.0, 1.0],
            [0.0, 1.0],  # identical to row 0
            [0.25, 0.75],  # nested in row 0
            [1.0, 2.0],  # touches row 0
            [0.5, 0.5],  # zero length inside row 0
            [2.0, 1.0],  # reversed (end < start): length 0
            [-3.0, -1.0],  # negative times
            [100.0, 1e4],  # far away, long
            [0.0, 0.0],  # zero length at a boundary
        ],
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_random(dtype):
    g = torch.Generator().manual_seed(0)
    a = random_segments(300, g, dtype=dtype)
    b = random_segments(170, g, dtype=dtype)
    torch.testing.assert_close(segment_iou(a, b), reference.segment_iou(a, b))
    torch.testing.assert_close(segment_iou(a, b[:300]), reference.segment_iou(a, b[:300]))
    bb = random_segments(300, g, dtype=dtype)
    torch.testing.assert_close(segment_iou(a, bb, aligned=True), reference.segment_iou(a, bb, aligned=True))


def test_degenerate_cases_exact_values():
    s = degenerate_segments()
    iou = segment_iou(s, s)
    torch.testing.assert_close(iou, reference.segment_iou(s, s), rtol=0, atol=0)
    assert iou[0, 1] == 1.0  # identical
    assert iou[0, 2] == 0.5  # nested: 0.5 / 1
    assert iou[0, 3] == 0.0  # touching
    assert iou[0, 4] == 0.0  # zero length inside
    assert iou[5, 5] == 0.0  # reversed vs itself: zero union -> 0
    assert iou[8, 8] == 0.0  # zero length vs itself
    assert iou[7, 7] == 1.0


def test_hand_computed_values():
    a = torch.tensor([[0.0, 10.0], [2.0, 4.0]])
    b = torch.tensor([[5.0, 15.0], [3.0, 4.0], [20.0, 30.0]])
    expected = torch.tensor([[5 / 15, 1 / 10, 0.0], [0.0, 1 / 2, 0.0]])
    torch.testing.assert_close(segment_iou(a, b), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    g = torch.Generator().manual_seed(1)
    a = random_segments(50, g, dtype=torch.float32)
    b = random_segments(40, g, dtype=torch.float32)
    out = segment_iou(a.to(dtype), b.to(dtype))
    assert out.dtype == dtype
    expected = reference.segment_iou(a.to(dtype).float(), b.to(dtype).float()).to(dtype)
    torch.testing.assert_close(out, expected)


def test_nan_propagates_and_only_where_involved():
    a = torch.tensor([[0.0, 1.0], [float("nan"), 1.0]])
    b = torch.tensor([[0.0, 2.0], [0.5, float("nan")]])
    out = segment_iou(a, b)
    assert out[0, 0] == 0.5
    assert torch.isnan(out[0, 1]) and torch.isnan(out[1, 0]) and torch.isnan(out[1, 1])
    torch.testing.assert_close(out, reference.segment_iou(a, b), equal_nan=True)
    assert torch.isnan(segment_iou(a, b, aligned=True)).tolist() == [False, True]


def test_infinite_segment():
    a = torch.tensor([[0.0, float("inf")]])
    b = torch.tensor([[0.0, 1.0]])
    assert segment_iou(a, b).item() == 0.0  # 1 / inf
    torch.testing.assert_close(segment_iou(a, b), reference.segment_iou(a, b))


@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0)])
def test_empty_inputs(n, m):
    a, b = torch.zeros(n, 2), torch.zeros(m, 2)
    assert segment_iou(a, b).shape == (n, m)
    if n == m:
        assert segment_iou(a, b, aligned=True).shape == (n,)


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(2)
    a = random_segments(64, g).t().contiguous().t()  # column-major
    b = random_segments(80, g)[::2]  # strided rows
    assert not a.is_contiguous() and not b.is_contiguous()
    torch.testing.assert_close(segment_iou(a, b), reference.segment_iou(a, b))


@pytest.mark.parametrize(
    "a,b,match",
    [
        (torch.zeros(3, 3), torch.zeros(2, 2), r"shape \[N, 2\]"),
        (torch.zeros(3), torch.zeros(2, 2), "2-D"),
        (torch.zeros(3, 2), torch.zeros(2, 2, dtype=torch.float64), "same dtype"),
        (torch.zeros(3, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64), "floating"),
    ],
)
def test_bad_inputs_raise_clear_errors(a, b, match):
    with pytest.raises(RuntimeError, match=match):
        segment_iou(a, b)


def test_aligned_length_mismatch():
    with pytest.raises(RuntimeError, match="same N"):
        segment_iou(torch.zeros(3, 2), torch.zeros(2, 2), aligned=True)


def test_meta_device_shapes():
    a = torch.empty(7, 2, device="meta")
    b = torch.empty(5, 2, device="meta")
    assert segment_iou(a, b).shape == (7, 5)
    assert segment_iou(a, a, aligned=True).shape == (7,)


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    a=hnp.arrays("float64", st.tuples(st.integers(1, 12), st.just(2)), elements=finite),
    b=hnp.arrays("float64", st.tuples(st.integers(1, 12), st.just(2)), elements=finite),
)
def test_properties(a, b):
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    ab, ba = segment_iou(a, b), segment_iou(b, a)
    torch.testing.assert_close(ab, ba.t(), rtol=0, atol=0)  # symmetry
    assert bool(((ab >= 0) & (ab <= 1)).all())  # range
    torch.testing.assert_close(ab, reference.segment_iou(a, b), rtol=1e-12, atol=1e-12)
    positive = (a[:, 1] - a[:, 0]) > 0
    diag = segment_iou(a, a, aligned=True)
    assert bool((diag[positive] == 1).all())
    assert bool((diag[~positive] == 0).all())


def _separated_segments(n, generator):
    """Random float64 segments with no ties in coordinates (gradcheck away from kinks)."""
    x = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 10
    x[:, 1] = x[:, 0] + 0.5 + torch.rand(n, generator=generator, dtype=torch.float64) * 3
    return x


def test_gradcheck_aligned():
    g = torch.Generator().manual_seed(3)
    a = _separated_segments(12, g).requires_grad_()
    b = _separated_segments(12, g).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: segment_iou(x, y, aligned=True), (a, b))


def test_gradcheck_pairwise():
    g = torch.Generator().manual_seed(4)
    a = _separated_segments(6, g).requires_grad_()
    b = _separated_segments(5, g).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: segment_iou(x, y), (a, b))


def test_gradient_matches_reference_autograd():
    g = torch.Generator().manual_seed(5)
    a = _separated_segments(40, g)
    b = _separated_segments(30, g)
    w = torch.randn(40, 30, generator=g, dtype=torch.float64)
    grads = []
    for fn in (segment_iou, reference.segment_iou):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        (fn(x, y) * w).sum().backward()
        grads.append((x.grad, y.grad))
    torch.testing.assert_close(grads[0], grads[1])


def test_zero_union_has_zero_gradient():
    a = torch.tensor([[1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    segment_iou(a, b, aligned=True).sum().backward()
    assert a.grad.abs().sum() == 0 and b.grad.abs().sum() == 0


def test_opcheck():
    g = torch.Generator().manual_seed(6)
    a = _separated_segments(9, g)
    b = _separated_segments(7, g)
    for args in [(a, b), (a.requires_grad_(), b.requires_grad_())]:
        torch.library.opcheck(torch.ops.stovtal.segment_iou.default, args)
    a2 = _separated_segments(7, g).requires_grad_()
    torch.library.opcheck(torch.ops.stovtal.segment_iou_aligned.default, (a2, b))
    grad = torch.randn(9, 7, dtype=torch.float64, generator=g)
    torch.library.opcheck(torch.ops.stovtal.segment_iou_backward.default, (grad, a.detach(), b.detach()))


def test_torch_compile_fullgraph():
    def iou_loss(x, y):
        return (1 - segment_iou(x, y, aligned=True)).mean() + segment_iou(x, y).max()

    compiled = torch.compile(iou_loss, fullgraph=True)
    g = torch.Generator().manual_seed(7)
    a = _separated_segments(16, g).float()
    b = _separated_segments(16, g).float()
    torch.testing.assert_close(compiled(a, b), iou_loss(a, b))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(8)
    a = random_segments(500, g, dtype=torch.float32).to(dtype)
    b = random_segments(300, g, dtype=torch.float32).to(dtype)
    torch.testing.assert_close(segment_iou(a.cuda(), b.cuda()).cpu(), segment_iou(a, b))
    torch.testing.assert_close(
        segment_iou(a.cuda(), b[:1].expand(500, 2).cuda(), aligned=True).cpu(),
        segment_iou(a, b[:1].expand(500, 2), aligned=True),
    )


@pytest.mark.cuda
def test_cuda_gradcheck_and_opcheck():
    g = torch.Generator().manual_seed(9)
    a = _separated_segments(8, g).cuda().requires_grad_()
    b = _separated_segments(8, g).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: segment_iou(x, y, aligned=True), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: segment_iou(x, y), (a, b))
    torch.library.opcheck(torch.ops.stovtal.segment_iou.default, (a, b))


@pytest.mark.cuda
def test_cuda_device_mismatch():
    with pytest.raises(RuntimeError, match="same device"):
        segment_iou(torch.zeros(2, 2).cuda(), torch.zeros(2, 2))
