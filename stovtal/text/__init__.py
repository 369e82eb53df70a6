"""Class-name text embeddings: ``python -m stovtal.text encode``.

The command runs :class:`stovtal.models.OpenClipTextEncoder` (the same code the
open-vocabulary classifier uses) over a vocabulary and writes an ``.npz`` with
``names``, ``embeddings`` (float32 ``[K, E]``, unit rows) and ``logit_scale``,
which :class:`stovtal.models.NpzTextEncoder` reads back.
"""

from .encode import encode_vocabulary, read_vocabulary

__all__ = ["encode_vocabulary", "read_vocabulary"]
