"""The Trainer with batch sources other than a dataset, and the recipes it serves besides the
localizer's: AdamW / Adam (L2), cosine / constant schedules, runs counted in iterations, no EMA,
no work directory. A plain optimisation loop written here is the oracle."""

import math

import pytest
import torch
from torch import nn

from stovtal.config import TrainConfig
from stovtal.engine.batches import TensorBatches
from stovtal.engine.trainer import SampleMeanLoss, Trainer, TrainerHook


def _data(n=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, 2, (n,), generator=g)


def _model(c=3, seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(c, 4), nn.ReLU(), nn.Linear(4, 2))


def _loss(model, batch):
    return {"loss": nn.functional.cross_entropy(model(batch["x"]), batch["labels"])}


def _cfg(**kw):
    base = dict(epochs=3, batch_size=4, lr=1e-2, weight_decay=0.1, warmup_epochs=0.0, clip_grad=0.0,
                amp=False, device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def _reference(x, y, cfg, seed, total_steps):
    """A plain loop: one generator shuffles every pass, one optimiser group decays everything."""
    model = _model()
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it / total_steps, 1.0))))
    gen = torch.Generator().manual_seed(seed)
    step, losses = 0, []
    while step < total_steps:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            if step == total_steps:
                break
            idx = order[i:i + cfg.batch_size]
            loss = _loss(model, {"x": x[idx], "labels": y[idx]})["loss"]
            opt.zero_grad()
            loss.backward()
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            if cfg.schedule == "cosine":
                sched.step()
            losses.append((float(loss.detach()), len(idx)))
            step += 1
    return model, losses


@pytest.mark.parametrize("recipe", [
    dict(),                                                             # AdamW, cosine, epochs
    dict(optimizer="adam", schedule="constant", iterations=7),         # CoLA's THUMOS14 recipe
    dict(optimizer="adam", schedule="cosine", iterations=5, clip_grad=0.5),
])
def test_trainer_on_tensor_batches_equals_a_plain_loop(recipe):
    x, y = _data()
    cfg = _cfg(**recipe)
    per_epoch = math.ceil(len(x) / cfg.batch_size)  # 3: batches of 4, 4, 2
    total = cfg.iterations or cfg.epochs * per_epoch
    want, want_losses = _reference(x, y, cfg, seed=5, total_steps=total)

    model = _model()
    history = SampleMeanLoss("labels")
    steps = []

    class Count(TrainerHook):
        def after_step(self, trainer, batch, losses):
            steps.append(len(batch["labels"]))

    trainer = Trainer(model, TensorBatches({"x": x, "labels": y}, cfg.batch_size, seed=5), cfg, None,
                      loss_fn=_loss, ema=False, decay_1d=True, hooks=[history, Count()], log=lambda _: None)
    trainer.fit()
    assert trainer.ema is None and trainer.num_epochs == math.ceil(total / per_epoch)
    assert len(steps) == total and sum(steps[:per_epoch]) == len(x)
    for k, v in want.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # per-epoch loss averaged over samples, the last (partial) epoch over what it saw
    sums: dict[int, list[float]] = {}
    for i, (loss, n) in enumerate(want_losses):
        s = sums.setdefault(i // per_epoch, [0.0, 0])
        s[0] += loss * n
        s[1] += n
    assert history.history == [s / n for s, n in sums.values()]
    if cfg.schedule == "constant":
        assert trainer.optimizer.param_groups[0]["lr"] == cfg.lr


def test_a_dataset_trainer_keeps_decay_off_1d_parameters_and_its_ema():
    x, y = _data()
    ds = [{"x": x[i], "labels": y[i]} for i in range(len(x))]

    def collate(items):
        return {"x": torch.stack([d["x"] for d in items]), "labels": torch.stack([d["labels"] for d in items])}

    t = Trainer(_model(), ds, _cfg(), None, collate_fn=collate, loss_fn=_loss, log=lambda _: None)
    groups = t.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.dim() <= 1 for p in groups[1]["params"]) and all(p.dim() > 1 for p in groups[0]["params"])
    assert t.ema is not None and t.iters_per_epoch == 2  # 10 items, batch 4, last one dropped
    with pytest.raises(ValueError, match="collate_fn"):
        Trainer(_model(), ds, _cfg(), None, loss_fn=_loss)


def test_without_a_work_directory_nothing_is_written_and_resume_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _data()
    t = Trainer(_model(), TensorBatches({"x": x, "labels": y}, 4, 0), _cfg(epochs=1), None,
                loss_fn=_loss, ema=False, log=lambda _: None)
    t.fit()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="work directory"):
        t.fit(resume=True)
    with pytest.raises(ValueError, match="workdir=None"):
        _ = t.last_path


def test_tensor_batches_permute_every_epoch_and_check_their_input():
    x = torch.arange(10).float()[:, None]
    b = TensorBatches({"x": x, "i": torch.arange(10)}, 4, seed=0)
    assert len(b) == 3
    batches0 = list(b.epoch(0))
    e0 = [d["i"] for d in batches0]
    e1 = [d["i"] for d in b.epoch(1)]
    assert [len(i) for i in e0] == [4, 4, 2]
    assert sorted(torch.cat(e0).tolist()) == list(range(10)) == sorted(torch.cat(e1).tolist())
    assert not torch.equal(torch.cat(e0), torch.cat(e1))
    for d in batches0:
        assert torch.equal(d["x"][:, 0].long(), d["i"])
    with pytest.raises(ValueError, match="common first dimension"):
        TensorBatches({"x": x, "i": torch.arange(9)}, 4, 0)
    with pytest.raises(ValueError, match="no rows"):
        TensorBatches({"x": x[:0]}, 4, 0)
