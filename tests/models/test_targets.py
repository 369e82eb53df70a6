import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.models.targets import assign_targets, make_points

RANGES = [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, math.inf)]
STRIDES = [1, 2, 4, 8, 16, 32]


def _points(t=64):
    return make_points([t // s for s in STRIDES], STRIDES, RANGES)


def test_make_points_layout():
    pts = make_points([8, 4], [1, 2], [(0, 4), (4, math.inf)])
    assert pts.shape == (12, 4)
    assert pts[:8, 0].tolist() == list(range(8))
    assert pts[8:, 0].tolist() == [0, 2, 4, 6]
    assert pts[8:, 3].tolist() == [2] * 4 and math.isinf(pts[-1, 2])


def test_hand_case_centre_sampling_and_ranges():
    pts = _points()
    cls, reg = assign_targets(pts, torch.tensor([[10.0, 20.0]]), center_radius=1.5)
    pos = {(int(p[3]), int(p[0])) for p in pts[cls > 0]}
    # stride 1: centre region (13.5, 16.5) but the reach (max distance) 5..6 > 4
    # stride 2: points 14, 16 reach 6 in [4, 8]; stride 4: point 12 reaches 8 in [8, 16]
    assert pos == {(2, 14), (2, 16), (4, 12)}
    i = int(((pts[:, 3] == 2) & (pts[:, 0] == 14)).nonzero())
    assert reg[i].tolist() == [2.0, 3.0]  # (14 - 10, 20 - 14) / stride 2
    assert (reg[cls == 0] == 0).all()


def test_empty_ground_truth():
    cls, reg = assign_targets(_points(), torch.zeros(0, 2))
    assert cls.sum() == 0 and reg.abs().sum() == 0


def _brute_force(points, gts, radius):
    cls = torch.zeros(points.shape[0])
    reg = torch.zeros(points.shape[0], 2)
    for i, (p, lo, hi, s) in enumerate(points.tolist()):
        best = None
        for st_, en in gts.tolist():
            left, right = p - st_, en - p
            c = (st_ + en) / 2
            if radius > 0:
                inside = min(p - max(c - s * radius, st_), min(c + s * radius, en) - p) > 0
            else:
                inside = min(left, right) > 0
            if inside and lo <= max(left, right) <= hi and (best is None or en - st_ < best[0]):
                best = (en - st_, left / s, right / s)
        if best is not None:
            cls[i] = 1
            reg[i] = torch.tensor(best[1:])
    return cls, reg


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-10, 140), st.integers(1, 120)), min_size=1, max_size=5),
       st.sampled_from([0.0, 0.5, 1.5, 3.0]))
def test_matches_brute_force(raw, radius):
    # half-snippet grid values keep every distance exact in float32 (ties broken identically)
    gts = torch.tensor([[s / 2, (s + d) / 2] for s, d in raw], dtype=torch.float32)
    pts = _points()
    cls, reg = assign_targets(pts, gts, center_radius=radius)
    ref_cls, ref_reg = _brute_force(pts, gts, radius)
    assert torch.equal(cls, ref_cls)
    assert torch.equal(reg, ref_reg)


def test_rejects_bad_ground_truth():
    for bad in (torch.zeros(3), torch.tensor([[0.0, float("nan")]])):
        try:
            assign_targets(_points(), bad)
        except ValueError:
            pass
        else:
            raise AssertionError("expected ValueError")
