"""Locate and load the compiled operator library, exactly once.

The library is built against one torch; loading it into another gives
undefined symbols or silently wrong schemas. So the torch version recorded at
build time is compared with the one imported now, and a mismatch raises an
ImportError that says how to rebuild.
"""

from __future__ import annotations

import os

import torch

_LIB_NAME = "_C.so"
_loaded_path: str | None = None

REBUILD_HINT = (
    "Rebuild stovtal against the torch you run with, from the source tree:\n"
    "    pip install --no-build-isolation --force-reinstall --no-deps .\n"
    "(install scikit-build-core and ninja into the environment first)."
)


def library_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIB_NAME)


def _build_info():
    try:
        from . import _build_info
    except ImportError as exc:  # pragma: no cover - only for broken installs
        raise ImportError(
            "stovtal's compiled operator library was not built (stovtal/_build_info.py is "
            "missing). Install the package with pip rather than importing the source tree.\n"
            + REBUILD_HINT
        ) from exc
    return _build_info


def check_torch_version() -> None:
    info = _build_info()
    if info.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"stovtal was built against torch {info.TORCH_VERSION}, but torch "
            f"{torch.__version__} is imported. The C++ operators are tied to the torch "
            f"they were compiled with.\n" + REBUILD_HINT
        )


def load_library() -> None:
    global _loaded_path
    if _loaded_path is not None:
        return
    check_torch_version()
    path = library_path()
    if not os.path.exists(path):
        raise ImportError(f"stovtal's operator library {path} is missing.\n" + REBUILD_HINT)
    try:
        torch.ops.load_library(path)
    except OSError as exc:
        raise ImportError(f"could not load stovtal's operator library {path}: {exc}\n" + REBUILD_HINT) from exc
    _loaded_path = path


def build_info() -> dict:
    """Facts recorded at build time (torch version, CUDA on/off, architectures)."""
    info = _build_info()
    return {
        "torch_version": info.TORCH_VERSION,
        "torch_cuda_version": None if info.TORCH_CUDA_VERSION == "None" else info.TORCH_CUDA_VERSION,
        "with_cuda": info.WITH_CUDA,
        "cuda_architectures": info.CUDA_ARCHITECTURES or None,
        "build_type": info.BUILD_TYPE,
        "library": _loaded_path,
    }
