"""Shard plans, worker selection and the kill-safe manifest."""

from __future__ import annotations

import hashlib
import json
import os
import random
import runpy
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stovtal.utils.shards import (
    ShardManifest,
    ShardPlan,
    ShardResult,
    parse_shard_spec,
    run_shards,
)


def test_parse_shard_spec():
    assert parse_shard_spec(None) == (0, 1)
    assert parse_shard_spec("") == (0, 1)
    assert parse_shard_spec("2/5") == (2, 5)
    assert parse_shard_spec(" 0 / 1 ") == (0, 1)
    for bad in ("5/5", "1/0", "-1/3", "a/b", "3", "1/2/3"):
        with pytest.raises(ValueError, match="shard spec"):
            parse_shard_spec(bad)


def test_plan_is_deterministic_and_validated():
    items = [f"v{i}" for i in range(23)]
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    a, b = ShardPlan(items, 5), ShardPlan(shuffled, 5)
    assert a.shards == b.shards and a.fingerprint == b.fingerprint
    assert [len(s.items) for s in a.shards] == [5, 5, 5, 5, 3]
    assert [x for s in a.shards for x in s.items] == sorted(items)
    assert ShardPlan(items, 4).fingerprint != a.fingerprint
    assert ShardPlan(items[:-1], 5).fingerprint != a.fingerprint
    with pytest.raises(ValueError, match="duplicate item ids: \\['v3'\\]"):
        ShardPlan(items + ["v3"], 5)
    with pytest.raises(ValueError, match="shard_size"):
        ShardPlan(items, 0)
    with pytest.raises(TypeError, match="non-empty strings"):
        ShardPlan(["a", ""], 2)
    assert len(ShardPlan([], 3)) == 0


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 60), size=st.integers(1, 7), jobs=st.integers(1, 5), world=st.integers(1, 4)
)
def test_selection_partitions_the_shards(n, size, jobs, world):
    plan = ShardPlan([f"x{i:03d}" for i in range(n)], size)
    picked = [
        s.index for j in range(jobs) for r in range(world) for s in plan.select(j, jobs, r, world)
    ]
    assert sorted(picked) == list(range(len(plan)))
    loads = [len(plan.select(j, jobs, r, world)) for j in range(jobs) for r in range(world)]
    assert max(loads) - min(loads) <= 1


def test_select_validates():
    plan = ShardPlan(["a", "b"], 1)
    with pytest.raises(ValueError, match="job"):
        plan.select(2, 2)
    with pytest.raises(ValueError, match="rank"):
        plan.select(0, 1, 3, 3)


def _process(shard):
    out = {
        x: hashlib.sha256(x.encode()).hexdigest()[:8] for x in shard.items if not x.endswith("7")
    }
    return ShardResult(output=out, errors={x: "unreadable" for x in shard.items if x.endswith("7")})


def test_manifest_records_pending_and_merge(tmp_path):
    items = [f"v{i:02d}" for i in range(20)]
    plan = ShardPlan(items, 6)
    m = ShardManifest(tmp_path / "m", plan)
    assert m.pending() == list(plan.shards) and not m.is_complete()
    with pytest.raises(RuntimeError, match="4 of 4 shards .* not finished"):
        m.merge_outputs()
    counts = run_shards(m, plan.select(0, 2), _process)
    assert counts == {"processed": 2, "skipped": 0, "errors": 1}  # shards 0 and 2 (v12..v17)
    assert [s.index for s in m.pending()] == [1, 3]
    assert set(m.merge_outputs(allow_incomplete=True)) == set(
        plan.shards[0].items + plan.shards[2].items
    ) - {"v17"}
    run_shards(m, plan.select(1, 2), _process)
    assert m.is_complete()
    expected = {x: hashlib.sha256(x.encode()).hexdigest()[:8] for x in items if not x.endswith("7")}
    assert m.merge_outputs() == expected
    assert m.errors() == {"v07": "unreadable", "v17": "unreadable"}
    assert m.merge_outputs(combine=len) == 4
    assert [s.index for s in m.pending(retry_errors=True)] == [1, 2]
    assert m.summary() == {
        "num_shards": 4,
        "done_shards": 4,
        "num_items": 20,
        "done_items": 20,
        "errors": 2,
    }
    # a rerun does nothing
    assert run_shards(m, plan.shards, _process) == {"processed": 0, "skipped": 4, "errors": 0}


