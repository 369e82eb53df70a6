"""How does the intra-op thread count behave on a CPU shared with other jobs?

Runs the default ``selftrain`` base-training step (the default localizer, batch 4, on a small
synthetic world written to ``--workdir``) for ``--epochs`` epochs in a fresh process per setting,
in interleaved rounds (so a change of the machine's load hits every setting alike), and prints per
setting: wall seconds per epoch, process CPU seconds per wall second (above the useful work when
idle threads spin), involuntary context switches, and the 1-minute load average at the start.

Settings: ``default`` (torch's own thread count: one per core, ``num_threads=0``), ``1`` (one
thread), ``passive`` (torch's count with ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep
instead of spinning) and ``auto`` (stovtal's default ``num_threads=auto``: the free cores, see
``stovtal.utils.threads``). Only ``passive`` changes the OpenMP runtime's wait policy.

Usage: ``python tools/thread_study.py --workdir /tmp/ts --rounds 3 --epochs 2``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = ("default", "1", "passive", "auto")


def worker(workdir: str, setting: str, epochs: int) -> dict[str, float]:
    import torch  # first: the OpenMP runtime reads OMP_WAIT_POLICY as the environment has it

    from stovtal.data import collate_videos
    from stovtal.engine import Trainer, seed_everything
    from stovtal.selftrain.config import SelfTrainConfig
    from stovtal.selftrain.stages import make_context

    threads = {"default": 0, "1": 1, "passive": 0, "auto": "auto"}[setting]
    cfg = SelfTrainConfig(progress=False, num_threads=threads)  # applied by make_context
    cfg.data.world = {"num_train": 24, "num_web": 2, "num_test": 2}
    ctx = make_context(cfg, workdir, log=lambda s: None)
    tcfg = ctx.train_config()
    tcfg.epochs = epochs
    seed_everything(0)
    trainer = Trainer(ctx.new_model(), ctx.labelled_dataset(), tcfg, os.path.join(workdir, "unused"),
                      collate_fn=collate_videos, log=lambda s: None)
    load = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(epochs):
        trainer.train_one_epoch()
        trainer.epoch += 1
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"threads": torch.get_num_threads(), "wall_per_epoch": wall / epochs, "cpu_per_wall": cpu / wall,
            "invol_cs_per_s": (r1.ru_nivcsw - r0.ru_nivcsw) / wall, "load1": load}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.workdir, args.worker, args.epochs)))
        return 0
    settings = args.settings.split(",")
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in settings:
            env = dict(os.environ)
            if s == "passive":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            out = subprocess.run([sys.executable, __file__, "--workdir", args.workdir, "--epochs",
                                  str(args.epochs), "--worker", s], env=env, check=True,
                                 capture_output=True, text=True).stdout
            rows[s].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r} {s}: {rows[s][-1]}", flush=True)
    print(f"{'setting':<10}{'threads':>8}{'s/epoch (median)':>18}{'min':>8}{'max':>8}{'cpu/wall':>10}"
          f"{'invol cs/s':>12}{'load1':>8}")
    for s, rs in rows.items():
        w = [x["wall_per_epoch"] for x in rs]
        print(f"{s:<10}{rs[0]['threads']:>8}{statistics.median(w):>18.2f}{min(w):>8.2f}{max(w):>8.2f}"
              f"{statistics.median(x['cpu_per_wall'] for x in rs):>10.2f}"
              f"{statistics.median(x['invol_cs_per_s'] for x in rs):>12.0f}"
              f"{statistics.median(x['load1'] for x in rs):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
