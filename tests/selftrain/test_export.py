"""The models selftrain exports are model files that ``python -m stovtal.infer`` runs."""

from __future__ import annotations

import pytest

from stovtal.engine.checkpoint import MODEL_FORMAT, load_checkpoint, load_model
from stovtal.utils.fileio import read_json


@pytest.mark.parametrize("which", ["base", "selftrained"])
def test_exported_model_through_infer_matches_the_eval_stage(tiny_run, tmp_path, which):
    from stovtal import infer

    ctx, _ = tiny_run
    n = ctx.default_scale()
    ckpt = ctx.path("base", "model.pt") if which == "base" else ctx.path("retrain", f"n{n}", "teacher.pt")
    state = load_checkpoint(ckpt)
    assert state["format"] == MODEL_FORMAT and state["kind"] == "localizer"
    assert state["model_config"]["input_dim"] == ctx.data.spec.feat_dim
    pred, metrics = tmp_path / "pred.json", tmp_path / "eval.json"
    assert infer.main(["--ckpt", ckpt, "--out", str(pred), "--eval", "--eval-json", str(metrics),
                       "--device", "cpu"]) == 0
    got = read_json(str(metrics))
    want = read_json(ctx.path("eval", f"{which}.json" if which == "base" else f"selftrained-n{n}.json"))
    for key in ("CB", "CN", "GZSL"):
        assert got[key]["mAP"] == want[key]["mAP"], key  # the same predictions, bit for bit
        assert got[key]["average_mAP"] == want[key]["average_mAP"], key
    preds = read_json(str(pred))["results"]
    test_ids = {v for v, i in ctx.data.annotations.items() if i.get("subset") == ctx.data.spec.test_subset}
    assert set(preds) == test_ids
    assert any(preds.values())


def test_infer_names_a_missing_run_config(tmp_path, capsys):
    import torch

    from stovtal import infer
    from stovtal.engine.checkpoint import save_model
    from stovtal.models import ActionLocalizer, LocalizerConfig

    cfg = LocalizerConfig(input_dim=8, embed_dim=16, head_dim=16, num_heads=2)
    path = str(tmp_path / "m.pt")
    save_model(path, cfg, ActionLocalizer(cfg).state_dict(), meta={"note": "no run config"})
    mf = load_model(path)
    assert mf.kind == "localizer" and mf.model_config["input_dim"] == 8
    assert all(torch.equal(v, mf.state_dict[k]) for k, v in ActionLocalizer(cfg).state_dict().items()
               if not v.is_floating_point())
    assert infer.main(["--ckpt", path, "--out", str(tmp_path / "p.json")]) == 2
    assert "carries no run config; pass --config" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "want"), [
    ([], ("7a615be450f024fa", "9ade29a32f6b5a04", "34d354b01f50792d", "2d5d77d3d4c0dede")),
    (["classifier.topk=2", "model.window=5", "train.lr=0.001", "retrain.labelled_fraction=0"],
     ("179fa5041dcabe82", "ce5d364b23fe3377", "31900688d5dd9c9c", "da0f66eef319d930")),
])
def test_stage_fingerprints_match_earlier_work_directories(tiny_run, tmp_path, extra, want):
    """The values written by the version before the shared config (same TINY run, whose
    regression ranges are written as integers) are among those the stages accept, so that its
    work directories are reused instead of refused as 'made with a different configuration'."""
    from stovtal.selftrain.config import load_config
    from stovtal.selftrain.stages import make_context

    from .conftest import TINY

    ctx, _ = tiny_run
    # that version's retraining student started from scratch (its default then), its web set
    # was drawn like the test videos (web_profile "target") and it cropped no short video
    earlier = [*TINY, *extra, "retrain.student_init=scratch", "data.world.web_profile=target", "data.crop_ratio=null"]
    old = make_context(load_config(None, earlier), str(tmp_path), log=lambda s: None)
    got = (old.fingerprints(old.fp_base), old.fingerprints(old.fp_pseudo, 16), old.fingerprints(old.fp_retrain, 16),
           old.fingerprints(old.fp_eval))
    assert all(w in g for w, g in zip(want, got, strict=True)), (want, got)
    # the student starting from the base model must not reuse that retraining
    now = make_context(load_config(None, [*TINY, *extra, "data.world.web_profile=target", "data.crop_ratio=null"]),
                       str(tmp_path), log=lambda s: None)
    assert want[2] not in now.fingerprints(now.fp_retrain, 16)
    assert want[1] in now.fingerprints(now.fp_pseudo, 16)
    # today's default crops (crop_ratio [0.9, 1.0]) must not reuse that base model
    cropped = make_context(load_config(None, [*TINY, *extra, "data.world.web_profile=target"]), str(tmp_path),
                           log=lambda s: None)
    assert want[0] not in cropped.fingerprints(cropped.fp_base)
    # today's default web set (Kinetics) reuses none of that work directory's stages
    kin = make_context(load_config(None, [*TINY, *extra]), ctx.workdir, log=lambda s: None)
    got = (kin.fingerprints(kin.fp_base), kin.fingerprints(kin.fp_pseudo, 16), kin.fingerprints(kin.fp_retrain, 16),
           kin.fingerprints(kin.fp_eval))
    assert not any(w in g for w, g in zip(want, got, strict=True))
