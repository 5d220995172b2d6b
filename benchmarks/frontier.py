"""The accuracy-time frontier of docs/performance.md: the table (and with --figure the plot) of
every recipe timed with ``alexnet bench --only accuracy --json FILE``, one file per recipe, named
for the recipe.

    .venv/bin/alexnet bench --only accuracy --seeds 0 1 2 --json fast.json --train "--epochs 2"
    .venv/bin/python benchmarks/frontier.py fast.json paper.json --figure docs/figures/frontier.png
"""

import argparse
import sys

from alexnet.bench.frontier import write_frontier
from alexnet.errors import ConfigError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", help="JSON files written by alexnet bench --only accuracy --json")
    parser.add_argument("--figure", help="also draw accuracy against wall time into this PNG")
    args = parser.parse_args()
    try:
        write_frontier(args.records, args.figure)
    except ConfigError as e:
        sys.exit(f"error: {e}")
