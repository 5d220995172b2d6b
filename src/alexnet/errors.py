"""The errors a user can cause, in one place: each carries a one-line message that names the input
and says what to do. The command line prints the message without a traceback and exits with a
status code that says which kind it was (:func:`alexnet.cli.main`)."""

from __future__ import annotations

import re
from pathlib import Path


class ConfigError(ValueError):
    """A setting or flag that cannot be used; exit code 2."""


class DataError(Exception):
    """Data that cannot be used; the message names the file or folder and what to do."""


class BadFilesError(DataError):
    """A folder with bad files: one summary line, then one line per file (``lines``)."""

    def __init__(self, summary: str, lines: list[str]):
        self.lines = [summary, *lines]
        super().__init__("\n".join(self.lines))

    def __reduce__(self):
        return type(self), (self.lines[0], self.lines[1:])


class ImageError(DataError):
    """An image file that cannot be used; the message is one line, ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # rebuilt from (path, reason) when it crosses from a loader worker
        return type(self), (self.path, self.reason)


class ImageFormatError(ImageError):
    """An image file of a format that is not decoded (EPS, PDF, SVG, ...)."""


class ImageSizeError(ImageError):
    """An image whose size is out of bounds (too large to decode, too small, too elongated),
    told from its header before it is decoded."""


class CheckpointError(Exception):
    """A checkpoint or weights file that cannot be used; the message names it and why."""


class RunError(Exception):
    """The run cannot go on (disk full, repeated NaN); the message says what was kept and what to do."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def brief(value) -> str:
    """A value for a one-line message: its repr on one line, cut short (a field of a damaged file
    may hold a whole tensor or a long list)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


# Characters a terminal acts on rather than shows: C0 and C1 controls (a newline splits a one-line
# message, ESC starts a sequence that can rewrite the screen), the line and paragraph separators,
# the bidirectional overrides that reorder what is shown, and the lone surrogates a file name that
# is not UTF-8 decodes to (which a UTF-8 stdout cannot even encode).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def message_lines(e: BaseException) -> list[str]:
    """What the command line prints for ``e``: its message as one line, escaped by :func:`printable`
    (a name holding a newline cannot split it), or each of its ``lines`` so escaped."""
    return [printable(str(line)) for line in getattr(e, "lines", None) or [str(e)]]


def printable(text: str) -> str:
    """``text`` with the characters a terminal would act on written as Python escapes (``\\n``,
    ``\\x1b``, ``\\u202e``, ``\\udcff``): names from files and folders reach the terminal as
    text, and a message stays on one line."""
    return _UNPRINTABLE.sub(lambda m: m[0].encode("unicode_escape", "backslashreplace").decode("ascii"), text)
