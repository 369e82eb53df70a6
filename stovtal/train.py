"""``python -m stovtal.train``: train the class-agnostic localizer on base classes, then
evaluate CB / CN / GZSL on the test subset with the EMA weights of the best checkpoint.

With ``classifier.adapter=true`` the classifier's adapter is first fitted on the ground-truth
segments of the labelled base-class videos (``stovtal.engine.adapter``; the localizer is not
involved), stored in every checkpoint and used for the evaluation.

Examples::

    python -m stovtal.train                                   # built-in synthetic world
    python -m stovtal.train --config thumos14 data.feature_dir=/data/th14/feats ...
    python -m stovtal.train --config synthetic train.epochs=5 --resume
    python -m stovtal.train classifier.adapter=true             # + base-class classifier adapter
    torchrun --nproc_per_node=2 -m stovtal.train ...   # DDP; train.batch_size is the global batch
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from stovtal.config import load_config, to_dict, to_yaml
from stovtal.data import collate_videos
from stovtal.data.resolve import resolve_data
from stovtal.engine import Trainer, predict_segments, seed_everything
from stovtal.engine.adapter import adapter_state, fit_adapter
from stovtal.engine.builders import build_dataset, build_loader, build_localizer, subset_database
from stovtal.engine.evaluation import class_agnostic_map
from stovtal.engine.head_check import RegressionHeadCheck
from stovtal.engine.layout import TrainLayout
from stovtal.engine.run import base_training_annotations, evaluate_on_test, load_localizer
from stovtal.eval.table import format_results_table
from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.fileio import atomic_write_json
from stovtal.utils.threads import apply_threads


def build_parser() -> argparse.ArgumentParser:
    from stovtal.config import Config

    p = argparse.ArgumentParser(
        prog="python -m stovtal.train",
        description="Train the STOV-TAL class-agnostic localizer on labelled base-class videos, "
        "then evaluate open-vocabulary detection (CB / CN / GZSL) on the test subset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configuration keys (override any with key=value) and their defaults:\n\n"
        + to_yaml(Config()),
    )
    p.add_argument("--config", default="synthetic",
                   help="YAML file or shipped config name (synthetic, thumos14, activitynet, "
                   "fineaction); default: synthetic")
    p.add_argument("--workdir", default=None, help="output directory (overrides the config's workdir)")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/last.pt if it exists")
    p.add_argument("--no-eval", action="store_true", help="skip the final test-set evaluation")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                   help="no progress bars (same as train.progress=false)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
    add_debug_flag(p)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from stovtal.utils import distributed as D
    from stovtal.utils.workdir_lock import job_lock

    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, *(["train.progress=false"] if args.no_progress else [])])
    with D.distributed_session(cfg.train.device), job_lock(args.workdir or cfg.workdir):
        return _main(args, cfg, D.is_main_process())


def _main(args: argparse.Namespace, cfg, main_process: bool) -> int:
    from stovtal.utils import distributed as D

    if args.workdir:
        cfg.workdir = args.workdir
    apply_threads(cfg.num_threads, log=(lambda s: print(s, file=sys.stderr)) if main_process else None)
    os.makedirs(cfg.workdir, exist_ok=True)
    if main_process:
        with open(TrainLayout(cfg.workdir).config, "w", encoding="utf-8") as f:
            f.write(to_yaml(cfg))
    with D.main_process_first():  # rank 0 generates/reads the data first
        spec = resolve_data(cfg.data, progress=main_process)
    train_set = build_dataset(spec, spec.train_subset, training=True, classes=spec.base,
                              annotations=base_training_annotations(spec))
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_localizer(cfg, spec)
    evaluate = None
    if spec.val_subset:
        val_loader = build_loader(build_dataset(spec, spec.val_subset), cfg.eval.batch_size)
        val_db = subset_database(spec, spec.val_subset)

        def evaluate(m):
            props = predict_segments(m, val_loader)
            r = class_agnostic_map(props, {v: val_db[v] for v in props}, list(cfg.eval.tiou_thresholds))
            return {"score": r["average_mAP"], "class_agnostic_avg_mAP": r["average_mAP"]}

    extra_state = {"config": to_dict(cfg)}
    classifier, adapter_stats = None, None
    if cfg.classifier.adapter:
        # independent of the localizer (runs under its own seeded RNG, the same on every rank);
        # stored in every checkpoint
        classifier, adapter_stats = fit_adapter(
            cfg, spec, log=(lambda s: print(s, file=sys.stderr)) if main_process else None)
        extra_state["classifier"] = adapter_state(classifier, cfg, spec, adapter_stats)
    if not main_process:
        cfg.train.progress = False
    print(f"training on {len(train_set)} base-class videos, {sum(p.numel() for p in model.parameters())} parameters",
          file=sys.stderr)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    hooks = [RegressionHeadCheck(train_set, collate_videos, log=log)] if main_process else []
    trainer = Trainer(model, train_set, cfg.train, cfg.workdir, collate_fn=collate_videos,
                      evaluate=evaluate, extra_state=extra_state, log=log, hooks=hooks)
    t0 = time.time()
    trainer.fit(resume=args.resume)
    train_time = time.time() - t0
    print(f"training time {train_time:.1f} s (this invocation)", file=sys.stderr)
    if args.no_eval or not spec.test_subset:
        return 0
    best = load_localizer(cfg, spec, trainer.best_path, "ema", trainer.device)
    results = evaluate_on_test(cfg, spec, best, classifier=classifier)  # every rank predicts a share
    if results is None:  # rank 0 has the results
        return 0
    results["train_time_s"] = train_time
    if adapter_stats is not None:
        results["adapter"] = adapter_stats
    atomic_write_json(TrainLayout(cfg.workdir).eval, results, indent=1)
    print(format_results_table({"best": results}, list(cfg.eval.tiou_thresholds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
