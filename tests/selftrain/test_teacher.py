"""Mean Teacher: the EMA teacher update, its initialisation, the consistency loss."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("stovtal.engine", reason="needs the models/extract branches")
import torch
from torch.utils.data import Dataset

from stovtal.engine import TrainerHook
from stovtal.models import ActionLocalizer, LocalizerConfig
from stovtal.selftrain.teacher import (
    ConsistencyLoss,
    FixedShareEpochs,
    PseudoLabelledSet,
    actionness_consistency,
    make_trainer,
)


def teacher_update_reference(teacher: dict, student: dict, decay: float) -> dict:
    """``d * teacher + (1 - d) * student`` for float tensors, the student's value otherwise: the
    rule the Mean Teacher follows (the oracle of :class:`stovtal.engine.ModelEMA`)."""
    out = {}
    for k, t in teacher.items():
        s = student[k]
        out[k] = decay * t + (1 - decay) * s if t.is_floating_point() else s.clone()
    return out


TINY = dict(input_dim=8, embed_dim=8, head_dim=8, num_heads=2, branch_layers=2, window=3,
            regression_ranges=[[0, 4], [4, 8], [8, 1e5]], path_drop=0.0, pad_to_max_seq_len=False)


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


def _epoch_counts(ds: FixedShareEpochs):
    from collections import Counter

    items = [ds[i] for i in range(len(ds))]
    lab = Counter(it["video_id"] for it in items if not it["pseudo"])
    pse = Counter(it["video_id"] for it in items if it["pseudo"])
    return lab, pse


@pytest.mark.parametrize("n_l,n_p,fraction", [(3, 40, 0.5), (5, 7, 0.25), (10, 4, 0.5), (4, 200, 0.1)])
def test_fixed_share_epochs_keep_the_share(n_l, n_p, fraction):
    ds = FixedShareEpochs(Items(n_l, 0, "l"), Items(n_p, 1, "p"), fraction, seed=3)
    length = n_l + n_p
    assert len(ds) == length  # the plain union's length: same number of steps
    for epoch in range(3):
        ds.set_epoch(epoch)
        lab, pse = _epoch_counts(ds)
        n_lab = min(max(round(fraction * length), 1), length - 1)
        assert sum(lab.values()) == n_lab and sum(pse.values()) == length - n_lab
        assert all(v.startswith("l") for v in lab) and all(v.startswith("p") for v in pse)
        # whole shuffled passes: every video of a source appears floor or ceil of its mean count
        for counts, tag, n in ((lab, "l", n_l), (pse, "p", n_p)):
            per_video = [counts.get(f"{tag}{i}", 0) for i in range(n)]
            assert max(per_video) - min(per_video) <= 1


def test_fixed_share_epochs_are_a_function_of_seed_and_epoch():
    a = FixedShareEpochs(Items(3, 0, "l"), Items(30, 1, "p"), 0.5, seed=0)
    b = FixedShareEpochs(Items(3, 0, "l"), Items(30, 1, "p"), 0.5, seed=0)
    c = FixedShareEpochs(Items(3, 0, "l"), Items(30, 1, "p"), 0.5, seed=1)
    first = list(a.items)
    a.set_epoch(1)
    assert a.items != first  # a new draw every epoch: other pseudo-labelled videos
    a.set_epoch(0)
    assert a.items == first
    b.set_epoch(4)
    a.set_epoch(4)
    assert a.items == b.items  # a resumed run (new instance) sees the same epoch
    c.set_epoch(4)
    assert c.items != a.items


def test_fixed_share_epochs_bad_input():
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        FixedShareEpochs(Items(2, 0, "l"), Items(2, 1, "p"), 1.0, seed=0)
    with pytest.raises(ValueError, match="needs labelled and pseudo-labelled"):
        FixedShareEpochs(Items(0, 0, "l"), Items(2, 1, "p"), 0.5, seed=0)


@pytest.mark.parametrize("n_p", [10, 57, 400])
def test_fixed_epoch_length_does_not_grow_with_the_pool(n_p):
    ds = FixedShareEpochs(Items(3, 0, "l"), Items(n_p, 1, "p"), 0.25, seed=2, length=16)
    assert len(ds) == 16
    seen: set[str] = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        lab, pse = _epoch_counts(ds)
        assert sum(lab.values()) == 4 and sum(pse.values()) == 12
        assert all(v.startswith("l") for v in lab) and all(v.startswith("p") for v in pse)
        per_video = [pse.get(f"p{i}", 0) for i in range(n_p)]
        assert max(per_video) - min(per_video) <= 1  # a pool larger than the epoch: no repeats
        seen.update(pse)
    # the pool is drawn anew every epoch, so a large pool contributes more distinct videos
    assert len(seen) > 12 if n_p > 12 else len(seen) == n_p


@pytest.mark.parametrize("length", [0, 1, 2.0, True])
def test_fixed_epoch_length_bad_input(length):
    with pytest.raises(ValueError, match="at least 2 videos"):
        FixedShareEpochs(Items(2, 0, "l"), Items(2, 1, "p"), 0.5, seed=0, length=length)


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_trainer_with_an_epoch_length_takes_the_same_steps_for_any_pool(tmp_path, fraction):
    torch.manual_seed(0)
    m = ActionLocalizer(LocalizerConfig(**TINY))
    steps, shares = [], []
    for n_p in (6, 30):
        trainer = make_trainer(m, copy.deepcopy(m.state_dict()), Items(2, 0, "l"),
                               PseudoLabelledSet(lambda db, n=n_p: Items(n, 1, "p"), {}), _train_cfg(),
                               tmp_path / f"{n_p}", labelled_fraction=fraction, epoch_length=8,
                               log=lambda s: None)
        ds = trainer.train_set
        assert isinstance(ds, FixedShareEpochs) and len(ds) == 8
        steps.append(trainer.iters_per_epoch)
        shares.append(ds.num_labelled)
    assert steps[0] == steps[1] == 2  # batch size 4
    # the labelled share: labelled_fraction, or the union's natural share when that is 0
    assert shares == ([4, 4] if fraction else [2, 1])  # 2/8 and 2/32 of 8, at least 1


def test_trainer_redraws_the_fixed_share_every_epoch(tmp_path):
    torch.manual_seed(0)
    m = ActionLocalizer(LocalizerConfig(**TINY))
    trainer = make_trainer(m, copy.deepcopy(m.state_dict()), Items(2, 0, "l"),
                           PseudoLabelledSet(lambda db: Items(10, 1, "p"), {}), _train_cfg(epochs=3), tmp_path,
                           labelled_fraction=0.5, log=lambda s: None)
    ds = trainer.train_set
    assert isinstance(ds, FixedShareEpochs) and len(ds) == 12 and trainer.iters_per_epoch == 3
    seen = []

    class Record(TrainerHook):
        def after_epoch(self, trainer, stats):
            seen.append((ds.epoch, list(ds.items)))

    trainer.hooks.append(Record())
    trainer.fit()
    assert [e for e, _ in seen] == [0, 1, 2]
    assert seen[0][1] != seen[1][1] != seen[2][1]
    for _, items in seen:
        assert sum(not p for p, _ in items) == 6


def test_fixed_share_without_pseudo_labelled_videos_falls_back_to_the_union(tmp_path):
    m = ActionLocalizer(LocalizerConfig(**TINY))
    logs: list[str] = []
    trainer = make_trainer(m, m.state_dict(), Items(4, 0, "l"), PseudoLabelledSet(lambda db: Items(0, 1, "p"), {}),
                           _train_cfg(), tmp_path, labelled_fraction=0.5, log=logs.append)
    assert not isinstance(trainer.train_set, FixedShareEpochs) and len(trainer.train_set) == 4
    assert any("plain union" in line for line in logs)
    trainer = make_trainer(m, m.state_dict(), Items(4, 0, "l"), PseudoLabelledSet(lambda db: Items(0, 1, "p"), {}),
                           _train_cfg(), tmp_path / "len", labelled_fraction=0.0, epoch_length=8, log=logs.append)
    assert not isinstance(trainer.train_set, FixedShareEpochs) and len(trainer.train_set) == 4
    assert sum("plain union" in line for line in logs) == 2
