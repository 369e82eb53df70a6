"""The prepared GPU check: build, CUDA tests, sanitizers, benchmarks and pipelines in one run.

Run it through ``bash tools/gpu_check.sh [options] OUTDIR`` (see the README, "GPU check").
Every part runs in a child process with its own time limit (a hang costs that part only)
and inside an overall budget; the results go to ``OUTDIR/summary.json``, every child's
output to ``OUTDIR/gpu_check.log``, and a summary table is printed (and written to
``OUTDIR/summary.md``). The exit status is 0 when no part failed or timed out.

Parts, in order (the budget goes to the earlier ones first):

- ``env``: Python, torch, CUDA, GPU, nvcc, compute-sanitizer; wheels from ``--wheels``
  are installed into ``OUTDIR``'s sibling work folder when omegaconf is missing.
- ``build``: ``tools/build_inplace.sh`` with ``STOVTAL_CUDA=ON`` and
  ``CMAKE_CUDA_ARCHITECTURES=90`` (``--arch``), one job per core; then every op must have
  a CPU and a CUDA kernel.
- ``tests``: ``pytest -m cuda`` over every test file that has a ``pytest.mark.cuda`` test
  (the CUDA-vs-CPU parity tests among them); the dry run only collects them.
- ``bench``: ``benchmarks/test_bench_cuda.py`` (CUDA events after warm-up; torchvision's
  CUDA ops and our CPU kernels in the same groups); the dry run runs the CPU half.
- ``memcheck`` / ``racecheck``: ``compute-sanitizer`` on a small call of every kernel
  (``tools/gpu_small_calls.py``); the dry run runs the same calls on the CPU.
- ``selftrain`` / ``feel``: a tiny end-to-end run of each on CUDA (selftrain with AMP);
  the dry run validates their command lines (``--print-config``).
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# Per-part time limits in seconds on the GPU machine (16 cores, H200). Sums above the
# budget on purpose: a part that hangs is cut at its limit, and the later parts get what
# the budget has left (see Checker.run_part).
LIMITS = {
    "env": 60,
    "build": 300,
    "tests": 240,
    "bench": 150,
    "memcheck": 120,
    "racecheck": 120,
    "selftrain": 120,
    "feel": 120,
}

# Parts that must pass (the others may be skipped: no compute-sanitizer, no omegaconf).
REQUIRED = ("env", "build", "tests", "bench")
NOT_SELECTED = "not selected (--only)"

# Tiny pipeline runs: the overrides the apps' own tests use for their tiny end-to-end runs
# (read from those files, so they follow the apps' configs), on CUDA, selftrain with AMP.
TINY_SOURCES = {
    "selftrain": (os.path.join("tests", "selftrain", "conftest.py"), "TINY", ["train.amp=true"]),
    "feel": (os.path.join("tests", "feel", "test_pipeline.py"), "TINY", []),
}


def tiny_overrides(app: str) -> list[str]:
    """The ``key=value`` list ``TINY`` of the app's test file, plus this check's additions."""
    path, name, extra = TINY_SOURCES[app]
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return [str(x) for x in ast.literal_eval(node.value)] + extra
    raise ValueError(f"{path}: no list {name} of tiny-run overrides")


@dataclass
class Part:
    """One part's outcome: ``status`` is pass, fail, timeout or skipped."""

    name: str
    status: str = "skipped"
    seconds: float = 0.0
    limit_s: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def run_limited(cmd: list[str], log, limit_s: float, env: dict[str, str] | None = None,
                cwd: str = ROOT) -> tuple[int | None, str, float]:
    """Run ``cmd`` in its own process group, output appended to ``log``; kill the group
    at ``limit_s``. Returns (exit code or None on timeout, the output, seconds)."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(limit_s, 1.0))
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    seconds = time.monotonic() - start
    log.write(out)
    log.write(f"[exit {rc if rc is not None else 'TIMEOUT'} after {seconds:.1f} s]\n")
    log.flush()
    return rc, out, seconds


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def pytest_counts(out: str) -> dict[str, int]:
    """Counts from pytest's closing line (``3 passed, 1 skipped in 2.0s``)."""
    counts: dict[str, int] = {}
    for line in reversed(out.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|tests? collected)", line)
        if found:
            for n, what in found:
                counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
            break
    return counts


