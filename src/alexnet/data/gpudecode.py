"""Image folders decoded on the GPU: loader workers only read each JPEG's bytes (and check its
header against the budget of :mod:`alexnet.data.images`), nvJPEG decodes the whole batch on the
device (``torchvision.io.decode_jpeg(list, device="cuda")``), and the paper's resize, crop and flip
are made there, one group of same-sized images at a time; :meth:`Preprocess.to_input` then
normalizes the batch exactly as on the CPU path. A background thread prepares the next batch on
its own CUDA stream while the current one trains.

**The crops are the CPU path's:** the workers draw each box from the image's seed as the CPU path
does (:mod:`alexnet.data.jpegfiles`, which also collates the bytes). **The pixels differ
slightly:** nvJPEG decodes whole images where ``Preprocess.decode == "reduced"`` has libjpeg decode
at 1/2-1/8 (here the antialiased resize from the whole image stands in for the scaled IDCT),
nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's, and torchvision resizes uint8 on the
GPU through float32 (within one grey level of its CPU uint8 kernel).

**Bad or unusual files never stop the GPU path.** A file that is not a plain JPEG (PNG, CMYK, an
EXIF turn, a damaged header) is decoded and cut on the CPU in its worker, as
:class:`~alexnet.data.loader.ImageList` does. A JPEG nvJPEG fails on is decoded on the CPU here by
the hardened decoder (:func:`alexnet.data.images.decode_image`); only when that refuses it too
does the run stop, naming the file, as the CPU path would.

Which path a run takes is decided once, by :func:`resolve_decode` (``--decode auto|cpu|gpu``).
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from alexnet.data.images import MIN_IMAGE_SIDE, decode_image
from alexnet.data.jpegfiles import Crop, JpegBatch, JpegFiles, collate_jpegs
from alexnet.data.loader import EpochBatches, EpochLoader
from alexnet.data.transforms import Preprocess, seeded
from alexnet.errors import ConfigError, ImageError
from alexnet.system.distributed import SINGLE, World
from alexnet.system.signals import held, ignore_in_worker

# Decoded by nvJPEG in one call at most: 2**28 pixels (805 MB as RGB). A batch of 256 ImageNet
# photos (~110 K pixels each) is one call; one of 12-megapixel photos is split into several.
DECODE_PIXELS = 2**28
PREFETCH = 2  # batches prepared ahead by the background thread


# -- which path: one place decides --


def resolve_decode(setting: str, device: torch.device, preprocess: Preprocess) -> str:
    """``--decode``'s value -> ``"gpu"`` or ``"cpu"``: ``auto`` is the GPU where :func:`gpu_problem`
    finds none, ``gpu`` insists (a one-line :class:`ConfigError` saying why it cannot), ``cpu`` is
    the loader workers."""
    if setting == "cpu":
        return "cpu"
    problem = gpu_problem(device, preprocess)
    if problem is None:
        return "gpu"
    if setting == "gpu":
        raise ConfigError(f"--decode gpu: {problem}; use --decode auto (the GPU where it works) or --decode cpu")
    return "cpu"


def gpu_problem(device: torch.device, preprocess: Preprocess) -> str | None:
    """Why images cannot be decoded on ``device`` for ``preprocess``, or None."""
    if device.type != "cuda":
        return f"the run's device is {device}, and nvJPEG decodes on CUDA devices only"
    if preprocess.kind != "folder" or preprocess.mode != "RGB":
        return f"the GPU path makes RGB photos, this pipeline is {preprocess.kind} in mode {preprocess.mode}"
    if preprocess.eigval:  # drawn per image in the workers' seeded generators (transforms.Lighting)
        return "PCA lighting (--lighting) runs in the CPU loader workers only"
    return nvjpeg_problem(indexed(device))


def indexed(device) -> torch.device:
    """``cuda`` as ``cuda:N`` of the current device (what ``--device auto`` gives has no index;
    decoded images come back with one), any other device as it is."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@functools.cache
