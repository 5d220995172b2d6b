"""``alexnet bench``: the speed benchmarks (alexnet.bench), and --only accuracy's whole training runs."""

from __future__ import annotations

import os
import shlex

from alexnet.cli.flags import batch_size, count, positive_int
from alexnet.cli.training import settings_from_flags
from alexnet.errors import ConfigError


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
        cfg = settings_from_flags(flags)
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


def add_bench(sub) -> None:
    """``alexnet bench``: which benchmarks, on which device, how many repeats."""
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
    p.add_argument("--workers", type=count, default=1, help="loader worker processes of both pipelines (default: 1)")
    p.add_argument("--warmup", type=count, help="untimed runs of each side first (default: 1 with --quick, else 2)")
    p.add_argument(
        "--repeats", type=positive_int, help="timed runs of each side, interleaved (default: 3 with --quick, else 5)"
    )
    p.add_argument(
        "--batch-size",
        type=batch_size,
        help="the step and choice rows' batch (default: 32 with --quick, else 128; 256 on CUDA)",
    )
    p.set_defaults(func=_cmd_bench)
