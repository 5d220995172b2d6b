"""Folders of image files (torchvision's ImageFolder layout): listing, checking and loading.

Every image is decoded in DataLoader workers (:func:`alexnet.data.images.open_image`) and goes
through the paper's transforms (:class:`alexnet.data.transforms.Preprocess`). Before training,
every file is decoded once (:func:`scan_images`) so a bad file stops the run at its start with a
list of all of them, or is skipped on request; the verdicts are cached
(:mod:`alexnet.data.scancache`), so the next run or a resume on the same files decodes none of them
again. Evaluation lists and decodes only the images it evaluates (:func:`folder_eval_data`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from alexnet.data import gpudecode
from alexnet.data.base import Data, EvalData, class_names_problem
from alexnet.data.classes import by_names, choose, relabel_samples
from alexnet.data.images import IMAGE_EXTENSIONS, MIN_IMAGE_SIDE, open_image
from alexnet.data.loader import folder_loader
from alexnet.data.sampling import subset_indices, subset_per_class
from alexnet.data.scancache import ScanCache
from alexnet.data.stats import lighting_stats, pixel_moments, stats_problem
from alexnet.data.transforms import Preprocess
from alexnet.errors import BadFilesError, DataError, ImageError
from alexnet.system.distributed import SINGLE, World
from alexnet.system.signals import held, ignore_in_worker


def scan_images(samples, mode: str, workers: int = 0, *, cache: bool = True) -> list[dict]:
    """Decode every image of ``samples`` ((path, label) pairs) as training will, in ``workers``
    processes (0: in this one), and list each file that cannot be used as ``{"path", "reason"}``,
    in the order of ``samples``. A folder's bad files are found at once, before any training.

    With ``cache`` the verdicts are remembered (:mod:`alexnet.data.scancache`): a file unchanged
    since an earlier scan (same path, size and mtime) is not decoded again."""
    paths = [str(p) for p, _ in samples]
    store = ScanCache(mode, MIN_IMAGE_SIDE) if cache else None
    known, keys = store.lookup(paths) if store else ({}, {})
    todo = [i for i in range(len(paths)) if i not in known]
    chunk = max(1, min(64, len(todo) // (4 * max(1, workers))))  # a few chunks per worker
    loader = DataLoader(
        _ImageProblems([paths[i] for i in todo], mode),
        batch_size=chunk,
        num_workers=workers if todo else 0,
        collate_fn=list,
        worker_init_fn=ignore_in_worker,
    )
    with held():  # the workers start here
        batches = iter(loader)
    reasons = dict(known)
    for i, reason in zip(todo, (r for batch in batches for r in batch)):
        reasons[i] = reason
        if i in keys:
            store.store(keys[i], reason)
    if store:
        store.save()
    return [{"path": p, "reason": reasons[i]} for i, p in enumerate(paths) if reasons[i] is not None]


class _ImageProblems(Dataset):
    """The reason each file is bad, or None: returned, not raised, so workers never fail."""

    def __init__(self, paths: list[str], mode: str):
        self.paths, self.mode = paths, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str | None:
        try:
            open_image(self.paths[i], self.mode, min_side=MIN_IMAGE_SIDE)
        except ImageError as e:
            return e.reason
        return None


def bad_images_error(root: str | Path, bad: list[dict]) -> BadFilesError:
    """The error for a folder with bad files: one summary line, then one line per file."""
    return BadFilesError(
        f"{len(bad)} bad image file(s) in {root}; fix or remove them, or pass --skip-bad-images to train on the rest:",
        [f"  {b['path']}: {b['reason']}" for b in bad],
    )


def scan_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) for every image below ``root``/<class>/, and the sorted class names."""
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
        if not classes:
            raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<image files>")
        problem = class_names_problem(classes)
        if problem:  # before the images are scanned: a model of these names could not answer
            raise DataError(f"{root}: its class folders' names {problem}")
    elif set(found) - set(classes):
        extra = ", ".join(sorted(set(found) - set(classes)))
        raise DataError(
            f"{root}: class folder(s) {extra} are not among the training classes; add them to train/ or remove them"
        )
    samples = []
    for i, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((str(path), i))
    if not samples:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders")
    return samples, classes


def holdout(samples: list, seed: int, val_fraction: float) -> tuple[list, list]:
    """The seeded hold-out split of a plain folder: (training samples, validation samples), each
    in the order of ``samples``. A function of the listed (readable) files, the seed and the
    fraction alone, so evaluation redraws exactly the split training made without decoding it."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(samples) * val_fraction)) if len(samples) > 1 else 0
    return [samples[i] for i in sorted(order[n_val:])], [samples[i] for i in sorted(order[:n_val])]


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` is a train/ + val/ layout. One of the two alone is refused: read as a
    plain folder it would become a class called "train" (or a set without training images)."""
    train, val = (root / "train").is_dir(), (root / "val").is_dir()
    if train != val:
        have, lack = ("train", "val") if train else ("val", "train")
        raise DataError(
            f"--data {root}: has {have}/ but no {lack}/; a split layout needs both ({root}/train/<class>/..., "
            f"{root}/val/<class>/...), or rename {have}/ if it is a class"
        )
    return train


