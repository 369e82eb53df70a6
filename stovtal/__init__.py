"""stovtal: open-vocabulary temporal action localization with web-scale
self-training (STOV-TAL) and unsupervised TAL (FEEL), on custom C++/CUDA ops.

``import stovtal`` imports torch first (the compiled library has no RUNPATH to
libtorch) and loads the operator library once; ``stovtal.ops`` is the
``torchvision.ops``-like face of the kernels.
"""

import torch  # noqa: F401  (must precede loading the extension)

from . import _loader  # noqa: E402

_loader.load_library()

from . import ops  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]
