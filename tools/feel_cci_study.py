"""Does FEEL's CCI improve on plain k-means? A study on the built-in world's video-level features.

For each synthetic world (in memory, nothing written) the web videos' mean snippet features
(FEEL's iteration-1 input) are clustered with k-means and refined with CCI, and the script
prints, against the hidden labels:

- ``knn_purity``: the fraction of each video's ``--knn`` nearest videos (cosine) of its own
  class. CCI's Jaccard distance is built from these neighbourhoods, so it can only correct
  k-means where they are purer than k-means' own assignment.
- ``nmi_kmeans`` / ``nmi_cci`` (and their difference) per k-means seed, and k-means' accuracy
  (Hungarian matching of clusters to classes) to set beside ``knn_purity``.
- ``precision@p``: of the ``p`` most confident videos per cluster (as IIS selects them), the
  fraction whose true class is the cluster's majority class, for the Euclidean margin of plain
  k-means (``cci_refine`` with ``lam=0``, as ``cluster.lam=0`` runs) and the combined-distance
  margin of CCI (random selection gives the overall purity).

Usage: ``python tools/feel_cci_study.py --world-seeds 7 8 --num-web 300 1000``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from stovtal.data.synthetic import SyntheticConfig, SyntheticWorld
from stovtal.eval import cluster_accuracy, nmi
from stovtal.feel.cci import cci_refine
from stovtal.feel.iis import select_per_cluster
from stovtal.feel.kmeans import kmeans


def video_features(world_seed: int, num_web: int) -> tuple[torch.Tensor, np.ndarray]:
    """Unit mean snippet features ``[N, D]`` (float64) and true class indices ``[N]``."""
    world = SyntheticWorld(SyntheticConfig(seed=world_seed, num_train=0, num_web=num_web, num_test=0,
                                           web_classes_per_video=(1.0,), web_profile="target"))
    feats, labels = [], []
    for video in world.iter_videos("web"):
        feats.append(video["feats"].mean(0))
        labels.append(world.classes.index(video["annotations"][0]["label"]))
    return F.normalize(torch.from_numpy(np.stack(feats)).double(), dim=1), np.asarray(labels)


def knn_purity(x: torch.Tensor, labels: np.ndarray, k: int) -> float:
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    nn = d.topk(k, dim=1, largest=False).indices.numpy()
    return float((labels[nn] == labels[:, None]).mean())


def selection_precision(labels: np.ndarray, clusters: torch.Tensor, confidence: torch.Tensor, p: float) -> float:
    c = clusters.numpy()
    majority = {k: np.bincount(labels[c == k]).argmax() for k in np.unique(c)}
    keep = select_per_cluster(clusters, confidence, p).numpy()
    return float(np.mean([majority[k] == t for k, t in zip(c[keep], labels[keep], strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world-seeds", type=int, nargs="+", default=[7])
    ap.add_argument("--num-web", type=int, nargs="+", default=[300])
    ap.add_argument("--seeds", type=int, default=3, help="k-means seeds per world")
    ap.add_argument("--num-clusters", type=int, default=20)
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--knn", type=int, default=5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    args = ap.parse_args()

    for n in args.num_web:
        for ws in args.world_seeds:
            x, y = video_features(ws, n)
            print(f"world {ws}, {n} videos: {args.knn}-NN purity {knn_purity(x, y, args.knn):.3f}", flush=True)
            for s in range(args.seeds):
                km = kmeans(x, args.num_clusters, 10, 300, seed=s)
                cci = cci_refine(x, km.centroids, args.k1, args.k2, args.lam)
                plain = cci_refine(x, km.centroids, lam=0.0)  # CCI off: the pipeline's ablation
                a, b = nmi(y, km.labels.numpy()), nmi(y, cci.labels.numpy())
                prec = "  ".join(
                    f"precision@{p:g} k-means {selection_precision(y, plain.labels, plain.confidence, p):.3f}"
                    f" CCI {selection_precision(y, cci.labels, cci.confidence, p):.3f}"
                    for p in args.fractions)
                acc = cluster_accuracy(y, km.labels.numpy())[0]
                print(f"  seed {s}: acc_kmeans {acc:.3f} nmi_kmeans {a:.4f} nmi_cci {b:.4f} ({b - a:+.4f})  {prec}",
                      flush=True)


if __name__ == "__main__":
    main()
