"""Benchmark helpers. Run: ``pytest benchmarks --benchmark-only``.

``peak_rss`` measures peak memory of a snippet in a fresh Python process
(torch's caching allocator and glibc keep freed memory, so in-process
counters mislead); benchmarks store it in ``benchmark.extra_info``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import stovtal  # noqa: F401  (loads the operator library)

_FIRST_CALL = """
import gc, resource, torch, stovtal
torch.set_num_threads({threads})
{setup}
gc.collect()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{call}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) * 1024)
"""


def peak_rss_first_call(setup: str, call: str, threads: int = 2) -> int:
    """Bytes by which peak RSS grows during the first ``call`` after ``setup``."""
    code = _FIRST_CALL.format(setup=textwrap.dedent(setup), call=call, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def peak_rss():
    return peak_rss_first_call
