"""The dead-regression-output check (stovtal.engine.head_check)."""

from __future__ import annotations

import pytest
import torch

from stovtal.data import collate_videos
from stovtal.engine import TrainConfig, Trainer
from stovtal.engine.head_check import (
    RegressionHeadCheck,
    dead_output_warning,
    regression_output_activity,
)
from stovtal.models import ActionLocalizer, LocalizerConfig

TINY = dict(input_dim=8, embed_dim=8, head_dim=8, num_heads=2, branch_layers=2, window=3,
            regression_ranges=[[0, 4], [4, 8], [8, 1e5]], path_drop=0.0, pad_to_max_seq_len=False)


def _videos(lengths: list[int], seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"video_id": f"v{i}", "feats": torch.randn(8, t, generator=g),
             "segments": torch.tensor([[2.0, 0.6 * t]]), "labels": torch.zeros(1, dtype=torch.long),
             "fps": 30.0, "duration": (t * 4 + 16) / 30.0, "feat_stride": 4, "feat_num_frames": 16,
             "offset_snippets": 0, "offset_frames": 0} for i, t in enumerate(lengths)]


def activity_reference(model: ActionLocalizer, batch: dict) -> torch.Tensor:
    """relu(x) > 0 exactly when x > 0: the share of positive final offsets over valid positions."""
    model.eval()
    with torch.no_grad():
        out = model(batch["feats"], batch["masks"])
    pos = sum(((o > 0) & m[..., None]).sum(dim=(0, 1)) for o, m in zip(out.offsets, out.masks, strict=True))
    return pos.double() / sum(int(m.sum()) for m in out.masks)


def test_activity_equals_the_share_of_positive_offsets_on_valid_positions():
    batch = collate_videos(_videos([40, 17, 64]))  # padded: the masks must be honoured
    mixed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        model = ActionLocalizer(LocalizerConfig(**TINY))
        got = regression_output_activity(model, [batch])
        want = activity_reference(model, batch)
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
        # a freshly initialised narrow head can be born with a dead output (the shares 0 or 1)
        mixed += bool(0 < float(got.min()) and float(got.max()) < 1)
    assert mixed >= 2
    model.train()
    regression_output_activity(model, [batch])
    assert model.training  # restored


@pytest.mark.parametrize("bias, dead", [((1.0, -1.0), ["end"]), ((-1.0, 1.0), ["start"]),
                                        ((-1.0, -1.0), ["start", "end"]), ((1.0, 1.0), [])])
def test_a_dead_output_is_reported(bias, dead):
    model = ActionLocalizer(LocalizerConfig(**TINY))
    with torch.no_grad():
        model.reg_head.tower.out.weight.zero_()
        model.reg_head.tower.out.bias.copy_(torch.tensor(bias))
    act = regression_output_activity(model, [collate_videos(_videos([30, 50]))])
    assert act.tolist() == [float(b > 0) for b in bias]
    msg = dead_output_warning(act, num_videos=2)
    if not dead:
        assert msg is None
    else:
        assert msg.startswith("warning:") and "2 training videos" in msg
        for name in ("start", "end"):
            assert (f"{name}-distance output is positive at 0.00%" in msg) == (name in dead)


def test_no_valid_position_gives_nan():
    model = ActionLocalizer(LocalizerConfig(**TINY))
    assert torch.isnan(regression_output_activity(model, [])).all()


def _fit(tmp_path, bias: tuple[float, float]) -> tuple[RegressionHeadCheck, list[str]]:
    torch.manual_seed(0)
    model = ActionLocalizer(LocalizerConfig(**TINY))
    with torch.no_grad():
        model.reg_head.tower.out.weight.zero_()
        model.reg_head.tower.out.bias.copy_(torch.tensor(bias))
    data = _videos([32, 48, 40, 56, 36, 44])
    logs: list[str] = []
    check = RegressionHeadCheck(data, collate_videos, log=logs.append, num_videos=4, batch_size=3)
    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3, warmup_epochs=0.0, device="cpu", progress=False,
                      amp=False, seed=0, ema_decay=0.5)
    Trainer(model, data, cfg, tmp_path, collate_fn=collate_videos, log=logs.append, hooks=[check]).fit()
    return check, logs


def test_training_with_a_dead_output_warns(tmp_path):
    # a ReLU output below zero everywhere gets no gradient: training cannot revive it
    check, logs = _fit(tmp_path, (1.0, -5.0))
    assert check.activity is not None and float(check.activity[1]) == 0.0 and float(check.activity[0]) > 0.5
    warnings = [line for line in logs if line.startswith("warning:")]
    assert len(warnings) == 1 and "end-distance" in warnings[0] and "4 training videos" in warnings[0]


def test_healthy_training_does_not_warn(tmp_path):
    check, logs = _fit(tmp_path, (1.0, 1.0))
    assert check.activity is not None and float(check.activity.min()) > 0.5
    assert not any(line.startswith("warning:") for line in logs)
