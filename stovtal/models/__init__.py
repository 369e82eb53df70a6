"""Models: localizer, open-vocabulary classifier, text encoders, CoLA."""

from .text_encoders import NpzTextEncoder, OpenClipTextEncoder, TextEncoder

__all__ = ["TextEncoder", "OpenClipTextEncoder", "NpzTextEncoder"]
