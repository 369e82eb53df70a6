import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import stovtal  # noqa: F401
from stovtal.models.losses import diou_loss_1d, sigmoid_focal_loss
from stovtal.ops import segment_iou


def test_focal_loss_hand_values():
    # p = 0.5 for a positive: ce = log 2, (1 - p_t)^2 = 1/4, alpha = 1/4
    loss = sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), reduction="sum")
    assert math.isclose(loss.item(), 0.25 * 0.25 * math.log(2), rel_tol=1e-6)
    # negative with logit log(3): p = 3/4, p_t = 1/4, ce = -log(1/4), (1 - p_t)^2 = 9/16, weight 3/4
    loss = sigmoid_focal_loss(torch.tensor([math.log(3)]), torch.tensor([0.0]), reduction="sum")
    assert math.isclose(loss.item(), 0.75 * (9 / 16) * math.log(4), rel_tol=1e-6)


def test_focal_loss_reduces_to_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g) * 3
    targets = (torch.rand(50, generator=g) > 0.5).float()
    ours = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0, reduction="mean")
    assert torch.allclose(ours, F.binary_cross_entropy_with_logits(logits, targets))


def test_focal_loss_shape_mismatch():
    try:
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(4))
    except ValueError as e:
        assert "logits" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_diou_hand_cases():
    # identical segments
    assert diou_loss_1d(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]])).item() == 0.0
    # same centre, half the length: IoU 0.5, no centre term
    assert math.isclose(diou_loss_1d(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]])).item(), 0.5)
    # [0, 2] vs [-2, 0]: IoU 0, centre distance 2, enclosing length 4 -> 1 + 4/16
    assert math.isclose(diou_loss_1d(torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]])).item(), 1.25)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(*[st.integers(0, 1000)] * 4), min_size=1, max_size=8),
    st.floats(-5, 5),
)
def test_diou_matches_segment_reference(rows, anchor):
    # distances on a 0.01 grid (the eps guard of the loss only matters below 1e-4)
    t = torch.tensor(rows, dtype=torch.float64) / 100
    pred, target = t[:, :2], t[:, 2:]
    # absolute segments around the shared anchor point
    a = torch.stack([anchor - pred[:, 0], anchor + pred[:, 1]], 1)
    b = torch.stack([anchor - target[:, 0], anchor + target[:, 1]], 1)
    iou = segment_iou(a, b, aligned=True)
    enclosing = torch.maximum(a[:, 1], b[:, 1]) - torch.minimum(a[:, 0], b[:, 0])
    dist = (a.mean(1) - b.mean(1)).abs()
    ref = 1 - iou + torch.where(enclosing > 0, (dist / enclosing.clamp(min=1e-12)) ** 2, torch.zeros_like(dist))
    ours = diou_loss_1d(pred, target, reduction="none")
    # zero-length unions: both conventions give IoU 0
    assert torch.allclose(ours, ref, atol=1e-6)
    assert (ours >= 0).all()
