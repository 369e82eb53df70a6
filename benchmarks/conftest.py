"""Benchmark helpers. Run: ``pytest benchmarks --benchmark-only``.

``peak_rss`` measures peak memory of a snippet in a fresh Python process
(torch's caching allocator and glibc keep freed memory, so in-process
counters mislead); benchmarks store it in ``benchmark.extra_info``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import stovtal  # noqa: F401  (loads the operator library)

HERE = os.path.dirname(os.path.abspath(__file__))

_FIRST_CALL = """
import gc, sys, torch, stovtal
sys.path.insert(0, {here!r})
from _rss import peak_rss_bytes, reset_peak_rss
torch.set_num_threads({threads})
{setup}
gc.collect()
base = reset_peak_rss()
{call}
print(peak_rss_bytes() - base)
"""


def peak_rss_first_call(setup: str, call: str, threads: int = 2) -> int:
    """Bytes by which peak RSS rises above the RSS held after ``setup`` during the first ``call``."""
    code = _FIRST_CALL.format(setup=textwrap.dedent(setup), call=call, threads=threads, here=HERE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def peak_rss():
    return peak_rss_first_call
