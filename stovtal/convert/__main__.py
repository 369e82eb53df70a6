"""``python -m stovtal.convert actionformer CKPT --out model.pt [--config cfg.yaml] [--weights ema|model]``.

Converts an ActionFormer / STOV-TAL localizer checkpoint into a stovtal model file (weights +
the ``LocalizerConfig`` that builds them), usable by ``python -m stovtal.infer`` and, for a
class-agnostic checkpoint, as ``python -m stovtal.selftrain``'s base model
(``base.checkpoint``). ``--config`` is the authors' YAML the model was trained with (e.g. ActionFormer's
``configs/thumos_i3d.yaml``): it supplies what tensor shapes do not show (attention windows,
heads, position encoding, max_seq_len, regression ranges, loss and decoding settings);
without it those take ActionFormer's defaults, listed on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from stovtal.utils.cli import add_debug_flag, cli_entry

from .actionformer import (
    ACTIONFORMER_DEFAULTS,
    ConversionError,
    config_from_actionformer_yaml,
    convert_state_dict,
    infer_config,
    load_actionformer_checkpoint,
)


def write_localizer_file(path: str, model_cfg: dict[str, Any], state_dict: dict[str, Any],
                         meta: dict[str, Any]) -> None:
    """Write the converted localizer in the package's model-file format."""
    from stovtal.engine.checkpoint import save_model

    save_model(path, model_cfg, state_dict, meta=meta, kind="localizer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stovtal.convert", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(p)
    sub = p.add_subparsers(dest="source", required=True)
    a = sub.add_parser("actionformer", help="an ActionFormer / STOV-TAL localizer checkpoint (.pth.tar)")
    a.add_argument("ckpt", help="checkpoint file (state_dict / state_dict_ema, read with weights_only=True)")
    a.add_argument("--out", required=True, help="stovtal model file to write")
    a.add_argument("--config", default=None, help="the authors' YAML config the checkpoint was trained with")
    a.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="state_dict_ema (default, what ActionFormer evaluates) or state_dict")
    return p


def convert_actionformer(ckpt: str, out: str, config: str | None = None, weights: str = "ema") -> dict[str, Any]:
    """Convert ``ckpt`` to the stovtal model file ``out``; returns the ``LocalizerConfig`` kwargs."""
    from stovtal.models import ActionLocalizer, LocalizerConfig

    sd = load_actionformer_checkpoint(ckpt, weights)
    options = config_from_actionformer_yaml(config) if config else {}
    cfg = infer_config(sd, options)
    if not config:
        assumed = sorted(k for k in ACTIONFORMER_DEFAULTS if k not in ("nms",) and k in cfg
                         and cfg[k] == ACTIONFORMER_DEFAULTS[k])
        print(f"convert: no --config; ActionFormer defaults assumed for: {', '.join(assumed)}, nms "
              f"(pass the authors' YAML to set them)", file=sys.stderr)
    try:
        model = ActionLocalizer(LocalizerConfig(**cfg))
    except ValueError as exc:
        raise ConversionError(f"{ckpt}: the converted configuration is invalid: {exc}") from None
    converted = convert_state_dict(sd, model.state_dict())
    model.load_state_dict(converted)
    meta = {"source": "actionformer", "source_file": os.path.basename(ckpt), "source_weights": weights}
    if config:
        meta["source_config"] = os.path.basename(config)
    write_localizer_file(out, cfg, converted, meta)
    return cfg


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = convert_actionformer(args.ckpt, args.out, args.config, args.weights)
    n_cls = cfg.get("head_num_classes", 1)
    note = (f"; class-aware head ({n_cls} classes): actionness = max over the class probabilities"
            if n_cls > 1 else "")
    print(f"wrote {args.out}: {cfg['embed_layers']}/{cfg['stem_layers']}/{cfg['branch_layers']} layers, "
          f"embed {cfg['embed_dim']}, window {cfg['window']}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
