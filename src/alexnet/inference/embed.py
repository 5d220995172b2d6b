"""Features of images from any model file (``alexnet embed``): FC6 or FC7 activations in batches,
with the labels, class names and paths the data has, saved as ``.npz`` - DeCAF's use of a
network (Donahue et al. 2014: FC6 and a linear classifier, 86.9% on Caltech-101 from 30 images a
class).

:class:`Images` is a list of images - uint8 tensors of an IDX set, or image files - that gives a
network its input in batches, made as :class:`~alexnet.inference.predict.Predictor` makes it (the
figures of analysis/ draw from it too); :func:`features` runs the network on them without
gradients. The images are the data's own, whatever classes the model was trained on: an
ImageNet model embeds Fashion-MNIST, a Fashion-MNIST model a folder of photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.data.folder import has_split_folders, scan_folder
from alexnet.data.idx import find_idx_files, idx_class_names, is_idx_folder, load_idx_split
from alexnet.data.images import open_image
from alexnet.data.shards import is_shards
from alexnet.errors import ConfigError, DataError
from alexnet.inference.predict import Predictor
from alexnet.system.files import atomic_write, output_path

LAYERS = ("fc6", "fc7")
SPLITS = ("all", "train", "test")


PICTURE_SIDE = 160  # photos are shown at most this many pixels a side


@dataclass
class Images:
    """Images to show and to feed the network: ``tensors`` (an IDX split, (N, 1, H, W) uint8) or
    ``paths`` (image files). ``labels`` are class indices into ``classes``, or None when unknown
    (files named on the command line)."""

    tensors: torch.Tensor | None
    paths: list[str] | None
    labels: list[int] | None
    classes: list[str]
    mode: str  # "L" or "RGB": how a file is opened for the model and for its picture

    def __len__(self) -> int:
        return len(self.tensors) if self.tensors is not None else len(self.paths)

    def take(self, indices: Sequence[int]) -> Images:
        """The images at ``indices``, in that order."""
        idx = list(indices)
        return replace(
            self,
            tensors=self.tensors[idx] if self.tensors is not None else None,
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            labels=[self.labels[i] for i in idx] if self.labels is not None else None,
        )

    def item(self, i: int) -> Image.Image | str:
        """Image ``i`` as :class:`Predictor` takes it: a PIL image of an IDX split, or a path."""
        if self.tensors is not None:
            return Image.fromarray(self.tensors[i, 0].numpy(), "L")
        return self.paths[i]

    def inputs(self, predictor: Predictor, start: int, stop: int) -> torch.Tensor:
        """Model input (n, C, S, S) of images ``start:stop``, what :meth:`Predictor.inputs` makes
        of each of them (an IDX batch for a model of IDX images resized at once rather than one
        image at a time; for a photo model each IDX image goes through its pipeline)."""
        if self.tensors is not None and predictor.preprocess.kind == "tensor":
            x = self.tensors[start:stop].float().div(255)  # (n, 1, h, w) in [0, 1], as a PIL image is read
            return predictor.preprocess.tensor_batch(x).to(predictor.device)
        return predictor.inputs([self.item(i) for i in range(start, min(stop, len(self)))])

    def picture(self, i: int) -> Image.Image:
        """Image ``i`` to show: an IDX image at its own size, a photo at most PICTURE_SIDE a side."""
        if self.tensors is not None:
            return self.item(i)
        image = open_image(self.paths[i], self.mode)
        image.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
        return image

    def true_class(self, i: int) -> str | None:
        return self.classes[self.labels[i]] if self.labels is not None else None

    def caption(self, i: int) -> str:
        """The true class when known, else the file's name."""
        return self.true_class(i) or Path(self.paths[i]).name


def file_images(paths: Sequence[str | Path], mode: str) -> Images:
    """Image files named by the user: no labels."""
    return Images(None, [str(p) for p in paths], None, [], mode)


