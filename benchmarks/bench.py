"""The benchmark suite as a script: the same as ``alexnet bench`` (src/alexnet/bench/).

.venv/bin/python benchmarks/bench.py --quick --json bench.json
.venv/bin/python benchmarks/bench.py --only pipeline --workers 2
"""

import sys

from alexnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
