"""``python -m stovtal.text encode --vocab thumos14 --model ViT-B-16 --checkpoint W.pt --out thumos14.npz``"""

from __future__ import annotations

import argparse
import sys

from stovtal.utils.cli import add_debug_flag, cli_entry
from stovtal.utils.threads import add_threads_flag, apply_threads_flag

from ..models.text_encoders import PROMPT_TEMPLATES
from .encode import encode_vocabulary, read_vocabulary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stovtal.text", description="Class-name text embeddings."
    )
    add_debug_flag(p)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser(
        "encode",
        help="encode a vocabulary with an open_clip text tower into an .npz (names, embeddings, logit_scale)",
    )
    e.add_argument(
        "--vocab", required=True, help="shipped vocabulary name (e.g. thumos14) or a .txt file"
    )
    e.add_argument(
        "--model",
        required=True,
        help="open_clip model name (e.g. ViT-B-16) or a model-config .json",
    )
    e.add_argument(
        "--checkpoint", required=True, help="local open_clip or ViFi-CLIP weights file (no downloads)"
    )
    e.add_argument("--out", required=True, help="output .npz")
    g = e.add_mutually_exclusive_group()
    g.add_argument(
        "--templates",
        default=None,
        help=f"template preset: {', '.join(sorted(PROMPT_TEMPLATES))} (default: the class name itself)",
    )
    g.add_argument(
        "--template",
        action="append",
        dest="template_list",
        help="a prompt template with '{}'; repeatable",
    )
    e.add_argument(
        "--name-style",
        choices=("verbatim", "natural"),
        default="verbatim",
        help="'natural' turns 'BaseballPitch' into 'baseball pitch' before templating",
    )
    e.add_argument(
        "--base-checkpoint",
        default=None,
        help="with a ViFi-CLIP --checkpoint: the original CLIP ViT-B/16 weights, for the token "
        "embedding ViFi-CLIP does not store",
    )
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", type=int, default=256, help="prompts per forward pass")
    add_threads_flag(e)
    return p


@cli_entry(extra=(RuntimeError,))  # open_clip's errors for a bad weights file
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_threads_flag(args)
    names = read_vocabulary(args.vocab)
    enc = encode_vocabulary(
        names,
        args.model,
        args.checkpoint,
        args.out,
        templates=args.template_list or args.templates,
        name_style=args.name_style,
        device=args.device,
        batch_size=args.batch_size,
        base_checkpoint=args.base_checkpoint,
    )
    print(
        f"text: {len(names)} class names x {len(enc.templates)} templates -> {args.out} "
        f"(dim {enc.embed_dim}, logit_scale {enc.logit_scale:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
