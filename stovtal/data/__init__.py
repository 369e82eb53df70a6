"""Data: annotation / prediction / pseudo-label / feature formats with validation, the shipped
vocabularies and class splits, ``VideoFeatureDataset`` + ``collate_videos``, and the built-in
synthetic world (:mod:`stovtal.data.synthetic`)."""

from .dataset import VideoFeatureDataset, collate_videos
from .formats import (
    DataError,
    FeatureGrid,
    feature_path,
    load_annotations,
    load_features,
    load_predictions,
    load_pseudo_labels,
    validate_annotations,
    validate_predictions,
    write_annotations,
    write_predictions,
)
from .splits import ClassSplit, class_split, partition_videos, random_class_split
from .vocab import (
    VOCABULARIES,
    load_embeddings,
    load_vocabulary,
    save_embeddings,
    shipped_text_embeddings,
)

__all__ = [
    "ClassSplit", "DataError", "FeatureGrid", "VOCABULARIES", "VideoFeatureDataset", "class_split",
    "collate_videos", "feature_path", "load_annotations", "load_embeddings", "load_features",
    "load_predictions", "load_pseudo_labels", "load_vocabulary", "partition_videos",
    "random_class_split", "save_embeddings", "shipped_text_embeddings", "validate_annotations",
    "validate_predictions", "write_annotations", "write_predictions",
]
