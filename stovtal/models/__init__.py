"""Models: the class-agnostic localizer, the open-vocabulary classifier, text encoders, CoLA."""

from .classifier import ClassifierConfig, OpenVocabClassifier, Vocabulary, fuse_scores, to_results
from .cola import CoLA, CoLAConfig, cola_losses
from .localizer import ActionLocalizer, LocalizerConfig, LocalizerOutput
from .postprocess import NMSConfig
from .text_encoders import NpzTextEncoder, OpenClipTextEncoder, TextEncoder

__all__ = [
    "ActionLocalizer",
    "ClassifierConfig",
    "CoLA",
    "CoLAConfig",
    "LocalizerConfig",
    "LocalizerOutput",
    "NMSConfig",
    "NpzTextEncoder",
    "OpenClipTextEncoder",
    "OpenVocabClassifier",
    "TextEncoder",
    "Vocabulary",
    "cola_losses",
    "fuse_scores",
    "to_results",
]
