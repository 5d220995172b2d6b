"""Figures 3 and 4 of the paper, drawn for a trained model file.

* :func:`visualize_filters` - figure 3: conv1's kernels as a grid of tiles, each kernel min-max
  scaled on its own; ``alexnet2012``'s two towers as two labelled blocks (tower 1 above tower 2,
  as the paper stacks its two GPUs' kernels).
* :func:`visualize_predictions` - figure 4, left: test images with their top-5 classes as bars,
  answered by the same :class:`~alexnet.inference.predict.Predictor` that ``alexnet predict`` uses.
* :func:`visualize_neighbours` - figure 4, right: test images beside the training images whose FC7
  features (4096-d, after FC7's ReLU) are nearest in Euclidean distance (:mod:`alexnet.analysis.neighbours`).

The images come from the model file's own data (its test or validation split, and a seeded subset
of its training split: :mod:`alexnet.analysis.neighbours`' :func:`~alexnet.analysis.neighbours.split_images`) or from
image files. Each figure is written to a PNG path or a binary file object (the report keeps its
figures in memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch import nn  # noqa: E402

from alexnet.analysis.neighbours import Images, fc7_features, file_images, nearest, sample, split_images  # noqa: E402
from alexnet.formats import read_model  # noqa: E402
from alexnet.formats.network import ModelFile  # noqa: E402
from alexnet.inference.predict import Predictor  # noqa: E402
from alexnet.training.rundir import RunFolder  # noqa: E402

Output = str | Path | BinaryIO
FIGURES = ("filters", "predictions", "neighbours")
TOP = 5  # figure 4 shows each image's top-5 classes


def default_out(checkpoint: str | Path, figure: str) -> Path:
    """Where ``alexnet visualize FIGURE`` writes when not told: ``<run folder>/<figure>.png``."""
    return RunFolder.of_checkpoint(checkpoint).path / f"{figure}.png"


# --------------------------------------------------------------------------------------------
# Figure 3: the first layer's kernels


def conv1_kernels(model: nn.Module) -> tuple[torch.Tensor, int]:
    """conv1's weights (K, C, k, k) and the number of towers they form: the groups of the next
    convolution, since a tower's conv2 kernels see only its own conv1 maps (2 for ``alexnet2012``,
    the paper's two GPUs; 1 otherwise)."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    return convs[0].weight.detach().float().cpu(), convs[1].groups


def scale_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """One kernel (C, k, k) min-max scaled to [0, 1] over all its channels together, so a colour
    kernel keeps its hue, as figure 3 shows them; a flat kernel becomes mid-grey."""
    low, high = kernel.min(), kernel.max()
    return torch.full_like(kernel, 0.5) if high == low else (kernel - low) / (high - low)


