"""The results table of every app: ``train``, ``infer --eval``, ``selftrain`` (its report) and
``python -m stovtal.eval``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_results_table"]

SETTINGS = ("CB", "CN", "GZSL")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _rows(result: Mapping[str, Any]) -> list[tuple[str, Sequence[float | None], float | None]]:
    """(setting, mAP per tIoU, average) of one evaluation, for the settings it has."""
    if not any(k in result for k in SETTINGS):  # a plain detection result
        return [("detection", result["mAP"], result["average_mAP"])]
    rows = []
    for key in SETTINGS:
        r = result.get(key)
        if r is not None:
            rows.append((key, r["mAP"], r["average_mAP"]))
    g = result.get("GZSL")
    if g is not None:
        for key, per, avg in (("GZSL base", "base_mAP", "average_base_mAP"),
                              ("GZSL novel", "novel_mAP", "average_novel_mAP"),
                              ("GZSL HM", "harmonic_mAP", "average_harmonic_mAP")):
            if g.get(per) is not None and g.get(avg) is not None:
                rows.append((key, g[per], g[avg]))
    if result.get("class_agnostic") is not None:
        r = result["class_agnostic"]
        rows.append(("class-agnostic", r["mAP"], r["average_mAP"]))
    return rows


def format_results_table(results: Mapping[str, Mapping[str, Any]], tious: Sequence[float]) -> str:
    """The results table: one row per model and setting, mAP (%) per tIoU and the average.

    ``results``: model name -> an evaluation with ``CB`` / ``CN`` / ``GZSL`` entries
    ``{"mAP": [per tIoU], "average_mAP"}`` (:func:`stovtal.eval.open_vocab_breakdown`'s,
    :func:`stovtal.engine.evaluation.evaluate_localizer`'s, or a compact record of them); a
    setting that is None is left out; GZSL's ``base_mAP`` / ``novel_mAP`` / ``harmonic_mAP``
    and a ``class_agnostic`` entry add rows when present. A plain :func:`detection_map` result
    is one row, ``detection``. None values print as n/a. With several models, a last line gives each later model's average mAP minus
    the first model's, in points.
    """
    names = list(results)
    width = max(len("model"), *(len(n) for n in names))
    head = f"{'model':<{width}}  {'setting':<14}" + "".join(f" {f'@{t:g}':>6}" for t in tious) + "     avg"
    lines = [head, "-" * len(head)]
    for name in names:
        for setting, per, avg in _rows(results[name]):
            lines.append(f"{name:<{width}}  {setting:<14}" + "".join(f" {_pct(v):>6}" for v in per)
                         + f"  {_pct(avg):>6}")
    if len(names) > 1:
        lines.append("-" * len(head))
        first = {s: avg for s, _, avg in _rows(results[names[0]])}
        for name in names[1:]:
            deltas = [f"{s} {'n/a' if avg is None or first.get(s) is None else f'{100 * (avg - first[s]):+.2f}'}"
                      for s, _, avg in _rows(results[name]) if s in first]
            lines.append(f"{name} - {names[0]}, avg mAP points: " + ", ".join(deltas))
    return "\n".join(lines)
