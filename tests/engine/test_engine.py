import math
import os
import pickle

import pytest
import torch

import stovtal  # noqa: F401
from stovtal.data import collate_videos
from stovtal.engine import (
    ModelEMA,
    TrainConfig,
    Trainer,
    classify_segments,
    load_checkpoint,
    predict_segments,
    save_checkpoint,
    segments_to_json,
    warmup_cosine,
)
from stovtal.eval import detection_map
from stovtal.models import (
    ActionLocalizer,
    ClassifierConfig,
    LocalizerConfig,
    OpenVocabClassifier,
    Vocabulary,
)

NAMES = [f"class{i}" for i in range(8)]
BASE, NOVEL = [0, 1, 2, 3], [4, 5, 6, 7]


def small_model(seed=0, path_drop=0.1):
    torch.manual_seed(seed)
    return ActionLocalizer(LocalizerConfig(input_dim=16, embed_dim=32, head_dim=32, num_heads=4, window=5,
                                           path_drop=path_drop, pad_to_max_seq_len=False))


def train_cfg(**kw):
    base = dict(epochs=3, batch_size=4, lr=2e-3, warmup_epochs=1, ema_decay=0.99, ema_warmup=True,
                seed=0, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def loader(ds, bs=8):
    return torch.utils.data.DataLoader(ds, batch_size=bs, collate_fn=collate_videos)


def class_agnostic_avg_map(model, world):
    props = predict_segments(model, loader(world))
    gt = world.ground_truth(["action"] * 8)
    return detection_map(gt, segments_to_json(props), [0.3, 0.4, 0.5, 0.6, 0.7])["average_mAP"]


# ---------------------------------------------------------------- small parts
def test_ema_update_is_a_weighted_average():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ema = ModelEMA(a, decay=0.75)
    w0 = a.weight.detach().clone()
    ema.update(b)
    assert torch.allclose(ema.module.weight, 0.75 * w0 + 0.25 * b.weight.detach())
    # init from another state (a Mean Teacher's teacher)
    t = ModelEMA(a, decay=0.9, init_state=b.state_dict())
    assert torch.equal(t.module.weight, b.weight)
    # warm-up: the first updates follow the model closely
    w = ModelEMA(a, decay=0.999, warmup=True)
    assert math.isclose(w.current_decay(), 0.1)
    with pytest.raises(ValueError):
        ModelEMA(a, decay=1.0)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, warmup_iters=4, total_iters=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.5)  # half-way through the cosine
    assert all(x >= y for x, y in zip(lrs[4:], lrs[5:], strict=False))


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = small_model()
    state = {"model": model.state_dict(), "epoch": 3, "history": [{"loss": 1.5}], "config": {"a": [1.0, math.inf]}}
    path = tmp_path / "ck.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["history"] == [{"loss": 1.5}] and loaded["config"]["a"][1] == math.inf
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded["model"][k])
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(evil)  # weights_only refuses arbitrary objects


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_world):
    """One short training run shared by the tests below (base classes only)."""
    train = tiny_world(40, BASE, seed=1)
    model = small_model(path_drop=0.0)
    untrained = small_model(path_drop=0.0)  # same initial weights
    trainer = Trainer(model, train, train_cfg(epochs=6), tmp_path_factory.mktemp("train"),
                      collate_fn=collate_videos, log=lambda s: None)
    trainer.fit()
    return trainer, untrained, train


