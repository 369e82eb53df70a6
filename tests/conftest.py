"""Shared test setup.

Tests import the *installed* stovtal (pytest runs in importlib mode, so the
source tree is never put on sys.path ahead of it). Mark tests that need a GPU
with ``@pytest.mark.cuda``: they are skipped when no CUDA device is present.
"""

import pytest
import torch

import stovtal  # noqa: F401  (loads the operator library)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
