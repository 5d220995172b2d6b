"""docs/tour.ipynb: it runs top to bottom from a clean kernel, and the outputs committed with it
are the current code's.

The notebook is executed as ``make tour`` executes it (scripts/tour.py: this interpreter's kernel,
this tree's src/, the notebook's folder). Its text outputs are compared with the committed ones
cell by cell, except in cells tagged ``varies`` (timings, accuracies of a short bf16 run, which
depend on the machine); figures are not compared, only required to be there.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from alexnet.data.idx import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tour.ipynb"
VARIES = "varies"


def _load_runner():
    spec = importlib.util.spec_from_file_location("tour_runner", ROOT / "scripts" / "tour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def text_output(cell) -> str:
    """What a cell printed and returned as text (stdout, text/plain results), trailing spaces
    trimmed; stderr (warnings) and figures left out."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type == "execute_result":
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(line.rstrip() for line in "".join(parts).splitlines())


def figures(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def code_lines(source: str) -> list[str]:
    """The lines of code: comment lines (reference_seed.py's added header) and blank lines left out."""
    return [line for line in source.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    if not any((FASHION_MNIST_DIR / n).is_file() for n in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make tour and make test install it)")
    # the notebook's run folder (checkpoints of ~470 MB) goes to the test's temporary folder
    return _load_runner().execute(NOTEBOOK, env={"TMPDIR": str(tmp_path_factory.mktemp("tour"))})


def test_committed_copy_was_run_top_to_bottom_once(committed):
    """Every code cell has its outputs from one clean run, in order: what make tour saves."""
    counts = [c.execution_count for c in code_cells(committed)]
    assert counts == list(range(1, len(counts) + 1)), "docs/tour.ipynb was not saved from one clean run: make tour"
    assert not [o for c in code_cells(committed) for o in c.outputs if o.output_type == "error"]


def test_committed_copy_shows_the_documents_numbers(committed):
    """The parameter counts the README gives for the chapter's code and for the paper's
    two-tower network (1000 classes) are among the committed outputs, as the shapes after each
    pooling are."""
    text = "\n".join(text_output(c) for c in code_cells(committed))
    assert "62,378,344" in text and "60,965,224" in text
    assert re.search(r"pool5\s+features\.12\s+256×6×6", text)  # the document's network, after its last pooling
    assert re.search(r"conv3 .* -> wrong", text)  # the text's 27×27×384 for layers 3 and 4, pointed out


def test_notebook_holds_the_documents_class_verbatim(committed):
    """The class shown in section 1 is the chapter's, line for line (tests/reference_seed.py keeps it too)."""
    reference = code_lines((ROOT / "tests" / "reference_seed.py").read_text())
    assert any(code_lines(c.source) == reference for c in code_cells(committed))


def test_committed_copy_keeps_its_figures(committed):
    """A reader on a code host sees the figures without running anything."""
    assert sum(figures(c) for c in code_cells(committed)) >= 6


@pytest.mark.slow
def test_tour_runs_and_its_committed_outputs_are_current(committed, executed):
    """A clean kernel runs every cell (a failing cell fails the fixture); the committed text
    outputs of every cell not tagged ``varies`` equal the fresh ones, and each cell that drew
    figures still does."""
    fresh, saved = code_cells(executed), code_cells(committed)
    assert [c.source for c in fresh] == [c.source for c in saved]
    compared = 0
    for number, (new, old) in enumerate(zip(fresh, saved), 1):
        assert figures(new) == figures(old), f"code cell {number}: figures changed; run make tour"
        if VARIES in old.metadata.get("tags", []):
            continue
        assert text_output(new) == text_output(old), (
            f"code cell {number} of docs/tour.ipynb prints something else now: run make tour and commit it"
        )
        compared += bool(text_output(old))
    assert compared >= 10  # the tables, counts and shapes: most of the notebook
