"""Worker of the distributed tests, run as ``torchrun --nproc_per_node=2 worker.py MODE ...``
(or imported and run in one process, for the reference runs).

Modes:
  train OUT_DIR                 a few DDP steps of the localizer; rank 0 saves OUT_DIR/weights.pt
  pseudo OUT_DIR WORLD_DIR      sharded pseudo-labelling of the tiny world's web videos
With ``STOVTAL_TEST_KILL_RANK=r`` and ``STOVTAL_TEST_KILL_AFTER=k``, rank r SIGKILLs itself right
after writing its k-th shard output (before that shard's manifest record).
"""

from __future__ import annotations

import os
import signal
import sys

import torch

# Tiny localizer without drop-path (its randomness is drawn per rank, see Trainer's docstring).
MODEL = dict(input_dim=32, embed_dim=16, head_dim=16, num_heads=2, branch_layers=3, window=7,
             regression_ranges=[[0, 4], [4, 8], [8, 16], [16, 100000]], path_drop=0.0, proj_drop=0.0,
             max_seq_len=96, pad_to_max_seq_len=True)
WORLD = dict(num_train=2, num_test=2, num_web=24, feat_dim=32, snippets_range=[48, 80])


class ToyVideos(torch.utils.data.Dataset):
    """Seeded random videos of different lengths with 1-2 segments (grid units)."""

    def __init__(self, n: int = 14, dim: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            T = int(torch.randint(40, 72, (1,), generator=g))
            feats = torch.randn(dim, T, generator=g)
            k = 1 + int(torch.randint(0, 2, (1,), generator=g))
            segs = []
            for _ in range(k):
                s = float(torch.randint(0, T - 12, (1,), generator=g))
                segs.append([s, s + float(torch.randint(3, 12, (1,), generator=g))])
                feats[:4, int(segs[-1][0]):int(segs[-1][1])] += 2.0
            self.items.append({"video_id": f"v{i:03d}", "feats": feats, "segments": torch.tensor(segs),
                               "labels": torch.zeros(k, dtype=torch.long), "duration": T / 7.5, "fps": 30.0,
                               "feat_stride": 4, "feat_num_frames": 16, "offset_snippets": 0})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def initial_model(seed: int = 0):
    from stovtal.engine import seed_everything
    from stovtal.models import ActionLocalizer, LocalizerConfig

    seed_everything(seed)
    return ActionLocalizer(LocalizerConfig(**MODEL))


def train(out_dir: str, batch_size: int = 4, epochs: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Train the tiny localizer; returns (and on rank 0 saves) model + EMA weights."""
    from stovtal.data import collate_videos
    from stovtal.engine import TrainConfig, Trainer
    from stovtal.utils import distributed as D

    model = initial_model(seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, warmup_epochs=0.5, seed=seed,
                      amp=False, device="cpu", progress=False)
    trainer = Trainer(model, ToyVideos(), cfg, out_dir, collate_fn=collate_videos, log=lambda _: None)
    trainer.fit()
    state = {**{f"model.{k}": v for k, v in model.state_dict().items()},
             **{f"ema.{k}": v for k, v in trainer.ema.module.state_dict().items()},
             "steps": torch.tensor(trainer.iters_per_epoch * epochs)}
    if D.is_main_process():
        torch.save(state, os.path.join(out_dir, "weights.pt"))
    return state


def pseudo_config():
    from stovtal.selftrain.config import PseudoLabelConfig

    return PseudoLabelConfig(shard_size=3, batch_size=2, threshold=0.005, candidate_floor=0.001, min_num=1)


def pseudo(out_dir: str, world_dir: str) -> dict | None:
    from stovtal.data import FeatureGrid
    from stovtal.data.formats import load_annotations
    from stovtal.models import ActionLocalizer, LocalizerConfig
    from stovtal.selftrain.pseudolabel import UnlabelledSet, pseudo_label_distributed
    from stovtal.utils.fileio import read_json

    meta = read_json(os.path.join(world_dir, "world.json"))
    web = load_annotations(os.path.join(world_dir, "web.json"))["database"]
    grid = FeatureGrid(float(meta["fps"]), int(meta["feature_stride"]), int(meta["num_frames"]))
    unl = UnlabelledSet(web, os.path.join(world_dir, "features"), grid, int(meta["feat_dim"]))
    torch.manual_seed(0)
    model = ActionLocalizer(LocalizerConfig(**MODEL)).eval()
    return pseudo_label_distributed(model, unl, sorted(web), out_dir, pseudo_config())


def _install_kill() -> None:
    from stovtal.utils import distributed as D
    from stovtal.utils.shards import ShardManifest

    rank = int(os.environ.get("STOVTAL_TEST_KILL_RANK", "-1"))
    after = int(os.environ.get("STOVTAL_TEST_KILL_AFTER", "0"))
    if rank != D.get_rank() or after < 1:
        return
    original = ShardManifest.write_output
    count = [0]

    def write_then_die(self, shard, output):
        path = original(self, shard, output)
        count[0] += 1
        if count[0] >= after:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    ShardManifest.write_output = write_then_die


def main(argv: list[str]) -> int:
    from stovtal.utils import distributed as D

    torch.set_num_threads(1)
    mode = argv[0]
    with D.distributed_session("cpu"):
        _install_kill()
        if mode == "train":
            train(argv[1])
        elif mode == "pseudo":
            pseudo(argv[1], argv[2])
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
