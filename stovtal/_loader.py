"""Locate and load the compiled operator library, exactly once.

The library (``_C.so``) and the facts recorded when it was built
(``_build_info.py``) are installed side by side in the package directory.
When the package is imported from a source checkout that has no build of its
own (e.g. ``python -m stovtal.selftrain`` run from the repository root after
``pip install .``), the installed copy of the library is used instead.

The library is built against one torch; loading it into another gives
undefined symbols or silently wrong schemas. So the torch version recorded at
build time is compared with the one imported now, and a mismatch raises an
ImportError that says how to rebuild.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from types import ModuleType

import torch

_LIB_NAME = "_C.so"
_INFO_NAME = "_build_info.py"
_loaded_path: str | None = None

REBUILD_HINT = (
    "Rebuild stovtal against the torch you run with, from the source tree:\n"
    "    pip install --no-build-isolation --force-reinstall --no-deps .\n"
    "(install scikit-build-core and ninja into the environment first)."
)


def _candidate_dirs() -> list[str]:
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    try:
        installed = importlib.metadata.distribution("stovtal").locate_file("stovtal")
        dirs.append(os.path.abspath(str(installed)))
    except importlib.metadata.PackageNotFoundError:
        pass
    return dirs


def _library_dir() -> str:
    for d in _candidate_dirs():
        if os.path.exists(os.path.join(d, _LIB_NAME)) and os.path.exists(os.path.join(d, _INFO_NAME)):
            return d
    raise ImportError(
        "stovtal's compiled operator library was not found (looked for "
        f"{_LIB_NAME} and {_INFO_NAME} in: {', '.join(_candidate_dirs())}).\n"
        "Install the package with pip (which compiles it), or build it into the source tree "
        "with tools/build_inplace.sh.\n" + REBUILD_HINT
    )


def library_path() -> str:
    return os.path.join(_library_dir(), _LIB_NAME)


_info_module: ModuleType | None = None


def _build_info() -> ModuleType:
    global _info_module
    if _info_module is None:
        path = os.path.join(_library_dir(), _INFO_NAME)
        spec = importlib.util.spec_from_file_location("stovtal._build_info", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _info_module = module
    return _info_module


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
    try:
        torch.ops.load_library(path)
    except OSError as exc:
        raise ImportError(f"could not load stovtal's operator library {path}: {exc}\n" + REBUILD_HINT) from exc
    _loaded_path = path


def build_info() -> dict:
    """Facts recorded at build time (torch version, CUDA on/off, architectures, OpenMP: whether
    the CPU kernels' ``at::parallel_for`` loops use torch's threads)."""
    info = _build_info()
    return {
        "torch_version": info.TORCH_VERSION,
        "torch_cuda_version": None if info.TORCH_CUDA_VERSION == "None" else info.TORCH_CUDA_VERSION,
        "with_cuda": info.WITH_CUDA,
        "with_openmp": getattr(info, "WITH_OPENMP", False),
        "cuda_architectures": info.CUDA_ARCHITECTURES or None,
        "build_type": info.BUILD_TYPE,
        "library": _loaded_path,
    }
