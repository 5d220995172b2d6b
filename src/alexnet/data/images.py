"""Image files from anywhere: decoded into a PIL image of a known mode, or refused in one line.

Training, the bad-file scan, evaluation and prediction all open images through :func:`open_image`
(the prediction service through :func:`decode_image`, its twin for bytes in memory), so an image
is accepted or refused the same way everywhere, with the same conversion of modes.
The files may come from strangers, so before anything is decoded :func:`open_image` checks that
the path is a regular file (a FIFO or a device would be waited on or read forever), that the
content is one of a few raster formats (:data:`FORMATS`, so no PostScript interpreter or other
external program is ever run), and that the image fits the memory budget (:data:`MAX_PIXELS`,
:data:`MAX_DECODE_BYTES`, :data:`MAX_ASPECT_RATIO`), whatever its header claims.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.errors import ImageError, ImageFormatError, ImageSizeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# Smallest side of a training image, in pixels. Below it a file is a tracking pixel, an icon or a
# scraper's placeholder rather than a photo: upscaled to the 256-pixel shorter side it is a flat
# patch with nothing to learn, so an image folder's scan lists it as bad.
MIN_IMAGE_SIDE = 8

# The only formats decoded (Pillow's names), recognized by their content whatever the file is
# called: the raster formats photos and data sets come in, with Pillow's own decoders or the
# libraries it links (libjpeg, zlib, libtiff, libwebp). PPM also covers PGM and PBM, which the
# folder listing accepts as .ppm and .pgm. Everything else is refused - EPS and PDF above all,
# which Pillow hands to Ghostscript, an interpreter of a programming language.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, TIFF, WebP and PPM/PGM"

# Pixels: the largest real photos are ~150-megapixel medium-format frames (Phase One IQ4 150MP:
# 14204 x 10652 = 151.3 MP; a Fujifilm GFX100 gives 102 MP). 160 MP lets them through. A header
# may claim anything (50000 x 50000 in a file of a few kilobytes), so it is checked before
# decoding. Pillow's own MAX_IMAGE_PIXELS only warns from 89 MP, refuses from 179 MP, and can be
# switched off by any other code in the process, so it is not relied on.
MAX_PIXELS = 160_000_000

# Memory: Pillow keeps a pixel in 1 byte (modes 1, L, P), 2 (16-bit grey) or 4 (all others: RGB is
# stored as RGBX). While :func:`convert` works, the decoded image is still held, and it makes 4-byte
# copies: the converted image and the EXIF-rotated one (8 bytes a pixel), or, for transparency and
# 16-bit or float values, also the white background and composite or the rescaled values (16).
# The budget is what the largest photo needs as RGB: 160 MP x (4 + 8) bytes = 1.92 GB, so an RGB,
# CMYK or grey image may have MAX_PIXELS pixels, an RGBA one 96 MP. (The tensor the transforms then
# make is 3 bytes a pixel and the resized image is small: see MAX_ASPECT_RATIO.)
MAX_DECODE_BYTES = MAX_PIXELS * (4 + 8)
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # others: 4
_HIGH_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # rescaled to 8 bits by _to_8_bits
_ALPHA = ("RGBA", "LA")  # composited on white

# Shape: the folder pipeline resizes the shorter side to 256 pixels (Preprocess.resize for the
# paper's 224-227 crops) and keeps the aspect ratio, so a 1 x 80,000,000 strip - 80 MB decoded -
# would come out 256 x 20,480,000,000 (15 TB as RGB). The longer side may be at most 100 times the
# shorter: resized, that is at most 256 x 25,600 pixels (20 MB as RGB; 137 MP at the 1,170-pixel
# resize of 1024-pixel crops). Stitched panoramas (~10:1) and web banners (728 x 90) pass easily.
MAX_ASPECT_RATIO = 100
RESIZE_SIDE = 256

# EXIF orientation (tag 0x0112) -> the transposition that shows the image upright: the table of
# PIL.ImageOps.exif_transpose, which torchvision's decode_image(apply_exif_orientation=True) follows.
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Signatures of common files that are not images Pillow opens at all, to name them when refused.
_OTHER_SIGNATURES = ((b"%PDF-", "PDF"), (b"<svg", "SVG"), (b"<?xml", "XML (SVG?)"))


def open_image(path: str | Path, mode: str, *, min_side: int = 1, decode_side: int | None = None) -> Image.Image:
    """Decode an image file of one of :data:`FORMATS`, upright as its EXIF orientation says,
    and convert it to ``mode`` ('RGB' or 'L') with :func:`convert`. With ``decode_side`` a JPEG
    is decoded at reduced size (:func:`reduce_decode`) keeping its shorter side >= ``decode_side``.

    A file that cannot be used raises :class:`ImageError` (a :class:`DataError`) and nothing else:
    missing, unreadable, not a regular file (a directory, FIFO or device), empty, another format
    than :data:`FORMATS` (:class:`ImageFormatError`), truncated or corrupt, a side below
    ``min_side``, or over the budget of :data:`MAX_PIXELS`, :data:`MAX_DECODE_BYTES` or
    :data:`MAX_ASPECT_RATIO` (:class:`ImageSizeError`) - checked from the header, before anything
    is decoded.
    """
    with _open_regular_file(path) as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        return _decode(f, mode, min_side, path, decode_side)


def decode_image(
    data: bytes, mode: str, *, name: str = "image", min_side: int = 1, decode_side: int | None = None
) -> Image.Image:
    """:func:`open_image` for bytes already in memory (an upload): the same formats, budget,
    reduced-size decode and conversion, the same errors, naming ``name``."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), mode, min_side, name, decode_side)


