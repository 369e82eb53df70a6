"""Detection mAP, 5,000 videos x 200 predictions x 20 classes x 10 tIoU thresholds:
``stovtal.eval.detection_map`` (vectorised) vs the per-threshold, per-class loop reference.

Run: pytest benchmarks/test_bench_map.py --benchmark-only
Both see the same data; validation of the inputs is included in our timing.
The loop reference takes minutes, so it runs one round.
"""

import numpy as np
import pytest

from stovtal.eval import detection_map
from stovtal.eval.reference import detection_map_reference

V, P, K = 5000, 200, 20
TIOUS = np.round(np.arange(0.5, 0.951, 0.05), 2).tolist()
GROUP = "detection-map-5000v-200p-20c-10t"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    classes = [f"c{k}" for k in range(K)]
    db, res = {}, {}
    for v in range(V):
        n = int(rng.integers(1, 11))
        starts = rng.uniform(0, 180, n)
        lens = rng.uniform(1, 20, n)
        labels = rng.integers(0, K, n)
        db[f"v{v}"] = {"subset": "test", "duration": 200.0, "annotations": [
            {"segment": [float(s), float(s + ln)], "label": classes[c]}
            for s, ln, c in zip(starts, lens, labels, strict=True)]}
        # half near ground truth, half random
        pick = rng.integers(0, n, P // 2)
        jit = rng.normal(0, 2, (P // 2, 2))
        near = np.stack([starts[pick], starts[pick] + lens[pick]], 1) + jit
        rs = rng.uniform(0, 180, P // 2)
        rand = np.stack([rs, rs + rng.uniform(1, 20, P // 2)], 1)
        segs = np.sort(np.concatenate([near, rand]), axis=1)
        lab = np.concatenate([np.where(rng.random(P // 2) < 0.7, labels[pick], rng.integers(0, K, P // 2)),
                              rng.integers(0, K, P // 2)])
        scores = rng.random(P)
        res[f"v{v}"] = [{"segment": [float(a), float(b)], "label": classes[c], "score": float(s)}
                        for (a, b), c, s in zip(segs, lab, scores, strict=True)]
    return {"database": db}, {"results": res}


@pytest.mark.benchmark(group=GROUP)
def test_stovtal(benchmark, data):
    gt, pred = data
    out = benchmark.pedantic(detection_map, args=(gt, pred, TIOUS), rounds=3, iterations=1)
    assert len(out["mAP"]) == 10


@pytest.mark.benchmark(group=GROUP)
def test_reference_loops(benchmark, data):
    gt, pred = data
    out = benchmark.pedantic(detection_map_reference, args=(gt, pred, TIOUS), rounds=1, iterations=1)
    ours = detection_map(gt, pred, TIOUS)
    assert np.allclose(out["mAP"], ours["mAP"], atol=1e-9)
