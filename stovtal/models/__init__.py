"""Models: the class-agnostic localizer, the open-vocabulary classifier, text encoders, CoLA."""

from .classifier import ClassifierConfig, OpenVocabClassifier, Vocabulary, fuse_scores, to_results
from .localizer import ActionLocalizer, LocalizerConfig, LocalizerOutput
from .postprocess import NMSConfig
from .text_encoders import NpzTextEncoder, OpenClipTextEncoder, TextEncoder

__all__ = [
    "ActionLocalizer",
    "ClassifierConfig",
    "LocalizerConfig",
    "LocalizerOutput",
    "NMSConfig",
    "NpzTextEncoder",
    "OpenClipTextEncoder",
    "OpenVocabClassifier",
    "TextEncoder",
    "Vocabulary",
    "fuse_scores",
    "to_results",
]