def _decode(f, mode: str, min_side: int, name: str | Path, decode_side: int | None = None) -> Image.Image:
    """The one decoder behind :func:`open_image` and :func:`decode_image`: ``f`` is a readable,
    seekable binary file, not empty."""
    try:
        with Image.open(f, formats=FORMATS) as img:
            check_size(img, min_side=min_side, name=name)
            reduce_decode(img, decode_side)
            img.load()
            return convert(img, mode, name=name)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise _unidentified(f, name) from None
    except Exception as e:
        # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error,
        # IndexError, ... on damaged files (Pillow's own fuzz harness accepts any Exception),
        # so every one of them means "this file is bad".
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:200]  # one line, however PIL words it
        if isinstance(e, (Image.DecompressionBombError, MemoryError)):
            raise ImageSizeError(name, f"too large to decode ({detail})") from None
        raise ImageError(name, f"truncated or corrupt image ({detail})") from None


def _open_regular_file(path: str | Path):
    """The file at ``path`` opened for reading, if it is a regular file. A FIFO would block the
    open until someone writes to it and a device (/dev/zero) never ends, so anything else is
    refused from its stat, without opening it; O_NONBLOCK and a second look at the opened file
    cover a file swapped for a FIFO in between."""
    try:
        kind = os.stat(path).st_mode
        if not stat.S_ISREG(kind):
            raise ImageError(path, f"cannot read file (not a regular file but {_file_kind(kind)})")
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        )
    except FileNotFoundError:
        raise ImageError(path, "no such image file") from None
    except OSError as e:
        raise ImageError(path, f"cannot read file ({e.strerror or e})") from None
    f = os.fdopen(fd, "rb")
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        f.close()
        raise ImageError(path, f"cannot read file (not a regular file but {_file_kind(kind)})")
    return f


def _file_kind(st_mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(st_mode)), "a special file")


