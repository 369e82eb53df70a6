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
    assert state["model_config"]["input_dim"] == ctx.data.feat_dim
    pred, metrics = tmp_path / "pred.json", tmp_path / "eval.json"
    assert infer.main(["--ckpt", ckpt, "--out", str(pred), "--eval", "--eval-json", str(metrics),
                       "--device", "cpu"]) == 0
    got = read_json(str(metrics))
    want = read_json(ctx.path("eval", f"{which}.json" if which == "base" else f"selftrained-n{n}.json"))
    for key in ("CB", "CN", "GZSL"):
        assert got[key]["mAP"] == want[key]["mAP"], key  # the same predictions, bit for bit
        assert got[key]["average_mAP"] == want[key]["average_mAP"], key
    preds = read_json(str(pred))["results"]
    test_ids = {v for v, i in ctx.data.annotations.items() if i.get("subset") == ctx.data.test_subset}
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
