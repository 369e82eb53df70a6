"""``base.checkpoint``: self-training from a given base model (a converted ActionFormer
checkpoint or any localizer model file) instead of a trained one."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from stovtal.engine.checkpoint import load_model, save_model
from stovtal.models import ActionLocalizer, LocalizerConfig
from stovtal.selftrain.config import ConfigError, load_config, validate

from .conftest import TINY

FEAT_DIM = 32  # the tiny world's (TINY: data.world.feat_dim=32)
TINY_MODEL = dict(input_dim=FEAT_DIM, embed_dim=16, head_dim=16, num_heads=2, branch_layers=3, window=7,
                  regression_ranges=[[0, 4], [4, 8], [8, 16], [16, 100000]], pad_to_max_seq_len=False)


def _localizer_file(path, seed: int = 1, **kw) -> dict[str, torch.Tensor]:
    """A freshly initialised localizer (weights perturbed, so that they are not the defaults of
    any init) saved with save_model; returns its state dict."""
    torch.manual_seed(seed)
    cfg = LocalizerConfig(**{**TINY_MODEL, **kw})
    model = ActionLocalizer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    save_model(path, cfg, sd, meta={"source": "test"})
    return sd


def test_given_base_model_is_copied_not_trained_and_later_stages_run(tmp_path):
    from stovtal.selftrain.stages import make_context, run_pipeline

    torch.set_num_threads(1)
    given = tmp_path / "given.pt"
    sd = _localizer_file(given)
    cfg = load_config(None, [*TINY, f"base.checkpoint={given}"])
    validate(cfg)
    logs: list[str] = []
    work = tmp_path / "work"
    ctx = make_context(cfg, str(work), log=logs.append)
    run_pipeline(ctx)
    lay = ctx.layout
    # no training of the base model: no training state, no epoch logged before the base stage ended
    assert not os.path.exists(lay.base_state) and not os.path.exists(os.path.join(lay.base_dir, "best.pt"))
    base_end = next(i for i, line in enumerate(logs) if line.startswith("[base] done"))
    assert not any('"epoch"' in line for line in logs[:base_end]), logs[:base_end]
    assert any('"epoch"' in line for line in logs[base_end:])  # the retraining's epochs are logged
    assert any("not trained: base model copied from" in line for line in logs[:base_end])
    # the base model holds exactly the given weights; its record says where they came from
    mf = load_model(lay.base_model)
    assert mf.state_dict.keys() == sd.keys()
    assert all(torch.equal(mf.state_dict[k], v) for k, v in sd.items())
    rec = json.load(open(os.path.join(lay.base_dir, "stage.json")))
    assert rec["from_checkpoint"]["path"] == str(given) and len(rec["from_checkpoint"]["sha256"]) == 64
    assert mf.meta["base_checkpoint"]["meta"] == {"source": "test"}
    # later stages ran: pseudo-labels, a retrained teacher (trained: its weights moved), evaluation
    n = ctx.default_scale()
    assert os.path.exists(lay.pseudo_labels(n)) and os.path.exists(lay.results)
    teacher = load_model(lay.teacher(n)).state_dict
    assert not torch.equal(teacher["cls_head.tower.out.weight"], sd["cls_head.tower.out.weight"])
    results = json.load(open(lay.results))
    assert results["base"]["CB"] is not None and results["selftrained"]["CB"] is not None
    # the given file enters the fingerprint: another file in the same work directory is refused
    other = tmp_path / "other.pt"
    _localizer_file(other, seed=2)
    cfg2 = load_config(None, [*TINY, f"base.checkpoint={other}"])
    ctx2 = make_context(cfg2, str(work), log=lambda s: None)
    with pytest.raises(ConfigError, match="different configuration"):
        run_pipeline(ctx2, ("base",))


def _to_actionformer():
    """The converter tests' oracle (stovtal name -> ActionFormer name), from their module."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "models", "test_convert.py")
    spec = importlib.util.spec_from_file_location("_convert_oracle", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.to_actionformer


def test_a_converted_actionformer_checkpoint_is_a_base_model(tmp_path):
    from stovtal.convert.__main__ import main as convert
    from stovtal.selftrain.basemodel import given_base_model

    model = ActionLocalizer(LocalizerConfig(**TINY_MODEL))
    af = _to_actionformer()(model)
    ckpt = tmp_path / "epoch_005.pth.tar"
    torch.save({"state_dict": {"module." + k: v * 0 for k, v in af.items()},
                "state_dict_ema": {"module." + k: v for k, v in af.items()}}, ckpt)
    authors = tmp_path / "tiny_actionformer.yaml"  # the authors' config format (what shapes do not show)
    authors.write_text("dataset: {max_seq_len: 288, input_dim: 32, num_classes: 1}\n"
                       "model: {n_mha_win_size: 7, n_head: 2, embd_dim: 16, fpn_dim: 16, head_dim: 16,\n"
                       "        regression_range: [[0, 4], [4, 8], [8, 16], [16, 10000]]}\n")
    out = tmp_path / "model.pt"
    assert convert(["actionformer", str(ckpt), "--out", str(out), "--config", str(authors)]) == 0
    cfg = load_config(None, [*TINY, f"base.checkpoint={out}"])
    validate(cfg)
    lcfg, rec = given_base_model(cfg, FEAT_DIM)
    assert rec["meta"]["source"] == "actionformer" and rec["path"] == str(out)
    # the run's model section: the file's (max_seq_len from the authors' config, ActionFormer's
    # padding rule) with the keys the run sets (TINY's, e.g. the windows) on top
    assert (lcfg.embed_dim, lcfg.head_dim, lcfg.branch_layers, lcfg.window) == (16, 16, 3, 7)
    assert lcfg.max_seq_len == 288 and lcfg.pad_to_max_seq_len and lcfg.input_dim == FEAT_DIM
    # a run key that changes the weights' shapes is an error naming the key and the file
    cfg.model.head_dim = 24
    with pytest.raises(ConfigError, match=r"base\.checkpoint: .*model\.pt.*do not fit"):
        given_base_model(cfg, FEAT_DIM)