@dataclass(frozen=True)
class FilterLayout:
    """Where each kernel's tile lies in the filters image: towers stacked top to bottom, each a
    label strip over a grid of ``columns`` tiles of ``k`` x ``k`` pixels, each pixel ``scale``
    image pixels wide, tiles ``gap`` image pixels apart."""

    kernels: int  # K, all towers together
    towers: int
    k: int
    columns: int = 16  # figure 3 has 16 kernels a row
    scale: int = 4
    gap: int = 3
    label: int = 16  # height of a tower's label strip

    @property
    def per_tower(self) -> int:
        return self.kernels // self.towers

    @property
    def rows(self) -> int:
        return -(-self.per_tower // self.columns)

    @property
    def width(self) -> int:
        return self.gap + self.columns * (self.k * self.scale + self.gap)

    @property
    def tower_height(self) -> int:
        return self.label + self.gap + self.rows * (self.k * self.scale + self.gap)

    def origin(self, index: int) -> tuple[int, int]:
        """(x, y) of the top-left image pixel of kernel ``index``'s tile."""
        tower, i = divmod(index, self.per_tower)
        row, col = divmod(i, self.columns)
        step = self.k * self.scale + self.gap
        return self.gap + col * step, tower * self.tower_height + self.label + self.gap + row * step


def filters_image(weight: torch.Tensor, towers: int = 1, *, bgr: bool = False) -> tuple[Image.Image, FilterLayout]:
    """Figure 3 as an RGB image from conv1's weights (K, C, k, k): every kernel a tile of its
    min-max scaled values (grey for 1-channel models; ``bgr`` weights, Caffe's, shown in RGB), on
    white, each tower's block under its label. Returns the image and where each tile lies."""
    kernels, channels, k, _ = weight.shape
    layout = FilterLayout(kernels, towers, k)
    canvas = Image.new("RGB", (layout.width, layout.towers * layout.tower_height), "white")
    draw = ImageDraw.Draw(canvas)
    for t in range(towers):
        first, last = t * layout.per_tower + 1, (t + 1) * layout.per_tower
        title = (
            f"tower {t + 1} (GPU {t + 1} in the paper): kernels {first}-{last}"
            if towers > 1
            else f"conv1: {kernels} kernels"
        )
        draw.text((layout.gap, t * layout.tower_height + 2), f"{title}, {channels} x {k} x {k}", fill="black")
    for i in range(kernels):
        tile = scale_kernel(weight[i])
        tile = tile.flip(0) if bgr and channels == 3 else tile
        tile = tile.expand(3, k, k) if channels == 1 else tile[:3]  # (C, k, k) -> RGB
        pixels = (tile * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()  # (k, k, 3)
        image = Image.fromarray(pixels, "RGB").resize((k * layout.scale, k * layout.scale), Image.NEAREST)
        canvas.paste(image, layout.origin(i))
    return canvas, layout


def visualize_filters(checkpoint: str | Path, out: Output | None = None) -> Output:
    """Write figure 3 for ``checkpoint`` (any model file ``alexnet predict`` reads) to ``out``
    (default: ``<run folder>/filters.png``); returns where it went."""
    model_file = read_model(checkpoint, source=f"--checkpoint {checkpoint}")
    weight, towers = conv1_kernels(model_file.network())
    image, _ = filters_image(weight, towers, bgr=model_file.preprocess.channel_order == "BGR")
    out = default_out(checkpoint, "filters") if out is None else out
    image.save(out, format="PNG", optimize=True)
    return out


# --------------------------------------------------------------------------------------------
# Figure 4, left: images and their top-5


def draw_predictions(images: Images, results: list[dict], out: Output, *, columns: int = 4) -> None:
    """Each image over its top-5 bars; the true class (when known) is written under the image and
    its bar drawn red, as in figure 4."""
    n = len(images)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig = plt.figure(figsize=(3.0 * columns, 4.0 * rows))
    grid = fig.add_gridspec(2 * rows, columns, height_ratios=[1.2, 1.0] * rows, hspace=0.6, wspace=0.9)
    for i, result in enumerate(results):
        r, c = divmod(i, columns)
        ax_img, ax_bar = fig.add_subplot(grid[2 * r, c]), fig.add_subplot(grid[2 * r + 1, c])
        _show(ax_img, images.picture(i), images.caption(i))
        preds = result["predictions"]
        truth = images.true_class(i)
        names = [p["class"] for p in preds]
        colours = ["tab:red" if name == truth else "tab:blue" for name in names]
        ax_bar.barh(range(len(preds)), [100 * p["probability"] for p in preds], color=colours)
        ax_bar.set_yticks(range(len(preds)), [_short(name) for name in names], fontsize=8)
        ax_bar.invert_yaxis()  # most likely on top
        ax_bar.set_xlim(0, 100)
        ax_bar.tick_params(axis="x", labelsize=7)
        ax_bar.set_xlabel("probability (%)", fontsize=7)
    fig.savefig(out, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)


def visualize_predictions(
    checkpoint: str | Path,
    images: Sequence[str | Path] = (),
    out: Output | None = None,
    *,
    count: int = 8,
    seed: int = 0,
    data: str | None = None,
    device: str = "cpu",
) -> tuple[Output, list[dict]]:
    """Write figure 4 (left) for ``images``, or without them for ``count`` images drawn (``seed``)
    from the model's test/validation data (or ``data``) to ``out`` (default:
    ``<run folder>/predictions.png``). Returns where it went and the top-5 of each image, which
    are :meth:`Predictor.predict`'s answers (``alexnet predict --json``'s)."""
    model_file, predictor = _load(checkpoint, device)
    if images:
        shown = file_images(images, predictor.preprocess.mode)
    else:
        test = split_images(model_file, "test", checkpoint=checkpoint, data=data)
        shown = test.take(sample(len(test), count, seed))
    results = predictor.predict([shown.item(i) for i in range(len(shown))], top=TOP)
    out = default_out(checkpoint, "predictions") if out is None else out
    draw_predictions(shown, results, out)
    return out, results


# --------------------------------------------------------------------------------------------
# Figure 4, right: nearest training images in FC7 space


def draw_neighbours(
    queries: Images, train: Images, indices: torch.Tensor, distances: torch.Tensor, out: Output
) -> None:
    """One row per query: the query image, then its nearest training images, nearest first, each
    captioned with its class and distance."""
    rows, k = indices.shape
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.45 * (k + 1), 1.7 * rows), squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], queries.picture(r), "test: " + queries.caption(r))
        axes[r, 0].title.set_color("tab:red")
        for j in range(k):
            i = int(indices[r, j])
            _show(axes[r, j + 1], train.picture(i), f"{train.caption(i)}\nd={float(distances[r, j]):.1f}")
    fig.suptitle("test images (left) and the training images nearest to them in FC7 feature space", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=72)
    plt.close(fig)