class Checker:
    """Runs the parts in order within ``budget_s`` and collects their outcomes."""

    def __init__(self, outdir: str, dry_run: bool, budget_s: float, skip_build: bool,
                 arch: str, wheels: str | None, only: list[str] | None, work: str):
        self.outdir = outdir
        self.dry_run = dry_run
        self.skip_build = skip_build
        self.arch = arch
        self.wheels = wheels
        self.only = only
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.work = work  # the pipelines' work dirs and installed wheels, kept out of OUTDIR
        self.build_dir: str | None = None
        os.makedirs(outdir, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        self.log = open(os.path.join(outdir, "gpu_check.log"), "w")
        self.parts: list[Part] = []
        self.env_info: dict[str, Any] = {}
        self.bench_rows: list[dict[str, Any]] = []
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.pop("CUDA_LAUNCH_BLOCKING", None)
        # the source tree goes first on the path: its in-place build is what runs (without
        # one, e.g. with --skip-build after `pip install .`, stovtal loads the installed library)
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        self.has_gpu = False

    # ------------------------------------------------------------------ plumbing

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run_part(self, name: str, fn) -> Part:
        part = Part(name)
        limit = min(LIMITS[name], self.remaining())
        part.limit_s = round(limit, 1)
        if self.only and name not in self.only and name != "env":
            part.detail = NOT_SELECTED
        elif limit < 10:
            part.detail = f"no time left in the {self.budget_s:.0f} s budget"
        else:
            self.log.write(f"\n===== {name} (limit {limit:.0f} s) =====\n")
            start = time.monotonic()
            try:
                fn(part, limit)
            except Exception as exc:  # a bug in the driver must not hide the other parts
                part.status, part.detail = "fail", f"driver error: {exc!r}"
            part.seconds = round(time.monotonic() - start, 1)
        self.parts.append(part)
        print(f"[{name:9s}] {part.status:8s} {part.seconds:6.1f} s  {part.detail.splitlines()[0] if part.detail else ''}",
              flush=True)
        return part

    def cmd(self, part: Part, cmd: list[str], limit: float, env: dict[str, str] | None = None,
            ok_rc: tuple[int, ...] = (0,)) -> tuple[bool, str]:
        rc, out, _ = run_limited(cmd, self.log, limit, env or self.env)
        if rc is None:
            part.status, part.detail = "timeout", f"killed at its {limit:.0f} s limit\n" + tail(out)
            return False, out
        if rc not in ok_rc:
            part.status, part.detail = "fail", f"exit {rc}\n" + tail(out)
            return False, out
        part.status = "pass"
        return True, out

    def python(self, code: str) -> list[str]:
        return [PY, "-c", code]

    # ------------------------------------------------------------------ parts

    def part_env(self, part: Part, limit: float) -> None:
        if self.wheels and os.path.isdir(self.wheels):
            probe = subprocess.run([PY, "-c", "import omegaconf"], env=self.env, capture_output=True)
            whl = sorted(glob.glob(os.path.join(self.wheels, "*.whl")))
            if probe.returncode != 0 and whl:
                site = os.path.join(self.work, "site")
                rc, out, _ = run_limited([PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                          "--no-compile", "--target", site, *whl], self.log, limit / 2, self.env)
                if rc == 0:
                    self.env["PYTHONPATH"] = self.env.get("PYTHONPATH", "") + os.pathsep + site
                self.env_info["wheels_installed"] = [os.path.basename(w) for w in whl] if rc == 0 else []
        code = (
            "import json, os, platform, shutil, subprocess, torch\n"
            "d = {'python': platform.python_version(), 'torch': torch.__version__,\n"
            "     'torch_cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),\n"
            "     'cpus': os.cpu_count()}\n"
            "if d['cuda_available']:\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    d.update(gpu=p.name, capability=f'{p.major}.{p.minor}', gpu_memory_gib=round(p.total_memory / 2**30, 1))\n"
            "for mod in ('torchvision', 'omegaconf', 'pytest_benchmark', 'hypothesis', 'triton'):\n"
            "    try:\n"
            "        m = __import__(mod); d[mod] = getattr(m, '__version__', 'yes')\n"
            "    except Exception:\n"
            "        d[mod] = None\n"
            "nvcc = shutil.which('nvcc') or ('/usr/local/cuda/bin/nvcc' if os.path.exists('/usr/local/cuda/bin/nvcc') else None)\n"
            "d['nvcc'] = subprocess.run([nvcc, '--version'], capture_output=True, text=True).stdout.strip().splitlines()[-1] if nvcc else None\n"
            "print('ENV=' + json.dumps(d))\n"
        )
        ok, out = self.cmd(part, self.python(code), limit)
        if not ok:
            return
        for line in out.splitlines():
            if line.startswith("ENV="):
                self.env_info.update(json.loads(line[4:]))
        self.env_info["compute_sanitizer"] = find_sanitizer()
        self.has_gpu = bool(self.env_info.get("cuda_available"))
        torch_v = tuple(int(x) for x in re.findall(r"\d+", self.env_info["torch"])[:2])
        notes = []
        if torch_v < (2, 11):
            notes.append(f"torch {self.env_info['torch']} is older than 2.11, the oldest torch checked")
        if not self.dry_run and not self.has_gpu:
            part.status = "fail"
            notes.append("no CUDA device is visible (use --dry-run on a machine without one)")
        if self.env_info.get("omegaconf") is None:
            notes.append("omegaconf missing: selftrain/feel will be skipped (carry wheels, see --wheels)")
        e = self.env_info
        part.detail = "; ".join([f"torch {e['torch']} (CUDA {e['torch_cuda']}), {e.get('gpu', 'no GPU')}, "
                                 f"{e['cpus']} CPUs, nvcc: {e['nvcc']}"] + notes)
        part.data = dict(e)

    def part_build(self, part: Part, limit: float) -> None:
        check = [PY, os.path.join(ROOT, ".ci", "check_cuda_kernels.py")]
        if self.skip_build:
            ok, out = self.cmd(part, check, limit)
            part.detail = ("--skip-build: the importable build, " + tail(out, 1)) if ok else part.detail
            return
        env = dict(self.env, STOVTAL_CUDA="ON", PYTHON=PY,
                   CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
        if not shutil.which("nvcc") and "CUDACXX" not in env and os.path.exists("/usr/local/cuda/bin/nvcc"):
            env["CUDACXX"] = "/usr/local/cuda/bin/nvcc"  # a toolkit that is not on the PATH
        build_dir = self.build_dir or os.path.join(ROOT, "build", f"gpu-check-sm{self.arch}")
        ok, out = self.cmd(part, ["bash", os.path.join(ROOT, "tools", "build_inplace.sh"), build_dir,
                                  f"-DCMAKE_CUDA_ARCHITECTURES={self.arch}"], limit, env)
        compiled = len(re.findall(r"Building (?:CXX|CUDA) object", out))
        if not ok:
            return
        build_s = time.monotonic()
        ok, out2 = self.cmd(part, check, max(self.remaining(), 10))
        part.data = {"objects_compiled": compiled, "build_dir": os.path.relpath(build_dir, ROOT)}
        if ok:
            part.detail = f"{compiled} objects compiled (sm_{self.arch}); " + tail(out2, 1)
        del build_s

    def cuda_test_files(self) -> list[str]:
        files = []
        for path in sorted(glob.glob(os.path.join(ROOT, "tests", "**", "test_*.py"), recursive=True)):
            with open(path, encoding="utf-8") as f:
                if "pytest.mark.cuda" in f.read():
                    files.append(os.path.relpath(path, ROOT))
        return files

    def part_tests(self, part: Part, limit: float) -> None:
        files = self.cuda_test_files()
        part.data["files"] = files
        base = [PY, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", *files]
        if self.dry_run:
            ok, out = self.cmd(part, base + ["--collect-only", "-q"], limit)
            counts = pytest_counts(out)
            n = sum(v for k, v in counts.items() if "collected" in k) or len(
                [ln for ln in out.splitlines() if "::" in ln])
            parity = len([ln for ln in out.splitlines() if "test_cuda_parity.py::" in ln])
            part.data.update(collected=n, parity_collected=parity)
            if ok and (n == 0 or parity == 0):
                part.status, part.detail = "fail", f"collected {n} CUDA tests, {parity} parity tests"
            elif ok:
                part.detail = f"dry run: collected {n} CUDA tests ({parity} parity tests) in {len(files)} files"
            return
        junit = os.path.join(self.outdir, "tests.xml")
        ok, out = self.cmd(part, base + ["-q", "-rfEs", f"--junitxml={junit}"], limit)
        counts = pytest_counts(out)
        part.data.update(counts)
        failed = [ln[7:] for ln in out.splitlines() if ln.startswith("FAILED ") or ln.startswith("ERROR ")]
        part.data["failed_tests"] = failed
        skipped = counts.get("skipped", 0)
        if ok and skipped:
            part.status = "fail"  # on a GPU every CUDA test must run
        summary = ", ".join(f"{v} {k}" for k, v in counts.items())
        part.detail = summary + ("" if ok and not skipped else "\n" + "\n".join(failed[:30] or [tail(out)]))

    def part_sanitizer(self, tool: str):
        def run(part: Part, limit: float) -> None:
            calls = [PY, os.path.join(ROOT, "tools", "gpu_small_calls.py")]
            if self.dry_run or not self.has_gpu:
                ok, out = self.cmd(part, calls + ["--device", "cpu"], limit)
                found = self.env_info.get("compute_sanitizer")
                if ok:
                    part.detail = (f"dry run: the small calls ran on the CPU ({tail(out, 1)}); "
                                   f"compute-sanitizer {'at ' + found if found else 'not found here'}")
                return
            sanitizer = self.env_info.get("compute_sanitizer")
            if not sanitizer:
                part.status, part.detail = "skipped", "compute-sanitizer not found"
                return
            # one cudaMalloc per tensor, so that an access past a tensor's end is outside
            # every allocation (the caching allocator would hide it inside its blocks)
            env = dict(self.env, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
            # every kernel of the calls is instrumented (torch's too): a kernel-name filter
            # that matched nothing would pass silently
            flags = ["--tool", tool, "--error-exitcode", "3"]
            rc, out, _ = run_limited([sanitizer, *flags, *calls, "--device", "cuda"], self.log, limit, env)
            summary = [ln for ln in out.splitlines() if "ERROR SUMMARY" in ln or "RACECHECK SUMMARY" in ln]
            part.data["summary"] = summary
            if rc is None:
                part.status, part.detail = "timeout", f"killed at its {limit:.0f} s limit\n" + tail(out)
            elif rc == 0 and "small calls: ok" in out:
                part.status, part.detail = "pass", "; ".join(summary) or "no errors"
            elif "not supported" in out.lower() and "device" in out.lower():
                part.status, part.detail = "skipped", "compute-sanitizer does not support this device/runtime\n" + tail(out, 5)
            else:
                part.status, part.detail = "fail", f"exit {rc}\n" + tail(out, 40)
        return run

    def part_bench(self, part: Part, limit: float) -> None:
        out_json = os.path.join(self.outdir, "bench.json")
        cmd = [PY, "-m", "pytest", "-p", "no:cacheprovider", "-q",
               os.path.join("benchmarks", "test_bench_cuda.py"), "--benchmark-only",
               f"--benchmark-json={out_json}", "--benchmark-columns=min,median,rounds"]
        env = self.env
        if self.dry_run or not self.has_gpu:
            cmd += ["-m", "not cuda"]
            env = dict(self.env, STOVTAL_BENCH_QUICK="1")
        ok, out = self.cmd(part, cmd, limit, env)
        if os.path.exists(out_json):
            self.bench_rows = bench_rows(out_json)
        part.data["rows"] = len(self.bench_rows)
        if ok:
            part.detail = ("dry run: CPU half, each timed once, " if self.dry_run else "") + f"{len(self.bench_rows)} timings"

    def _omegaconf(self) -> bool:
        return subprocess.run([PY, "-c", "import omegaconf"], env=self.env, capture_output=True).returncode == 0

    def part_selftrain(self, part: Part, limit: float) -> None:
        if not self._omegaconf():
            part.status, part.detail = "skipped", "omegaconf is not importable (carry its wheel: --wheels)"
            return
        workdir = os.path.join(self.work, "selftrain")
        shutil.rmtree(workdir, ignore_errors=True)
        device = "cpu" if self.dry_run else "cuda"
        cmd = [PY, "-m", "stovtal.selftrain", "--workdir", workdir, "--quiet", *tiny_overrides("selftrain"),
               f"device={device}"]
        if self.dry_run:
            ok, out = self.cmd(part, cmd + ["--print-config"], limit)
            if ok:
                part.detail = "dry run: the tiny run's overrides are valid (--print-config)"
            return
        ok, out = self.cmd(part, cmd, limit)
        if self._read_results(part, ok, out, workdir):
            part.detail = "device=cuda, AMP: " + "; ".join(ln.strip() for ln in out.splitlines()
                                                          if re.match(r"\s*(base|self)", ln))[:300]

    @staticmethod
    def _read_results(part: Part, ok: bool, out: str, workdir: str) -> bool:
        """After a pipeline run: load ``workdir/results.json`` into ``part.data`` and check its
        numbers are finite; False (with the part failed) when it is missing or not finite, or
        when the run itself did not succeed."""
        if not ok:
            return False
        results = os.path.join(workdir, "results.json")
        if not os.path.exists(results):
            part.status, part.detail = "fail", "no results.json\n" + tail(out)
            return False
        with open(results) as f:
            part.data["results"] = json.load(f)
        if not finite_numbers(part.data["results"]):
            part.status, part.detail = "fail", "non-finite numbers in results.json"
            return False
        return True

    def part_feel(self, part: Part, limit: float) -> None:
        if not self._omegaconf():
            part.status, part.detail = "skipped", "omegaconf is not importable (carry its wheel: --wheels)"
            return
        workdir = os.path.join(self.work, "feel")
        shutil.rmtree(workdir, ignore_errors=True)
        device = "cpu" if self.dry_run else "cuda"
        overrides = [*tiny_overrides("feel"), f"device={device}"]
        if self.dry_run:
            code = ("import sys; from stovtal.feel.config import load_config; "
                    "load_config(None, sys.argv[1:]); print('feel overrides ok')")
            ok, _ = self.cmd(part, [PY, "-c", code, *overrides], limit)
            if ok:
                part.detail = "dry run: the tiny run's overrides are valid"
            return
        ok, out = self.cmd(part, [PY, "-m", "stovtal.feel", "--workdir", workdir, "--no-progress", *overrides], limit)
        if self._read_results(part, ok, out, workdir):
            part.detail = "device=cuda (fp32: FEEL has no AMP option); " + tail(out, 1)[:200]

    # ------------------------------------------------------------------ all

    def run(self) -> dict[str, Any]:
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        self.run_part("env", self.part_env)
        build = self.run_part("build", self.part_build)
        built = build.status == "pass"
        for name, fn in [("tests", self.part_tests), ("bench", self.part_bench),
                         ("memcheck", self.part_sanitizer("memcheck")),
                         ("racecheck", self.part_sanitizer("racecheck")),
                         ("selftrain", self.part_selftrain), ("feel", self.part_feel)]:
            if built:
                self.run_part(name, fn)
            else:
                self.parts.append(Part(name, detail="the build failed"))
        summary = {
            "schema": 1,
            "dry_run": self.dry_run,
            "started": started,
            "wall_s": round(time.monotonic() - t0, 1),
            "budget_s": self.budget_s,
            "ok": all(p.status in ("pass", "skipped") for p in self.parts)
            and all(p.status == "pass" for p in self.parts
                    if p.name in REQUIRED and p.detail != NOT_SELECTED),
            "env": self.env_info,
            "parts": {p.name: p.__dict__ for p in self.parts},
            "benchmarks": self.bench_rows,
        }
        with open(os.path.join(self.outdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=str)
        table = format_tables(summary)
        with open(os.path.join(self.outdir, "summary.md"), "w") as f:
            f.write(table + "\n")
        self.log.close()
        return summary


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for pattern in ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda*/bin/compute-sanitizer",
                    "/usr/local/cuda*/compute-sanitizer/compute-sanitizer", "/opt/nvidia/*/compute-sanitizer"):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    return None


def finite_numbers(obj: Any) -> bool:
    if isinstance(obj, float):
        return obj == obj and abs(obj) != float("inf")
    if isinstance(obj, dict):
        return all(finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite_numbers(v) for v in obj)
    return True


def bench_rows(path: str) -> list[dict[str, Any]]:
    """One row per benchmark of pytest-benchmark's JSON: group, backend, milliseconds.

    CUDA entries report the median of CUDA-event timings (``extra_info["cuda_event_ms"]``),
    CPU entries pytest-benchmark's median wall time."""
    with open(path) as f:
        data = json.load(f)
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        ms = info.get("cuda_event_ms", b["stats"]["median"] * 1e3)
        rows.append({"group": b["group"], "backend": info.get("backend", b["name"]),
                     "ms": round(ms, 4), "rounds": b["stats"]["rounds"]})
    return rows


def format_tables(summary: dict[str, Any]) -> str:
    lines = [f"GPU check ({'dry run' if summary['dry_run'] else 'GPU run'}) "
             f"{'OK' if summary['ok'] else 'FAILED'} in {summary['wall_s']} s "
             f"(budget {summary['budget_s']:.0f} s); torch {summary['env'].get('torch')}, "
             f"{summary['env'].get('gpu', 'no GPU')}", "",
             "| part | status | s | limit s | detail |", "|---|---|---|---|---|"]
    for p in summary["parts"].values():
        first = p["detail"].splitlines()[0] if p["detail"] else ""
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']} | {p['limit_s']} | {first[:160]} |")
    groups: dict[str, dict[str, float]] = {}
    for r in summary["benchmarks"]:
        groups.setdefault(r["group"], {})[r["backend"]] = r["ms"]
    if groups:
        lines += ["", "| benchmark | stovtal CUDA ms | torchvision/torch CUDA ms | stovtal CPU ms | "
                  "CUDA vs baseline | CUDA vs CPU |", "|---|---|---|---|---|---|"]
        for g, b in groups.items():
            ours, cpu = b.get("stovtal-cuda"), b.get("stovtal-cpu")
            base = next((v for k, v in b.items() if k.endswith("-cuda") and not k.startswith("stovtal")), None)

            def fmt(x):
                return "-" if x is None else f"{x:.3f}"

            def ratio(a, c):
                return "-" if a is None or c is None or a <= 0 else f"{c / a:.1f}x"
            lines.append(f"| {g} | {fmt(ours)} | {fmt(base)} | {fmt(cpu)} | {ratio(ours, base)} | {ratio(ours, cpu)} |")
    failing = [p for p in summary["parts"].values() if p["status"] in ("fail", "timeout")]
    for p in failing:
        lines += ["", f"--- {p['name']}: {p['status']}", p["detail"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bash tools/gpu_check.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", help="where summary.json, summary.md, gpu_check.log, bench.json and "
                    "tests.xml go (five files, nothing else)")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "gpu-check-work"),
                    help="work folder of the pipeline runs and installed wheels (default %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: the CUDA build, test collection, "
                    "the CPU halves, the JSON")
    ap.add_argument("--skip-build", action="store_true", help="use the stovtal that Python imports now "
                    "(it must have CUDA kernels) instead of building in place")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole run (default %(default)s)")
    ap.add_argument("--arch", default="90", help="CMAKE_CUDA_ARCHITECTURES (default %(default)s: H100/H200)")
    ap.add_argument("--wheels", default=os.path.join(ROOT, ".whl"),
                    help="folder of wheels installed (to OUTDIR.work/site) when omegaconf is missing "
                    "(default: .whl in the repository; fill it with --fetch-wheels)")
    ap.add_argument("--build-dir", help="CMake build folder (default build/gpu-check-smARCH; kept, so "
                    "a second run rebuilds incrementally)")
    ap.add_argument("--only", help="comma-separated parts to run (env and build always run)")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    if only:
        unknown = [s for s in only if s not in LIMITS]
        if unknown:
            ap.error(f"--only: unknown parts {unknown}; parts: {', '.join(LIMITS)}")
        only.append("build")
    checker = Checker(os.path.abspath(args.outdir), args.dry_run, args.budget, args.skip_build,
                      args.arch, args.wheels, only, os.path.abspath(args.work))
    checker.build_dir = os.path.abspath(args.build_dir) if args.build_dir else None
    summary = checker.run()
    print()
    print(format_tables(summary))
    print(f"\nsummary: {os.path.join(checker.outdir, 'summary.json')}  log: {os.path.join(checker.outdir, 'gpu_check.log')}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
