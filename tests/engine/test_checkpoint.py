"""The model file format: round trip, the layouts of older apps, and clear errors."""

from __future__ import annotations

import pytest
import torch

from stovtal.engine.checkpoint import build_model, load_model, save_checkpoint, save_model
from stovtal.models import ActionLocalizer, LocalizerConfig
from stovtal.models.cola import CoLA, CoLAConfig

SMALL = LocalizerConfig(input_dim=8, embed_dim=16, head_dim=16, num_heads=2)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_builds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = ActionLocalizer(SMALL)
    path = tmp_path / "m.pt"
    save_model(path, SMALL, model.state_dict(), meta={"run_config": {"x": 1}, "t": torch.arange(3)})
    mf = load_model(path)
    assert (mf.kind, mf.source) == ("localizer", "model")
    assert mf.meta["run_config"] == {"x": 1} and torch.equal(mf.meta["t"], torch.arange(3))
    rebuilt = build_model(mf, str(path))
    assert isinstance(rebuilt, ActionLocalizer) and not rebuilt.training
    assert _same(rebuilt.state_dict(), model.state_dict())


def test_cola_round_trip(tmp_path):
    cfg = CoLAConfig(in_dim=6, num_classes=3, embed_dim=8)
    model = CoLA(cfg)
    save_model(tmp_path / "c.pt", cfg, model.state_dict(), kind="cola")
    assert _same(build_model(load_model(tmp_path / "c.pt")).state_dict(), model.state_dict())


def test_trainer_state_gives_ema_or_raw_weights(tmp_path):
    ema, raw = ActionLocalizer(SMALL).state_dict(), ActionLocalizer(SMALL).state_dict()
    save_checkpoint(tmp_path / "best.pt", {"model": raw, "ema": {"module": ema}, "optimizer": {},
                                           "config": {"model": {"embed_dim": 16}}, "classifier": {"a": 1}})
    mf = load_model(tmp_path / "best.pt")
    assert mf.source == "trainer" and _same(mf.state_dict, ema)
    assert mf.meta["run_config"] == {"model": {"embed_dim": 16}} and mf.meta["classifier"] == {"a": 1}
    assert _same(load_model(tmp_path / "best.pt", weights="model").state_dict, raw)


def test_older_selftrain_and_feel_files_load(tmp_path):
    from dataclasses import asdict

    sd = ActionLocalizer(SMALL).state_dict()
    save_checkpoint(tmp_path / "teacher.pt", {"model": sd, "localizer": asdict(SMALL), "seconds": 1.0})
    mf = load_model(tmp_path / "teacher.pt")
    assert (mf.kind, mf.source, mf.meta) == ("localizer", "selftrain-v0", {"seconds": 1.0})
    assert _same(build_model(mf).state_dict(), sd)
    cola = CoLA(CoLAConfig(in_dim=6, num_classes=3))
    save_checkpoint(tmp_path / "iter_1.pt", {"model": cola.state_dict(), "in_dim": 6, "num_classes": 3,
                                             "labels": torch.zeros(4, dtype=torch.long)})
    mf = load_model(tmp_path / "iter_1.pt")
    assert (mf.kind, mf.model_config) == ("cola", {"in_dim": 6, "num_classes": 3})
    assert torch.equal(mf.meta["labels"], torch.zeros(4, dtype=torch.long))


def test_errors_name_the_file(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"weights": 1})
    with pytest.raises(ValueError, match="x.pt: not a stovtal model"):
        load_model(tmp_path / "x.pt")
    save_checkpoint(tmp_path / "y.pt", {"format": "stovtal.model/99"})
    with pytest.raises(ValueError, match="y.pt: unsupported model format"):
        load_model(tmp_path / "y.pt")
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_model(tmp_path / "nothere.pt")
    mf = load_model(_write_small(tmp_path / "m.pt"))
    with pytest.raises(ValueError, match="m.pt: the weights do not fit the model"):
        build_model(mf, str(tmp_path / "m.pt"), embed_dim=32)
    with pytest.raises(ValueError, match="kind must be one of"):
        save_model(tmp_path / "z.pt", SMALL, {}, kind="detector")


def _write_small(path):
    save_model(path, SMALL, ActionLocalizer(SMALL).state_dict())
    return path
