"""How an image becomes model input: the typed :class:`Preprocess` record stored in every
checkpoint and export, and the training and evaluation transforms made from it.

Two kinds of pipeline, one record:

* ``tensor`` (Fashion-MNIST, any IDX set): a uint8 batch is resized, shifted and flipped on the
  device with one ``grid_sample`` (:func:`resample`), then normalized. A single image for
  prediction is first brought back to the data set's own resolution (``source_size``).
* ``folder`` (photos): the paper's pipeline - shorter side to ``resize`` (256 for 224-227 crops),
  a random crop and flip for training (and PCA lighting when the record holds its
  eigen-decomposition), the centre crop for evaluation. Loader workers decode (at reduced size
  where ``decode`` says so), resize, crop and flip, and hand over uint8 images
  (:meth:`Preprocess.folder_transform`); the batch becomes normalized floats on the device
  (:meth:`Preprocess.to_input`): a quarter of the bytes between processes, no float work per image.

Ten-crop evaluation (section 4.1 of the paper) is defined for both: the four corner crops and the
centre crop, and their mirror images, where "corner" means the extreme positions of the training
crops - the corners of the resized photo, or shifts of ``MAX_SHIFT`` source pixels of an IDX image
(docs/paper.md). The centre crop unmirrored (view :data:`CENTRE_VIEW`) is the single-crop input.

Networks trained elsewhere saw their images another way, and the record says how: Caffe's
bvlc_alexnet takes BGR channels (``channel_order``) of pixels in 0..255 (``scale``) less a mean in
those units, from images warped to 256 x 256 (``resize_to="square"``). Records written before these
fields existed mean the defaults (RGB, 0..1, shorter side), which are left out when written.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image

from alexnet.data.preprocessfields import LATER_FIELDS, stored_fields
from alexnet.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, STATS_IMAGES, STATS_SIDE

MAX_SHIFT = 2.0  # Fashion-MNIST random crops: shifts of up to 2 of the 28 source pixels
# Ten-crop views, in torchvision's ten_crop order: corners tl, tr, bl, br, the centre, then the same
# five of the mirrored image. View 4, the centre unmirrored, is the single-crop input exactly.
TEN_CROPS, CENTRE_VIEW = 10, 4
# PCA lighting (section 4.1): alpha_i ~ N(0, LIGHTING_STD), once per image per epoch.
LIGHTING_STD = 0.1


class Lighting:
    """The paper's PCA colour augmentation on a (C, H, W) float image: add
    sum_i alpha_i * lambda_i * p_i to every pixel, alpha_i ~ N(0, 0.1) drawn from torch's global
    generator (which the loaders seed per image and epoch)."""

    def __init__(self, eigval: Sequence[float], eigvec: Sequence[Sequence[float]], std: float = LIGHTING_STD):
        self.eigval, self.eigvec, self.std = torch.tensor(eigval), torch.tensor(eigvec), std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(len(self.eigval)) * self.std
        rgb = (alpha * self.eigval) @ self.eigvec  # sum_i alpha_i lambda_i p_i, (C,)
        return x + rgb.to(x.dtype).view(-1, 1, 1)


def resize_size(image_size: int) -> int:
    """Shorter side before cropping: the paper's 256 for 224-227 crops, scaled for other sizes."""
    return 256 if 224 <= image_size <= 256 else max(image_size, round(image_size * 256 / 224))


