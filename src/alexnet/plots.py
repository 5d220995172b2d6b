"""Figures drawn from what a run wrote to disk (metrics.jsonl, read by the caller), never from live objects."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def curves_figure(rows: list[dict]):
    """Loss and accuracy per epoch, training against validation, as a matplotlib figure, from the
    epoch records of a run's ``metrics.jsonl`` (read and checked by ``training.rundir.read_metrics``).

    ``metrics.jsonl`` counts epochs from 0; the axis counts them from 1 with whole-number ticks, as
    the printed epoch lines and the report's table do.
    """
    epochs = [r["epoch"] + 1 for r in rows]
    val = [r for r in rows if "val_top1" in r]  # --eval-every leaves epochs without validation numbers
    val_epochs = [r["epoch"] + 1 for r in val]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(val_epochs, [r["val_loss"] for r in val], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in rows], "o-", label="train top-1")
    ax_acc.plot(val_epochs, [100 * r["val_top1"] for r in val], "o-", label="validation top-1")
    ax_acc.plot(val_epochs, [100 * r["val_top5"] for r in val], "o--", label="validation top-5")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        # half an epoch of margin keeps ticks 0 and N + 1, which are no epochs, out of view
        ax.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_curves(rows: list[dict], out_png: str | Path) -> None:
    """Draw :func:`curves_figure` of a run's epoch records to ``out_png`` (a path or a file object)."""
    fig = curves_figure(rows)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], classes: list[str], out_png: str | Path) -> None:
    """Confusion matrix, rows the true class and columns the predicted one, counts in the cells."""
    n = len(classes)
    size = max(5.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        peak = max(max(row) for row in confusion) or 1
        for i in range(n):
            for j in range(n):
                v = confusion[i][j]
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > peak / 2 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_experiment(table: dict, out_png: str | Path) -> None:
    """An experiment's curves (experiments.make_table reads them from the run folders): per arm the
    mean over seeds, the min-max over seeds shaded. ``steps``: training error per logged step with
    the levels dashed (the paper's figure 1); ``epochs``: test error solid (at the epochs that were
    evaluated), training error (in training mode, as the epoch went) dashed."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, arm in enumerate(a for a in table["arms"] if a.get("runs")):
        colour = f"C{i}"
        if table["curves"] == "steps":
            series = [
                (
                    "train",
                    [[s["step"] for s in r["steps"]] for r in arm["runs"]],
                    [[s["train_error"] for s in r["steps"]] for r in arm["runs"]],
                    "-",
                )
            ]
        else:
            tested = [[e for e in r["epochs"] if e["test_error"] is not None] for r in arm["runs"]]  # --eval-every
            series = [
                (
                    "test",
                    [[e["epoch"] for e in t] for t in tested],
                    [[e["test_error"] for e in t] for t in tested],
                    "o-",
                ),
                (
                    "train",
                    [[e["epoch"] for e in r["epochs"]] for r in arm["runs"]],
                    [[e["train_error"] for e in r["epochs"]] for r in arm["runs"]],
                    "s--",
                ),
            ]
        for kind, xs, ys, style in series:
            n = min(len(y) for y in ys)  # seeds share the grid; a shorter run cuts it
            if n == 0:
                continue
            y = np.array([y[:n] for y in ys])
            x = xs[0][:n]
            ax.plot(x, y.mean(0), style, color=colour, label=f"{arm['arm']} ({kind}, mean of {len(ys)})", markersize=4)
            ax.fill_between(x, y.min(0), y.max(0), color=colour, alpha=0.2, linewidth=0)
    for level in table.get("levels", []):
        ax.axhline(level, color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="step" if table["curves"] == "steps" else "epoch",
        ylabel="error (%)",
        title=f"{table['experiment']}: {table['data']}, {table['subset'] or 'all'} images at {table['image_size']} px",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def plot_frontier(rows: list[dict], out_png: str | Path) -> None:
    """Accuracy against wall time, a point per recipe (bench/frontier.py's rows): the seeds' mean
    top-1 at their median wall time, bars from the worst to the best seed and the fastest to the
    slowest; the frontier's points joined."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(rows):
        x, y = r["wall_median"] / 60, 100 * r["top1_mean"]
        ax.errorbar(
            x,
            y,
            xerr=[[x - r["wall_min"] / 60], [r["wall_max"] / 60 - x]],
            yerr=[[y - 100 * r["top1_min"]], [100 * r["top1_max"] - y]],
            fmt="o",
            color=f"C{i % 10}",
            label=f"{r['label']} ({r['seeds']} seed{'s' if r['seeds'] > 1 else ''})",
            capsize=3,
        )
    edge = [r for r in rows if r["frontier"]]
    ax.plot([r["wall_median"] / 60 for r in edge], [100 * r["top1_mean"] for r in edge], "k:", linewidth=1)
    ax.set(xlabel="wall time (minutes)", ylabel="test top-1, last epoch (%)", title="accuracy against time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


TRANSFER_STYLE = {"BnB": ("C0", "o"), "BnB+": ("C9", "o"), "AnB": ("C3", "D"), "AnB+": ("C1", "D")}


def plot_transfer(table: dict, out_png: str | Path) -> None:
    """Yosinski et al.'s figure 2 from the transfer experiment's table (analysis/transfer.py reads
    it from the run folders): top-1 on B against the layer n copied, each seed a small dot and
    the mean over seeds with its 95% interval; baseB at n = 0. Beside it, the few-shot runs:
    fine-tuned from baseA against from scratch, per training images per class of B."""
    layers = table["options"]["layers"]
    order = table["layer_order"]  # conv1 .. fc7
    fig, (ax, few) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})

    def draw(axis, x, cell, colour, marker, label, offset=0.0):
        axis.scatter([x + offset] * len(cell["seeds"]), cell["seeds"], s=10, color=colour, alpha=0.5)
        axis.errorbar(
            x + offset,
            cell["mean"],
            yerr=[[cell["mean"] - cell["low"]], [cell["high"] - cell["mean"]]],
            fmt=marker,
            color=colour,
            capsize=3,
            markersize=6,
            label=label,
        )

    draw(ax, 0, table["baseB"], "black", "s", "baseB")
    for i, arm in enumerate(TRANSFER_STYLE):
        colour, marker = TRANSFER_STYLE[arm]
        cells = [next(r for r in table["rows"] if (r["arm"], r["layer"]) == (arm, n)) for n in layers]
        xs = [order.index(n) + 1 for n in layers]
        for j, (x, cell) in enumerate(zip(xs, cells)):
            draw(ax, x, cell, colour, marker, arm if j == 0 else None, offset=(i - 1.5) * 0.12)
        ax.plot([x + (i - 1.5) * 0.12 for x in xs], [c["mean"] for c in cells], color=colour, alpha=0.6)
    ax.axhline(table["baseB"]["mean"], color="black", linestyle=":", linewidth=1)
    ax.set_xticks(range(8), ["baseB", *order])
    ax.set(xlabel="layer n copied (conv1 .. n)", ylabel="top-1 on B's test images (%)", title="transfer by layer")
    ax.set_ylim(0, 100)  # a t interval over a few seeds can reach past what top-1 can be: drawn to the bounds
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    per_class = [f["per_class"] for f in table["few"]]
    for key, colour, marker, label in (("scratch", "black", "s", "from scratch"), ("fromA", "C1", "D", "from baseA")):
        for j, f in enumerate(table["few"]):
            draw(few, math.log10(f["per_class"]), f[key], colour, marker, label if j == 0 else None)
        few.plot([math.log10(m) for m in per_class], [f[key]["mean"] for f in table["few"]], color=colour, alpha=0.6)
    few.set_xticks([math.log10(m) for m in per_class], [str(m) for m in per_class])
    few.set(xlabel="training images per class of B", ylabel="top-1 (%)", title="few images: fine-tune or scratch")
    few.set_ylim(0, 100)
    few.grid(alpha=0.3)
    few.legend(fontsize=8)
    o = table["options"]
    fig.suptitle(
        f"{o['data'] or 'Fashion-MNIST'}, {o['split']} halves, {o['seeds']} seeds, {o['image_size']} px: mean and 95% "
        "interval over seeds, one dot per seed",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
