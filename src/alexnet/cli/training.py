"""``alexnet train`` and ``prepare``: a run's settings (defaults < recipe < --config < flags), the run,
and an image folder made into shards for it."""

from __future__ import annotations

import argparse
import dataclasses
import os

from alexnet.cli.flags import add_config_flags, positive_int, say
from alexnet.config import TrainConfig, load_config_file
from alexnet.errors import ConfigError


def train_settings(args) -> TrainConfig:
    """The settings a parsed ``alexnet train`` runs with: its --config file, under the flags given."""
    values = load_config_file(args.config) if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        if hasattr(args, f.name):  # flags given on the command line win over the file
            values[f.name] = getattr(args, f.name)
    # the weights' network and input size, under the settings file and the flags (a missing file: the run says so)
    if isinstance(values.get("init_from"), str) and os.path.isfile(values["init_from"]):
        from alexnet.training.transfer import source_settings

        values = {**source_settings(values["init_from"]), **values}
    return TrainConfig.from_dict(values, source=args.config or "settings")


def settings_from_flags(flags: list[str]) -> TrainConfig:
    """``alexnet train``'s flags as the settings it would run with (bench --only accuracy's --train),
    parsed and refused as ``alexnet train FLAGS`` would be."""
    parser = argparse.ArgumentParser(prog="alexnet")
    add_train(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return train_settings(parser.parse_args(["train", *flags]))


def _cmd_train(args) -> int:
    from alexnet.system import distributed
    from alexnet.training.loop import train

    if args.resume:
        # a resumed run keeps its own settings; only its length may grow (where its schedule allows)
        given = [f.name for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name) and f.name != "epochs"]
        if given or args.config:
            flags = ", ".join("--" + g.replace("_", "-") for g in given) or "--config"
            raise ConfigError(
                f"--resume continues with the run's own settings (only --epochs may be given); drop {flags}"
            )
        result = train(TrainConfig(), resume=args.resume, epochs=getattr(args, "epochs", None))
    else:
        result = train(train_settings(args), argv=["alexnet", *args.argv])
    if not distributed.from_environment().writer:  # under torchrun rank 0 speaks for the run
        return 0
    say(
        "done: validation top-1 "
        f"{100 * result['val_top1']:.2f}% top-5 {100 * result['val_top5']:.2f}%; run folder {result['run_dir']}"
    )
    return 0


def _cmd_prepare(args) -> int:
    from alexnet.data.prepare import prepare

    index = prepare(
        args.src,
        args.dst,
        resize=args.resize,
        shard_size=args.shard_size,
        workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        seed=args.seed,
        val_fraction=args.val_fraction,
        force=args.force,
    )
    counts = {k: (index.count(k), len(v)) for k, v in index.splits.items()}
    print(
        f"wrote {counts['train'][0]} train images in {counts['train'][1]} shard(s) and {counts['val'][0]} val "
        "images in "
        f"{counts['val'][1]} to {args.dst}; train with: alexnet train --data {args.dst}"
    )
    return 0


def add_train(sub) -> None:
    """``alexnet train``: --config, --resume and one flag per TrainConfig field."""
    p = sub.add_parser("train", help="train (Fashion-MNIST by default, or --data FOLDER), evaluate each epoch")
    p.add_argument("--config", help="JSON file of settings (flags override it)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help=(
            "continue the run in RUN_DIR (or the newest run in a folder of runs) from its last checkpoint; with "
            "--epochs N, extend it to N epochs"
        ),
    )
    add_config_flags(p)
    p.set_defaults(func=_cmd_train)


def add_prepare(sub) -> None:
    """``alexnet prepare SRC DST``: an image folder to shards."""
    p = sub.add_parser(
        "prepare", help="an image folder to pre-resized WebDataset tar shards with an index, for train --data DST"
    )
    p.add_argument("src", metavar="SRC", help="an image folder: one sub-folder per class, or train/ and val/ of them")
    p.add_argument(
        "dst", metavar="DST", help="an empty folder for the shards, index.json, classes.txt and bad_images.json"
    )
    p.add_argument(
        "--resize",
        type=positive_int,
        default=256,
        help="shorter side of the stored images (default: 256, the paper's)",
    )
    p.add_argument("--shard-size", default="1GB", help="largest shard, e.g. 1GB, 500MB, 2GiB (default: 1GB)")
    p.add_argument(
        "--workers",
        type=int,
        default=TrainConfig.workers,
        help="processes decoding and encoding (default: %(default)s)",
    )
    p.add_argument("--skip-bad-images", action="store_true", help="leave bad files out, listed in DST/bad_images.json")
    p.add_argument(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        help="seeds the hold-out of a plain folder and the training images' order",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=TrainConfig.val_fraction,
        help="hold-out share of a plain folder (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier prepare's files in DST")
    p.set_defaults(func=_cmd_prepare)
