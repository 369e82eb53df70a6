"""``python -m stovtal.selftrain``: STOV-TAL self-training, end to end.

Without arguments: generate (or reuse) the built-in synthetic world in ``./runs/selftrain``,
train the base localizer, pseudo-label the unlabelled web videos, retrain with a Mean Teacher,
evaluate CB / CN / GZSL for both models and write ``report.md`` + ``results.json``; the final
table is printed.

The same command runs on several processes / GPUs / nodes under ``torchrun`` (e.g.
``torchrun --nproc_per_node=2 -m stovtal.selftrain --workdir DIR``): training uses
DistributedDataParallel (``train.batch_size`` is the global batch), pseudo-labelling and
evaluation split the videos among the ranks, rank 0 writes the reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from stovtal.utils.cli import add_debug_flag, cli_entry

from .config import ConfigError, SelfTrainConfig, load_config, to_yaml, validate
from .stages import STAGES

EPILOG = """\
stages (each skipped when its output exists, so a killed run resumes):
  base         train the class-agnostic localizer on the labelled base-class videos (with
               base.checkpoint=model.pt: copy that model file instead, e.g. a converted
               ActionFormer checkpoint from python -m stovtal.convert)
  pseudolabel  pseudo-label the unlabelled videos with the base model's EMA weights (sharded)
  retrain      Mean Teacher retraining on labelled + pseudo-labelled videos
  eval         CB / CN / GZSL mAP of the base and self-trained models on the test set
  report       report.md, plots/*.png and results.json

self-training rounds (retrain.rounds=R, default 1): the retrain stage runs round 1 for every
number of unlabelled videos, then round 2 (pseudo-labels from round 1's teacher, then a
retraining from the same initialisation), ...; every round resumes, is evaluated (the teacher
and the raw student) and reported. Per-N pseudo-label threshold, as the authors do:
  python -m stovtal.selftrain --scale 1000,3000,10000 retrain.rounds=2 \
      'pseudo.threshold_by_n={10000: 0.10, 100000: 0.05}'

configuration: defaults <- --config YAML <- key=value overrides (omegaconf dotlist), e.g.
  python -m stovtal.selftrain pseudo.threshold=0.3 retrain.consistency_weight=1.0
  python -m stovtal.selftrain --config my.yaml data.synthetic=false data.feature_dir=/feats ...
Print every key with its default: python -m stovtal.selftrain --print-config

distributed (torch.distributed: gloo on CPU, NCCL on GPU):
  torchrun --nproc_per_node=2 -m stovtal.selftrain --workdir DIR       all stages on 2 processes
  torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
      -m stovtal.selftrain --workdir /shared/DIR                       (DIR on a shared file system)
  python -m stovtal.selftrain --stage pseudolabel --shard 3/16 --workdir /shared/DIR
      independent job 3 of 16 labels its shards (e.g. one cluster array task each); the last job
      to finish writes pseudo_labels.json; a re-run only redoes shards without a manifest record
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stovtal.selftrain", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (omegaconf dotlist)")
    p.add_argument("--config", help="YAML config file (default: the built-in synthetic world)")
    p.add_argument("--workdir", default="./runs/selftrain", help="where everything goes (default: %(default)s)")
    p.add_argument("--stage", action="append", choices=STAGES,
                   help="run only this stage (repeatable); default: all, in order")
    p.add_argument("--scale", help="comma-separated numbers of unlabelled videos, e.g. 1000,3000,10000: one "
                   "self-training run per number (nested subsets) and a scale curve in the report")
    p.add_argument("--seed", type=int, help="training seed (same as seed=N)")
    p.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2: one run per seed in "
                   "WORKDIR/seed<S> (one after the other; each resumes like a single run), then the mean and "
                   "spread over the seeds in WORKDIR/aggregate.md, aggregate.json, plots/scale_seeds.png "
                   "(python -m stovtal.selftrain.aggregate does this for any work directories)")
    p.add_argument("--shard", metavar="I/N", help="with --stage pseudolabel only: run independent job I of N "
                   "(0-based), which labels every N-th share of the shards")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                   help="no progress bars (same as progress=false)")
    add_debug_flag(p)
    return p


def _parse_scale(text: str, flag: str = "--scale") -> list[int]:
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{flag}: empty")
    return vals


def _run_seeds(argv: list[str], seeds: list[int], workdir: str) -> int:
    """One run per seed in ``workdir/seed<S>``, then the aggregate in ``workdir``."""
    from .aggregate import write_aggregate

    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds: expected distinct seeds >= 0, got {seeds}")
    dirs = []
    for seed in seeds:
        d = os.path.join(workdir, f"seed{seed}")
        print(f"=== seed {seed}: {d}", flush=True)
        rc = main([*argv, "--seed", str(seed), "--workdir", d])
        if rc:
            return rc
        dirs.append(d)
    write_aggregate(workdir, dirs)
    print(open(os.path.join(workdir, "aggregate.md")).read())
    return 0


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


@cli_entry
def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    if args.seeds is not None:
        seeds = _parse_scale(args.seeds, "--seeds")
        if args.seed is not None or any(o.startswith("seed=") for o in args.overrides):
            raise ConfigError("--seeds: give the seeds with --seeds alone (not with --seed / seed=)")
        if args.shard or args.print_config:
            raise ConfigError("--seeds: not with --shard or --print-config")
        return _run_seeds(_without_option(_without_option(raw, "--seeds"), "--workdir"), seeds, args.workdir)
    overrides = list(args.overrides)
    if args.scale:
        overrides.append(f"scale=[{','.join(str(n) for n in _parse_scale(args.scale))}]")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.no_progress:
        overrides.append("progress=false")
    cfg: SelfTrainConfig = load_config(args.config, overrides)
    validate(cfg)
    from stovtal.utils.shards import parse_shard_spec

    job, num_jobs = parse_shard_spec(args.shard)
    if args.shard and args.stage != ["pseudolabel"]:
        raise ConfigError("--shard applies to the pseudolabel stage alone: add --stage pseudolabel")
    if args.print_config:
        print(to_yaml(cfg))
        return 0

    from stovtal.utils import distributed as D
    from stovtal.utils.fileio import atomic_open
    from stovtal.utils.workdir_lock import job_lock

    from .stages import make_context, run_pipeline

    t0 = time.time()
    with D.distributed_session(cfg.device), job_lock(args.workdir, shared=num_jobs > 1):
        ctx = make_context(cfg, args.workdir)
        ctx.job, ctx.num_jobs = job, num_jobs
        if D.is_main_process():
            with atomic_open(ctx.layout.config) as f:
                f.write(to_yaml(cfg))
        stages = tuple(s for s in STAGES if s in args.stage) if args.stage else STAGES
        run_pipeline(ctx, stages)
        main_process = D.is_main_process()
    results = ctx.layout.results
    if main_process and "report" in stages and os.path.exists(results):
        from stovtal.utils.fileio import read_json

        from .report import format_table

        print()
        print(format_table(read_json(results)))
        print(f"\nreport: {ctx.layout.report}  ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
