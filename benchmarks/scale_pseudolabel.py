"""Scale benchmark: pseudo-label N synthetic web videos streamed from the synthetic world.

The web videos ``web-000000 .. web-(N-1)`` of the default synthetic world (512-d features,
100-300 snippets) are generated shard by shard in memory (never all at once, never written as
features) and pseudo-labelled with the self-training pipeline's own code path
(``stovtal.selftrain.pseudolabel.label_videos``: data loader -> localizer -> decoding +
soft-NMS -> candidates; atomic per-shard outputs + manifest via ``stovtal.utils.shards``), then
merged and thresholded into ``pseudo_labels.json``. Resumable (re-run skips finished shards)
and distributed: under ``torchrun`` each rank takes its share of the shards (``--shard i/n``
splits among independent jobs as well).

    PYTHONPATH=. python benchmarks/scale_pseudolabel.py --num-videos 2000 --out /tmp/scale
    torchrun --nproc_per_node=2 benchmarks/scale_pseudolabel.py --num-videos 332000 --out /shared/x

Reports (JSON line, also ``OUT/benchmark-rank<r>.json``): videos/s of labelling alone
(inference + NMS + writing) and including the synthesis of the features (which stands in for
reading them from disk), peak RSS of each process, disk per 1k videos (shard outputs + manifest
+ final pseudo-labels), and the projected hours for 332k videos. Not part of CI (selected only
by running this file). Model: the pipeline's default localizer (``SelfTrainConfig().model``)
with random weights unless ``--checkpoint DIR/base/model.pt`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rss import peak_rss_bytes  # noqa: E402

PAPER_WEB_VIDEOS = 332_000


class StreamedWebVideos:
    """Duck-typed ``UnlabelledSet``: ``dataset(ids)`` synthesises those videos on demand."""

    def __init__(self, world: Any):
        self.world = world
        self.database: dict[str, dict[str, Any]] = {}
        self.gen_seconds = 0.0

    def dataset(self, video_ids: list[str]) -> Dataset:
        t0 = time.perf_counter()
        items = []
        g = self.world.grid
        for vid in video_ids:
            v = self.world.generate("web", int(vid.rsplit("_", 1)[-1]))
            assert v["video_id"] == vid, (v["video_id"], vid)
            self.database[vid] = {"duration": v["duration"], "fps": v["fps"]}
            items.append({"video_id": vid, "feats": torch.from_numpy(v["feats"].T.copy()),
                          "segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long),
                          "fps": v["fps"], "duration": float(v["duration"]), "feat_stride": g.feature_stride,
                          "feat_num_frames": g.num_frames, "offset_snippets": 0, "offset_frames": 0})
        self.gen_seconds += time.perf_counter() - t0
        return _ListDataset(items)


class _ListDataset(Dataset):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-videos", type=int, default=2000, help="N web videos (up to 332000 and beyond)")
    ap.add_argument("--out", required=True, help="output directory (shards, manifest, pseudo_labels.json)")
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--checkpoint", help="a selftrain base/model.pt (default: random weights)")
    ap.add_argument("--shard", help="independent job i/n (0-based)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.num_videos < 1 or args.shard_size < 1 or args.batch_size < 1:
        ap.error("--num-videos, --shard-size and --batch-size must be >= 1")
    torch.set_num_threads(args.threads)

    import stovtal  # noqa: F401
    from stovtal.data.synthetic import SyntheticConfig, SyntheticWorld
    from stovtal.engine import load_checkpoint
    from stovtal.models import ActionLocalizer, LocalizerConfig
    from stovtal.selftrain.config import PseudoLabelConfig, SelfTrainConfig
    from stovtal.selftrain.pseudolabel import pseudo_label_distributed
    from stovtal.utils import distributed as D
    from stovtal.utils.shards import parse_shard_spec

    job, num_jobs = parse_shard_spec(args.shard)
    with D.distributed_session(args.device):
        world_size = D.get_world_size()
        synth = SyntheticWorld(SyntheticConfig())
        if args.checkpoint:
            state = load_checkpoint(args.checkpoint)
            model = ActionLocalizer(LocalizerConfig(**state["localizer"]))
            model.load_state_dict(state["model"])
        else:
            torch.manual_seed(0)
            model = ActionLocalizer(LocalizerConfig(input_dim=synth.config.feat_dim, **SelfTrainConfig().model))
        cfg = PseudoLabelConfig(shard_size=args.shard_size, batch_size=args.batch_size)
        ids = [synth.video_id("web", i) for i in range(args.num_videos)]
        unl = StreamedWebVideos(synth)
        os.makedirs(args.out, exist_ok=True)
        t0 = time.perf_counter()
        db = pseudo_label_distributed(model, unl, ids, args.out, cfg, device=args.device,
                                      progress=sys.stderr.isatty(), job=job, num_jobs=num_jobs,
                                      desc=f"pseudo-label N={args.num_videos}")
        seconds = time.perf_counter() - t0
        done_here = len(unl.database)  # videos this process labelled (0 if all were done before)
        peak_rss = peak_rss_bytes()
        per_rank = D.all_gather_objects({"videos": done_here, "seconds": seconds, "gen_seconds": unl.gen_seconds,
                                         "peak_rss_bytes": peak_rss})
        if not D.is_main_process():
            return 0
    videos = sum(r["videos"] for r in per_rank)
    wall = max(r["seconds"] for r in per_rank)
    gen = max(r["gen_seconds"] for r in per_rank)
    disk = _du(args.out)
    rate = videos / wall if wall > 0 else 0.0
    label_rate = videos / max(wall - gen, 1e-9)
    out = {
        "num_videos": args.num_videos, "processes": world_size, "jobs": num_jobs, "threads_per_process": args.threads,
        "videos_labelled_this_run": videos, "wall_s": round(wall, 2), "synthesis_s": round(gen, 2),
        "videos_per_s_end_to_end": round(rate, 2), "videos_per_s_labelling": round(label_rate, 2),
        "peak_rss_mb_per_process": [round(r["peak_rss_bytes"] / 2**20, 1) for r in per_rank],
        "disk_bytes": disk, "disk_mb_per_1k_videos": round(disk / 2**20 / args.num_videos * 1000, 3),
        "pseudo_labels": None if db is None else db["info"]["num_pseudo_labels"],
        "projected_hours_332k_labelling": round(PAPER_WEB_VIDEOS / label_rate / 3600, 2) if videos else None,
        "model": "checkpoint" if args.checkpoint else "random weights, SelfTrainConfig().model",
    }
    print(json.dumps(out))
    with open(os.path.join(args.out, "benchmark.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