def test_training_learns_and_beats_an_untrained_model(trained, tiny_world):
    trainer, untrained, train = trained
    # the logged loss is normalised by a running positive count that moves during training,
    # so compare the two models at the same normaliser, in eval mode
    batch = collate_videos(train.items[:16])
    untrained.loss_normalizer.copy_(trainer.ema.module.loss_normalizer)
    with torch.no_grad():
        l0 = untrained.eval().loss(batch["feats"], batch["masks"], batch["segments"])["loss"]
        l1 = trainer.ema.module.eval().loss(batch["feats"], batch["masks"], batch["segments"])["loss"]
    assert l1 < 0.5 * l0, (l0, l1)
    test = tiny_world(16, BASE + NOVEL, seed=2)
    before = class_agnostic_avg_map(untrained, test)
    after = class_agnostic_avg_map(trainer.ema.module, test)
    # actions of novel classes are found too: the localizer is class-agnostic
    assert after > before + 0.2, (before, after)
    assert os.path.exists(trainer.last_path) and os.path.exists(trainer.best_path)


def test_resume_gives_the_same_weights(tmp_path, tiny_world):
    train = tiny_world(12, BASE, seed=3)
    full = Trainer(small_model(), train, train_cfg(), tmp_path / "full", collate_fn=collate_videos, log=lambda s: None)
    full.fit()

    class Crash(Exception):
        pass

    def crash_after_epoch_2(msg):
        if '"epoch": 2.0' in msg:
            raise Crash

    t1 = Trainer(small_model(), train, train_cfg(), tmp_path / "resumed", collate_fn=collate_videos,
                 log=crash_after_epoch_2)
    with pytest.raises(Crash):
        t1.fit()
    assert load_checkpoint(t1.last_path)["epoch"] == 2
    # a fresh process: new model (different init, to prove it is overwritten), resume
    t2 = Trainer(small_model(seed=123), train, train_cfg(), tmp_path / "resumed", collate_fn=collate_videos,
                 log=lambda s: None)
    t2.fit(resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), t2.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    for a, b in zip(full.ema.module.state_dict().values(), t2.ema.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in t2.history]


def test_non_finite_loss_is_reported(tmp_path, tiny_world):
    train = tiny_world(4, BASE, seed=4)

    def bad_loss(model, batch):
        return {"loss": model.loss(batch["feats"], batch["masks"], batch["segments"])["loss"] * float("nan")}

    t = Trainer(small_model(), train, train_cfg(epochs=1), tmp_path, collate_fn=collate_videos, loss_fn=bad_loss,
                log=lambda s: None)
    with pytest.raises(FloatingPointError, match="non-finite"):
        t.fit()


# ---------------------------------------------------------------- open vocabulary
def test_inference_with_a_vocabulary_unseen_in_training(trained, tiny_world):
    trainer = trained[0]
    test = tiny_world(16, NOVEL, seed=6)  # only novel classes, never seen in training
    clf = OpenVocabClassifier(ClassifierConfig())
    props = predict_segments(trainer.ema.module, loader(test), classifier=clf)
    novel_names = [NAMES[i] for i in NOVEL]
    vocab = Vocabulary(novel_names, test.prototypes[NOVEL], logit_scale=100.0)
    preds = classify_segments(props, clf, vocab)
    assert set(preds["results"]) == {it["video_id"] for it in test.items}
    labels = {d["label"] for dets in preds["results"].values() for d in dets}
    assert labels <= set(novel_names)
    gt = test.ground_truth(NAMES)
    res = detection_map(gt, preds, [0.3, 0.5, 0.7], classes=novel_names)
    # the same detections labelled at random (the fused score kept) score much lower
    g = torch.Generator().manual_seed(0)
    shuffled = {"results": {v: [{**d, "label": novel_names[int(torch.randint(0, 4, (1,), generator=g))]}
                                for d in dets] for v, dets in preds["results"].items()}}
    chance = detection_map(gt, shuffled, [0.3, 0.5, 0.7], classes=novel_names)
    assert res["average_mAP"] > chance["average_mAP"] + 0.2, (res["average_mAP"], chance["average_mAP"])
    # a bigger vocabulary (base + novel) at inference works without retraining
    full = classify_segments(props, clf, Vocabulary(NAMES, test.prototypes, 100.0))
    assert all(d["label"] in NAMES for dets in full["results"].values() for d in dets)