def _chosen(root: Path, spec: str | list[str] | None, where: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The samples and classes of a plain folder, only the chosen classes when ``spec`` says
    (``--classes``, or a model's class names), relabelled 0..K-1: as if it held no others."""
    samples, classes = scan_folder(root)
    if spec is None:
        return samples, classes
    chosen = choose(spec, classes, where) if isinstance(spec, str) else by_names(spec, classes, where)
    return relabel_samples(samples, chosen), [classes[i] for i in chosen]


def folder_classes(root: Path) -> list[str]:
    """The class names of an image folder (its training sub-folders), from the listing alone."""
    top = root / "train" if has_split_folders(root) else root
    return sorted(d.name for d in top.iterdir() if d.is_dir() and not d.name.startswith("."))


@dataclass
class FolderSplit:
    """The readable images of a folder, split: ``train/`` and ``val/``, or the seeded hold-out."""

    train: list  # (path, class index)
    val: list
    classes: list[str]
    split: dict | None  # the hold-out of a plain folder: {"seed", "val_fraction", "val": [paths]}
    bad: list[dict]  # {"path", "reason"}: left out (skip_bad_images)


def split_folder(cfg, root: Path, mode: str = "RGB", name: str = "--data") -> FolderSplit:
    """List, scan (:func:`scan_images`) and split an ImageFolder-layout folder for training with
    ``cfg`` (seed, val_fraction, workers, skip_bad_images); ``name`` is how errors name the folder.
    A bad file stops it with the list of all of them unless ``cfg.skip_bad_images``."""
    split = None
    if has_split_folders(root):
        train_samples, classes = scan_folder(root / "train")
        val_samples, _ = scan_folder(root / "val", classes)
        chosen = choose(cfg.classes, classes, f"{name} {root}")
        if chosen is not None:  # before the scan: the other classes' files are never decoded
            train_samples, val_samples = relabel_samples(train_samples, chosen), relabel_samples(val_samples, chosen)
            classes = [classes[i] for i in chosen]
        listed = train_samples
        bad = _bad_images(cfg.skip_bad_images, cfg.workers, root, train_samples + val_samples, mode)
        train_samples, val_samples = _without(train_samples, bad), _without(val_samples, bad)
    else:
        samples, classes = _chosen(root, cfg.classes, f"{name} {root}")
        listed = samples
        # The split is drawn from the readable files only: the same split as after deleting the bad ones.
        bad = _bad_images(cfg.skip_bad_images, cfg.workers, root, samples, mode)
        train_samples, val_samples = holdout(_without(samples, bad), cfg.seed, cfg.val_fraction)
        split = {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "val": [p for p, _ in val_samples]}
    if bad and not (train_samples and val_samples):
        which = "training" if not train_samples else "validation"
        raise DataError(
            f"{name} {root}: no readable {which} images left after skipping {len(bad)} bad file(s), e.g. "
            f"{bad[0]['path']}: {bad[0]['reason']}"
        )
    if not val_samples:
        raise DataError(f"{name} {root}: too few images to hold out a validation set")
    if not train_samples:
        raise DataError(
            f"{name} {root}: --val-fraction {cfg.val_fraction} of {len(val_samples)} images holds out all of them; "
            "lower it to leave some for training"
        )
    _check_every_class_trains(
        f"{name} {root}",
        root / "train" if split is None else root,
        classes,
        listed,
        _without(listed, bad),
        train_samples,
    )
    return FolderSplit(train_samples, val_samples, classes, split, bad)


def folder_data(
    cfg, root: Path, device, stats: Mapping | None, world: World = SINGLE, decode: str | None = None
) -> Data:
    """Train and validation loaders of an ImageFolder-layout folder (see :func:`alexnet.data.build_data`)."""
    mode = "RGB"
    s = split_folder(cfg, root, mode)
    keep = subset_indices(len(s.train), cfg.subset, cfg.seed)
    if keep is None:
        keep = subset_per_class(torch.tensor([label for _, label in s.train]), cfg.subset_per_class, cfg.seed)
    train = s.train if keep is None else [s.train[i] for i in keep.tolist()]
    if stats is None:
        moments = pixel_moments(s.train, mode, seed=cfg.seed)
        mean, std = moments.mean.tolist(), moments.std.tolist()
        stats, problem = {"mean": mean, "std": std}, stats_problem(mean, std)
        if problem:
            raise DataError(f"--data {root}: the training images' {problem}")
        if cfg.lighting:
            stats.update(lighting_stats(s.classes, moments))
    elif cfg.lighting and not stats.get("eigval"):  # weights' own normalization (--init-from), the data's colours
        stats = {**stats, **lighting_stats(s.classes, pixel_moments(s.train, mode, seed=cfg.seed))}
    preprocess = Preprocess.for_folder(image_size=cfg.image_size, stats=stats, mode=mode, decode=decode)
    decode_on = gpudecode.resolve_decode(cfg.decode, torch.device(device), preprocess)
    loader = gpudecode.gpu_folder_loader if decode_on == "gpu" else folder_loader
    common = dict(batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed, device=device, world=world)
    return Data(
        train=loader(train, preprocess, train=True, augment=cfg.augment, **common),
        val=loader(s.val, preprocess, train=False, **common),
        classes=s.classes,
        preprocess=preprocess,
        num_train=len(train),
        num_val=len(s.val),
        source=str(root),
        split=s.split,
        bad_files=s.bad,
        decode_on=decode_on,
    )


def _check_every_class_trains(name: str, folder: Path, classes: list[str], listed, readable, train) -> None:
    """Every class needs training images, or the model gets an output it can never learn: name
    the first class without any, and why (no image files, all bad, or all held out)."""

    def count(samples):
        return Counter(label for _, label in samples)

    n_listed, n_readable, n_train = count(listed), count(readable), count(train)
    for i, cls in enumerate(classes):
        if n_train[i]:
            continue
        if not n_listed[i]:
            why = f"its folder {folder / cls} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
        elif not n_readable[i]:
            why = f"all its {n_listed[i]} file(s) are bad"
        else:
            why = f"all its {n_readable[i]} image(s) were held out for validation; add images or lower --val-fraction"
        raise DataError(f"{name}: class {cls!r} has no training images: {why}")


def listed_samples(
    root: Path,
    classes: list[str],
    split: str,
    *,
    seed: int,
    val_fraction: float,
    exclude: set[str] = frozenset(),
    chosen: bool = False,
) -> list:
    """The (path, class index) samples of ``split`` (``train`` or ``val``) of an image folder, from
    its listing alone, as the training run drew them: ``train/`` or ``val/``, or the seeded
    hold-out of a plain folder less ``exclude`` (the files training skipped as bad). Nothing is
    decoded, and a split layout's other folder is not listed. ``chosen``: the model was trained on
    these ``classes`` chosen out of the folder's (``--classes``), picked again by name."""
    where = f"--data {root}"
    if has_split_folders(root):
        if not chosen:
            return scan_folder(root / split, list(classes))[0]
        samples, found = scan_folder(root / split, folder_classes(root))
        return relabel_samples(samples, by_names(classes, found, where))
    samples, _ = _chosen(root, list(classes), where) if chosen else scan_folder(root, list(classes))
    train, val = holdout([s for s in samples if s[0] not in exclude], seed, val_fraction)
    return val if split == "val" else train


def folder_eval_data(
    root: Path,
    preprocess: Preprocess,
    classes: list[str],
    *,
    seed: int,
    val_fraction: float,
    exclude: set[str],
    skip_bad_images: bool,
    batch_size: int,
    workers: int,
    device,
    ten_crop: bool = False,
    chosen: bool = False,
) -> EvalData:
    """The validation images of an image folder as evaluation batches: ``val/``, or the hold-out
    of a plain folder redrawn by :func:`holdout` from the listed files less ``exclude`` (the files
    training skipped as bad). Only those images are decoded; no training image is opened.
    ``ten_crop``: batches of (N, 10, C, S, S) views (:meth:`Preprocess.folder_transform`);
    ``chosen``: ``classes`` were chosen out of the folder's (see :func:`listed_samples`)."""
    val_samples = listed_samples(
        root, classes, "val", seed=seed, val_fraction=val_fraction, exclude=exclude, chosen=chosen
    )
    bad = _bad_images(skip_bad_images, workers, root, val_samples, preprocess.mode)
    val_samples = _without(val_samples, bad)
    if not val_samples:
        raise DataError(f"--data {root}: no readable validation images")
    loader = folder_loader(
        val_samples,
        preprocess,
        train=False,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        device=device,
        ten_crop=ten_crop,
    )
    loader.changed = "it was readable when the evaluation started, so it changed since"
    return EvalData(loader, list(classes), len(val_samples), str(root))


def _bad_images(skip: bool, workers: int, root: Path, samples, mode: str) -> list[dict]:
    """The files of ``samples`` that :func:`scan_images` finds bad; unless ``skip``, the error
    that lists them all (before anything is trained or written)."""
    bad = scan_images(samples, mode, workers)
    if bad and not skip:
        raise bad_images_error(root, bad)
    return bad


def _without(samples, bad: list[dict]):
    drop = {b["path"] for b in bad}
    return [s for s in samples if s[0] not in drop]
