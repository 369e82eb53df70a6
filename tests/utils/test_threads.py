"""The thread count of a run (stovtal.utils.threads): the choice from cores and load, with the
affinity, quota, environment and /proc/stat mocked; validation of the setting in configs and
on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from stovtal.config import Config, ConfigError, FeelConfig, SelfTrainConfig, load, validate
from stovtal.utils import threads as T

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    T._applied = None
    yield
    T._applied = None
    torch.set_num_threads(n)


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 7.5, 1),
    (1, 0.0, 1), (16, 0.0, 16), (16, 3.2, 13), (16, 3.3, 12), (8, 0.8, 7),
])
def test_auto_uses_the_free_cores(cores, load, expected):
    assert T.auto_threads(cores, load) == expected


def _stat(*cpus: tuple[int, int]) -> str:
    """A /proc/stat text whose cpuN line has ``busy`` user ticks and ``idle`` idle ticks."""
    lines = ["cpu  999 0 0 999 0 0 0 0 0 0"]
    lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(cpus)]
    return "\n".join(lines + ["intr 1 2 3", "procs_running 3", ""])


def test_busy_cores_sums_the_busy_share_of_our_cpus_only(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(_stat((0, 0), (0, 0), (0, 0), (0, 0)))
    # over the sample: cpu0 fully busy, cpu1 a quarter, cpu2 idle, cpu3 (not ours) fully busy
    monkeypatch.setattr(T.time, "sleep", lambda s: stat.write_text(_stat((100, 0), (25, 75), (0, 100), (100, 0))))
    busy, source = T.busy_cores({0, 1, 2}, path=str(stat))
    assert busy == pytest.approx(1.25)
    assert str(stat) in source
    assert T.auto_threads(3, busy) == 2  # floor(3 - 1.25 + 0.25)


def test_busy_cores_falls_back_to_the_load_average(tmp_path, monkeypatch):
    monkeypatch.setattr(T.os, "getloadavg", lambda: (5.0, 1.0, 1.0))
    busy, source = T.busy_cores({0, 1}, sample_s=0, path=str(tmp_path / "missing"))
    assert (busy, source) == (2.0, "1-min load average")  # capped at our cores
    monkeypatch.setattr(T.os, "getloadavg", lambda: (0.4, 1.0, 1.0))
    assert T.busy_cores({0, 1, 2, 3}, sample_s=0, path=str(tmp_path / "missing"))[0] == 0.4


def test_cgroup_quota(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("max 100000\n")
    assert T._cgroup_quota(str(f)) is None
    f.write_text("150000 100000\n")
    assert T._cgroup_quota(str(f)) == 1.5
    assert T._cgroup_quota(str(tmp_path / "none")) is None


def test_usable_cores_limits(monkeypatch):
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(T, "_cgroup_quota", lambda: None)
    assert T.usable_cores({}) == ({0, 1, 2, 3, 4, 5, 6, 7}, 8, [])
    assert T.usable_cores({"LOCAL_WORLD_SIZE": "2"})[1:] == (4, ["2 processes on this node"])
    assert T.usable_cores({"OMP_NUM_THREADS": "3"})[1:] == (3, ["OMP_NUM_THREADS=3"])
    assert T.usable_cores({"OMP_NUM_THREADS": "32"})[1] == 8  # a cap, not a raise
    monkeypatch.setattr(T, "_cgroup_quota", lambda: 2.5)
    assert T.usable_cores({})[1:] == (3, ["cgroup quota 2.5"])


def _mock_machine(monkeypatch, cpus: set[int], busy: float) -> None:
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: cpus)
    monkeypatch.setattr(T, "_cgroup_quota", lambda: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(T, "busy_cores", lambda c, *a, **k: (busy if c == cpus else -1.0, "mocked"))


@pytest.mark.parametrize(("busy", "expected"), [(0.0, 4), (1.0, 3), (2.6, 1), (9.0, 1)])
def test_auto_choice_and_its_log_line(monkeypatch, busy, expected):
    _mock_machine(monkeypatch, {0, 1, 2, 3}, busy)
    lines: list[str] = []
    assert T.apply_threads("auto", log=lines.append) == expected
    assert torch.get_num_threads() == expected
    assert lines == [f"using {expected} thread{'s' if expected > 1 else ''}: num_threads=auto: 4 cores, "
                     f"load {busy:.2f} (mocked)"]


def test_chosen_once_per_process(monkeypatch):
    _mock_machine(monkeypatch, {0, 1, 2, 3}, 0.0)
    lines: list[str] = []
    assert T.apply_threads("auto", log=lines.append) == 4
    _mock_machine(monkeypatch, {0, 1, 2, 3}, 3.0)  # the load of a later stage: not looked at again
    torch.set_num_threads(1)
    assert T.apply_threads("auto", log=lines.append) == 4
    assert len(lines) == 1
    assert T.apply_threads(2, log=lines.append) == 2  # another setting: applied and logged
    assert lines[-1] == "using 2 threads: num_threads=2"


def test_explicit_counts_are_honoured(monkeypatch):
    _mock_machine(monkeypatch, {0, 1}, 2.0)  # a loaded machine does not change an explicit count
    assert T.apply_threads(3, log=None) == 3
    torch.set_num_threads(2)
    lines: list[str] = []
    assert T.apply_threads(0, log=lines.append) == 2  # 0: torch's own count, left alone
    assert lines == ["using 2 threads: num_threads=0: torch's own thread count"]


@pytest.mark.parametrize("bad", [-1, "many", "", True, 1.5, None, "2.5"])
def test_bad_settings_name_the_key(bad):
    with pytest.raises(ValueError, match=r"^num_threads: must be 'auto' or an integer >= 0"):
        T.choose_threads(bad)
    with pytest.raises(ValueError, match=r"^--threads: must be 'auto'"):
        T.parse_setting(bad if isinstance(bad, str) else str(bad))


def test_parse_setting_from_the_command_line():
    assert T.parse_setting("auto") == "auto"
    assert T.parse_setting("4") == 4
    assert T.parse_setting("0") == 0


def test_configs_default_to_auto_and_validate_the_key(tmp_path):
    assert Config().num_threads == "auto"
    assert SelfTrainConfig().num_threads == "auto"
    assert FeelConfig().num_threads == 1  # CoLA's small convs gain little from more threads
    for schema in (Config, SelfTrainConfig, FeelConfig):
        assert load(schema, None, ["num_threads=3"]).num_threads == 3
        assert load(schema, None, ["num_threads=auto"]).num_threads == "auto"
        for bad in ("-1", "lots"):
            cfg = load(schema, None, [f"num_threads={bad}"])
            with pytest.raises(ConfigError, match=r"^num_threads: must be 'auto' or an integer >= 0"):
                validate(cfg, check_paths=False)
        with pytest.raises(ConfigError, match="num_threads"):
            load(schema, None, ["num_threads=1.5"])
    y = tmp_path / "c.yaml"
    y.write_text("num_threads: many\n")
    with pytest.raises(ConfigError, match=r"^num_threads: .* got 'many'"):
        validate(load(SelfTrainConfig, str(y)), check_paths=False)


def test_eval_cli_refuses_a_bad_threads_flag(capsys):
    from stovtal.eval.__main__ import main

    assert main(["--gt", "gt.json", "--pred", "p.json", "--threads", "-3"]) == 2
    assert capsys.readouterr().err == "error: --threads: must be 'auto' or an integer >= 0 (0: torch's own count), got -3\n"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})


def test_commands_log_their_choice_and_refuse_a_bad_setting(tmp_path):
    gt = {"database": {"v1": {"subset": "test", "annotations": [{"segment": [1, 5], "label": "a"}]}}}
    pred = {"results": {"v1": [{"segment": [1, 5], "label": "a", "score": 0.9}]}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    r = _cli("stovtal.eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"))
    assert r.returncode == 0, r.stderr
    cores = len(os.sched_getaffinity(0))
    lines = [s for s in r.stderr.splitlines() if s.startswith("using ")]
    assert len(lines) == 1 and f"--threads=auto: {cores} cores" in lines[0], r.stderr
    n = int(lines[0].split()[1])
    assert 1 <= n <= cores
    r = _cli("stovtal.selftrain", "--workdir", str(tmp_path / "w"), "--print-config", "num_threads=lots")
    assert (r.returncode, r.stderr) == (
        2, "error: num_threads: must be 'auto' or an integer >= 0 (0: torch's own count), got 'lots'\n")