def _unidentified(f, name: str | Path) -> ImageError:
    """Why a file none of :data:`FORMATS` opens is refused, naming the format it looks like
    where Pillow's format checks (which only compare the first 16 bytes) or a signature tell:
    an :class:`ImageFormatError` for a file of another format, else an :class:`ImageError`."""
    f.seek(0)
    prefix = f.read(16)
    Image.init()
    formats = sorted(Image.OPEN.items(), key=lambda item: item[0] not in FORMATS)  # ours first
    for fmt, (factory, accept) in formats:
        try:
            looks = accept is not None and accept(prefix)
        except Exception:  # a check that cannot handle a short prefix says nothing
            looks = False
        if looks and fmt in FORMATS:
            return ImageError(name, f"not a readable image (starts like {fmt} but its header is damaged)")
        if looks:
            about = getattr(factory, "format_description", None) or fmt
            # "EPS (Encapsulated Postscript)", but "JPEG 2000 (ISO 15444)", not "JPEG2000 (JPEG 2000 (...))"
            kind = about if about.replace(" ", "").lower().startswith(fmt.lower()) else f"{fmt} ({about})"
            return ImageFormatError(
                name, f"not an accepted image format: looks like {kind}; only {FORMAT_NAMES} files are decoded"
            )
    for magic, kind in _OTHER_SIGNATURES:
        if prefix.lstrip().startswith(magic):
            return ImageFormatError(
                name, f"not an accepted image format: looks like {kind}; only {FORMAT_NAMES} files are decoded"
            )
    return ImageError(name, f"not a readable image (no image format recognized; {FORMAT_NAMES} files are decoded)")


def resized_size(width: int, height: int, shorter: int = RESIZE_SIDE) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(shorter): the shorter side to ``shorter``, the
    longer one in proportion, rounded down as torchvision rounds it."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def reduce_decode(img: Image.Image, shorter: int | None) -> None:
    """Before ``img`` is loaded: have a JPEG decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT
    scaling, through ``Image.draft``), the smallest of them whose shorter side is still >= ``shorter``.
    The decoder then skips most of the inverse DCT and colour conversion of the pixels a resize
    to ``shorter`` would throw away. Other formats, and ``shorter`` None, decode at full size."""
    if shorter is None or img.format != "JPEG" or min(img.size) < 2 * shorter:
        return
    # draft picks the largest of 8, 4, 2, 1 with (w // s, h // s) >= the size asked for, so asking
    # for (shorter, shorter) keeps min(w, h) / s >= shorter
    img.draft(None, (shorter, shorter))


