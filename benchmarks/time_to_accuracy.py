"""Time to accuracy on Fashion-MNIST (item 4 of the suite, docs/performance.md): the same as
``alexnet bench --only accuracy``: a recipe trained with several seeds, the training seconds until
the test top-1 reached 90% and 91%, and the last epoch's top-1.

    .venv/bin/python benchmarks/time_to_accuracy.py --seeds 0 1 2
    .venv/bin/python benchmarks/time_to_accuracy.py --seeds 0 1 2 --json tta.json --train "--image-size 67 --epochs 3"
"""

import sys

from alexnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "accuracy", *sys.argv[1:]]))
