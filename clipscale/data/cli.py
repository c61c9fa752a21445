"""`clipscale data synth`, `synth-eval` (built-in synthetic data) and `emoji` (real emoji data).

Standard library only at top level; the generator is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from clipscale.jsonout import add_json_flag, emit, progress_to_stderr


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (must not exist, or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--image-size", type=int, default=32, choices=(32, 64), help="image side in pixels")
    parser.add_argument("--distribution", default="uniform", metavar="NAME",
                        help="attribute/caption distribution: uniform or zipf")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR")
    add_json_flag(parser)


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="generate synthetic data or build the emoji data",
                                 description="Generate the built-in synthetic captioned scenes, or build "
                                             "the real emoji dataset from pinned npm packages.")
    verbs = data.add_subparsers(dest="data_verb", metavar="VERB")
    data.set_defaults(handler=functools.partial(_usage, data))
    synth = verbs.add_parser("synth", help="write training shards (webdataset, img2dataset layout)",
                             description="Write training shards DIR/00000.tar ... and DIR/meta.json.")
    synth.add_argument("--samples", type=int, required=True, metavar="N", help="number of samples")
    synth.add_argument("--shard-size", type=int, default=10_000, metavar="N",
                       help="samples per shard (<= 10000)")
    _add_common(synth)
    synth.set_defaults(handler=_synth)
    synth_eval = verbs.add_parser("synth-eval", help="write eval sets (CLIP_benchmark local wds layout)",
                                  description="Write DIR/<task>/ for every synthetic eval task.")
    synth_eval.add_argument("--samples-per-task", type=int, default=1000, metavar="N", help="images per task")
    synth_eval.add_argument("--train-samples-per-task", type=int, default=None, metavar="N",
                            help="images in each classification task's train split (for linear probes); "
                                 "default: as many as --samples-per-task, 0 for none")
    _add_common(synth_eval)
    synth_eval.set_defaults(handler=_synth_eval)
    _register_emoji(verbs)


def _register_emoji(verbs: Any) -> None:
    emoji = verbs.add_parser(
        "emoji", help="build real captioned emoji data (training shards, eval sets, suite)",
        description="Build DIR/train/<style>/*.tar, DIR/eval/<set>/, DIR/emoji_suite.toml, DIR/manifest.csv, "
                    "DIR/LICENSES/ and DIR/meta.json from the npm packages emoji-datasource-google@16.0.0, "
                    "emoji-datasource-twitter@16.0.0, openmoji@17.0.0 and emojibase-data@17.0.0. 80 % of "
                    "the concepts train, 20 % are held out for evaluation; skin-tone variants are dropped.")
    emoji.add_argument("--out", required=True, metavar="DIR",
                       help="output directory (must not exist, or be empty)")
    emoji.add_argument("--styles", default="google,twitter,openmoji", metavar="LIST",
                       help="comma-separated art styles")
    emoji.add_argument("--image-size", type=int, default=32, metavar="PX",
                       help="image side in pixels")
    emoji.add_argument("--packages", default=None, metavar="NODE_MODULES",
                       help="a node_modules folder holding the four pinned packages; default: install them "
                            "with npm into a cache folder ($XDG_CACHE_HOME/clipscale/npm/)")
    emoji.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR")
    add_json_flag(emoji)
    emoji.set_defaults(handler=_emoji)


def _usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`clipscale data` without a verb: show this group's verbs, exit 2 like argparse does."""
    parser.print_help(sys.stderr)
    return 2


def _synth(args: argparse.Namespace) -> int:
    from clipscale.data.synth import write_train_shards

    with progress_to_stderr(args.json):
        meta = write_train_shards(args.out, samples=args.samples, seed=args.seed, image_size=args.image_size,
                                  distribution=args.distribution, shard_size=args.shard_size,
                                  overwrite=args.overwrite)
    if args.json:
        emit({"out": args.out, "meta": meta})
        return 0
    print(f"wrote {meta['samples']:,} samples in {meta['num_shards']} shard(s) to {args.out} "
          f"({meta['image_size']} px, distribution {meta['distribution']}, seed {meta['seed']})")
    return 0


def _synth_eval(args: argparse.Namespace) -> int:
    from clipscale.data.synth import write_eval_sets

    with progress_to_stderr(args.json):
        meta = write_eval_sets(args.out, seed=args.seed, image_size=args.image_size,
                               samples_per_task=args.samples_per_task,
                               train_samples_per_task=args.train_samples_per_task,
                               distribution=args.distribution, overwrite=args.overwrite)
    if args.json:
        emit({"out": args.out, "meta": meta})
        return 0
    tasks = ", ".join(meta["tasks"])
    print(f"wrote {len(meta['tasks'])} eval sets ({tasks}) of {meta['samples_per_task']:,} images each "
          f"to {args.out} ({meta['image_size']} px, seed {meta['seed']})")
    return 0


def _emoji(args: argparse.Namespace) -> int:
    from clipscale.data.emoji import build_emoji_dataset

    with progress_to_stderr(args.json):
        meta = build_emoji_dataset(args.out, styles=args.styles, image_size=args.image_size,
                                   packages=args.packages, overwrite=args.overwrite)
    if args.json:
        emit({"out": args.out, "meta": meta})
        return 0
    per_style = ", ".join(f"{s} {c['train']:,} train / {c['unseen']:,} held out"
                          for s, c in meta["samples"].items() if s in meta["styles"])
    concepts = meta["concepts"]
    print(f"wrote {concepts['total']:,} concepts ({concepts['train']:,} train, {concepts['unseen']:,} "
          f"held out) to {args.out}: {per_style} images ({meta['image_size']} px, skin-tone variants "
          f"{meta['skin_tones']}); suite {args.out}/{meta['suite']}")
    return 0