def test_manifest_rejects_bad_state(tmp_path):
    plan = ShardPlan([f"v{i}" for i in range(6)], 2)
    d = tmp_path / "m"
    m = ShardManifest(d, plan)
    with pytest.raises(
        ValueError, match="plan.json: this manifest belongs to a different work plan"
    ):
        ShardManifest(d, ShardPlan([f"v{i}" for i in range(7)], 2))
    other = ShardPlan(["zz", "zy"], 2).shards[0]
    with pytest.raises(ValueError, match="not a shard of this manifest"):
        m.record(other)
    with pytest.raises(ValueError, match="errors for items not in shard-00000"):
        m.record(plan.shards[0], errors={"v5": "x"})
    (d / "shard-00001.json").write_text('{"shard": 1, "items": [')  # hand-damaged
    with pytest.raises(ValueError, match="shard-00001.json: not valid JSON"):
        m.pending()
    (d / "shard-00001.json").write_text(json.dumps({"shard": 1, "items": ["v0"], "errors": {}}))
    with pytest.raises(ValueError, match="shard-00001.json: not a valid record"):
        m.is_done(plan.shards[1])
    os.remove(d / "shard-00001.json")
    (d / ".shard-00002.json.abc.tmp").write_text("half written")  # left by a killed writer
    assert [s.index for s in m.pending()] == [0, 1, 2]
    m.write_output(plan.shards[0], ["not", "a", "dict"])
    m.record(plan.shards[0], has_output=True)
    with pytest.raises(TypeError, match="output is not a dict"):
        m.merge_outputs(allow_incomplete=True)


WORKER = textwrap.dedent(
    """
    import hashlib, sys, time
    from stovtal.utils.shards import ShardManifest, ShardPlan, ShardResult, run_shards

    directory, log = sys.argv[1], sys.argv[2]
    plan = ShardPlan([f"vid{i:03d}" for i in range(60)], 3)
    manifest = ShardManifest(directory, plan)

    def process(shard):
        with open(log, "a") as f:
            f.write(f"{shard.index}\\n")
        time.sleep(0.03)
        out = {x: hashlib.sha256(x.encode()).hexdigest() for x in shard.items if not x.endswith("7")}
        return ShardResult(output=out, errors={x: "unreadable" for x in shard.items if x.endswith("7")})

    run_shards(manifest, plan.shards, process)
    """
)


def _records(d):
    return [f for f in os.listdir(d) if f.startswith("shard-")] if os.path.isdir(d) else []


def test_sigkill_loses_at_most_the_shard_in_flight(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    d, log = tmp_path / "manifest", tmp_path / "started.log"
    argv = [str(script), str(d), str(log)]
    proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while len(_records(d)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(_records(d)) < 20, "the worker must be killed mid-run"
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")  # the same worker, resumed in this process

    plan = ShardPlan([f"vid{i:03d}" for i in range(60)], 3)
    m = ShardManifest(d, plan)
    assert m.is_complete()
    want = {
        f"vid{i:03d}": hashlib.sha256(f"vid{i:03d}".encode()).hexdigest()
        for i in range(60)
        if i % 10 != 7
    }
    assert m.merge_outputs() == want
    assert m.errors() == {f"vid{i:03d}": "unreadable" for i in range(60) if i % 10 == 7}
    started = [int(x) for x in log.read_text().split()]
    redone = {s for s in started if started.count(s) > 1}
    assert sorted(set(started)) == list(range(20))
    assert len(redone) <= 1 and all(
        started.count(s) == 2 for s in redone
    )  # at most the one in flight
