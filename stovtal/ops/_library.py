"""What the loaded operator library provides: its ops and their backends."""

from __future__ import annotations

import torch

from .. import _loader

NAMESPACE = "stovtal"


def registered_ops() -> list[str]:
    """Qualified names (``stovtal::name``) of every op the library defines."""
    prefix = NAMESPACE + "::"
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix))


def has_kernel(op: str, backend: str) -> bool:
    """Whether ``op`` (qualified name) has a kernel for ``backend`` (e.g. ``"CUDA"``)."""
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(op, backend))


def info() -> dict:
    """Which backends were compiled, per op, plus the build facts.

    Returns a dict with ``version``, ``backends`` (backends every op has a
    kernel for), ``ops`` (op -> list of backends) and ``build`` (torch version
    built against, CUDA on/off, CUDA architectures).
    """
    from .. import __version__

    ops = {op: [b for b in ("CPU", "CUDA") if has_kernel(op, b)] for op in registered_ops()}
    common = [b for b in ("CPU", "CUDA") if ops and all(b in v for v in ops.values())]
    return {"version": __version__, "backends": common, "ops": ops, "build": _loader.build_info()}
