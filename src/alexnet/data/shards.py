"""The shard format ``alexnet prepare`` writes and ``alexnet train --data`` reads: writer and reader
side by side.

A prepared folder holds

* ``train-000000.tar``, ``train-000001.tar``, ..., ``val-000000.tar``, ...: POSIX tar files in
  WebDataset's convention - each sample is two members, ``KEY.jpg`` (the image, shorter side
  resized to ``resize``, re-encoded as JPEG) and ``KEY.cls`` (its class index as decimal text),
  KEY being nine digits, the sample's place in its split - so ``webdataset.WebDataset`` reads
  them as they are;
* ``index.json`` (:class:`ShardIndex`): the classes, how the images were made, the training
  images' normalization statistics, and per split its shards, each with its sample count and,
  per sample, the key, the label and each member's data offset and size in the tar, so a reader
  can seek straight to any sample (exact sharding across ranks and workers, resuming);
* ``classes.txt`` (one class name a line) and ``bad_images.json`` (the files left out).

Each shard is written under a temporary name and renamed when whole, and the index last: a
folder without ``index.json`` is an unfinished prepare, never a half shard under a final name.
Shards can be read from a local folder or any fsspec URL (``file://``, ``memory://``, ``s3://``
with s3fs installed, ...).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path

from PIL import Image

from alexnet.data.base import class_names_problem
from alexnet.data.images import check_size, convert, reduce_decode
from alexnet.data.stats import stats_problem
from alexnet.errors import DataError, ImageError
from alexnet.system.files import atomic_write, check_regular, parse_json

INDEX = "index.json"
CLASSES = "classes.txt"
BAD_IMAGES = "bad_images.json"
FORMAT = "alexnet-shards"
VERSION = 1
SPLITS = ("train", "val")
# The index lists every image's label and place in its shard: tens of bytes an image.
MAX_INDEX_BYTES = 1 << 30
SHARD_NAME = re.compile(r"(train|val)-[0-9]{6}\.tar")
_BLOCK = 512  # tar's block: every header is one, every member's data is padded to whole ones


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def parse_size(text: str) -> int:
    """Bytes from ``1GB``, ``500MB``, ``1.5GiB``, ``64KiB`` or ``100000`` (decimal units are powers of
    1000, binary ones of 1024); ValueError naming the text if it is not one."""
    units = {
        "": 1,
        "b": 1,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "tb": 10**12,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
        "tib": 2**40,
    }
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in units:
        raise ValueError(f"{text!r} is not a size; give e.g. 1GB, 500MB, 2GiB or a number of bytes")
    size = float(m.group(1)) * units[m.group(2).lower()]
    if not size < 2**63:  # 400 digits are a float of inf, and no shard is an exabyte
        raise ValueError(f"{text[:40]!r} is larger than any shard can be (at most 9.2 EB)")
    if int(size) < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return int(size)


@dataclass
class Shard:
    """One tar file of a split and, per sample, where its members' data lie in it."""

    file: str  # name inside the prepared folder
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    jpg_offset: list[int] = field(default_factory=list)  # byte offset of KEY.jpg's data in the tar
    jpg_size: list[int] = field(default_factory=list)
    cls_offset: list[int] = field(default_factory=list)  # and of KEY.cls's
    cls_size: list[int] = field(default_factory=list)
    bytes: int = 0  # the tar file's size

    @property
    def count(self) -> int:
        return len(self.keys)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "count": self.count,
            "bytes": self.bytes,
            "keys": self.keys,
            "labels": self.labels,
            "jpg": {"offset": self.jpg_offset, "size": self.jpg_size},
            "cls": {"offset": self.cls_offset, "size": self.cls_size},
        }

    @classmethod
    def from_dict(cls, d, num_classes: int, where: str) -> Shard:
        """A shard entry of the index, every field checked (ValueError naming it)."""
        if not isinstance(d, dict) or not isinstance(d.get("file"), str) or not SHARD_NAME.fullmatch(d["file"]):
            raise ValueError(f"{where}: a shard entry needs a 'file' named like train-000000.tar")
        where = f"{where} {d['file']}"
        jpg, cls_ = d.get("jpg"), d.get("cls")
        if not (isinstance(jpg, dict) and isinstance(cls_, dict)):
            raise ValueError(f"{where}: 'jpg' and 'cls' must be objects of offset and size lists")
        lists = {
            "keys": d.get("keys"),
            "labels": d.get("labels"),
            "jpg offset": jpg.get("offset"),
            "jpg size": jpg.get("size"),
            "cls offset": cls_.get("offset"),
            "cls size": cls_.get("size"),
        }
        count, total = d.get("count"), d.get("bytes")
        if not _whole(count) or not _whole(total):
            raise ValueError(f"{where}: 'count' and 'bytes' must be whole numbers from 0")
        for name, values in lists.items():
            if not isinstance(values, list) or len(values) != count:
                raise ValueError(f"{where}: {name!r} must be a list of its {count} samples")
            kind = str if name == "keys" else int
            if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
                raise ValueError(f"{where}: {name!r} must hold {kind.__name__}s")
        if any(not 0 <= v < num_classes for v in lists["labels"]):
            raise ValueError(f"{where}: a label is outside 0..{num_classes - 1}")
        ends = [o + s for o, s in zip(lists["jpg offset"] + lists["cls offset"], lists["jpg size"] + lists["cls size"])]
        if any(v < 0 for v in lists["jpg offset"] + lists["cls offset"] + lists["jpg size"] + lists["cls size"]) or any(
            e > total for e in ends
        ):
            raise ValueError(f"{where}: a member's offset and size lie outside its {total} bytes")
        return cls(d["file"], *lists.values(), bytes=total)


