"""``alexnet export`` and ``convert``: model files to other formats, and others' files to ours."""

from __future__ import annotations

from alexnet.cli.flags import say


def _cmd_export(args) -> int:
    from alexnet.formats import export

    paths = export(args.checkpoint, format=args.format, out=args.out, force=args.force)
    say("wrote " + " and ".join(str(p) for p in paths))
    return 0


def _cmd_convert(args) -> int:
    from alexnet.formats import convert

    paths = convert(args.file, args.to, force=args.force, mean_file=args.mean_file)
    say("wrote " + " and ".join(str(p) for p in paths))
    return 0


def add_export(sub) -> None:
    """``alexnet export``: a checkpoint as safetensors, ONNX or .pt2 (the writers in formats.EXPORTERS)."""
    from alexnet.formats import EXPORTERS

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


def add_convert(sub) -> None:
    """``alexnet convert FILE --to OUT``: torchvision's or Caffe's weights into our formats."""
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
