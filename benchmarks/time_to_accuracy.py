"""Time to accuracy on Fashion-MNIST (item 4 of the suite, docs/performance.md): a recipe trained
with several seeds, the training seconds until the test top-1 reached 90% and 91%, and the last
epoch's top-1. Flags after ``--`` are ``alexnet train``'s (default: none, the default recipe).

    .venv/bin/python benchmarks/time_to_accuracy.py --seeds 0 1 2
    .venv/bin/python benchmarks/time_to_accuracy.py --seeds 0 1 2 --json tta.json -- --image-size 67 --epochs 3
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from alexnet.bench.accuracy import markdown, time_to_accuracy
from alexnet.bench.core import machine
from alexnet import runtime


def main(argv: list[str]) -> int:
    cut = argv.index("--") if "--" in argv else len(argv)
    ours, train_flags = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed (default: 0 1 2)")
    p.add_argument("--out", help="parent folder of the runs (default: a temporary folder, removed after)")
    p.add_argument("--json", help="also write the record as JSON")
    args = p.parse_args(ours)
    with tempfile.TemporaryDirectory() as tmp:
        record = time_to_accuracy(train_flags, args.seeds, args.out or tmp)
    device = runtime.resolve_device(next((train_flags[i + 1] for i, f in enumerate(train_flags[:-1]) if f == "--device"), "auto"))
    record["machine"] = machine(device, runtime.resolve_precision("auto", device))
    m = record["machine"]
    print(f"\nmachine: {m['cpu']} ({m['cores']} cores), device {m['device']}{' ' + m['gpu'] if m['gpu'] else ''}, "
          f"torch {m['torch']}; alexnet train {' '.join(train_flags) or '(defaults)'}")
    print(markdown(record["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
