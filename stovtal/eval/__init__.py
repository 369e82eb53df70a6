"""Evaluation: detection mAP (ActivityNet protocol), the open-vocabulary CB / CN / GZSL
breakdown, localisation recall / AR@AN / class-agnostic mAP, and clustering NMI / accuracy."""

from .clustering import cluster_accuracy, nmi
from .detection import detection_map
from .openvocab import open_vocab_breakdown
from .proposals import localization_metrics

__all__ = ["cluster_accuracy", "detection_map", "localization_metrics", "nmi", "open_vocab_breakdown"]