def reduced_size(width: int, height: int, shorter: int | None) -> tuple[int, int]:
    """(width, height) of a JPEG of that size decoded by :func:`reduce_decode` for ``shorter``:
    Pillow's ``draft`` divides by the largest of 8, 4, 2, 1 that ``min(width // shorter, height //
    shorter)`` reaches and rounds up, as libjpeg's scaled output does (checked against Pillow in
    tests/data/test_gpudecode.py). The GPU decoder decodes whole images and uses it to cut the
    crops the CPU path would cut."""
    if shorter is None or min(width, height) < 2 * shorter:
        return width, height
    scale = next(s for s in (8, 4, 2, 1) if min(width // shorter, height // shorter) >= s)
    return -(-width // scale), -(-height // scale)


def read_jpeg(path: str | Path, *, min_side: int = 1) -> tuple[bytes, int, int] | None:
    """The bytes and (width, height) of a JPEG file that a plain JPEG decoder - nvJPEG on the GPU
    (:mod:`alexnet.data.gpudecode`) - turns into what :func:`open_image` makes of it: 8-bit RGB or
    grey, upright without an EXIF turn, within the budget of :func:`check_size` (checked from the
    header, before any decoding). None for every other file, which :func:`open_image` decodes or
    refuses; :class:`ImageError` for a file it would refuse before reading its content."""
    with _open_regular_file(path) as f:
        data = f.read()
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or _orientation(img) != 1:
                return None
            check_size(img, min_side=min_side, name=path)
            return data, img.size[0], img.size[1]
    except ImageError:
        raise
    except Exception:  # not a JPEG Pillow can read: open_image says what is wrong with it
        return None


def check_size(img: Image.Image, *, min_side: int = 1, name: str | Path = "in-memory image") -> None:
    """Raise :class:`ImageSizeError` if ``img`` (opened, not necessarily decoded) is smaller than
    ``min_side`` or over the budget of pixels, memory or aspect ratio. Only its header is used."""
    (w, h), mode = img.size, img.mode
    if min(w, h) < min_side:
        raise ImageSizeError(name, f"image of {w}x{h} pixels is too small (minimum {min_side}x{min_side})")
    if w * h > MAX_PIXELS:
        raise ImageSizeError(
            name,
            f"image of {w}x{h} pixels is too large: {w * h / 1e6:,.0f} megapixels, the limit is {MAX_PIXELS // 10**6}",
        )
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        rw, rh = resized_size(w, h)
        raise ImageSizeError(
            name,
            f"image of {w}x{h} pixels is too elongated: resized to a {RESIZE_SIDE}-pixel shorter side it would be "
            f"{rw}x{rh} (the longer side may be at most {MAX_ASPECT_RATIO} times the shorter)",
        )
    working = 16 if mode in _HIGH_BIT or mode in _ALPHA or (mode == "P" and "transparency" in img.info) else 8
    need = w * h * (_PIXEL_BYTES.get(mode, 4) + working)
    if need > MAX_DECODE_BYTES:
        raise ImageSizeError(
            name,
            f"image of {w}x{h} pixels in mode {mode} is too large: decoding and converting it would take "
            f"{need / 1e9:.1f} GB, the limit is {MAX_DECODE_BYTES / 1e9:.2f} GB",
        )


def convert(img: Image.Image, mode: str, *, name: str | Path = "in-memory image") -> Image.Image:
    """A loaded image in ``mode``, upright: transparency composited on white, 16-bit and float
    values brought to 8 bits (:func:`_to_8_bits`), then turned as its EXIF orientation says (as
    ``PIL.ImageOps.exif_transpose`` turns it). An image over the budget of :func:`check_size`
    raises :class:`ImageError` naming ``name``: prediction hands PIL images straight here."""
    check_size(img, name=name)
    orientation = _orientation(img)  # read first: the converted copies do not keep TIFF tags
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA:
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    if img.mode in _HIGH_BIT:
        img = _to_8_bits(img)
    if img.mode != mode:  # the same mode would be a copy of every pixel (a JPEG decodes to RGB already)
        img = img.convert(mode)
    return img.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else img


def _to_8_bits(img: Image.Image) -> Image.Image:
    """A mode-L image of a 16-bit, 32-bit integer or float image, by a fixed rule:

    * 16-bit (I;16, I;16L, I;16B, I;16N) and I: the high byte, ``v >> 8``, as Pillow itself
      reduces 16-bit RGB and RGBA PNGs and TIFFs when it opens them; I is clipped to [0, 65535]
      first, the range 16-bit PNG, PGM and TIFF files fill (Pillow scales a PGM's maxval to it).
    * F: NaN counts as 0 and +-infinity as the extremes; if no value is above 1.0 the image is
      taken as [0, 1] and multiplied by 255; then clipped to [0, 255] and rounded to nearest.

    numpy reads the values in their own byte order, so big- and little-endian files agree.
    """
    a = np.array(img)  # a copy: I;16B arrives as big-endian uint16, I as int32, F as float32
    if img.mode == "F":
        np.nan_to_num(a, copy=False)
        if a.size and a.max() <= 1.0:
            a *= 255
        a = np.rint(np.clip(a, 0, 255, out=a), out=a)
    else:
        a = np.clip(a, 0, 65535) >> 8
    return Image.fromarray(a.astype(np.uint8))


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 if none. EXIF that cannot be parsed (camera firmware writes odd
    ones) is ignored as torchvision ignores it: the pixels are still a good image."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
        return value if isinstance(value, int) and value in _TRANSPOSE else 1
    except Exception:
        return 1
