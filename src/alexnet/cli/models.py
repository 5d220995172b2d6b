"""``alexnet models``, ``recipes`` and ``summary``: the networks and the settings, before any run."""

from __future__ import annotations

import json

from alexnet.cli.flags import positive_int


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


def add_models(sub) -> None:
    """``alexnet models``: the variants, one line each."""
    sub.add_parser("models", help="list the AlexNet variants").set_defaults(func=_cmd_models)


def add_recipes(sub) -> None:
    """``alexnet recipes``: each named recipe and what it sets."""
    sub.add_parser("recipes", help="list the named recipes (train --recipe NAME) and what each sets").set_defaults(
        func=_cmd_recipes
    )


def add_summary(sub) -> None:
    """``alexnet summary``: a variant's per-layer table (or JSON)."""
    from alexnet.models import MODELS

    p = sub.add_parser("summary", help="per-layer shapes, parameters, multiply-accumulates and memory")
    p.add_argument("--model", default="alexnet", choices=list(MODELS))
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="default: the variant's native size (227; 224 for alexnet_owt, 67 for convnet4)",
    )
    p.add_argument("--num-classes", type=positive_int, default=1000)
    p.add_argument("--in-channels", type=positive_int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_summary)