def nvjpeg_problem(device: torch.device) -> str | None:
    """Whether torchvision's nvJPEG decoder works on ``device``: a small JPEG made here, decoded
    there as a batch of two, must come back with its size and colours. The reason if not, else None."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 90)).save(buf, "JPEG", quality=95)
    blob = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    try:
        out = nvjpeg([blob, blob.clone()], device)
        ok = len(out) == 2 and all(tuple(x.shape) == (3, 24, 32) and x.device == device for x in out)
        colour = out[0].float().mean((1, 2)).cpu().numpy() if ok else None
    except Exception as e:  # no nvJPEG in this build, a driver without it, ...: the CPU path then
        return (
            f"torchvision's nvJPEG decoder does not work on {device} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:120]})"
        )
    if not ok or np.abs(colour - np.array([200, 40, 90])).max() > 8:
        return f"torchvision's nvJPEG decoder gave a wrong image on {device}"
    return None


def nvjpeg(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG files (1-D uint8 CPU tensors) -> (3, H, W) uint8 RGB images on ``device``, in one call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # newer torchvision points to torchcodec; decode_jpeg is the API 0.2x ships
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)


# -- the device's half --


def resize_crop_flip(images: list[torch.Tensor], crops: list[Crop], preprocess: Preprocess) -> torch.Tensor:
    """(C, h, w) uint8 images on one device (any) -> (N, C, S, S) uint8: each resized to its crop's
    size as torchvision's antialiased resize does, cut and mirrored as its :class:`Crop` says, in
    ``channel_order``. Images of one size going to one size are resized together, and a group's
    crops and flips are one gather, so a batch of same-sized photos costs a few kernels, not a few per image."""
    s, device = preprocess.image_size, images[0].device
    from torchvision.transforms.v2 import functional as TF

    out = torch.empty(len(images), images[0].shape[0], s, s, dtype=torch.uint8, device=device)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (img, c) in enumerate(zip(images, crops)):
        groups[(tuple(img.shape), c.height, c.width)].append(i)
    span = torch.arange(s, device=device)
    for (_, h, w), idx in groups.items():
        group = torch.stack([images[i] for i in idx])  # (G, C, h0, w0)
        if group.shape[-2:] != (h, w):
            group = TF.resize(group, [h, w], antialias=True)  # (G, C, h, w)
        top, left, flip = (
            torch.tensor([getattr(crops[i], k) for i in idx], device=device) for k in ("top", "left", "flip")
        )
        rows = top[:, None] + span  # (G, S)
        cols = torch.where(flip[:, None], left[:, None] + s - 1 - span, left[:, None] + span)  # mirrored: right to left
        g = torch.arange(len(idx), device=device)[:, None, None]
        cut = group.permute(0, 2, 3, 1)[g, rows[:, :, None], cols[:, None, :]]  # (G, S, S, C)
        out[torch.tensor(idx, device=device)] = cut.permute(0, 3, 1, 2)
    return out.flip(1) if preprocess.channel_order == "BGR" else out


class BatchDecoder:
    """A :class:`JpegBatch` -> (N, C, S, S) uint8 on ``device``: nvJPEG (``decode``, replaceable for
    tests) on the JPEGs in chunks of :data:`DECODE_PIXELS`, :func:`resize_crop_flip` on what it
    decoded, the CPU decoder for what it could not, the workers' crops put in their places."""

    def __init__(
        self,
        samples,
        preprocess: Preprocess,
        train: bool,
        device,
        decode: Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]] = nvjpeg,
    ):
        self.samples, self.preprocess, self.train, self.device, self.decode = (
            samples,
            preprocess,
            train,
            indexed(device),
            decode,
        )
        self.transform = preprocess.folder_transform(train)
        self.fallbacks = 0  # files nvJPEG failed on and the CPU decoded: counted for the benchmarks

    def __call__(self, b: JpegBatch) -> torch.Tensor:
        s, n = self.preprocess.image_size, len(b.labels)
        out = torch.empty(n, self.preprocess.channels, s, s, dtype=torch.uint8, device=self.device)
        if len(b.cpu_at):
            out[b.cpu_at.to(self.device)] = b.cpu.to(self.device, non_blocking=True)
        blobs = list(torch.split(b.data, b.lengths.tolist())) if len(b.lengths) else []
        sizes = b.sizes.tolist()
        chunk: list[int] = []
        pixels = 0
        for j, (w, h) in enumerate(sizes):
            if chunk and pixels + w * h > DECODE_PIXELS:
                self._chunk(chunk, blobs, sizes, b, out)
                chunk, pixels = [], 0
            chunk.append(j)
            pixels += w * h
        if chunk:
            self._chunk(chunk, blobs, sizes, b, out)
        return out

    def _chunk(self, js: list[int], blobs, sizes, b: JpegBatch, out: torch.Tensor) -> None:
        images = self._decoded([blobs[j] for j in js], [sizes[j] for j in js])
        done = [k for k, img in enumerate(images) if img is not None]
        if done:
            boxes = b.boxes.tolist()
            crops = [Crop(*boxes[js[k]][:4], bool(boxes[js[k]][4])) for k in done]
            cut = resize_crop_flip([images[k] for k in done], crops, self.preprocess)
            out[torch.tensor([int(b.at[js[k]]) for k in done], device=self.device)] = cut
        for k, img in enumerate(images):
            if img is None:
                out[int(b.at[js[k]])] = self._on_cpu(blobs[js[k]], int(b.sample[js[k]]), int(b.seeds[js[k]])).to(
                    self.device
                )

    def _decoded(self, blobs: list[torch.Tensor], sizes) -> list[torch.Tensor | None]:
        """Each JPEG as (3, h, w) on the device, or None where nvJPEG failed or gave another size
        than its header: the whole chunk in one call, and one by one when that call fails."""
        try:
            images = list(self.decode(blobs, self.device))
        except Exception:  # nvJPEG refuses the whole batch for one file it cannot decode
            images = []
            for blob in blobs:
                try:
                    images.append(self.decode([blob], self.device)[0])
                except Exception:
                    images.append(None)
        return [
            img if img is not None and tuple(img.shape) == (3, h, w) else None for img, (w, h) in zip(images, sizes)
        ]

    def _on_cpu(self, blob: torch.Tensor, i: int, seed: int) -> torch.Tensor:
        """One file the GPU could not decode, cut by the CPU path (:func:`decode_image`, the
        transform under its seed); an :class:`ImageError` naming it if the CPU refuses it too."""
        self.fallbacks += 1
        path = self.samples[i][0]
        img = decode_image(
            blob.numpy().tobytes(),
            self.preprocess.mode,
            name=path,
            min_side=MIN_IMAGE_SIDE,
            decode_side=self.preprocess.decode_side,
        )
        with seeded(seed):
            return self.transform(img)


