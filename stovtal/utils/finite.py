"""Every number of a configuration must be finite: NaN and +-Inf are refused by key.

A NaN passes every range check written as ``if x < lo: raise`` (all comparisons with NaN are
false) and then silently changes results (a NaN threshold keeps nothing, a NaN weight decay
poisons the weights). :func:`non_finite_keys` walks a whole configuration (dataclasses, dicts,
lists) and names every float that is not finite by its dotted key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["check_finite", "non_finite_keys"]


def non_finite_keys(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """``(dotted key, value)`` of every non-finite float in ``obj`` (list items as ``key[i]``)."""
    out: list[tuple[str, float]] = []
    if isinstance(obj, bool):
        return out
    if isinstance(obj, float):
        if not math.isfinite(obj):
            out.append((prefix, obj))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out += non_finite_keys(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out += non_finite_keys(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += non_finite_keys(v, f"{prefix}[{i}]")
    return out


def check_finite(obj: Any, error: type[Exception] = ValueError, prefix: str = "") -> None:
    """Raise ``error`` naming the first non-finite number of ``obj`` by its dotted key."""
    bad = non_finite_keys(obj, prefix)
    if bad:
        key, value = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(k for k, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise error(f"{key}: must be a finite number, got {value}{more}")