@dataclass(frozen=True)
class Preprocess:
    """What turns one image into model input, exactly as the model was trained to see it."""

    kind: Literal["tensor", "folder"]
    mode: Literal["L", "RGB"]  # PIL mode the image is converted to: 1 or 3 channels
    image_size: int  # model input height and width
    mean: tuple[float, ...]  # per channel (in channel_order), of pixel values in [0, scale]
    std: tuple[float, ...]
    source_size: int | None = None  # tensor: the data set's own height and width (28 for Fashion-MNIST)
    resize: int | None = None  # folder: the shorter side before the crop
    # PCA lighting (RGB only; None = off): eigenvalues, largest first, and eigenvectors (rows)
    eigval: tuple[float, ...] | None = None
    eigvec: tuple[tuple[float, ...], ...] | None = None
    channel_order: Literal["RGB", "BGR"] = "RGB"  # BGR: Caffe's, as OpenCV decodes images
    scale: Literal[1, 255] = 1  # pixels run 0..scale before mean and std apply (Caffe: 0..255)
    resize_to: Literal["shorter", "square"] = (
        "shorter"  # folder: shorter side to `resize`, or both sides (Caffe's warp)
    )
    # folder: how JPEGs are decoded. "reduced": at 1/2, 1/4 or 1/8 size where the shorter side stays
    # >= resize (images.reduce_decode; it changes pixels slightly); "full": the whole image, what
    # model files from before the field was added were trained with (absent means "full", and
    # "full" is left out when written, so those records read and write as they always did).
    decode: Literal["full", "reduced"] | None = None

    def __post_init__(self):
        if self.kind == "folder" and self.decode is None:  # a record made without the rule: the full decode
            object.__setattr__(self, "decode", "full")

    @classmethod
    def for_tensors(cls, *, mode: str, source_size: int, image_size: int, stats: Mapping) -> Preprocess:
        """An IDX pipeline; ``stats`` may also hold ``scale`` (see :attr:`stats`)."""
        return cls(
            "tensor",
            mode,
            image_size,
            tuple(stats["mean"]),
            tuple(stats["std"]),
            source_size=source_size,
            **_convention(stats, ("scale",)),
        )

    @classmethod
    def for_folder(
        cls, *, image_size: int, stats: Mapping, mode: str = "RGB", resize: int | None = None, decode: str | None = None
    ) -> Preprocess:
        """A photo pipeline; new ones decode at reduced size, ``decode`` keeps a stored model's rule.
        ``stats`` may hold ``eigval`` and ``eigvec`` (PCA lighting) beside ``mean`` and ``std``, and
        the pixel convention of :attr:`stats`."""
        lighting = (
            {"eigval": tuple(stats["eigval"]), "eigvec": tuple(map(tuple, stats["eigvec"]))}
            if stats.get("eigval")
            else {}
        )
        return cls(
            "folder",
            mode,
            image_size,
            tuple(stats["mean"]),
            tuple(stats["std"]),
            resize=resize or resize_size(image_size),
            decode=decode or "reduced",
            **lighting,
            **_convention(stats, tuple(LATER_FIELDS)),
        )

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def stats(self) -> dict[str, list]:
        """The normalization statistics (and the lighting's eigen-decomposition, when on), as
        :func:`alexnet.data.build_data` takes them; with the pixel convention the statistics are
        in (``channel_order``, ``scale``, ``resize_to``) where it is not the default, as weights
        trained elsewhere bring it (Caffe's BGR in 0..255) to a run that starts from them."""
        lighting = {"eigval": list(self.eigval), "eigvec": [list(v) for v in self.eigvec]} if self.eigval else {}
        convention = {k: getattr(self, k) for k, v in LATER_FIELDS.items() if getattr(self, k) != v}
        return {"mean": list(self.mean), "std": list(self.std), **lighting, **convention}

    def to_dict(self) -> dict:
        """The JSON-able form written into checkpoints and sidecars (fields that do not apply left
        out, and the later fields at their defaults, so such records read as they always did)."""
        return {
            k: _lists(v)
            for k, v in asdict(self).items()
            if v is not None
            and not (k in LATER_FIELDS and v == LATER_FIELDS[k])
            and not (k == "decode" and v == "full")
        }

    @classmethod
    def from_dict(cls, values, source: str = "preprocess") -> Preprocess:
        """Read the stored form back, checking every field (:func:`stored_fields`); a bad one raises
        ValueError naming it."""
        fields = stored_fields(values, source)
        if fields["kind"] == "folder" and not fields["resize"]:  # a record without it: the rule's resize
            fields["resize"] = resize_size(fields["image_size"])
        return cls(**fields)

    def lighting_record(self) -> dict:
        """PCA lighting's eigen-decomposition and where it came from, for the run folder's lighting.json."""
        published = self.eigval == IMAGENET_EIGVAL and self.eigvec == IMAGENET_EIGVEC
        source = (
            "ImageNet's published values (fb.resnet.torch), for a folder of WordNet-id classes"
            if published
            else (
                f"the RGB covariance of a seeded sample of up to {STATS_IMAGES} training images, each resized to "
                f"{STATS_SIDE}x{STATS_SIDE}"
            )
        )
        return {
            "eigval": list(self.eigval),
            "eigvec": [list(v) for v in self.eigvec],
            "alpha_std": LIGHTING_STD,
            "source": source,
        }

    # -- the tensor pipeline --
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) floats in [0, 1] (RGB) -> in ``channel_order``, scaled to [0, ``scale``],
        normalized with the per-channel mean and std."""
        mean, std = _on_device(self.mean, self.std, x.device)
        if self.channel_order == "BGR":
            x = x.flip(1)
        return (x - mean) / std if self.scale == 1 else (x * self.scale - mean) / std

    def tensor_batch(
        self, x: torch.Tensor, flip: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, C, h, w) floats in [0, 1] -> (N, C, S, S), resized by :func:`resample` and normalized."""
        return self.normalize(resample(x, self.image_size, flip, shift))

    # -- the folder pipeline --
    def ten_crop_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) floats in [0, 1] -> (N, 10, C, S, S): the ten views (:data:`TEN_CROPS`) as
        :func:`resample` shifts - the corners are the largest training shifts, +-MAX_SHIFT source
        pixels, of the zero-padded image - normalized."""
        n = len(x)
        s = MAX_SHIFT
        # tl, tr, bl, br, centre; a mirrored view's x shift is negated (its crop is of the mirror)
        corners = torch.tensor([[s, s], [-s, s], [s, -s], [-s, -s], [0.0, 0.0]])
        shift = torch.cat([corners, corners * torch.tensor([-1.0, 1.0])]).repeat(n, 1)
        flip = torch.tensor([False] * 5 + [True] * 5).repeat(n)
        views = self.tensor_batch(x.repeat_interleave(TEN_CROPS, dim=0), flip, shift)
        return views.view(n, TEN_CROPS, *views.shape[1:])

    # -- the folder pipeline --
    @property
    def decode_side(self) -> int | None:
        """The shorter side a reduced-size decode keeps (``open_image(decode_side=...)``), or None."""
        return self.resize if self.decode == "reduced" else None

    def folder_transform(self, train: bool, ten_crop: bool = False, augment: bool = True):
        """The per-image half of the photo pipeline, run in loader workers on a PIL image decoded
        with :attr:`decode_side`: shorter side to ``resize``, random crop and flip (train), the
        centre crop (eval, or train without ``augment``) or the ten crops stacked (10, C, S, S)
        (``ten_crop``), as uint8.
        :meth:`to_input` finishes the batch. With PCA lighting (train, when the record holds its
        eigen-decomposition) the crop becomes floats in [0, 1] here, since the colour shift is
        drawn per image from the worker's seeded generator: 4x the bytes, for that recipe only."""
        from torchvision.transforms import v2

        if train and augment:
            crop = [v2.RandomCrop(self.image_size), v2.RandomHorizontalFlip()]
        elif ten_crop:
            crop = [v2.TenCrop(self.image_size), torch.stack]
        else:
            crop = [v2.CenterCrop(self.image_size)]
        lighting = []
        if train and self.eigval:  # the eigenvectors are RGB; a BGR record mirrors them to its order
            eigvec = [v[::-1] for v in self.eigvec] if self.channel_order == "BGR" else self.eigvec
            lighting = [v2.ToDtype(torch.float32, scale=True), Lighting(self.eigval, eigvec)]
        return v2.Compose(
            [
                v2.PILToTensor(),  # (C, H, W) uint8, RGB
                *([_rgb_to_bgr] if self.channel_order == "BGR" else []),
                v2.Resize(self.resize if self.resize_to == "shorter" else (self.resize, self.resize), antialias=True),
                *crop,
                *lighting,
            ]
        )

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """A uint8 (N, C, H, W) or ten-crop (N, 10, C, H, W) batch from :meth:`folder_transform`
        (floats in [0, 1] with PCA lighting), on any device, -> floats in
        [0, 1], or 0..255 as Caffe takes them (torchvision's ToDtype), normalized: on the device,
        once per batch."""
        from torchvision.transforms.v2 import functional as TF

        mean, std = _on_device(self.mean, self.std, x.device)
        if x.is_floating_point():  # PCA lighting's floats in [0, 1], made in the workers
            x = x.float() * self.scale
        else:
            x = TF.to_dtype(x, torch.float32, scale=self.scale == 1)
        # in place on the new float tensor: one pass fewer over the batch, the same arithmetic as v2.Normalize
        return x.sub_(mean).div_(std)

    # -- one image, for prediction --
    def __call__(self, img: Image.Image) -> torch.Tensor:
        """One PIL image already in ``mode`` -> (C, S, S) model input, exactly as evaluation batches
        are made."""
        if self.kind == "tensor":
            s = self.source_size  # back to the data set's own resolution, then as a tensor batch
            img = img.resize((s, s), Image.BILINEAR)
            x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(1, -1, s, s).float().div(255)
            return self.tensor_batch(x)[0]
        return self.to_input(self.folder_transform(train=False)(img)[None])[0]


