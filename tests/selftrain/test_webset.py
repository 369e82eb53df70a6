"""The default web set (Kinetics actions, ``stovtal.data.synthetic``) in self-training: its hidden
ground truth is read only by the report's pseudo-label quality analysis, never by training,
pseudo-labelling or selection."""

from __future__ import annotations

import builtins
import inspect

import torch

from .conftest import TINY


class _Watched(dict):
    """A dict recording the modules on the call stack of every read."""

    def __init__(self, data, reads):
        super().__init__(data)
        self._reads = reads

    def _note(self):
        self._reads.append({f.frame.f_globals.get("__name__", "") for f in inspect.stack()[2:]})

    def __getitem__(self, k):
        self._note()
        return super().__getitem__(k)

    def __iter__(self):
        self._note()
        return super().__iter__()

    def __contains__(self, k):
        self._note()
        return super().__contains__(k)

    def __len__(self):
        self._note()
        return super().__len__()

    def get(self, *a):
        self._note()
        return super().get(*a)

    def items(self):
        self._note()
        return super().items()

    def keys(self):
        self._note()
        return super().keys()

    def values(self):
        self._note()
        return super().values()


def test_web_ground_truth_is_read_only_by_the_report(tmp_path, monkeypatch):
    from stovtal.selftrain.config import load_config, validate
    from stovtal.selftrain.stages import make_context, run_pipeline

    torch.set_num_threads(1)
    cfg = load_config(None, TINY)
    validate(cfg)
    ctx = make_context(cfg, str(tmp_path), log=lambda s: None)
    assert cfg.data.world.get("web_profile", "kinetics") == "kinetics"
    gt = ctx.data.unlabelled_gt
    assert gt and all(a.get("label") for v in gt.values() for a in v["annotations"])
    reads: list[set[str]] = []
    ctx.data.unlabelled_gt = _Watched(gt, reads)
    opened: list[str] = []
    real_open = builtins.open

    def recording_open(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", recording_open)
    run_pipeline(ctx, ("base", "pseudolabel", "retrain", "eval"))
    assert reads == [], "training, pseudo-labelling or evaluation read the web ground truth"
    assert not [p for p in opened if "web_gt" in p]
    assert any(p.endswith(".npy") and "web_" in p for p in opened)  # the recording works
    run_pipeline(ctx, ("report",))
    assert reads and all("stovtal.selftrain.report" in r for r in reads)
    assert not [p for p in opened if "web_gt" in p]
