"""Writing files so that a crash never leaves half of one, and reading files that strangers may
have made: a small file is read only when it is a regular file (inside its folder, where one is
named) of at most a stated size (:func:`read_bytes`, :func:`read_json`), and PyTorch files without
running any code from them (:func:`load_torch_file`). Every format and record in this package
writes and reads through these."""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from alexnet.errors import CheckpointError, ConfigError, DataError, first_line, printable

# Settings, records and indexes are small: a JSON file larger than this is not one of ours (and a
# device such as /dev/zero would be read forever).
MAX_JSON_BYTES = 64 << 20
# Objects and lists inside each other: our files nest a few levels; json and repr() recurse on
# the C stack for every level, so a file nested 100,000 deep ends in RecursionError.
MAX_JSON_DEPTH = 100


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then move it to ``path``,
    so that a crash at any instant leaves either the old file or the new one, never half of one.

    With ``overwrite=False`` an existing ``path`` is never replaced: :class:`FileExistsError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            write(tmp)
        except RuntimeError as e:  # torch's zip writer words a failed write (a full disk) as "unexpected pos"
            cause = _os_error_in(e)
            if cause is None:
                raise
            raise cause from None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_from(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def torch_save(obj: object, path: Path) -> None:
    """``torch.save`` through a Python file, so that a failed write (a full disk) leaves the
    file system's own ``OSError`` in the error torch raises (:func:`atomic_write` raises that one);
    torch writing to a path itself reports only "unexpected pos"."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _os_error_in(e: BaseException) -> OSError | None:
    """The ``OSError`` among the errors ``e`` was raised while handling, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def check_writable_folder(folder: str | Path, source: str, error: type[Exception] = ConfigError) -> Path:
    """Make ``folder`` when missing and check that this process can create a file in it, before a
    long piece of work whose result goes there (permissions alone do not tell: a read-only mount,
    a full disk, root on a folder of mode 555). Refused: one ``error`` line naming ``source``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise error(f"{source}: cannot write there ({e.strerror or e}); give a folder you can write to") from None
    return folder


def output_path(source: Path, out: str | Path | None, suffix: str, *, force: bool = False) -> Path:
    """Where a writer puts the file it makes from ``source``: ``out`` (a name ending in ``suffix``,
    or an existing folder, where it takes ``source``'s stem), by default ``source`` with ``suffix``.
    Never ``source`` itself; an existing file only with ``force`` (checked again, without a race,
    by :func:`atomic_write`; checked here too so that no slow conversion runs first)."""
    if out is None:
        path = source.with_suffix(suffix)
    elif Path(out).is_dir() or str(out).endswith(os.sep):
        path = Path(out) / f"{source.stem}{suffix}"
    elif Path(out).suffix == suffix:
        path = Path(out)
    else:
        raise ConfigError(f"--out {out}: give a {suffix} file name or an existing folder")
    if path.resolve() == source.resolve():
        raise ConfigError(f"--out {path}: would overwrite {source} itself")
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass --force to replace it")
    return path


def _create_from(tmp: Path, path: Path) -> None:
    # link() fails if `path` exists, so no check-then-write race can clobber a file
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass --force to replace it") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass --force to replace it") from None
        os.replace(tmp, path)


def link_file(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` the same file as ``src`` (a hard link, atomically replacing ``dst``), so that
    ``best.pt`` costs no second write; falls back to an atomic copy where links are not allowed."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        atomic_write(dst, lambda tmp: tmp.write_bytes(src.read_bytes()))
        return
    os.replace(tmp, dst)


def load_torch_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing, corrupt and unsafe files."""
    path = Path(path)
    if check_regular(path, error=CheckpointError).st_size == 0:  # a folder or /dev/zero is not "no such file"
        raise CheckpointError(f"{path}: an empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():  # torch's deprecation notes for what a stranger's file holds: noise here
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load - {_unpickle_reason(str(e))}; nothing in it was run") from None
    except Exception as e:  # damaged bytes reach the unpickler, which then fails with any exception type
        raise CheckpointError(
            f"{path}: not a readable PyTorch file, truncated or damaged ({type(e).__name__}: {first_line(e)})"
        ) from None


def _unpickle_reason(message: str) -> str:
    """Why torch's weights-only unpickler stopped, without its advice to load the file unsafely."""
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    if found:
        return (
            f"it asks for the Python object {found[1]}, which could run code (only tensors and plain data are accepted)"
        )
    for line in message.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not re.search(
            r"weights_only|Weights only|Please file an issue|documentation of torch.load|\(1\)|\(2\)", line
        ):
            return f"not a PyTorch file of only tensors and plain data ({line})"
    return "not a PyTorch file of only tensors and plain data"


