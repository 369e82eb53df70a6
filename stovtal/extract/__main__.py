"""``python -m stovtal.extract VIDEO_DIR_OR_LIST --out FEATURE_DIR --model ViT-B-16 --checkpoint PATH``"""

from __future__ import annotations

import argparse
import logging
import sys

from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.threads import add_threads_flag, apply_threads_flag

from .run import ExtractConfig, extract_features


def _fps(value: str) -> float | None:
    if value.lower() == "native":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'native', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stovtal.extract",
        description="Extract open_clip snippet features from videos: <out>/<video_id>.npy [T, D] "
        "(snippet i covers frames [i*stride, i*stride+num_frames) at --fps) plus "
        "<video_id>.meta.json. Resumable (finished videos and shards are skipped) and shardable.",
    )
    p.add_argument(
        "videos", help="directory of videos, or a text file with one video path per line"
    )
    p.add_argument("--out", required=True, help="feature directory")
    p.add_argument(
        "--model",
        required=True,
        help="open_clip model name (e.g. ViT-B-16) or a model-config .json",
    )
    p.add_argument(
        "--checkpoint", required=True, help="local open_clip or ViFi-CLIP weights file (no downloads)"
    )
    p.add_argument(
        "--fps",
        type=_fps,
        default=30.0,
        help="resample to this frame rate, or 'native' (default 30)",
    )
    p.add_argument(
        "--stride", type=int, default=16, help="frames between snippet starts (default 16)"
    )
    p.add_argument("--num-frames", type=int, default=16, help="frames per snippet (default 16)")
    p.add_argument(
        "--batch-size", type=int, default=64, help="frames encoded per forward pass (default 64)"
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--fp16", action="store_true", help="store features as float16 (default float32)"
    )
    p.add_argument(
        "--amp", action="store_true", help="autocast the image tower (fp16 on CUDA, bf16 on CPU)"
    )
    add_threads_flag(p)
    p.add_argument(
        "--backend", choices=("auto", "decord", "pyav"), default="auto", help="video decoder"
    )
    p.add_argument("--shard", default=None, help="run job i of n ('i/n', 0-based), e.g. 0/8")
    p.add_argument(
        "--shard-size", type=int, default=16, help="videos per manifest shard (default 16)"
    )
    p.add_argument("--overwrite", action="store_true", help="recompute finished videos")
    p.add_argument("--retry-errors", action="store_true", help="retry videos that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(p)
    return p


@cli_entry(extra=(RuntimeError, ImportError))  # decoder / open_clip errors, a missing decoder
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stovtal").setLevel(logging.INFO)
    import torch

    apply_threads_flag(args)
    device = args.device
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = ExtractConfig(
        model=args.model,
        checkpoint=args.checkpoint,
        fps=args.fps,
        stride=args.stride,
        num_frames=args.num_frames,
        batch_size=args.batch_size,
        device=device,
        fp16=args.fp16,
        amp=args.amp,
        backend=args.backend,
    )
    res = extract_features(
        args.videos,
        args.out,
        cfg,
        shard=args.shard,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
    )
    print(
        f"extract: {res['videos']} videos in this worker's shards: {res['encoded']} encoded, "
        f"{res['skipped']} already done, {res['errors']} failed "
        f"({res['videos_per_s']:.2f} videos/s, backend {res['backend']}); features in {args.out}"
    )
    for vid, msg in list(res["error_list"].items())[:20]:
        print(f"  failed: {vid}: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
