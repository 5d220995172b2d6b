"""Writing files so that a crash never leaves half of one, and reading PyTorch files without
running any code from them. Every format in this package writes and reads through these."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from alexnet.errors import CheckpointError, ConfigError, first_line


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
        write(tmp)
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
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file, not a checkpoint")
    try:
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