def data_images(data: str | None, mode: str, split: str = "all") -> tuple[Images, list[str]]:
    """Every image of ``data`` (None: Fashion-MNIST) with its label among the data's own classes,
    and the split each comes from: an IDX set's ``train`` and ``test`` files, an image folder's
    ``train/`` and ``val/`` (``test``), or every image of a plain folder (``train``). ``split``
    keeps one of them (``all``: both)."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is not one of: {', '.join(SPLITS)}")
    if is_shards(data):
        raise DataError(f"--data {data}: prepared shards; embed the image folder they were prepared from")
    wanted = ("train", "test") if split == "all" else (split,)
    if data is None or is_idx_folder(data):
        files = find_idx_files(data, splits=wanted)
        parts = [load_idx_split(files, name) for name in wanted]
        labels = torch.cat([lab for _, lab in parts])
        names = idx_class_names(data, int(labels.max()) + 1)
        tensors = torch.cat([t for t, _ in parts])
        splits = [name for name, (t, _) in zip(wanted, parts) for _ in range(len(t))]
        return Images(tensors, None, labels.tolist(), names, "L"), splits
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; give an image folder or a folder of IDX files")
    if has_split_folders(root):
        train, classes = scan_folder(root / "train")
        found = {"train": train, "test": scan_folder(root / "val", classes)[0]}
    else:
        train, classes = scan_folder(root)
        found = {"train": train, "test": []}
    listed = [(path, label, name) for name in wanted for path, label in found[name]]
    if not listed:
        raise DataError(f"--data {root}: no {split} images (a folder without train/ and val/ holds train images only)")
    paths, labels, splits = (list(column) for column in zip(*listed))
    return Images(None, paths, labels, classes, mode), splits


@torch.no_grad()
def features(predictor: Predictor, images: Images, batch_size: int = 128, *, layer: str = "fc7") -> torch.Tensor:
    """``layer``'s output (N, its width: 4096) after its ReLU for every image (FC7 by default), in batches of
    ``batch_size``, on the CPU in float32 (the predictor's network is in eval mode: dropout is the
    identity): what :meth:`Predictor.embed` gives for each image."""
    chunks = [
        predictor.embed([images.inputs(predictor, a, a + batch_size)], layer=layer).cpu()
        for a in range(0, len(images), batch_size)
    ]
    if chunks:
        return torch.cat(chunks)
    linears = [m for m in predictor.model.classifier if isinstance(m, torch.nn.Linear)]
    return torch.zeros(0, linears[LAYERS.index(layer)].out_features)


def embed(
    path: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    images: Sequence[str | Path] = (),
    layer: str = "fc7",
    split: str = "all",
    format: str | None = None,
    batch_size: int = 128,
    device: str = "auto",
    force: bool = False,
) -> dict:
    """``alexnet embed``: the ``layer`` features of ``images`` (files), or else of every image of
    ``data`` (:func:`data_images`), from the model file at ``path`` (``format="torchvision"`` for
    torchvision's weights), written to ``out`` (``.npz``): ``features`` (N, 4096) float32,
    ``layer``, ``model``, and where known ``labels``, ``classes``, ``paths`` and ``splits``.
    Returns what was written, without the features."""
    if layer not in LAYERS:
        raise ConfigError(f"--layer {layer!r} is not one of: {', '.join(LAYERS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    out = output_path(Path(path), out, ".npz", force=force)
    predictor = Predictor.load(path, format=format, device=device, source=f"--checkpoint {path}")
    if images:
        shown, splits = file_images(images, predictor.preprocess.mode), None
    else:
        shown, splits = data_images(data, predictor.preprocess.mode, split)
    values = features(predictor, shown, batch_size, layer=layer)
    record = {"layer": np.array(layer), "model": np.array(str(path))}
    if shown.labels is not None:
        record |= {"labels": np.array(shown.labels, dtype=np.int64), "classes": np.array(shown.classes)}
    if shown.paths is not None:
        record["paths"] = np.array(shown.paths)
    if splits is not None:
        record["splits"] = np.array(splits)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a name
            np.savez(f, features=values.numpy(), **record)

    atomic_write(out, write, overwrite=force)
    return {
        "out": str(out),
        "images": len(shown),
        "dims": int(values.shape[1]),
        **{k: v.tolist() for k, v in record.items()},
    }