@contextlib.contextmanager
def seeded(seed: int):
    """The CPU's global RNG seeded with ``seed`` inside the block and restored after it: the random
    crop and flip of one image, a function of its seed alone. Only the CPU generator is seeded -
    ``torch.manual_seed`` would also queue a seed for every CUDA device, recording a Python stack
    trace each time, which cost ~0.9 ms an image, a third of the whole transform."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def _convention(stats: Mapping, keys: tuple[str, ...]) -> dict:
    """The pixel-convention fields among ``keys`` that ``stats`` holds (see :attr:`Preprocess.stats`)."""
    return {k: stats[k] for k in keys if k in stats}


def _rgb_to_bgr(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> BGR: Caffe's networks were trained on images as OpenCV decodes them."""
    return x.flip(0)


def _lists(v):
    return [_lists(x) for x in v] if isinstance(v, tuple) else v


@functools.lru_cache(maxsize=16)
def _on_device(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std on ``device``, made once: normalizing is on every batch's path."""
    return torch.tensor(mean).view(1, -1, 1, 1).to(device), torch.tensor(std).view(1, -1, 1, 1).to(device)


def resample(
    x: torch.Tensor, size: int, flip: torch.Tensor | None = None, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to (N, C, size, size), optionally flipped and shifted.

    ``flip`` (N,) bool mirrors images left-right; ``shift`` (N, 2) moves them by (x, y) source
    pixels, i.e. a crop of the zero-padded image. One ``grid_sample`` does all three, for training
    and evaluation alike, so an un-augmented training batch equals the evaluation batch exactly.
    """
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 - 2.0 * flip.float() if flip is not None else 1.0
    theta[:, 1, 1] = 1.0
    if shift is not None:  # affine_grid works in [-1, 1]: one source pixel is 2/w (2/h) of it
        theta[:, 0, 2] = -shift[:, 0] * 2 / w
        theta[:, 1, 2] = -shift[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(x.device), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_flips_and_shifts(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's augmentation for one batch: flips with probability 1/2, and random crops as
    shifts drawn uniformly from [-MAX_SHIFT, MAX_SHIFT] source pixels in x and y."""
    flip = torch.rand(n, generator=g) < 0.5
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * MAX_SHIFT
    return flip, shift
