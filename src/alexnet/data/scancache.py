"""The bad-file scan's verdicts, remembered between runs: a file unchanged since it was decoded is
not decoded again.

A verdict (``None`` for a good image, else the reason it is bad) is stored per file under the key
(absolute path, size, mtime in nanoseconds) - the test ``make`` and ``rsync`` use - so a file
written since (a new size or mtime) is scanned again. One small JSON file per image directory
(an ImageFolder class folder), so evaluating ``val/`` alone, or a hold-out drawn from the same
folders, finds the verdicts training stored. The files live in the cache folder
(:func:`cache_dir`), never in the data folder, and are named by a hash of the directory and of
what the verdict depends on (the decode mode, the minimum side, :data:`SCAN_VERSION`, Pillow's
version and its ``MAX_IMAGE_PIXELS``): a change of any of those starts afresh.

The cache is an optimization only: a file that is missing, unreadable or damaged counts as
empty, a cache folder that cannot be written is left alone, and both happen silently. Each file
is replaced atomically (written under a temporary name, then renamed), so two runs scanning at
once each leave a whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import PIL
from PIL import Image

# Bump when open_image accepts or refuses differently (new limits, formats or conversions):
# verdicts of an older rule are then never read again.
SCAN_VERSION = 1


def cache_dir() -> Path:
    """The cache folder: ``$ALEXNET_CACHE``, else ``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``."""
    if os.environ.get("ALEXNET_CACHE"):
        return Path(os.environ["ALEXNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet"


class ScanCache:
    """Verdicts of the files of one scan (``mode``, ``min_side``): :meth:`lookup` before decoding,
    :meth:`store` after, :meth:`save` once at the end."""

    def __init__(self, mode: str, min_side: int, folder: Path | None = None):
        self.mode, self.min_side = mode, min_side
        self.folder = (folder or cache_dir()) / "scan"
        self._loaded: dict[str, dict] = {}  # directory -> {name: [size, mtime_ns, verdict]}
        self._changed: set[str] = set()

    def _file(self, directory: str) -> Path:
        # Pillow's own pixel limit changes verdicts too (a bomb is refused by it or by our budget),
        # and any library in the process may set it
        what = json.dumps([directory, self.mode, self.min_side, SCAN_VERSION, PIL.__version__, Image.MAX_IMAGE_PIXELS])
        return self.folder / (hashlib.sha256(what.encode()).hexdigest()[:32] + ".json")

    def _entries(self, directory: str) -> dict:
        if directory not in self._loaded:
            self._loaded[directory] = _read_entries(self._file(directory), directory)
        return self._loaded[directory]

    def lookup(self, paths: list[str]) -> tuple[dict[int, str | None], dict[int, tuple]]:
        """({position: verdict} of the files whose cached verdict still holds, {position: stat key}
        of the regular files to decode). Files that cannot be stat'ed, or are not regular files,
        are in neither: they are decoded (and refused) every time."""
        known, keys = {}, {}
        for i, p in enumerate(paths):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            directory, name = os.path.split(os.path.abspath(p))
            entry = self._entries(directory).get(name)
            if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
                known[i] = entry[2]
            else:
                keys[i] = (directory, name, st.st_size, st.st_mtime_ns)
        return known, keys

    def store(self, key: tuple, verdict: str | None) -> None:
        """Remember ``verdict`` for the file ``key`` (from :meth:`lookup`) as it was stat'ed before
        decoding: a file written while it was decoded gets a new key and is scanned again."""
        directory, name, size, mtime_ns = key
        self._entries(directory)[name] = [size, mtime_ns, verdict]
        self._changed.add(directory)

    def save(self) -> None:
        """Write the directories whose verdicts changed, each atomically; any failure is ignored."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return
        for directory in sorted(self._changed):
            _write_atomic(
                self._file(directory), {"version": SCAN_VERSION, "dir": directory, "files": self._loaded[directory]}
            )
        self._changed.clear()


def _read_entries(path: Path, directory: str) -> dict:
    """The verdicts stored for ``directory``; {} when the file is missing or not what we wrote."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not (isinstance(data, dict) and data.get("version") == SCAN_VERSION and data.get("dir") == directory):
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    return {name: e for name, e in files.items() if _is_entry(e)}


def _is_entry(e) -> bool:
    return (
        isinstance(e, list)
        and len(e) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in e[:2])
        and (e[2] is None or isinstance(e[2], str))
    )


def _write_atomic(path: Path, value) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".scan-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