@dataclass
class ShardIndex:
    """``index.json``: what a prepared folder holds and where each sample lies."""

    classes: list[str]
    resize: int  # shorter side of every stored image
    stats: dict  # {"mean": [...], "std": [...]} of the training images, pixels in [0, 1]
    splits: dict[str, list[Shard]]  # "train", "val" -> shards
    mode: str = "RGB"
    quality: int = 95  # JPEG quality of the re-encoded images
    source: str = ""  # the folder it was prepared from
    split: dict | None = None  # the hold-out of a plain folder: {"seed", "val_fraction"}

    def count(self, split: str) -> int:
        return sum(s.count for s in self.splits[split])

    def to_dict(self) -> dict:
        # not asdict(self): it would deep-copy every sample's numbers first
        out = {
            "format": FORMAT,
            "version": VERSION,
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "splits"},
        }
        out["splits"] = {
            k: {"count": self.count(k), "shards": [s.to_dict() for s in v]} for k, v in self.splits.items()
        }
        return out

    @classmethod
    def from_dict(cls, d, where: str = INDEX) -> ShardIndex:
        """The stored form read back, every field checked; ValueError naming the field."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{where}: not an index of {FORMAT} (written by alexnet prepare)")
        if d.get("version") != VERSION:
            raise ValueError(
                f"{where}: version {d.get('version')!r}, this alexnet reads version {VERSION}; prepare the shards again"
            )
        classes = d.get("classes")
        problem = class_names_problem(classes)
        if problem:
            raise ValueError(f"{where}: 'classes' {problem}")
        if not (_whole(d.get("resize")) and d["resize"] >= 1) or d.get("mode") not in ("RGB", "L"):
            raise ValueError(f"{where}: 'resize' must be a positive whole number and 'mode' RGB or L")
        stats = d.get("stats")
        channels = 3 if d["mode"] == "RGB" else 1
        if not (
            isinstance(stats, dict)
            and all(isinstance(stats.get(k), list) and len(stats[k]) == channels for k in ("mean", "std"))
        ):
            raise ValueError(f"{where}: 'stats' must hold a mean and a std per channel")
        problem = (
            stats_problem(stats["mean"], stats["std"])
            if all(isinstance(v, (int, float)) for v in stats["mean"] + stats["std"])
            else "stats are not numbers"
        )
        if problem:
            raise ValueError(f"{where}: {problem}")
        splits = d.get("splits")
        if not isinstance(splits, dict) or set(splits) != set(SPLITS):
            raise ValueError(f"{where}: 'splits' must hold train and val")
        shards = {}
        for name in SPLITS:
            entry = splits[name]
            if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list) or not entry["shards"]:
                raise ValueError(f"{where}: split {name!r} must list its shards")
            shards[name] = [Shard.from_dict(s, len(classes), f"{where} {name}") for s in entry["shards"]]
        return cls(
            classes,
            d["resize"],
            {"mean": stats["mean"], "std": stats["std"]},
            shards,
            d["mode"],
            d.get("quality", 95),
            str(d.get("source", "")),
            d.get("split"),
        )

    def write(self, folder: Path) -> None:
        """``index.json`` and ``classes.txt`` in ``folder``, each atomically (the index last)."""
        atomic_write(folder / CLASSES, lambda tmp: tmp.write_text("".join(c + "\n" for c in self.classes)))
        atomic_write(
            folder / INDEX, lambda tmp: tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        )

    @classmethod
    def read(cls, location: str) -> ShardIndex:
        """The index of the prepared folder at ``location`` (a path or an fsspec URL), checked."""
        try:
            if not is_url(location) and os.path.lexists(join(location, INDEX)):  # no FIFO, device or link loop
                check_regular(join(location, INDEX), source=f"--data {location}: its {INDEX}")
            with open_file(join(location, INDEX)) as f:
                raw = f.read(MAX_INDEX_BYTES + 1)
            if len(raw) > MAX_INDEX_BYTES:
                raise DataError(f"--data {location}: its {INDEX} is over {MAX_INDEX_BYTES:,} bytes; not an index")
        except FileNotFoundError:
            raise DataError(
                f"--data {location}: no {INDEX} there; make one with: alexnet prepare SRC {location}"
            ) from None
        except (OSError, ValueError) as e:  # fsspec raises ValueError for a protocol it does not know
            raise DataError(f"--data {location}: cannot read its {INDEX} ({e})") from None
        except ImportError as e:  # s3://, gs://, http:// need a package fsspec does not bring
            raise DataError(
                f"--data {location}: reading it needs a package that is not installed ({e}); pip install it (s3fs, "
                "gcsfs, aiohttp, ...)"
            ) from None
        values = parse_json(raw, f"--data {location}: its {INDEX} (prepare the shards again: alexnet prepare --force)")
        try:
            return cls.from_dict(values)
        except ValueError as e:
            raise DataError(f"--data {location}: {e}; prepare the shards again (alexnet prepare --force)") from None


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# --------------------------------------------------------------------------------------------
# Locations: a local folder or an fsspec URL


def is_url(location: str) -> bool:
    return "://" in str(location)


def join(location: str, name: str) -> str:
    return f"{str(location).rstrip('/')}/{name}" if is_url(location) else str(Path(location) / name)


def open_file(location: str, *, random_access: bool = False):
    """A binary file open for reading: the built-in ``open`` for a path, fsspec for a URL. With
    ``random_access`` a remote file reads exactly the ranges asked for: fsspec's default
    read-ahead would fetch megabytes around every sample of a few tens of kilobytes."""
    if not is_url(location):
        return open(location, "rb")
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return fs.open(path, "rb", **({"cache_type": "none"} if random_access else {}))


def file_size(location: str) -> int:
    if not is_url(location):
        return os.stat(location).st_size
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return fs.size(path)


def is_shards(location: str | None) -> bool:
    """Whether ``location`` is a prepared folder (holds ``index.json``). A URL always counts: the
    other sources are local, so a URL without an index is best told that it lacks one."""
    if location is None:
        return False
    return is_url(location) or Path(location, INDEX).is_file()


# --------------------------------------------------------------------------------------------
# Writer


class ShardWriter:
    """Writes one split's samples into tar shards of at most ``max_bytes`` (a shard holds at
    least one sample), each under a temporary name until whole."""

    def __init__(self, folder: Path, split: str, max_bytes: int):
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self.shards: list[Shard] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None

    def add(self, key: str, jpg: bytes, label: int) -> None:
        cls_ = str(label).encode()
        grows = sum(_BLOCK + -(-len(data) // _BLOCK) * _BLOCK for data in (jpg, cls_))
        # the file closes with two zero blocks, padded to a whole record (tarfile.RECORDSIZE)
        size = lambda end: -(-(end + 2 * _BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE  # noqa: E731
        if self._tar is not None and size(self._tar.offset + grows) > self.max_bytes and self.shards[-1].count:
            self._finish()
        if self._tar is None:
            self._start()
        shard = self.shards[-1]
        shard.keys.append(key)
        shard.labels.append(label)
        for name, data, offsets, sizes in (
            (f"{key}.jpg", jpg, shard.jpg_offset, shard.jpg_size),
            (f"{key}.cls", cls_, shard.cls_offset, shard.cls_size),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o444, 0  # mtime 0: the same input gives the same bytes
            self._tar.addfile(info, io.BytesIO(data))
            # addfile leaves the offset past the data padded to whole blocks
            offsets.append(self._tar.offset - -(-len(data) // _BLOCK) * _BLOCK)
            sizes.append(len(data))

    def _start(self) -> None:
        name = shard_name(self.split, len(self.shards))
        self._tmp = self.folder / f".{name}.partial"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self.shards.append(Shard(name))

    def _finish(self) -> None:
        self._tar.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        self.shards[-1].bytes = self._tmp.stat().st_size
        os.replace(self._tmp, self.folder / self.shards[-1].file)
        self._tar = self._tmp = None

    def close(self) -> list[Shard]:
        """Finish the last shard; the shards written."""
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (an error or a signal stopped the prepare)."""
        if self._tar is not None:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
            self._tar = self._tmp = None


