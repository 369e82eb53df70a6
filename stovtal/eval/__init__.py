"""Evaluation: detection mAP (ActivityNet protocol), the open-vocabulary CB / CN / GZSL
breakdown, localisation recall / AR@AN / class-agnostic mAP, clustering NMI / accuracy, and the
results table."""

from .clustering import cluster_accuracy, nmi
from .detection import detection_map
from .openvocab import open_vocab_breakdown
from .proposals import localization_metrics
from .table import format_results_table

__all__ = [
    "cluster_accuracy", "detection_map", "format_results_table", "localization_metrics", "nmi",
    "open_vocab_breakdown",
]
