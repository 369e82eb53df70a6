"""``python -m stovtal.infer``: open-vocabulary detection with a trained localizer.

The vocabulary is an input: pass any class names the text encoder knows
(``--classes`` or ``--vocab-file``); default: base + novel classes of the config.

    python -m stovtal.infer --ckpt runs/base/best.pt --out pred.json
    python -m stovtal.infer --ckpt runs/selftrain/retrain/n300/teacher.pt --out pred.json --eval
    python -m stovtal.infer --ckpt best.pt --out pred.json --classes "Diving,High Jump" --eval

``--ckpt`` is any localizer file stovtal writes (:func:`stovtal.engine.checkpoint.load_model`):
a model file of ``selftrain`` or ``convert`` (it carries its model config, and the run config when
the app knows it) or a training state of ``train`` (``best.pt`` / ``last.pt``).

A FEEL model file (``<workdir>/ckpt/iter_<t>.pt`` of ``python -m stovtal.feel``, kind ``"cola"``)
runs FEEL's own CoLA inference on the subset (default: the FEEL config's ``data.test_subset``) and
labels each segment with the class FEEL matched its cluster to (the Hungarian mapping stored in
the file; segments of unmatched clusters are dropped), exactly as FEEL's
``predictions_iter<t>.json``. Its vocabulary is fixed by the clustering: ``--classes`` and
``--vocab-file`` are refused; ``--eval`` prints FEEL's metric (cluster-matched mAP per tIoU and
the average) instead of CB / CN / GZSL. The data come from the run config the file carries;
files of FEEL versions that did not store it need ``--config`` (FEEL's YAML, or ``default`` for
FEEL's defaults) with the run's ``key=value`` overrides (``workdir=`` locates the synthetic world).

    python -m stovtal.infer --ckpt runs/feel/ckpt/iter_4.pt --out pred.json --eval

A checkpoint trained with ``classifier.adapter=true`` carries the classifier's base-class adapter,
which is then used; ``classifier.adapter=false`` on the command line classifies zero-shot instead.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from stovtal.config import Config, load, load_config, validate
from stovtal.data.resolve import resolve_data
from stovtal.engine import classify_segments, predict_segments, resolve_device
from stovtal.engine.adapter import classifier_from_checkpoint
from stovtal.engine.builders import (
    build_dataset,
    build_loader,
    build_vocabulary,
    subset_database,
)
from stovtal.engine.checkpoint import ModelFile, load_model
from stovtal.engine.run import evaluate_on_test, localizer_from_file
from stovtal.eval.table import format_results_table
from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.fileio import atomic_write_json
from stovtal.utils.threads import apply_threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stovtal.infer",
        description="Detect actions of any vocabulary in a subset's videos; writes ActivityNet-format "
        "predictions. The run configuration comes from the checkpoint unless --config is given.",
    )
    p.add_argument("--ckpt", required=True, help="a model file of selftrain / convert / feel, or a training "
                   "state of python -m stovtal.train (best.pt / last.pt)")
    p.add_argument("--out", required=True, help="predictions JSON to write")
    p.add_argument("--config", default=None, help="YAML or shipped config name (default: the checkpoint's; a FEEL "
                   "model: FEEL's YAML or 'default')")
    p.add_argument("--subset", default=None, help="subset to run on (default: the config's test subset; '' = all)")
    p.add_argument("--classes", default=None, help="comma-separated class names (the vocabulary to detect)")
    p.add_argument("--vocab-file", default=None, help="text file with one class name per line")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="which weights of a training state to use (a model file holds one set)")
    p.add_argument("--eval", action="store_true",
                   help="also print CB / CN / GZSL mAP of the config's split on the subset (a FEEL model: "
                   "FEEL's cluster-matched mAP; needs ground truth)")
    p.add_argument("--eval-json", default=None, help="with --eval: also write the metrics to this JSON file")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    add_debug_flag(p)
    return p


def _vocab_names(args: argparse.Namespace, default: list[str]) -> list[str]:
    if args.classes and args.vocab_file:
        raise ValueError("give either --classes or --vocab-file, not both")
    if args.classes:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
    elif args.vocab_file:
        if not os.path.isfile(args.vocab_file):
            raise FileNotFoundError(f"{args.vocab_file}: vocabulary file not found")
        with open(args.vocab_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        names = list(default)
    if not names:
        raise ValueError(f"{args.vocab_file}: the vocabulary file is empty" if args.vocab_file
                         else "--classes: the vocabulary is empty")
    return names


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mf = load_model(args.ckpt, args.weights)
    if mf.kind == "cola":
        return _infer_cola(args, mf)
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        if "run_config" not in mf.meta:
            raise ValueError(f"{args.ckpt}: the checkpoint carries no run config; pass --config")
        cfg = load(Config, None, args.overrides, stored=mf.meta["run_config"])
        validate(cfg)
    apply_threads(cfg.num_threads, log=lambda s: print(s, file=sys.stderr))
    device = resolve_device(args.device)
    spec = resolve_data(cfg.data)
    subset = spec.test_subset if args.subset is None else args.subset
    model = localizer_from_file(mf, cfg, spec, args.ckpt).to(device).eval()
    names = _vocab_names(args, spec.classes)
    vocab = build_vocabulary(cfg, spec, names)
    classifier = classifier_from_checkpoint(cfg, spec, mf.meta, args.ckpt)
    loader = build_loader(build_dataset(spec, subset), cfg.eval.batch_size, cfg.train.num_workers)
    proposals = predict_segments(model, loader, classifier=classifier, progress=True, desc=f"infer {subset or 'all'}")
    preds = classify_segments(proposals, classifier, vocab)
    atomic_write_json(args.out, preds)
    n = sum(len(v) for v in preds["results"].values())
    print(f"wrote {n} detections of {len(names)} classes for {len(proposals)} videos to {args.out}", file=sys.stderr)
    if args.eval:
        db = subset_database(spec, subset)
        if not any(info.get("annotations") for info in db.values()):
            raise ValueError(f"subset {subset!r} has no ground truth to evaluate")
        results = evaluate_on_test(cfg, spec, model, subset=subset, classifier=classifier)
        assert results is not None  # one process
        print(format_results_table({os.path.basename(args.ckpt): results}, list(cfg.eval.tiou_thresholds)))
        if args.eval_json:
            atomic_write_json(args.eval_json, results, indent=1)
    return 0


def _infer_cola(args: argparse.Namespace, mf: ModelFile) -> int:
    """A FEEL (CoLA) model: FEEL's inference and labelling, see the module docstring."""
    from stovtal.config import FeelConfig
    from stovtal.engine.checkpoint import build_model
    from stovtal.eval import detection_map
    from stovtal.feel.config import load_config as load_feel_config
    from stovtal.feel.data import load_feel_subset
    from stovtal.feel.pipeline import cluster_predictions, localize_videos

    if args.classes or args.vocab_file:
        raise ValueError(f"{args.ckpt}: a FEEL (CoLA) model detects its own clusters, labelled with the classes "
                         "FEEL matched them to; --classes / --vocab-file do not apply")
    for key in ("mapping", "classes"):
        if key not in mf.meta:
            raise ValueError(f"{args.ckpt}: the FEEL model file has no {key!r} entry")
    if args.config:
        cfg = load_feel_config(None if args.config == "default" else args.config, args.overrides)
    else:
        if "run_config" not in mf.meta:
            raise ValueError(f"{args.ckpt}: the FEEL model file carries no run config (written by an older "
                             "stovtal); pass --config (FEEL's YAML, or 'default') and the run's key=value overrides")
        cfg = load(FeelConfig, None, args.overrides, stored=mf.meta["run_config"])
        validate(cfg)
    apply_threads(cfg.num_threads, log=lambda s: print(s, file=sys.stderr))
    device = resolve_device(args.device)
    videos, classes, stride, num_frames = load_feel_subset(cfg.data, cfg.workdir, args.subset, cfg.progress)
    if list(mf.meta["classes"]) != list(classes):
        raise ValueError(f"{args.ckpt}: the model's classes {list(mf.meta['classes'])} differ from the "
                         f"config's data classes {list(classes)}")
    model = build_model(mf, args.ckpt)
    mapping = {c: int(m) for c, m in enumerate(torch.as_tensor(mf.meta["mapping"]).tolist()) if m >= 0}
    _, segments = localize_videos(model, videos, stride, num_frames, cfg, device)
    preds = cluster_predictions(videos.ids, segments, mapping, classes)
    atomic_write_json(args.out, preds)
    n = sum(len(v) for v in preds["results"].values())
    print(f"wrote {n} detections of {len(mapping)} matched clusters for {len(videos.ids)} videos to {args.out}",
          file=sys.stderr)
    if args.eval:
        if not any(info.get("annotations") for info in videos.gt["database"].values()):
            raise ValueError(f"subset {args.subset or cfg.data.test_subset!r} has no ground truth to evaluate")
        tious = list(cfg.eval.tiou_thresholds)
        metrics = detection_map(videos.gt, preds, tious)
        mp = "  ".join(f"{t:.1f}:{v:.4f}" for t, v in zip(tious, metrics["mAP"], strict=True))
        print(f"{os.path.basename(args.ckpt)}: cluster-matched mAP @tIoU {mp}  average {metrics['average_mAP']:.4f}")
        if args.eval_json:
            atomic_write_json(args.eval_json, {"tiou_thresholds": tious, "mAP": [float(v) for v in metrics["mAP"]],
                                               "average_mAP": float(metrics["average_mAP"])}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
