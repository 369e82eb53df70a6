"""Clustering quality for FEEL: NMI and cluster-to-class accuracy (Hungarian matching)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["contingency", "nmi", "cluster_accuracy"]


def _labels(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    return x


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    """Counts ``[n_classes, n_clusters]`` over the distinct values of each labelling."""
    t, p = _labels(labels_true, "labels_true"), _labels(labels_pred, "labels_pred")
    if len(t) != len(p):
        raise ValueError(f"labels_true and labels_pred differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise ValueError("empty labellings")
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    m = np.zeros((ti.max() + 1, pi.max() + 1), dtype=np.int64)
    np.add.at(m, (ti, pi), 1)
    return m


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Normalised mutual information with arithmetic normalisation, ``MI / mean(H(U), H(V))``,
    in [0, 1]. Two single-cluster labellings give 1.0 (identical partitions)."""
    m = contingency(labels_true, labels_pred).astype(np.float64)
    n = m.sum()
    hu, hv = _entropy(m.sum(1)), _entropy(m.sum(0))
    if hu == 0.0 and hv == 0.0:
        return 1.0
    nz = m > 0
    pij = m[nz] / n
    outer = np.outer(m.sum(1), m.sum(0))[nz] / (n * n)
    mi = float((pij * np.log(pij / outer)).sum())
    denom = 0.5 * (hu + hv)
    return float(np.clip(mi / denom, 0.0, 1.0)) if denom > 0 else 0.0


def cluster_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[float, dict]:
    """Best one-to-one cluster-to-class accuracy (Hungarian matching on the contingency table).

    Returns ``(accuracy, mapping)`` with ``mapping`` {cluster value: class value} for the matched
    clusters (unmatched clusters, when there are more clusters than classes, count as wrong).
    """
    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    m = contingency(t, p)
    rows, cols = linear_sum_assignment(m, maximize=True)
    classes, clusters = np.unique(t), np.unique(p)
    mapping = {clusters[c].item(): classes[r].item() for r, c in zip(rows, cols, strict=True)}
    return float(m[rows, cols].sum() / len(t)), mapping
