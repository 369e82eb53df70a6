"""``python -m stovtal.data``: inspect shipped splits, write the synthetic world.

    python -m stovtal.data splits --dataset thumos14 [--kind kinetics|random75|random50] [--seed 0] [--json]
    python -m stovtal.data world --root DIR [--vocabulary thumos14] [--profile short] [--seed 0]
                                [--num-train N --num-web N --num-test N --feat-dim D]
                                [--web-profile kinetics|target]
    python -m stovtal.data web --root DIR --num-videos N [--shard i/n]
        (adds web videos 0..N-1 to the world at DIR, in resumable shards; writes web-N.json)
"""

from __future__ import annotations

import argparse
import json
import sys

from stovtal.utils.cli import add_debug_flag, cli_entry

from .splits import SPLIT_DATASETS, SPLIT_KINDS, class_split


def _splits(args: argparse.Namespace) -> int:
    split = class_split(args.dataset, args.kind, args.seed)
    if args.json:
        print(json.dumps(split.to_dict(), indent=1))
        return 0
    seed = "" if split.seed is None else f", seed {split.seed}"
    print(f"{split.dataset}: {split.kind} split{seed}: {len(split.base)} base, {len(split.novel)} novel")
    print("base:  " + ", ".join(split.base))
    print("novel: " + ", ".join(split.novel))
    return 0


def _world(args: argparse.Namespace) -> int:
    from .synthetic import SyntheticConfig, SyntheticWorld

    kw = {k: v for k, v in {"seed": args.seed, "vocabulary": args.vocabulary, "profile": args.profile,
                            "num_train": args.num_train, "num_web": args.num_web,
                            "num_test": args.num_test, "feat_dim": args.feat_dim,
                            "web_profile": args.web_profile}.items()
          if v is not None}
    root = SyntheticWorld(SyntheticConfig(**kw)).write(args.root, progress=not args.no_progress)
    print(f"synthetic world written to {root}")
    return 0


def _web(args: argparse.Namespace) -> int:
    from .synthetic import SyntheticWorld

    out = SyntheticWorld.from_root(args.root).write_web(args.root, args.num_videos, shard=args.shard,
                                                        progress=not args.no_progress)
    if out is None:
        print(f"this worker's web shards are written; other workers' shards are still missing "
              f"(rerun any worker after they finish to write web-{args.num_videos}.json)")
    else:
        print(f"{args.num_videos} web videos: {out[0]} (hidden ground truth: {out[1]})")
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stovtal.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("splits", help="print a shipped class split")
    p.add_argument("--dataset", required=True, choices=SPLIT_DATASETS)
    p.add_argument("--kind", default="kinetics", choices=SPLIT_KINDS)
    p.add_argument("--seed", type=int, default=0, help="seed 0..9 of a random split")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_splits)
    w = sub.add_parser("world", help="write the synthetic world")
    w.add_argument("--root", required=True)
    w.add_argument("--vocabulary", default=None)
    w.add_argument("--profile", default=None, choices=["short", "long"])
    w.add_argument("--seed", type=int, default=None)
    w.add_argument("--num-train", type=int, default=None)
    w.add_argument("--num-web", type=int, default=None)
    w.add_argument("--num-test", type=int, default=None)
    w.add_argument("--feat-dim", type=int, default=None)
    w.add_argument("--web-profile", default=None, choices=["kinetics", "target"],
                   help="web videos of Kinetics actions with a domain shift (default) or drawn like the test videos")
    w.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
    w.set_defaults(func=_world)
    b = sub.add_parser("web", help="add web videos 0..N-1 to a written synthetic world, in shards")
    b.add_argument("--root", required=True, help="a written world (python -m stovtal.data world)")
    b.add_argument("--num-videos", type=int, required=True)
    b.add_argument("--shard", default=None, help="worker i of n ('i/n', 0-based): write every n-th shard")
    b.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_web)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
