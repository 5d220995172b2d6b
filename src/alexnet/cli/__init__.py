"""The ``alexnet`` command: models, recipes, summary, train, experiment, evaluate, predict, visualize,
report, export, convert, prepare, serve, bench.

Every sub-command parses its flags and calls the library (``train``, ``evaluate_checkpoint``,
``Predictor``, ``formats.export``, ...); errors in what the user gave come out as one line on
stderr, exit code 2 for usage errors and 1 for the rest (the kinds are in errors.py). Each module
here owns a group of sub-commands, their flags beside their handlers; flags.py holds the shared flag types.
"""

from __future__ import annotations

import argparse
import os
import sys

from alexnet.cli import analysis, bench, formats, inference, models, training
from alexnet.errors import CheckpointError, ConfigError, DataError, Interrupted, RunError, message_lines
from alexnet.system.distributed import Forwarded
from alexnet.system.runtime import parse_device

# in the order `alexnet --help` lists them
COMMANDS = (
    models.add_models,
    models.add_recipes,
    models.add_summary,
    training.add_train,
    analysis.add_experiment,
    inference.add_evaluate,
    inference.add_predict,
    inference.add_embed,
    analysis.add_visualize,
    analysis.add_report,
    formats.add_export,
    training.add_prepare,
    formats.add_convert,
    inference.add_serve,
    bench.add_bench,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``alexnet`` parser: one sub-parser per command, each added by the module that handles it."""
    parser = argparse.ArgumentParser(
        prog="alexnet", description="AlexNet: the source document's, the 2012 paper's and torchvision's."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
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
