"""`clipscale models` and `clipscale flops MODEL`: what can be trained, and what one sample costs.

Standard library only at top level; torch/open_clip are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from typing import Any

from clipscale.jsonout import add_json_flag


def register(subparsers: Any) -> None:
    models = subparsers.add_parser(
        "models", help="list model names (tiny ladder first)",
        description="List every model name clipscale can build: the tiny ladder and its BPE twins "
                    "(tiny-S<i>-bpe: open_clip's tokenizer, context 32) marked, with forward GMACs per "
                    "sample, parameters and non-embedding parameters (params_nonemb), first, then "
                    "open_clip's architectures.")
    add_json_flag(models)  # one JSON list of objects
    _model_config_arg(models)
    models.set_defaults(handler=_models)
    flops = subparsers.add_parser(
        "flops", help="parameters and forward GMACs of one sample, per tower",
        description="Parameters (millions) and GMACs (multiply-accumulates) of one forward pass of one "
                    "sample: one image at the model's image size and one caption of its context length "
                    "(77 tokens for open_clip models). Counted by tracing the model on the meta device. "
                    "--json: one object with arch_info.csv's key names.")
    flops.add_argument("model", metavar="MODEL", help="model name (see `clipscale models`)")
    flops.add_argument("--image-size", type=int, default=None, metavar="PX",
                       help="override the model's image size (e.g. 336 for the paper's ViT-H-14-336)")
    add_json_flag(flops)
    _model_config_arg(flops)
    flops.set_defaults(handler=_flops)


def _model_config_arg(parser: Any) -> None:
    parser.add_argument("--model-config", action="append", default=[], metavar="FILE.json",
                        help="register an open_clip model config (name = file stem) first; repeatable")


def _models(args: argparse.Namespace) -> int:
    from clipscale.io import dumps
    from clipscale.models.flops import count_flops
    from clipscale.models.registry import is_ladder, list_models, register_model_configs

    register_model_configs(args.model_config)
    rows: list[dict[str, Any]] = []
    for name in list_models():
        row: dict[str, Any] = {"model": name, "ladder": is_ladder(name), "gmacs": None, "mparams": None,
                               "mparams_nonemb": None}
        if row["ladder"]:
            report = count_flops(name)
            row.update(gmacs=report.gmacs, mparams=report.mparams, mparams_nonemb=report.mparams_nonemb)
        rows.append(row)
    if args.json:
        print(dumps(rows))
        return 0
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  ladder  {'GMACs':>9}  {'Mparams':>8}  {'non-emb':>8}")
    for r in rows:
        if r["ladder"]:
            print(f"{r['model']:<{width}}  *       {r['gmacs']:>9.5f}  {r['mparams']:>8.3f}  "
                  f"{r['mparams_nonemb']:>8.3f}")
        else:
            print(r["model"])
    print(f"{sum(r['ladder'] for r in rows)} ladder models (*), {len(rows)} in all; "
          "`clipscale flops MODEL` for any model's cost")
    return 0


def _flops(args: argparse.Namespace) -> int:
    from clipscale.errors import ClipscaleError
    from clipscale.io import dumps
    from clipscale.models.flops import count_flops
    from clipscale.models.registry import register_model_configs

    register_model_configs(args.model_config)
    if args.image_size is not None and args.image_size <= 0:
        raise ClipscaleError(f"--image-size must be a positive number of pixels, got {args.image_size}")
    report = count_flops(args.model, image_size=args.image_size)
    if args.json:
        print(dumps(report.to_dict()))
        return 0
    print(f"{report.model}: one {report.image_size}px image + one {report.context_length}-token caption")
    print(f"{'tower':<7} {'params (M)':>12}  {'GMACs':>12}")
    rows = [("image", report.image_mparams, report.image_gmacs),
            ("text", report.text_mparams, report.text_gmacs)]
    if report.decoder_gmacs:  # CoCa's multimodal text decoder
        rows.append(("decoder", report.decoder_mparams, report.decoder_gmacs))
    for tower, mparams, gmacs in (*rows, ("total", report.mparams, report.gmacs)):
        print(f"{tower:<7} {_fmt(mparams):>12}  {_fmt(gmacs):>12}")
    print(f"{'non-emb':<7} {_fmt(report.mparams_nonemb):>12}  (params without token/positional embeddings)")
    return 0


def _fmt(value: float) -> str:
    """Two decimals like the paper's table, more significant digits for tiny ladder models."""
    return f"{value:.2f}" if value >= 1 else f"{value:.4g}"
