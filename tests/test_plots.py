"""plots.py: the learning curves' epoch axis read back from the figure matplotlib draws."""

import json

import pytest

from alexnet.plots import curves_figure, plot_curves
from alexnet.training.rundir import read_metrics


def _metrics_file(path, epochs: int):
    """A run's metrics.jsonl as the loop writes it: one record per epoch, epochs counted from 0."""
    rows = [
        {
            "epoch": e,
            "train_loss": 2.0 / (e + 1),
            "train_acc": 0.5 + 0.01 * e,
            "val_loss": 2.1 / (e + 1),
            "val_top1": 0.45 + 0.01 * e,
            "val_top5": 0.9,
        }
        for e in range(epochs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _visible_tick_labels(ax) -> list[str]:
    """The x tick labels matplotlib draws: those inside the view (the locator also places some outside)."""
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]


def test_a_four_epoch_run_is_drawn_at_epochs_1_to_4_with_whole_number_ticks(tmp_path):
    fig = curves_figure(read_metrics(_metrics_file(tmp_path / "metrics.jsonl", 4)))
    loss, acc = fig.axes
    for ax in (loss, acc):
        assert _visible_tick_labels(ax) == ["1", "2", "3", "4"]  # the epochs as the run prints them: 1/4 .. 4/4
        for line in ax.get_lines():
            assert list(line.get_xdata()) == [1, 2, 3, 4]
    # the points are the file's records, in order
    assert list(loss.get_lines()[0].get_ydata()) == [2.0, 1.0, 2.0 / 3, 0.5]


@pytest.mark.parametrize("epochs", [1, 2, 30, 90])
def test_every_tick_is_a_whole_epoch_of_the_run(tmp_path, epochs):
    fig = curves_figure(read_metrics(_metrics_file(tmp_path / "metrics.jsonl", epochs)))
    for ax in fig.axes:
        labels = _visible_tick_labels(ax)
        assert labels, "no tick drawn"
        assert all(label.isdigit() and 1 <= int(label) <= epochs for label in labels), labels


def test_plot_curves_writes_a_png(tmp_path):
    out = tmp_path / "curves.png"
    plot_curves(read_metrics(_metrics_file(tmp_path / "metrics.jsonl", 3)), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
