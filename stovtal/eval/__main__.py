"""``python -m stovtal.eval``: score a prediction file against ground truth.

    python -m stovtal.eval --gt gt.json --pred pred.json [--subset validation]
        [--tiou 0.3:0.7:0.1] [--split kinetics --dataset thumos14 [--split-seed 0]
        [--pred-base pb.json] [--pred-novel pn.json]] [--localization] [--strict]
        [--out result.json]

Without ``--split``: detection mAP per tIoU. With ``--split``: the open-vocabulary breakdown
(GZSL from ``--pred``, CB from ``--pred-base``, CN from ``--pred-novel``). ``--localization``
adds the class-agnostic metrics of ``--pred``. The printed table and ``--out`` JSON hold the
same numbers (fractions in [0, 1]; the table shows percentages). The protocol is ActivityNet's
(``Evaluation/eval_detection.py``): a prediction on a video absent from the ground truth, or
with end <= start, is a false positive (the latter with a warning giving the count; ``--strict``
makes an end < start an error); the ground truth needs no ``duration``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

from stovtal.data.formats import load_annotations, load_predictions
from stovtal.data.splits import SPLIT_DATASETS, SPLIT_KINDS, class_split
from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.fileio import atomic_write_json
from stovtal.utils.threads import add_threads_flag, apply_threads_flag

from .detection import detection_map
from .openvocab import open_vocab_breakdown
from .proposals import localization_metrics
from .table import format_results_table


def parse_tious(text: str) -> list[float]:
    """``"0.3:0.7:0.1"`` (inclusive range) or ``"0.3,0.5,0.7"``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            return [round(float(x), 6) for x in np.arange(start, stop + step / 2, step)]
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--tiou: expected start:stop:step or a comma list, got {text!r}") from None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stovtal.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="annotation JSON")
    p.add_argument("--pred", required=True, help="prediction JSON (full vocabulary)")
    p.add_argument("--subset", default=None, help="evaluate videos of this subset only")
    p.add_argument("--tiou", default="0.3:0.7:0.1")
    p.add_argument("--split", default=None, choices=SPLIT_KINDS)
    p.add_argument("--dataset", default=None, choices=SPLIT_DATASETS)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--pred-base", default=None, help="predictions with the base vocabulary (CB)")
    p.add_argument("--pred-novel", default=None, help="predictions with the novel vocabulary (CN)")
    p.add_argument("--localization", action="store_true", help="add class-agnostic metrics")
    p.add_argument("--strict", action="store_true",
                   help="a prediction with end < start is an error (default: a false positive)")
    p.add_argument("--out", default=None, help="write the result dict as JSON")
    add_threads_flag(p)
    add_debug_flag(p)
    args = p.parse_args(argv)
    apply_threads_flag(args)
    tious = parse_tious(args.tiou)
    gt = load_annotations(args.gt, subset=args.subset, require_duration=False)
    if not gt["database"]:
        raise ValueError(f"{args.gt}: no videos" + (f" in subset {args.subset!r}" if args.subset else ""))
    allow = not args.strict
    pred = load_predictions(args.pred, allow_reversed=allow)
    result: dict[str, Any] = {"tiou_thresholds": tious}
    if args.split:
        if not args.dataset:
            raise ValueError("--split needs --dataset")
        split = class_split(args.dataset, args.split, args.split_seed)
        pb = load_predictions(args.pred_base, allow_reversed=allow) if args.pred_base else None
        pn = load_predictions(args.pred_novel, allow_reversed=allow) if args.pred_novel else None
        res = open_vocab_breakdown(gt, tious, split.base, split.novel, gzsl=pred, cb=pb, cn=pn,
                                   strict=args.strict)
        result.update(res, split=split.to_dict())
        print(f"videos: {res['partition']}")
        missing = [k for k in ("CB", "CN", "GZSL") if res[k] is None]
        if missing:
            print(f"not evaluated (no predictions or no such videos): {', '.join(missing)}")
    else:
        res = detection_map(gt, pred, tious, strict=args.strict)
        result.update(res)
    print(format_results_table({os.path.basename(args.pred): res}, tious))
    if args.localization:
        loc = localization_metrics(gt, pred)
        result["localization"] = loc
        print("localization: " + ", ".join(
            f"{k} {100 * v:.2f}" for k, v in loc.items() if k.startswith(("recall", "AR"))))
        print(f"class-agnostic average mAP (0.5:0.95): {100 * loc['class_agnostic_average_mAP']:.2f}")
    if args.out:
        atomic_write_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