def visualize_neighbours(
    checkpoint: str | Path,
    out: Output | None = None,
    *,
    count: int = 5,
    neighbours: int = 6,
    train_images: int = 10_000,
    seed: int = 0,
    data: str | None = None,
    device: str = "cpu",
    batch_size: int = 128,
) -> tuple[Output, dict]:
    """Write figure 4 (right) to ``out`` (default: ``<run folder>/neighbours.png``): ``count`` test
    images drawn with ``seed``, each beside its ``neighbours`` nearest among ``train_images``
    training images drawn with the same seed (all of them when fewer). Returns where it went and
    what was searched: the query and neighbour indices into the splits, the distances, FC7's width."""
    model_file, predictor = _load(checkpoint, device)
    test = split_images(model_file, "test", checkpoint=checkpoint, data=data)
    train = split_images(model_file, "train", checkpoint=checkpoint, data=data)
    query_idx, train_idx = sample(len(test), count, seed), sample(len(train), train_images, seed)
    queries, keys = test.take(query_idx), train.take(train_idx)
    query_features, key_features = (fc7_features(predictor, x, batch_size) for x in (queries, keys))
    distances, found = nearest(query_features, key_features, neighbours)
    out = default_out(checkpoint, "neighbours") if out is None else out
    draw_neighbours(queries, keys, found, distances, out)
    return out, {
        "queries": query_idx,
        "train": [[train_idx[j] for j in row] for row in found.tolist()],
        "distances": distances.tolist(),
        "searched": len(keys),
        "features": key_features.shape[1],  # FC7's width: 4096 in the full-size networks
    }


def _load(checkpoint: str | Path, device: str) -> tuple[ModelFile, Predictor]:
    """The model file (for its data settings) and a Predictor of it, the file read once."""
    model_file = read_model(checkpoint, source=f"--checkpoint {checkpoint}")
    return model_file, Predictor(model_file.network(), model_file.classes, model_file.preprocess, device)


def _show(ax, image: Image.Image, caption: str) -> None:
    ax.imshow(image, cmap="gray" if image.mode == "L" else None, vmin=0, vmax=255)
    ax.set_title(caption, fontsize=7)
    ax.axis("off")


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "..."
