"""``alexnet evaluate``, ``predict``, ``embed`` and ``serve``: using a model file."""

from __future__ import annotations

import json

from alexnet.cli.flags import positive_int, say
from alexnet.errors import ConfigError


def _cmd_evaluate(args) -> int:
    from alexnet.inference.evaluate import evaluate_models, format_report

    result = evaluate_models(args.checkpoint, data=args.data, device=args.device, out=args.out, ten_crop=args.ten_crop)
    say(json.dumps(result, indent=2) if args.json else format_report(result))
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
        say(r["image"])
        for p in r["predictions"]:
            say(f"  {100 * p['probability']:6.2f}%  {p['class']}")
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


def add_evaluate(sub) -> None:
    """``alexnet evaluate``: one model or an ensemble, single crop or ten crops."""
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


def add_predict(sub) -> None:
    """``alexnet predict IMAGE...``: top-k classes from --checkpoint or --weights."""
    p = sub.add_parser("predict", help="top-k classes of image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint written by alexnet train or convert, a .safetensors from alexnet export, or a .caffemodel",
    )
    p.add_argument("--weights", default=None, help="a torchvision AlexNet weights file (alexnet-owt-*.pth)")
    p.add_argument("--top", type=positive_int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)


def add_embed(sub) -> None:
    """``alexnet embed``: FC6/FC7 features of images or of a data set, to .npz."""
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
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass (default: 128)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_embed)


def add_serve(sub) -> None:
    """``alexnet serve``: the HTTP prediction service."""
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
        type=positive_int,
        default=20_000_000,
        help="largest request body accepted, in bytes (default: 20000000)",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
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