# --------------------------------------------------------------------------------------------
# Reader


def decode_jpeg(raw: bytes, mode: str, name: str, decode_side: int | None = None) -> Image.Image:
    """A stored image's bytes to a PIL image in ``mode``, with the checks of
    :func:`alexnet.data.images.open_image` (shards may come from elsewhere) and its reduced-size
    decode (``decode_side``); ImageError naming ``name``."""
    try:
        with Image.open(io.BytesIO(raw), formats=("JPEG",)) as img:
            check_size(img, name=name)
            reduce_decode(img, decode_side)
            img.load()
            return convert(img, mode, name=name)
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many kinds on damaged data, as open_image says
        raise ImageError(name, f"not a readable JPEG ({' '.join(f'{type(e).__name__}: {e}'.split())[:200]})") from None


class ShardReader:
    """Reads members of a prepared folder's shards by offset, keeping a few files open. A copy in
    a forked loader worker opens its own files (an open file is not shared across processes)."""

    def __init__(self, location: str, max_open: int = 16):
        self.location, self.max_open = location, max_open
        self._files: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def read(self, file: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of shard ``file``; OSError if they are not all there."""
        if self._pid != os.getpid():
            self._files, self._pid = OrderedDict(), os.getpid()
        f = self._files.pop(file, None) or open_file(join(self.location, file), random_access=True)
        self._files[file] = f
        while len(self._files) > self.max_open:
            self._files.popitem(last=False)[1].close()
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError(f"{len(data)} of {size} bytes at offset {offset}: the shard is shorter than its index says")
        return data

    def __getstate__(self):  # open files stay behind when the reader is pickled (spawned workers)
        return {"location": self.location, "max_open": self.max_open}

    def __setstate__(self, state):
        self.__init__(state["location"], state["max_open"])
