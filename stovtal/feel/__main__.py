"""``python -m stovtal.feel``: unsupervised temporal action localization (FEEL).

With no arguments it runs on the built-in synthetic world in ``./runs/feel``. Examples::

    python -m stovtal.feel
    python -m stovtal.feel --config thumos14.yaml --workdir runs/feel_thumos iis.schedule=constant
"""

from __future__ import annotations

import argparse
import sys

from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.workdir_lock import workdir_lock

from .config import load_config
from .pipeline import run_feel


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stovtal.feel",
        description="FEEL: unsupervised TAL by clustering (k-means + CCI), self-paced instance "
        "selection (IIS) and a CoLA localizer. Labels are used only for evaluation.",
        epilog="Overrides are omegaconf dotlist entries, e.g. iterations=4 iis.schedule=constant "
        "cluster.lam=0.5 train.epochs=15 data.synthetic.num_web=400 naming.vocab_npz=names.npz. "
        "Config sections: data (annotations, feature_dir, train_subset, eval_subset, classes, fps, "
        "feature_stride, num_frames, synthetic.*), cluster, iis, model, train, localize, naming.",
    )
    parser.add_argument("--config", help="YAML config (see stovtal/feel/configs/)")
    parser.add_argument("--workdir", help="output/resume directory (default ./runs/feel)")
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.workdir:
        overrides.append(f"workdir={args.workdir}")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_config(args.config, overrides)
    with workdir_lock(cfg.workdir):
        run_feel(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
