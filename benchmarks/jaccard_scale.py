"""Scale run of jaccard_distance_topk: N = 332,000 (the paper's full web scale), D = 256, k1 = 20, k2 = 6,
m = 50, float32, CPU. Prints wall time and peak RSS (total and beyond the
features) as one JSON line, and the process's CPU time during the call
(user + system, all threads): on a machine shared with other jobs the wall
time mostly measures the others, while ``cpu_seconds / threads`` is the wall
time the call would take with its threads alone on the cores.

    PYTHONPATH=. python benchmarks/jaccard_scale.py [--n 332000] [--threads 2]

Also selectable as a benchmark: STOVTAL_BENCH_SCALE=1 pytest
benchmarks/test_bench_jaccard.py -k scale --benchmark-only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

import stovtal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rss import peak_rss_bytes, reset_peak_rss  # noqa: E402


def clustered_features(n: int, d: int, clusters: int, seed: int = 0) -> torch.Tensor:
    """L2-normalised float32 points around random centres, built in chunks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    out = torch.empty(n, d)
    for r0 in range(0, n, 65536):
        r1 = min(n, r0 + 65536)
        labels = torch.randint(0, clusters, (r1 - r0,), generator=g)
        chunk = centres[labels] + 0.6 * torch.randn(r1 - r0, d, generator=g)
        out[r0:r1] = torch.nn.functional.normalize(chunk, dim=1)
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=332_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--m", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = clustered_features(args.n, args.d, clusters=max(1, args.n // 100))
    setup_peak = peak_rss_bytes()
    base = reset_peak_rss()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    dist, idx = stovtal.ops.jaccard_distance_topk(x, args.k1, args.k2, args.m)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    peak = max(setup_peak, peak_rss_bytes())
    print(json.dumps({
        "n": args.n, "d": args.d, "k1": args.k1, "k2": args.k2, "m": args.m,
        "threads": args.threads, "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_bytes": peak, "peak_rss_beyond_setup_bytes": peak_rss_bytes() - base,
        "features_bytes": x.numel() * x.element_size(),
        "mean_dist_at_rank_1": float(dist[:, 1].mean()),
        "fraction_below_1": float((dist < 1).float().mean()),
        "self_first": float((idx[:, 0] == torch.arange(args.n)).float().mean()),
    }))


if __name__ == "__main__":
    main()
