"""The ``alexnet`` command: models, recipes, summary, train, experiment, evaluate, predict, visualize,
report, export, convert, prepare, serve, bench.

Every sub-command parses its flags and calls the library (``train``, ``evaluate_checkpoint``,
``Predictor``, ``formats.export``, ...); errors in what the user gave come out as one line on
stderr, exit code 2 for usage errors and 1 for the rest (the kinds are in errors.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys

from alexnet.config import TrainConfig, load_config_file, setting_types
from alexnet.errors import CheckpointError, ConfigError, DataError, Interrupted, RunError, message_lines, printable
from alexnet.ranges import MAX_BATCH_SIZE, SEED_RANGE
from alexnet.system.distributed import Forwarded
from alexnet.system.runtime import parse_device


def _say(text: str) -> None:
    """Print a result whose names come from files (class names, paths) line by line, each escaped
    by :func:`printable`: a name cannot add lines or send the terminal escape sequences."""
    print("\n".join(printable(line) for line in str(text).split("\n")))


def _cmd_models(args) -> int:
    from alexnet.models import MODELS

    width = max(map(len, MODELS))
    for v in MODELS.values():
        print(f"{v.name:<{width}} {v.description} (native input {v.image_size}, init {v.init})")
    return 0


def _cmd_recipes(args) -> int:
    from alexnet.config import recipe_settings
    from alexnet.recipes import RECIPES

    for name in RECIPES:
        settings = recipe_settings(name)
        print(f"{name}:" + ("" if RECIPES[name] else " (the defaults)"))
        for key, value in settings.items():
            mark = "*" if key in RECIPES[name] else " "
            print(f"  {mark} --{key.replace('_', '-'):<16} {value}")
    print("* set by the recipe; settings from --config and flags given with --recipe still win (docs/paper.md)")
    return 0


def _cmd_summary(args) -> int:
    from alexnet.models import build_model, check_image_size, native_image_size
    from alexnet.summary import format_table, summarize

    size = args.image_size or native_image_size(args.model)
    check_image_size(size, args.model)
    import torch

    with torch.device("meta"):  # shapes and counts only: 10**9 classes would otherwise be 16 TB of weights
        model = build_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels)
    result = summarize(model, size, args.in_channels)
    result["model"] = args.model
    print(json.dumps(result, indent=2) if args.json else f"{args.model}: " + format_table(result))
    return 0


def _train_settings(args) -> TrainConfig:
    values = load_config_file(args.config) if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        if hasattr(args, f.name):  # flags given on the command line win over the file
            values[f.name] = getattr(args, f.name)
    # the weights' network and input size, under the settings file and the flags (a missing file: the run says so)
    if isinstance(values.get("init_from"), str) and os.path.isfile(values["init_from"]):
        from alexnet.training.transfer import source_settings

        values = {**source_settings(values["init_from"]), **values}
    return TrainConfig.from_dict(values, source=args.config or "settings")


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
        result = train(_train_settings(args), argv=["alexnet", *args.argv])
    if not distributed.from_environment().writer:  # under torchrun rank 0 speaks for the run
        return 0
    _say(
        "done: validation top-1 "
        f"{100 * result['val_top1']:.2f}% top-5 {100 * result['val_top5']:.2f}%; run folder {result['run_dir']}"
    )
    return 0


def _cmd_experiment(args) -> int:
    from alexnet.analysis import transfer
    from alexnet.analysis.experiments import EXPERIMENTS, Options, list_lines, run_all, run_experiment

    if args.list:
        print("\n".join([*list_lines(), transfer.list_line()]))
        return 0
    if args.name is None:
        raise ConfigError(f"name an experiment: {', '.join(EXPERIMENTS)}, transfer, or all (--list describes them)")
    if args.name not in (*EXPERIMENTS, "transfer", "all"):
        known = ", ".join([*EXPERIMENTS, "transfer"])
        raise ConfigError(f"unknown experiment {args.name!r}; choose one of: {known} (or all)")
    if args.name == "transfer":
        return _cmd_transfer(args)
    given = [flag for flag in ("layers", "split", "few") if getattr(args, flag) is not None]
    if given:
        raise ConfigError(f"--{given[0]} is for the transfer experiment; {args.name} does not take it")
    number = lambda flag, text: None if text is None else _positive_flag(flag, text)  # noqa: E731
    if args.seeds is not None and number("--seeds", args.seeds) > MAX_SEEDS:  # each one whole training runs
        raise ConfigError(f"--seeds {args.seeds[:20]} is above the maximum {MAX_SEEDS}")
    opts = Options(
        epochs=number("--epochs", args.epochs),
        seeds=number("--seeds", args.seeds),
        subset="all" if args.subset == "all" else number("--subset", args.subset),
        image_size=number("--image-size", args.image_size),
        data=args.data,
        device=args.device,
        keep_checkpoints=args.keep_checkpoints,
    )
    argv = ["alexnet", *args.argv]
    if args.name == "all":
        run_all(opts, args.out, argv=argv)
    else:
        run_experiment(args.name, opts, args.out, argv=argv)
    return 0


MAX_SEEDS = 1000  # seeds of an experiment's every arm: more is a typo, and each is a run


def _cmd_transfer(args) -> int:
    """``alexnet experiment transfer``: its own options over the defaults (analysis/transfer.py)."""
    from alexnet.analysis.ablations import BASE
    from alexnet.analysis.transfer import Options, run_transfer

    given = {}
    for key in ("epochs", "seeds"):
        if getattr(args, key) is not None:
            given[key] = _positive_flag(f"--{key}", getattr(args, key))
    if args.subset is not None:
        given["subset"] = None if args.subset == "all" else _positive_flag("--subset", args.subset)
    if args.image_size != str(BASE["image_size"]):
        given["image_size"] = _positive_flag("--image-size", args.image_size)
    if args.layers is not None:
        given["layers"] = tuple(n.strip() for n in args.layers.split(","))
    if args.few is not None:
        given["few"] = tuple(_positive_flag("--few", m.strip()) for m in args.few.split(","))
    if args.split is not None:
        given["split"] = args.split
    opts = Options(**given, data=args.data, device=args.device)
    run_transfer(opts, args.out, argv=["alexnet", *args.argv])
    return 0


def _positive_flag(flag: str, text: str) -> int:
    """A positive integer flag, or a one-line ConfigError naming it (not argparse's usage text)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {text!r}")
    return value


def _cmd_evaluate(args) -> int:
    from alexnet.inference.evaluate import evaluate_models, format_report

    result = evaluate_models(args.checkpoint, data=args.data, device=args.device, out=args.out, ten_crop=args.ten_crop)
    _say(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


def _cmd_predict(args) -> int:
    from alexnet.inference.predict import Predictor

    if (args.checkpoint is None) == (args.weights is None):
        raise ConfigError("give exactly one of --checkpoint CKPT or --weights FILE")
    if args.weights is not None:
        predictor = Predictor.load(args.weights, format="torchvision", source=f"--weights {args.weights}")
    else:
        predictor = Predictor.load(args.checkpoint, source=f"--checkpoint {args.checkpoint}")
    results = predictor.predict(args.images, top=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        _say(r["image"])
        for p in r["predictions"]:
            _say(f"  {100 * p['probability']:6.2f}%  {p['class']}")
    return 0


def _cmd_embed(args) -> int:
    from alexnet.inference.embed import embed

    if (args.checkpoint is None) == (args.weights is None):
        raise ConfigError("give exactly one of --checkpoint FILE or --weights FILE")
    if bool(args.images) == (args.data is not None):
        raise ConfigError("give --data DIR or image files, not both and not neither")
    result = embed(
        args.checkpoint or args.weights,
        args.out,
        data=args.data,
        images=args.images,
        layer=args.layer,
        split=args.split,
        format="torchvision" if args.weights is not None else None,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
    )
    print(f"wrote {result['out']}: {args.layer} features of {result['images']} images ({result['dims']} each)")
    return 0


def _cmd_visualize(args) -> int:
    from alexnet.analysis import visualize

    common = dict(seed=args.seed, data=args.data, device=args.device) if args.figure != "filters" else {}
    if args.figure == "filters":
        out = visualize.visualize_filters(args.checkpoint, args.out)
    elif args.figure == "predictions":
        out, _ = visualize.visualize_predictions(args.checkpoint, args.images, args.out, count=args.count, **common)
    else:
        out, found = visualize.visualize_neighbours(
            args.checkpoint,
            args.out,
            count=args.count,
            neighbours=args.neighbours,
            train_images=args.train_images,
            **common,
        )
        print(f"searched {found['searched']:,} training images")
    _say(f"wrote {out}")
    return 0


def _cmd_report(args) -> int:
    from alexnet.analysis.report import write_report

    _say(f"wrote {write_report(args.folder, args.out, device=args.device, train_images=args.train_images)}")
    return 0


def _cmd_export(args) -> int:
    from alexnet.formats import export

    paths = export(args.checkpoint, format=args.format, out=args.out, force=args.force)
    _say("wrote " + " and ".join(str(p) for p in paths))
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


def _cmd_bench(args) -> int:
    from alexnet.bench import run_bench
    from alexnet.system.files import check_writable_folder

    if args.json:  # before the benchmarks, whose record would otherwise be lost
        if os.path.isdir(args.json):
            raise ConfigError(f"--json {args.json}: a folder; give a file name")
        check_writable_folder(os.path.dirname(os.path.abspath(args.json)), f"--json {args.json}")

    if args.only == "accuracy":  # whole training runs: never part of the default set
        from alexnet.bench.accuracy import run_accuracy

        flags = shlex.split(args.train)
        cfg = _train_settings(build_parser().parse_args(["train", *flags]))
        run_accuracy(cfg, flags, args.seeds, out=args.out, json_path=args.json)
        return 0
    run_bench(
        device=args.device,
        only=args.only,
        quick=args.quick,
        json_path=args.json,
        workers=args.workers,
        warmup=args.warmup,
        repeats=args.repeats,
        batch_size=args.batch_size,
    )
    return 0


def _cmd_convert(args) -> int:
    from alexnet.formats import convert

    paths = convert(args.file, args.to, force=args.force, mean_file=args.mean_file)
    _say("wrote " + " and ".join(str(p) for p in paths))
    return 0


def _cmd_serve(args) -> int:
    from alexnet.inference.serve import ServeSettings, serve

    return serve(
        ServeSettings(
            checkpoint=args.checkpoint,
            host=args.host,
            port=args.port,
            max_bytes=args.max_bytes,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            device=args.device,
        )
    )


def _positive_int(text: str) -> int:
    value = _bounded_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_BATCH_SIZE:  # train's bound: a batch of 10**17 images overflows torch's storage size
        raise argparse.ArgumentTypeError(f"{value} is above the maximum {MAX_BATCH_SIZE}")
    return value


def _count(text: str) -> int:
    value = _bounded_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _seed(text: str) -> int:
    value = _bounded_int(text, 20)
    if value not in SEED_RANGE:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**64-1 (what torch takes), got {text}")
    return value


def _bounded_int(text: str, most: int = 18) -> int:
    """An integer flag of at most 18 digits: larger is a typo, and Python refuses to read one of
    over 4300 digits with a ValueError that argparse would show as "invalid value"."""
    digits = text.strip().lstrip("+-").lstrip("0")
    if len(digits) > most:
        raise argparse.ArgumentTypeError(f"{text[:20]}... has {len(digits)} digits; give at most {most}")
    return int(text)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field: its type from config.setting_types (TrainConfig checks the
    choices, in one line), its help from the field. Absent flags stay absent (SUPPRESS), so a
    settings file or the default decides."""
    types = setting_types()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = types[f.name][0]
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from alexnet.formats import EXPORTERS
    from alexnet.models import MODELS

    parser = argparse.ArgumentParser(
        prog="alexnet", description="AlexNet: the source document's, the 2012 paper's and torchvision's."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("models", help="list the AlexNet variants").set_defaults(func=_cmd_models)
    sub.add_parser("recipes", help="list the named recipes (train --recipe NAME) and what each sets").set_defaults(
        func=_cmd_recipes
    )

    p = sub.add_parser("summary", help="per-layer shapes, parameters, multiply-accumulates and memory")
    p.add_argument("--model", default="alexnet", choices=list(MODELS))
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="default: the variant's native size (227; 224 for alexnet_owt, 67 for convnet4)",
    )
    p.add_argument("--num-classes", type=_positive_int, default=1000)
    p.add_argument("--in-channels", type=_positive_int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_summary)

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
    _add_config_flags(p)
    p.set_defaults(func=_cmd_train)

    from alexnet.analysis.ablations import BASE

    p = sub.add_parser(
        "experiment", help="one of the paper's ablations, measured over arms and seeds: a table and a figure (--list)"
    )
    p.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help=(
            "relu-vs-tanh, relu-vs-tanh-alexnet, dropout, augmentation, lrn, pooling, towers, or all; "
            "transfer (docs/transfer.md)"
        ),
    )
    p.add_argument(
        "--list", action="store_true", help="list the experiments, their defaults and their time on 2 CPU cores"
    )
    p.add_argument("--epochs", default=None, help="epochs of every run (default: the experiment's)")
    p.add_argument("--seeds", default=None, help="seeds 0..K-1 of every arm (default: the experiment's)")
    p.add_argument(
        "--subset", default=None, help="training images per run, a seeded subset, or all (default: the experiment's)"
    )
    p.add_argument("--image-size", default=str(BASE["image_size"]), help="input side (default: %(default)s)")
    p.add_argument("--data", default=None, help="as train --data (default: Fashion-MNIST)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--out",
        default=None,
        help=(
            "the experiment's folder; the same folder again skips finished arm-seeds (default: "
            "runs/experiment-NAME-<time>)"
        ),
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep the checkpoints of finished runs (by default deleted once measured: 0.5 GB each for alexnet)",
    )
    p.add_argument("--layers", default=None, help="transfer: the layers n copied, e.g. conv2,conv4,fc6 (conv1..fc7)")
    p.add_argument("--split", default=None, help="transfer: fixed (classes 0-4 / 5-9) or random halves per seed")
    p.add_argument("--few", default=None, help="transfer: training images per class of B, e.g. 10,100,1000")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser(
        "evaluate", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint, or of an ensemble"
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="a checkpoint or export; repeat it for an ensemble (the models' softmax averaged)",
    )
    p.add_argument(
        "--ten-crop",
        action="store_true",
        help="also the paper's ten-crop testing: softmax averaged over four corners, the centre and their mirrors",
    )
    p.add_argument("--data", default=None, help="evaluate on this data instead of the checkpoint's own")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for evaluation.json and confusion.png (default: the run folder)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint written by alexnet train or convert, a .safetensors from alexnet export, or a .caffemodel",
    )
    p.add_argument("--weights", default=None, help="a torchvision AlexNet weights file (alexnet-owt-*.pth)")
    p.add_argument("--top", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "embed", help="FC6 or FC7 features of images from any model file, saved as .npz (DeCAF's use of a network)"
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (or give --data)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint, a .safetensors export or a .caffemodel")
    p.add_argument("--weights", default=None, help="a torchvision AlexNet weights file (alexnet-owt-*.pth)")
    p.add_argument(
        "--data",
        default=None,
        help="every image of this data with its labels: an IDX folder (train and test) or an image folder",
    )
    p.add_argument("--split", default="all", help="all, train or test (an image folder's val/) (default: all)")
    p.add_argument("--layer", default="fc7", help="fc6 or fc7, after its ReLU (default: fc7)")
    p.add_argument("--out", required=True, help="the .npz to write: features, labels, classes, paths, splits")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per forward pass (default: 128)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser(
        "visualize",
        help="the paper's figures 3 and 4 for a checkpoint: conv1 filters, top-5 predictions, FC7 neighbours",
    )
    figures = p.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    for name, text in (
        ("filters", "conv1's kernels as an image grid (figure 3); alexnet2012's two towers as two blocks"),
        ("predictions", "images with their top-5 classes as bars (figure 4, left)"),
        ("neighbours", "test images beside the training images nearest in FC7 feature space (figure 4, right)"),
    ):
        f = figures.add_parser(name, help=text)
        f.add_argument(
            "--checkpoint",
            required=True,
            help="a checkpoint written by alexnet train (or any model file predict reads)",
        )
        if name == "predictions":
            f.add_argument(
                "images",
                nargs="*",
                metavar="IMAGE",
                help="image files (default: a sample of the model's test/validation images)",
            )
        f.add_argument(
            "--out", default=None, help=f"the PNG to write (default: {name}.png in the checkpoint's run folder)"
        )
        if name == "filters":
            continue
        f.add_argument(
            "--count",
            type=_positive_int,
            default=8 if name == "predictions" else 5,
            help="test images to show (default: %(default)s)",
        )
        if name == "neighbours":
            f.add_argument(
                "--neighbours",
                type=_positive_int,
                default=6,
                help="training images shown per test image (default: %(default)s, the paper's)",
            )
            f.add_argument(
                "--train-images",
                type=_positive_int,
                default=10_000,
                help="training images searched, a seeded subset (default: %(default)s)",
            )
        f.add_argument("--seed", type=_seed, default=0, help="seeds which images are drawn (default: %(default)s)")
        f.add_argument(
            "--data",
            default=None,
            help="draw images from this data instead of the checkpoint's own (same kind and classes)",
        )
        f.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser("report", help="one self-contained HTML page for a run folder or an experiment folder")
    p.add_argument(
        "folder", metavar="RUN_DIR", help="a run folder (alexnet train's), or a folder of tables, figures and runs"
    )
    p.add_argument(
        "--out",
        default=None,
        help=(
            "the HTML file to write (default: RUN_DIR/report.html); a file not written by alexnet report is never "
            "replaced"
        ),
    )
    p.add_argument(
        "--train-images",
        type=_positive_int,
        default=10_000,
        help="training images the neighbour search covers (default: %(default)s)",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write a checkpoint as safetensors (+ JSON sidecar), ONNX or torch.export's .pt2")
    p.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by alexnet train (or any model file predict reads)"
    )
    p.add_argument(
        "--format",
        default="safetensors",
        choices=list(EXPORTERS),
        help="file format (default: safetensors): " + "; ".join(f"{n}: {f.description}" for n, f in EXPORTERS.items()),
    )
    p.add_argument(
        "--out",
        default=None,
        help=(
            "the output file or a folder (default: next to the checkpoint, same stem); a safetensors export's "
            "sidecar is <same stem>.json"
        ),
    )
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "prepare", help="an image folder to pre-resized WebDataset tar shards with an index, for train --data DST"
    )
    p.add_argument("src", metavar="SRC", help="an image folder: one sub-folder per class, or train/ and val/ of them")
    p.add_argument(
        "dst", metavar="DST", help="an empty folder for the shards, index.json, classes.txt and bad_images.json"
    )
    p.add_argument(
        "--resize",
        type=_positive_int,
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

    p = sub.add_parser(
        "convert", help="convert torchvision's alexnet-owt-*.pth or Caffe's bvlc_alexnet.caffemodel to our formats"
    )
    p.add_argument(
        "file", metavar="FILE", help="alexnet-owt-*.pth (into alexnet_owt) or a .caffemodel (into alexnet2012)"
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="OUT",
        help=(
            "the file to write; its suffix picks the format: .pt (checkpoint), .safetensors (+ .json sidecar), "
            ".onnx, .pt2"
        ),
    )
    p.add_argument(
        "--mean-file",
        default=None,
        metavar="BINARYPROTO",
        help=(
            "Caffe only: a mean image (imagenet_mean.binaryproto) whose per-channel mean to subtract instead of "
            "ilsvrc_2012_mean's (104.0, 116.7, 122.7 BGR)"
        ),
    )
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "serve", help="an HTTP prediction service: POST /predict, GET /health, /metrics, and a page at /"
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint written by alexnet train, or a .safetensors from alexnet export",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=20_000_000,
        help="largest request body accepted, in bytes (default: 20000000)",
    )
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=8,
        help="images per forward pass when requests arrive together (default: 8; 1: no batching)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="how long a forward pass waits for more requests to join it (default: 0)",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "bench", help="speed benchmarks, each against a baseline in the same process (docs/performance.md)"
    )
    p.add_argument(
        "--quick", action="store_true", help="the CPU set in a few minutes: alexnet only, small batches, 3 repeats"
    )
    p.add_argument(
        "--only",
        choices=("step", "compile", "pipeline", "e2e", "accuracy"),
        help=(
            "one benchmark: model step, torch.compile (CUDA), input pipeline, end to end, or accuracy (time to 90%% "
            "and 91%%: whole training runs, never in the default set)"
        ),
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="--only accuracy: one training run per seed (default: 0 1 2)",
    )
    p.add_argument(
        "--train",
        default="",
        metavar="FLAGS",
        help="--only accuracy: alexnet train's flags, quoted (default: none, the default recipe)",
    )
    p.add_argument(
        "--out", help="--only accuracy: parent folder of the runs (default: a temporary folder, removed after)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the record (machine, settings, rows, checks) as JSON")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--workers", type=_count, default=1, help="loader worker processes of both pipelines (default: 1)")
    p.add_argument("--warmup", type=_count, help="untimed runs of each side first (default: 1 with --quick, else 2)")
    p.add_argument(
        "--repeats", type=_positive_int, help="timed runs of each side, interleaved (default: 3 with --quick, else 5)"
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        help="the step and choice rows' batch (default: 32 with --quick, else 128; 256 on CUDA)",
    )
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alexnet`` and ``python -m alexnet``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        if isinstance(getattr(args, "device", None), str):  # every --device, before anything runs
            parse_device(args.device)
        return args.func(args)
    except BrokenPipeError:  # `alexnet summary | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as e:
        print(f"alexnet {args.command}: error: " + "\n".join(message_lines(e)), file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"alexnet {args.command}: " + "\n".join(message_lines(e)), file=sys.stderr)
        return e.exit_code
    except Forwarded:  # rank 0's error, which rank 0 prints: the other processes only exit
        return 1
    except (DataError, CheckpointError, RunError, ValueError, FloatingPointError, OSError) as e:
        print(f"alexnet {args.command}: error: " + "\n".join(message_lines(e)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130
