"""stovtal: open-vocabulary temporal action localization with web-scale
self-training (STOV-TAL) and unsupervised TAL (FEEL), on custom C++/CUDA ops.

``import stovtal`` imports torch first (the compiled library has no RUNPATH to
libtorch) and loads the operator library once; ``stovtal.ops`` is the
``torchvision.ops``-like face of the kernels. Imported before torch, it sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it (see below).
"""

import os
import sys

if "torch" not in sys.modules:
    # Idle OpenMP workers sleep instead of spinning (read once, when torch loads its OpenMP
    # runtime). On a CPU shared with other jobs spinning workers stall every parallel region
    # (measured 10-100x slower training; tools/thread_study.py); on an idle machine the cost is
    # small. Set OMP_WAIT_POLICY yourself (e.g. ACTIVE) to choose otherwise.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402, F401  (must precede loading the extension)

from . import _loader  # noqa: E402

_loader.load_library()

from . import ops  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]
