"""Run docs/tour.ipynb from a clean kernel and save it with its outputs (``make tour``).

The kernel is this interpreter (the project's .venv), started from a kernel spec made for the
run, so no kernel registered elsewhere (``~/.local/share/jupyter``) can stand in for it; this
tree's ``src/`` comes first on its ``PYTHONPATH`` and it runs in the notebook's folder, as Jupyter
runs a notebook opened there. tests/test_tour.py executes the notebook the same way.

    .venv/bin/python scripts/tour.py [NOTEBOOK]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tour.ipynb"
KERNEL = "alexnet-tour"
CELL_TIMEOUT = 600  # seconds one cell may take: the training cell is the longest


def _kernel_manager(spec_dir: Path):
    """A kernel manager whose only kernel spec starts this interpreter's ipykernel."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    folder = spec_dir / KERNEL
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "alexnet tour",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(path: str | Path = NOTEBOOK, env: dict[str, str] | None = None):
    """The notebook at ``path`` executed top to bottom in a fresh kernel (its outputs replaced),
    as an ``nbformat`` notebook; ``env`` adds to the kernel's environment. A cell that raises
    ends the run with nbclient's ``CellExecutionError``, which names the cell and the error."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    python_path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    kernel_env = {**os.environ, "PYTHONPATH": python_path, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="alexnet-kernel-") as spec_dir:
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(spec_dir)),
            timeout=CELL_TIMEOUT,
            record_timing=False,  # no timestamps in the saved cells: a re-run changes only what it computed
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute(env=kernel_env)
    return nb


def main(argv: list[str] | None = None) -> int:
    """Execute the notebook and write it back in place with its outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", default=str(NOTEBOOK), help="the notebook (default: docs/tour.ipynb)")
    args = parser.parse_args(argv)
    if not Path(args.notebook).is_file():
        print(f"tour: {args.notebook} is not a file; give the notebook to run", file=sys.stderr)
        return 2
    import nbformat
    from nbclient.exceptions import CellExecutionError

    start = time.perf_counter()
    try:
        nb = execute(args.notebook)
    except CellExecutionError as e:
        print(f"tour: {args.notebook} stopped at a cell that failed (nothing written):\n{e}", file=sys.stderr)
        return 1
    nbformat.write(nb, args.notebook)
    print(f"tour: {args.notebook} executed in {time.perf_counter() - start:.0f} s and saved with its outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
