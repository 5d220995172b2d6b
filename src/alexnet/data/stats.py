"""Pixel statistics of training images: normalization's per-channel mean and std, and PCA
lighting's eigen-decomposition (section 4.1 of the paper).

Both come from one seeded sample of up to :data:`STATS_IMAGES` training images, each resized to
:data:`STATS_SIDE` x :data:`STATS_SIDE` (:func:`stats_transform`), summed in float64
(:class:`PixelMoments`). A folder of WordNet-id classes takes ImageNet's published
eigen-decomposition instead (:func:`lighting_stats`). What a model may be normalized with, computed
here or read from a file, is one rule: :func:`stats_problem`. The results are stored in
:class:`alexnet.data.transforms.Preprocess`, which applies them.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from fractions import Fraction

import torch

from alexnet.data.images import open_image

# The smallest pixel std normalization divides by: a quarter of one 8-bit grey level. Below it
# the images are all but one flat shade (nothing to learn), and dividing would blow each one-level
# step of an 8-bit pixel up past 4 units; at 0, or a std too small for float32, it gives inf.
MIN_STD = 1e-3
# The sample the pixel statistics (mean, std, RGB covariance) come from: up to STATS_IMAGES seeded
# training images, each resized to STATS_SIDE x STATS_SIDE (8.2 M pixels in all).
STATS_IMAGES, STATS_SIDE = 2000, 64
# ImageNet's RGB eigen-decomposition (pixels in [0, 1]) as published with fb.resnet.torch
# (datasets/imagenet.lua) and used by most reimplementations; rows are the eigenvectors p_i.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, -0.5808, -0.5836), (0.7192, -0.0045, -0.6948), (0.4009, -0.8140, 0.4203))
_WORDNET_ID = re.compile(r"n[0-9]{8}")


def is_imagenet_like(classes: Sequence[str]) -> bool:
    """A folder whose classes are all WordNet ids (n01440764, ...), as ImageNet's are: PCA lighting
    then takes ImageNet's published eigen-decomposition instead of computing one."""
    return bool(classes) and all(_WORDNET_ID.fullmatch(c) for c in classes)


class PixelMoments:
    """Running sums over pixels of (C, H, W) images in [0, 1], in float64: the per-channel mean and
    std that normalization uses, and the C x C covariance that PCA lighting decomposes."""

    def __init__(self):
        self.count, self.sum, self.outer = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        """Add one image's pixels, (C, H, W)."""
        p = x.double().flatten(1)  # (C, H*W)
        s, o = p.sum(1), p @ p.T
        self.sum, self.outer = (s, o) if self.sum is None else (self.sum + s, self.outer + o)
        self.count += p.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def covariance(self) -> torch.Tensor:
        m = self.mean
        return self.outer / self.count - torch.outer(m, m)

    @property
    def std(self) -> torch.Tensor:
        return self.covariance.diagonal().clamp_min(1e-12).sqrt()


def lighting_from_covariance(cov) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
    """The eigenvalues (largest first, at least 0) and eigenvectors (rows, unit length) of a
    symmetric RGB covariance: the lambda_i and p_i of the paper's lighting."""
    values, vectors = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))  # ascending, columns
    order = values.argsort(descending=True)
    values, vectors = values[order].clamp_min(0), vectors[:, order].T
    return tuple(values.tolist()), tuple(tuple(v) for v in vectors.tolist())


def uint8_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std (n - 1 in the denominator, as ``Tensor.std``) of uint8 pixels scaled to [0, 1],
    from exact integer sums over a histogram: the same bits on any number of threads (a float32
    reduction's order depends on them), and exactly 0 for a set of one flat shade."""
    counts = torch.bincount(images.flatten(), minlength=256).tolist()
    n = sum(counts)
    total = sum(v * c for v, c in enumerate(counts))
    squares = sum(v * v * c for v, c in enumerate(counts))
    if n < 2:
        return (total / n / 255 if n else 0.0), 0.0
    variance = Fraction(n * squares - total * total, n * (n - 1) * 255 * 255)
    return total / n / 255, math.sqrt(variance)


def stats_problem(mean, std, scale: int = 1) -> str | None:
    """What is wrong with per-channel statistics of pixels in [0, scale] (a mean in [0, scale], a
    std in [MIN_STD, 1] times scale), or None: one rule for statistics computed from training
    images and stored ones."""
    if not all(0 <= m <= scale for m in mean):
        return f"pixel mean {list(mean)} is outside [0, {scale}]"
    if not all(MIN_STD * scale <= s <= scale for s in std):
        return (
            f"pixel std {list(std)} is outside [{MIN_STD * scale:g}, {scale}] (below it the images are all one "
            "flat shade)"
        )
    return None


def stats_transform(size: int = STATS_SIDE):
    """One sampled PIL image -> (C, size, size) float64 in [0, 1]: the statistics barely change at
    this size, and a million-image set is summarized in seconds."""
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.PILToTensor(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float64, scale=True)]
    )


def pixel_moments(samples, mode: str, limit: int = STATS_IMAGES, size: int = STATS_SIDE, seed: int = 0) -> PixelMoments:
    """Pixel moments (mean, std, RGB covariance) of values in [0, 1] over up to ``limit`` training
    images of ``samples`` ((path, label) pairs), seeded, each resized to ``size`` x ``size`` first."""
    chosen = random.Random(seed).sample(samples, min(limit, len(samples)))
    prep = stats_transform(size)
    moments = PixelMoments()
    for path, _ in chosen:
        moments.add(prep(open_image(path, mode)))
    return moments


def channel_stats(samples, mode: str, limit: int = STATS_IMAGES, size: int = STATS_SIDE, seed: int = 0):
    """Per-channel mean and std of pixel values in [0, 1] over up to ``limit`` training images "
    "(:func:`pixel_moments`)."""
    moments = pixel_moments(samples, mode, limit, size, seed)
    return moments.mean.tolist(), moments.std.tolist()


def lighting_stats(classes: list[str], moments: PixelMoments | None) -> dict:
    """PCA lighting's eigen-decomposition as ``stats`` entries: ImageNet's published values for a
    folder of WordNet-id classes, else that of the sampled training pixels' RGB covariance."""
    if is_imagenet_like(classes) or moments is None:
        return {"eigval": list(IMAGENET_EIGVAL), "eigvec": [list(v) for v in IMAGENET_EIGVEC]}
    eigval, eigvec = lighting_from_covariance(moments.covariance)
    return {"eigval": list(eigval), "eigvec": [list(v) for v in eigvec]}
