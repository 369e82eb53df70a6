"""Mean Teacher: the EMA teacher update, its initialisation, the consistency loss."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("stovtal.engine", reason="needs the models/extract branches")
import torch
from torch.utils.data import Dataset

from stovtal.models import ActionLocalizer, LocalizerConfig
from stovtal.selftrain.teacher import (
    ConsistencyLoss,
    PseudoLabelledSet,
    actionness_consistency,
    make_trainer,
    teacher_update_reference,
)

TINY = dict(input_dim=8, embed_dim=8, head_dim=8, num_heads=2, branch_layers=2, window=3,
            regression_ranges=[[0, 4], [4, 8], [8, 1e5]], path_drop=0.0)


class Items(Dataset):
    """Hand-made items in the VideoFeatureDataset format."""

    def __init__(self, n: int, seed: int, tag: str):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        self.video_ids = [f"{tag}{i}" for i in range(n)]
        for i in range(n):
            T = 24
            self.items.append({
                "video_id": self.video_ids[i], "feats": torch.randn(8, T, generator=g),
                "segments": torch.tensor([[3.0, 9.0], [14.0, 20.0]]), "labels": torch.zeros(2, dtype=torch.long),
                "fps": 30.0, "duration": (T * 4 + 16) / 30.0, "feat_stride": 4, "feat_num_frames": 16,
                "offset_snippets": 0, "offset_frames": 0,
            })

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])


def _train_cfg(**kw):
    from stovtal.engine import TrainConfig

    return TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 1e-2, "warmup_epochs": 0.0, "device": "cpu",
                          "progress": False, "amp": False, "seed": 0, **kw})


@pytest.mark.parametrize("decay", [0.999, 0.9])
def test_teacher_is_ema_of_student_initialised_from_base(tmp_path, decay):
    torch.manual_seed(0)
    base = ActionLocalizer(LocalizerConfig(**TINY))
    base_state = copy.deepcopy(base.state_dict())
    torch.manual_seed(1)
    student = ActionLocalizer(LocalizerConfig(**TINY))  # from scratch: differs from base
    assert any(not torch.equal(base_state[k], v) for k, v in student.state_dict().items())
    pseudo = PseudoLabelledSet(lambda db: Items(2, 7, "p"), {})
    trainer = make_trainer(student, base_state, Items(2, 3, "l"), pseudo, _train_cfg(), tmp_path,
                           teacher_decay=decay, log=lambda s: None)
    assert trainer.iters_per_epoch == 1
    for k, v in trainer.ema.module.state_dict().items():  # teacher starts as the base model
        assert torch.equal(v, base_state[k]), k
    expected = base_state
    for _ in range(2):  # one optimisation step per epoch
        trainer.train_one_epoch()
        trainer.epoch += 1
        expected = teacher_update_reference(expected, trainer.model.state_dict(), decay)
        got = trainer.ema.module.state_dict()
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7, msg=k)
    # and the teacher really moved away from the base model, towards the student
    moved = [k for k, v in got.items() if v.is_floating_point() and not torch.equal(v, base_state[k])]
    assert moved


def test_consistency_loss():
    torch.manual_seed(0)
    m = ActionLocalizer(LocalizerConfig(**TINY)).eval()
    same = copy.deepcopy(m)
    feats, masks = torch.randn(2, 8, 24), torch.ones(2, 24, dtype=torch.bool)
    masks[1, 20:] = False
    assert actionness_consistency(m, same, feats, masks).item() == pytest.approx(0.0, abs=1e-12)
    other = ActionLocalizer(LocalizerConfig(**TINY)).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    c = actionness_consistency(m, other, feats, masks)
    assert c.item() > 0
    c.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert all(p.grad is None for p in other.parameters())  # the teacher gets no gradient
    # ConsistencyLoss adds weight x consistency on the pseudo-labelled videos only
    batch = {"feats": feats, "masks": masks, "segments": [torch.tensor([[2.0, 8.0]])] * 2,
             "pseudo": [False, True]}
    plain = ConsistencyLoss(lambda: other, 0.0)(m, batch)
    with_c = ConsistencyLoss(lambda: other, 2.0)(m, batch)
    only_second = actionness_consistency(m, other, feats[1:], masks[1:])
    assert with_c["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 * only_second.item(), rel=1e-5)
    none_pseudo = ConsistencyLoss(lambda: other, 2.0)(m, {**batch, "pseudo": [False, False]})
    assert none_pseudo["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-6)


def test_refresh_must_keep_the_videos():
    ps = PseudoLabelledSet(lambda db: Items(len(db) or 2, 0, db.get("tag", "p")), {})
    with pytest.raises(ValueError, match="different videos"):
        ps.set_labels({"tag": "q", "x": 1}, version=5)
    ps.set_labels({}, version=5)
    assert ps.version == 5 and ps[0]["pseudo"] is True


def test_refresh_every_needs_a_function(tmp_path):
    m = ActionLocalizer(LocalizerConfig(**TINY))
    with pytest.raises(ValueError, match="refresh"):
        make_trainer(m, m.state_dict(), Items(2, 0, "l"), PseudoLabelledSet(lambda db: Items(2, 1, "p"), {}),
                     _train_cfg(), tmp_path, refresh_every=2)
