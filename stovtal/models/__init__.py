"""Models of STOV-TAL: the class-agnostic localizer and the open-vocabulary classifier."""

from .classifier import ClassifierConfig, OpenVocabClassifier, Vocabulary, fuse_scores, to_results
from .localizer import ActionLocalizer, LocalizerConfig, LocalizerOutput
from .postprocess import NMSConfig

__all__ = [
    "ActionLocalizer",
    "ClassifierConfig",
    "LocalizerConfig",
    "LocalizerOutput",
    "NMSConfig",
    "OpenVocabClassifier",
    "Vocabulary",
    "fuse_scores",
    "to_results",
]