class GpuEpochLoader(EpochLoader):
    """:class:`EpochLoader` for :class:`JpegBatch` batches: the same interface and errors, each batch
    finished by a :class:`BatchDecoder` and normalized (:meth:`Preprocess.to_input`) in a background
    thread, on its own CUDA stream, :data:`PREFETCH` batches ahead of the step."""

    def __init__(self, loader: DataLoader, preprocess: Preprocess, device, decoder: BatchDecoder, **kwargs):
        super().__init__(loader, preprocess, device, **kwargs)
        self.decoder = decoder

    def __iter__(self):
        with held():  # the workers start here (once, when they persist)
            batches = iter(self.loader)
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH)
        stop = threading.Event()
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                with (
                    torch.cuda.device(self.device) if cuda else contextlib.nullcontext(),
                    torch.cuda.stream(stream) if cuda else contextlib.nullcontext(),
                ):
                    for batch in batches:
                        x, y = self._finish(batch)
                        event = torch.cuda.Event() if cuda else None
                        if cuda:
                            event.record(stream)
                        if not put((x, y, event)):
                            return
            except BaseException as e:  # handed to the consumer, raised there
                put(e)
                return
            put(None)

        thread = threading.Thread(target=work, name="alexnet-gpu-decode", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    if isinstance(item, ImageError):
                        thread.join()  # it handed over its last item: no batch is being read any more
                        self.end_workers()
                    raise item
                x, y, event = item
                if cuda:  # the step's stream waits for the batch, and keeps its memory until it is done with it
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    x.record_stream(current)
                yield x, y
        finally:
            stop.set()
            thread.join()

    def _finish(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, ImageError):
            raise ImageError(batch.path, f"{batch.reason}; {self.changed}")
        try:
            x = self.decoder(batch)
        except ImageError as e:
            raise ImageError(e.path, f"{e.reason}; {self.changed}") from None
        return self.preprocess.to_input(x), batch.labels


def gpu_folder_loader(
    samples,
    preprocess: Preprocess,
    *,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    device,
    world: World = SINGLE,
    augment: bool = True,
    decode=nvjpeg,
) -> GpuEpochLoader:
    """:func:`~alexnet.data.loader.folder_loader` with the JPEGs decoded on ``device``: the same
    batches of the same images in the same order, the same crop boxes (the centre crop for
    training too without ``augment``), the same errors."""
    device = indexed(device)
    batches = EpochBatches(len(samples), batch_size=batch_size, shuffle=train, seed=seed, world=world)
    loader = DataLoader(
        JpegFiles(samples, preprocess, train and augment),
        batch_sampler=batches,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),  # not the global RNG (see folder_loader)
        persistent_workers=workers > 0,
        worker_init_fn=ignore_in_worker,
        collate_fn=functools.partial(collate_jpegs, empty=(preprocess.channels, preprocess.image_size)),
    )
    return GpuEpochLoader(loader, preprocess, device, BatchDecoder(samples, preprocess, train, device, decode))


__all__ = [
    "BatchDecoder",
    "GpuEpochLoader",
    "gpu_folder_loader",
    "gpu_problem",
    "indexed",
    "nvjpeg",
    "nvjpeg_problem",
    "resize_crop_flip",
    "resolve_decode",
]
