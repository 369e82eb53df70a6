"""The GPU check's driver (tools/gpu_check.py): time limits, budget, parsing, summary.

The whole dry run (``bash tools/gpu_check.sh --dry-run --skip-build OUTDIR``) runs in
``.ci/run``; these tests pin the mechanics that a GPU run depends on and a dry run never
exercises (a hang killed at its limit, a spent budget, failure reporting).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "tools", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gpu_check"]


def test_a_hanging_child_and_its_children_are_killed_at_the_limit(gc, tmp_path):
    log = open(tmp_path / "log", "w")
    # the child starts a grandchild that would outlive a plain kill of the child
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('started', flush=True); time.sleep(60)"
    start = time.monotonic()
    rc, out, seconds = gc.run_limited([sys.executable, "-c", code], log, 2.0)
    assert rc is None and "started" in out
    assert time.monotonic() - start < 20 and 1.5 < seconds < 20
    rc, out, _ = gc.run_limited([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], log, 30)
    assert (rc, out.strip()) == (3, "hi")
    log.close()
    text = (tmp_path / "log").read_text()
    assert "[exit TIMEOUT" in text and "[exit 3" in text


def test_pytest_counts(gc):
    assert gc.pytest_counts("x\n3 passed, 2 skipped, 1 failed in 4.0s\n") == {"passed": 3, "skipped": 2, "failed": 1}
    assert gc.pytest_counts("== 1 error, 5 passed in 1s ==") == {"error": 1, "passed": 5}
    assert gc.pytest_counts("117 tests collected in 2.1s") == {"tests collected": 117}
    assert gc.pytest_counts("nothing") == {}


def _checker(gc, tmp_path, budget=100.0):
    return gc.Checker(str(tmp_path / "out"), dry_run=True, budget_s=budget, skip_build=True, arch="90",
                      wheels=None, only=None, work=str(tmp_path / "work"))


def test_run_part_limits_budget_and_driver_errors(gc, tmp_path):
    checker = _checker(gc, tmp_path, budget=100.0)
    seen = {}

    def ok(part, limit):
        seen["limit"] = limit
        part.status = "pass"

    assert checker.run_part("bench", ok).status == "pass"
    assert seen["limit"] == pytest.approx(min(gc.LIMITS["bench"], 100.0), abs=1.0)

    def broken(part, limit):
        raise KeyError("boom")

    part = checker.run_part("tests", broken)
    assert part.status == "fail" and "boom" in part.detail
    checker.deadline = time.monotonic() + 5  # the budget is spent: later parts are skipped
    part = checker.run_part("feel", ok)
    assert part.status == "skipped" and "budget" in part.detail
    checker.log.close()


def test_cmd_reports_timeouts_and_failures(gc, tmp_path):
    checker = _checker(gc, tmp_path)
    part = gc.Part("x")
    assert checker.cmd(part, [sys.executable, "-c", "import time; time.sleep(30)"], 1.0)[0] is False
    assert part.status == "timeout" and "limit" in part.detail
    part = gc.Part("y")
    assert checker.cmd(part, [sys.executable, "-c", "print('bad'); raise SystemExit(2)"], 30)[0] is False
    assert part.status == "fail" and part.detail.startswith("exit 2") and "bad" in part.detail
    checker.log.close()


def test_summary_tables_and_bench_rows(gc, tmp_path):
    bench = {"benchmarks": [
        {"group": "g", "name": "test_a", "stats": {"median": 0.5, "rounds": 3}, "extra_info": {"backend": "stovtal-cpu"}},
        {"group": "g", "name": "test_b", "stats": {"median": 0.01, "rounds": 20},
         "extra_info": {"backend": "stovtal-cuda", "cuda_event_ms": 2.0}},
        {"group": "g", "name": "test_c", "stats": {"median": 0.01, "rounds": 20},
         "extra_info": {"backend": "torchvision-cuda", "cuda_event_ms": 8.0}},
    ]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    rows = gc.bench_rows(str(path))
    assert [r["ms"] for r in rows] == [500.0, 2.0, 8.0]  # CPU: wall median; CUDA: event median
    summary = {"dry_run": False, "ok": False, "wall_s": 12.0, "budget_s": 450.0,
               "env": {"torch": "2.11.0", "gpu": "NVIDIA H200"},
               "parts": {"tests": {"name": "tests", "status": "fail", "seconds": 3.0, "limit_s": 240,
                                   "detail": "1 failed\nFAILED tests/ops/test_x.py::test_y"}},
               "benchmarks": rows}
    table = gc.format_tables(summary)
    assert "| g | 2.000 | 8.000 | 500.000 | 4.0x | 250.0x |" in table
    assert "FAILED tests/ops/test_x.py::test_y" in table and "FAILED in 12.0 s" in table


def test_finite_numbers(gc):
    assert gc.finite_numbers({"a": [1.0, {"b": 2}], "c": "x"})
    assert not gc.finite_numbers({"a": [1.0, {"b": float("nan")}]})
    assert not gc.finite_numbers([float("inf")])


def test_tiny_pipeline_overrides_come_from_the_apps_tests(gc):
    for app in ("selftrain", "feel"):
        overrides = gc.tiny_overrides(app)
        assert len(overrides) > 5 and all("=" in o for o in overrides)
    assert gc.tiny_overrides("selftrain")[-1] == "train.amp=true"
