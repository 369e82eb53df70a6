"""Really distributed runs: ``torchrun --nproc_per_node=2`` on CPU with gloo (subprocesses).

Each test compares a 2-process run with the same work done by one process (in this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _env() -> dict[str, str]:
    import stovtal

    root = os.path.dirname(os.path.dirname(os.path.abspath(stovtal.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def torchrun(*args: str, nproc: int = 2, extra_env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, env={**_env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ------------------------------------------------------------------------------------ training


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    torch.set_num_threads(1)
    (tmp_path / "ddp").mkdir()
    _ok(torchrun(os.path.join(HERE, "worker.py"), "train", str(tmp_path / "ddp")))
    ddp = torch.load(tmp_path / "ddp" / "weights.pt")
    (tmp_path / "one").mkdir()
    one = worker.train(str(tmp_path / "one"))  # global batch 4 in one process
    assert int(ddp["steps"]) == int(one["steps"]) == 6  # 14 videos // 4, 2 epochs
    init = worker.initial_model().state_dict()
    worst, moved = 0.0, 0.0
    for k, v in one.items():
        if not v.is_floating_point():
            continue
        a, b = v.double(), ddp[k].double()
        if k.startswith("model."):
            moved = max(moved, float((a - init[k[len("model."):]].double()).abs().max()))
        if k.endswith(("attn.k_proj.bias", "attn.k_norm.bias")):
            # These biases add one vector to every key, so they have an exactly zero gradient
            # (softmax is invariant to a constant added to a query's logits), and Adam turns their
            # float-rounding gradient noise into +-lr steps of random sign: no equality to expect.
            continue
        worst = max(worst, float((a - b).abs().max()))
    # Same sampled batches, same padding (every video padded to max_seq_len), same loss
    # normaliser, gradients averaged by DDP: only the float32
    # summation order differs (one batch of 4 vs two of 2 + all-reduce). 6 Adam steps of lr 1e-3
    # on weights of magnitude <= ~1: rounding differences stay ~1e-7 per step.
    assert worst < 2e-6, worst
    assert moved > 1e-3  # the weights did move, by 1000x the tolerance
    # negative control: the per-rank batch (2) in one process is a different training
    (tmp_path / "b2").mkdir()
    b2 = worker.train(str(tmp_path / "b2"), batch_size=2)
    assert max(float((b2[k] - one[k]).abs().max()) for k in one if one[k].is_floating_point()) > 1e-4


def test_global_batch_must_divide_by_world_size(tmp_path):
    # world size comes from torch.distributed; emulate W=2 through the helpers' view of it
    import stovtal.engine.trainer as T
    from stovtal.data import collate_videos
    from stovtal.engine import TrainConfig, Trainer
    from stovtal.models import ActionLocalizer, LocalizerConfig

    orig = T.D.get_world_size
    T.D.get_world_size = lambda: 2
    try:
        with pytest.raises(ValueError, match="global batch"):
            Trainer(ActionLocalizer(LocalizerConfig(**worker.MODEL)), worker.ToyVideos(4),
                    TrainConfig(batch_size=3, device="cpu", progress=False), tmp_path, collate_fn=collate_videos)
    finally:
        T.D.get_world_size = orig


# ------------------------------------------------------------------------------ pseudo-labels


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from stovtal.data.synthetic import SyntheticConfig, ensure_world

    root = str(tmp_path_factory.mktemp("world"))
    ensure_world(root, SyntheticConfig.from_dict(worker.WORLD))
    return root


@pytest.fixture(scope="module")
def one_process_labels(tiny_world, tmp_path_factory):
    torch.set_num_threads(1)
    out = str(tmp_path_factory.mktemp("pl_one"))
    db = worker.pseudo(out, tiny_world)
    assert db is not None
    return db


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_distributed_pseudo_labels_equal_one_process(tiny_world, one_process_labels, tmp_path):
    out = tmp_path / "pl"
    _ok(torchrun(os.path.join(HERE, "worker.py"), "pseudo", str(out), tiny_world))
    got = _read(out / "pseudo_labels.json")
    assert got == one_process_labels  # exactly: same shards, same batches, same floats
    assert len(got["database"]) == worker.WORLD["num_web"]
    # every shard was done by exactly one rank: 8 shards, ranks 0 and 1 took alternate ones
    recs = sorted(p for p in os.listdir(out / "shards") if p.startswith("shard-"))
    assert len(recs) == 8


def test_kill_one_rank_then_rerun_completes_without_duplicates(tiny_world, one_process_labels, tmp_path):
    from stovtal.utils.shards import ShardManifest, ShardPlan

    out = tmp_path / "pl"
    kill = {"STOVTAL_TEST_KILL_RANK": "1", "STOVTAL_TEST_KILL_AFTER": "2"}
    proc = torchrun(os.path.join(HERE, "worker.py"), "pseudo", str(out), tiny_world, extra_env=kill)
    assert proc.returncode != 0  # rank 1 died by SIGKILL; torchrun stopped the job
    assert not (out / "pseudo_labels.json").exists()
    ids = sorted(one_process_labels["database"])
    plan = ShardPlan(ids, worker.pseudo_config().shard_size)
    man = ShardManifest(out / "shards", plan)
    pending = man.pending()
    # rank 1 owns shards 1, 3, 5, 7: it wrote the outputs of two and the record of one only
    assert plan.shards[1] not in pending and plan.shards[3] in pending
    assert os.path.exists(man.output_path(plan.shards[3]))  # output without record: redone
    done_before = {s.index: os.path.getmtime(man.record_path(s)) for s in plan.shards if s not in pending}

    _ok(torchrun(os.path.join(HERE, "worker.py"), "pseudo", str(out), tiny_world))
    got = _read(out / "pseudo_labels.json")
    assert got == one_process_labels
    merged = man.merge_outputs()  # raises if any video was output by two shards
    assert sorted(merged) == ids
    for i, t in done_before.items():  # finished shards were not redone
        assert os.path.getmtime(man.record_path(plan.shards[i])) == t


def test_independent_jobs_and_ranks_split_the_shards(tiny_world, one_process_labels, tmp_path):
    """--shard i/n jobs (run one after the other here) x ranks: disjoint, complete, same labels."""
    from stovtal.data import FeatureGrid
    from stovtal.data.formats import load_annotations
    from stovtal.models import ActionLocalizer, LocalizerConfig
    from stovtal.selftrain.pseudolabel import UnlabelledSet, pseudo_label
    from stovtal.utils.fileio import read_json

    meta = read_json(os.path.join(tiny_world, "world.json"))
    web = load_annotations(os.path.join(tiny_world, "web.json"))["database"]
    grid = FeatureGrid(float(meta["fps"]), int(meta["feature_stride"]), int(meta["num_frames"]))
    unl = UnlabelledSet(web, os.path.join(tiny_world, "features"), grid, int(meta["feat_dim"]))
    torch.manual_seed(0)
    model = ActionLocalizer(LocalizerConfig(**worker.MODEL)).eval()
    results = []
    for job in range(2):
        for rank in range(2):  # 2 jobs x 2 ranks = 4 workers
            results.append(pseudo_label(model, unl, sorted(web), tmp_path, worker.pseudo_config(),
                                        job=job, num_jobs=2, rank=rank, world_size=2))
    assert results[:3] == [None, None, None]  # incomplete until the last worker
    assert results[3] == one_process_labels


# --------------------------------------------------------------------------- whole pipeline


def test_torchrun_selftrain_pipeline_writes_results(tmp_path):
    tiny = [
        "data.world.num_train=8", "data.world.num_web=8", "data.world.num_test=6",
        "data.world.feat_dim=32", "data.world.snippets_range=[48,64]",
        "model.embed_dim=16", "model.head_dim=16", "model.num_heads=2", "model.branch_layers=3",
        "model.regression_ranges=[[0,4],[4,8],[8,16],[16,100000]]", "model.window=7",
        "train.epochs=1", "train.batch_size=4", "retrain.epochs=1", "retrain.warmup_epochs=0",
        "pseudo.shard_size=2", "pseudo.batch_size=2", "pseudo.threshold=0.2",
        "eval.batch_size=3", "num_threads=1",
    ]
    proc = torchrun("-m", "stovtal.selftrain", "--workdir", str(tmp_path), "--quiet", *tiny, timeout=600)
    _ok(proc)
    res = _read(tmp_path / "results.json")
    for model in ("base", "selftrained"):
        assert set(res[model]) == {"CB", "CN", "GZSL"}
        for s in ("CB", "CN", "GZSL"):
            assert 0.0 <= res[model][s] <= 1.0
    # pseudo-labelling was split over the 2 ranks and merged: every unlabelled video once
    pl = _read(tmp_path / "pseudo" / "n8" / "pseudo_labels.json")
    assert len(pl["database"]) == 8
    assert proc.stdout.count("CN") >= 1  # the table is printed once, by rank 0
    assert proc.stdout.count("report:") == 1