# --------------------------------------------------------------------------------------------
# Reading small files made by others


def file_kind(st_mode: int) -> str:
    """What a path that is not a regular file is, in words (for "not a regular file but ...")."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(st_mode)), "a special file")


def check_regular(
    path: str | Path, *, inside: str | Path | None = None, error: type[Exception] = DataError, source: str | None = None
) -> os.stat_result:
    """The ``stat`` of ``path`` when it is a regular file (through links, which must stay inside
    the folder ``inside`` when one is given); else ``error`` naming ``source`` (default the path)
    and what it is instead: missing, a folder, a named pipe, a device, a link leaving the folder."""
    path = Path(path)
    name = printable(source or str(path))
    try:
        if inside is not None and not _is_within(path.resolve(strict=True), Path(inside).resolve()):
            raise error(f"{name}: a link to a file outside {printable(str(inside))}; refused (copy the file in)")
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except RuntimeError:  # a symlink loop seen by resolve()
        raise error(f"{name}: a symbolic link loop") from None
    except OSError as e:
        raise error(f"{name}: cannot read it ({e.strerror or e})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{name}: not a regular file but {file_kind(info.st_mode)}")
    return info


def read_bytes(
    path: str | Path,
    *,
    limit: int,
    inside: str | Path | None = None,
    error: type[Exception] = DataError,
    source: str | None = None,
) -> bytes:
    """The bytes of ``path``, a regular file (see :func:`check_regular`) of at most ``limit``
    bytes; anything else is one ``error`` line naming it. The file is opened without blocking and
    looked at again once open, so a FIFO or device swapped in meanwhile is refused too, and never
    more than ``limit`` + 1 bytes are read (a file may grow, or say it is empty as /proc does)."""
    name = printable(source or str(path))
    check_regular(path, inside=inside, error=error, source=source)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{name}: cannot read it ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name}: not a regular file but {file_kind(info.st_mode)}")
        if info.st_size > limit:
            raise error(f"{name}: {info.st_size:,} bytes, more than the {limit:,} such a file may hold")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"{name}: cannot read it ({e.strerror or e})") from None
    if len(data) > limit:
        raise error(f"{name}: more than the {limit:,} bytes such a file may hold")
    return data


def read_text(path: str | Path, *, limit: int, error: type[Exception] = DataError, **kw) -> str:
    """:func:`read_bytes` decoded as UTF-8 (bytes that are not: one ``error`` line naming the file)."""
    data = read_bytes(path, limit=limit, error=error, **kw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{printable(kw.get('source') or str(path))}: not UTF-8 text (byte {e.start})") from None


def parse_json(text: str | bytes, source: str, error: type[Exception] = DataError) -> object:
    """``json.loads``, with every way it fails - not JSON, bytes that are not UTF-8, nested past
    :data:`MAX_JSON_DEPTH` (``RecursionError`` in the parser, or in every later ``repr``) - one
    ``error`` line naming ``source``."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        deep = True
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both are
        raise error(f"{printable(source)}: not readable JSON ({first_line(e)})") from None
    else:
        deep = _depth_over(value, MAX_JSON_DEPTH)
    if deep:
        raise error(f"{printable(source)}: JSON nested more than {MAX_JSON_DEPTH} levels deep; not a file of ours")
    return value


def read_json(
    path: str | Path,
    *,
    limit: int = MAX_JSON_BYTES,
    inside: str | Path | None = None,
    error: type[Exception] = DataError,
    source: str | None = None,
) -> object:
    """A JSON file read by :func:`read_bytes` and parsed by :func:`parse_json`."""
    data = read_bytes(path, limit=limit, inside=inside, error=error, source=source)
    return parse_json(data, source or str(path), error)


def read_json_lines(
    path: str | Path, *, limit: int = MAX_JSON_BYTES, error: type[Exception] = DataError, source: str | None = None
) -> list:
    """The values of a JSON-lines file (``metrics.jsonl``), blank lines skipped; a line that is not
    JSON is one ``error`` line naming the file and the line's number."""
    data = read_bytes(path, limit=limit, error=error, source=source)
    name = source or str(path)
    return [parse_json(line, f"{name} line {i}", error) for i, line in enumerate(data.splitlines(), 1) if line.strip()]


def _depth_over(value: object, limit: int) -> bool:
    """Whether objects and lists nest more than ``limit`` deep in ``value`` (without recursing)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
