"""A tiny synthetic world and one tiny end-to-end self-training run, shared by the tests."""

from __future__ import annotations

import os
import sys

import pytest
import torch

# Tiny everything: the point is that every stage really runs, not that it learns much.
TINY = [
    "data.world.num_train=12", "data.world.num_web=16", "data.world.num_test=12",
    "data.world.feat_dim=32", "data.world.snippets_range=[48,80]",
    "model.embed_dim=16", "model.head_dim=16", "model.num_heads=2", "model.branch_layers=3",
    "model.regression_ranges=[[0,4],[4,8],[8,16],[16,100000]]", "model.window=7",
    "train.epochs=2", "train.batch_size=4", "retrain.epochs=1", "retrain.warmup_epochs=0",
    "pseudo.shard_size=4", "pseudo.batch_size=4", "pseudo.threshold=0.2", "pseudo.min_num=1",
    "eval.batch_size=6", "progress=false", "num_threads=1",
]


def subprocess_env() -> dict[str, str]:
    """Environment for ``python -m stovtal.selftrain`` subprocesses: the same stovtal as here."""
    import stovtal

    root = os.path.dirname(os.path.dirname(os.path.abspath(stovtal.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


PYTHON = sys.executable


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Run the whole pipeline once (in process) on the tiny world; returns (ctx, logs)."""
    from stovtal.selftrain.config import load_config, validate
    from stovtal.selftrain.stages import make_context, run_pipeline

    torch.set_num_threads(1)
    workdir = str(tmp_path_factory.mktemp("selftrain"))
    cfg = load_config(None, TINY)
    validate(cfg)
    logs: list[str] = []
    ctx = make_context(cfg, workdir, log=logs.append)
    run_pipeline(ctx)
    return ctx, logs
