"""``alexnet experiment``, ``visualize`` and ``report``: the paper's ablations, its figures 3 and 4,
and one HTML page of a run or an experiment."""

from __future__ import annotations

from alexnet.cli.flags import positive_flag, positive_int, say, seed
from alexnet.errors import ConfigError

MAX_SEEDS = 1000  # seeds of an experiment's every arm: more is a typo, and each is a run


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
    number = lambda flag, text: None if text is None else positive_flag(flag, text)  # noqa: E731
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


def _cmd_transfer(args) -> int:
    """``alexnet experiment transfer``: its own options over the defaults (analysis/transfer.py)."""
    from alexnet.analysis.ablations import BASE
    from alexnet.analysis.transfer import Options, run_transfer

    given = {}
    for key in ("epochs", "seeds"):
        if getattr(args, key) is not None:
            given[key] = positive_flag(f"--{key}", getattr(args, key))
    if args.subset is not None:
        given["subset"] = None if args.subset == "all" else positive_flag("--subset", args.subset)
    if args.image_size != str(BASE["image_size"]):
        given["image_size"] = positive_flag("--image-size", args.image_size)
    if args.layers is not None:
        given["layers"] = tuple(n.strip() for n in args.layers.split(","))
    if args.few is not None:
        given["few"] = tuple(positive_flag("--few", m.strip()) for m in args.few.split(","))
    if args.split is not None:
        given["split"] = args.split
    opts = Options(**given, data=args.data, device=args.device, keep_checkpoints=args.keep_checkpoints)
    run_transfer(opts, args.out, argv=["alexnet", *args.argv])
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
    say(f"wrote {out}")
    return 0


def _cmd_report(args) -> int:
    from alexnet.analysis.report import write_report

    say(f"wrote {write_report(args.folder, args.out, device=args.device, train_images=args.train_images)}")
    return 0


def add_experiment(sub) -> None:
    """``alexnet experiment NAME``: an ablation (or the transfer grid) over arms and seeds."""
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
        help="keep the checkpoints of finished runs (by default deleted once measured: 0.5 GB each for alexnet; "
        "transfer always keeps its base nets', which the other runs copy)",
    )
    p.add_argument("--layers", default=None, help="transfer: the layers n copied, e.g. conv2,conv4,fc6 (conv1..fc7)")
    p.add_argument("--split", default=None, help="transfer: fixed (classes 0-4 / 5-9) or random halves per seed")
    p.add_argument("--few", default=None, help="transfer: training images per class of B, e.g. 10,100,1000")
    p.set_defaults(func=_cmd_experiment)


def add_visualize(sub) -> None:
    """``alexnet visualize FIGURE``: filters, predictions or neighbours."""
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
            type=positive_int,
            default=8 if name == "predictions" else 5,
            help="test images to show (default: %(default)s)",
        )
        if name == "neighbours":
            f.add_argument(
                "--neighbours",
                type=positive_int,
                default=6,
                help="training images shown per test image (default: %(default)s, the paper's)",
            )
            f.add_argument(
                "--train-images",
                type=positive_int,
                default=10_000,
                help="training images searched, a seeded subset (default: %(default)s)",
            )
        f.add_argument("--seed", type=seed, default=0, help="seeds which images are drawn (default: %(default)s)")
        f.add_argument(
            "--data",
            default=None,
            help="draw images from this data instead of the checkpoint's own (same kind and classes)",
        )
        f.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_visualize)


def add_report(sub) -> None:
    """``alexnet report RUN_DIR``: the self-contained HTML page."""
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
        type=positive_int,
        default=10_000,
        help="training images the neighbour search covers (default: %(default)s)",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_report)
