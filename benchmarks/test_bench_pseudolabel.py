"""Pseudo-labelling throughput on CPU, end to end: feature files -> data loader -> localizer ->
decoding + soft-NMS -> candidate selection -> atomic shard outputs + manifest -> pseudo_labels.json.

Videos of 256 snippets x 512-d features (float32 ``.npy``), the self-training pipeline's default
localizer (``SelfTrainConfig().model``) and the authors' full-size one (``LocalizerConfig()``),
with random weights (the work per video does not depend on what the weights learnt, except for
the number of candidates reaching NMS: ``pre_nms_topk`` bounds it).

Run: pytest benchmarks/test_bench_pseudolabel.py --benchmark-only
``extra_info``: videos/s and the projected hours for 332k videos (the paper's web set).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

pytest.importorskip("stovtal.engine", reason="needs the models/extract branches")
pytest.importorskip("stovtal.utils.shards", reason="needs the models/extract branches")
import torch

from stovtal.data import FeatureGrid
from stovtal.models import ActionLocalizer, LocalizerConfig
from stovtal.selftrain.config import PseudoLabelConfig, SelfTrainConfig
from stovtal.selftrain.pseudolabel import UnlabelledSet, pseudo_label

NUM_VIDEOS = 64
T, D = 256, 512
GROUP = f"pseudolabel-{NUM_VIDEOS}x{T}x{D}-cpu"
PAPER_SCALE = 332_000


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    grid = FeatureGrid(30.0, 4, 16)
    db = {}
    for i in range(NUM_VIDEOS):
        vid = f"web_{i:05d}"
        np.save(root / f"{vid}.npy", rng.standard_normal((T, D)).astype(np.float32))
        db[vid] = {"subset": "web", "duration": ((T - 1) * 4 + 16) / 30.0, "annotations": []}
    return UnlabelledSet(db, str(root), grid, D)


MODELS = {
    "selftrain-default": lambda: LocalizerConfig(input_dim=D, **SelfTrainConfig().model),
    "authors-full": lambda: LocalizerConfig(input_dim=D),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.benchmark(group=GROUP)
def test_pseudolabel_throughput(benchmark, unlabelled, tmp_path, name):
    torch.manual_seed(0)
    model = ActionLocalizer(MODELS[name]()).eval()
    cfg = PseudoLabelConfig(shard_size=16, batch_size=8)
    ids = sorted(unlabelled.database)
    counter = itertools.count()

    def setup():
        return (os.path.join(tmp_path, f"run{next(counter)}"),), {}

    def run(out_dir):
        db = pseudo_label(model, unlabelled, ids, out_dir, cfg)
        assert db is not None and len(db["database"]) == NUM_VIDEOS

    benchmark.pedantic(run, setup=setup, rounds=2, iterations=1, warmup_rounds=0)
    vps = NUM_VIDEOS / benchmark.stats.stats.mean
    benchmark.extra_info["videos_per_s"] = round(vps, 2)
    benchmark.extra_info["projected_hours_332k"] = round(PAPER_SCALE / vps / 3600, 1)
    benchmark.extra_info["threads"] = torch.get_num_threads()
