"""Image files from anywhere: decoded into a PIL image of a known mode, or refused in one line.

Training, the bad-file scan, evaluation and prediction all open images through :func:`open_image`,
so an image is accepted or refused the same way everywhere, with the same conversion of modes.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from alexnet.errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# Smallest side of a training image, in pixels. Below it a file is a tracking pixel, an icon or a
# scraper's placeholder rather than a photo: upscaled to the 256-pixel shorter side it is a flat
# patch with nothing to learn, so an image folder's scan lists it as bad.
MIN_IMAGE_SIDE = 8


def open_image(path: str | Path, mode: str, *, min_side: int = 1) -> Image.Image:
    """Decode any PIL-readable image and convert it to ``mode`` ('RGB' or 'L').

    Palette images with transparency and RGBA are composited on white first, so transparent
    pixels do not turn into arbitrary colours; CMYK, 16-bit and others go through PIL's convert.

    A file that cannot be used raises :class:`ImageError` (a :class:`DataError`) and nothing else:
    missing or unreadable, empty, not an image, truncated or corrupt, a side below ``min_side``,
    or more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit; training
    shrinks every image to a 256-pixel side, and a damaged header often claims a huge size).
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ImageError(path, "no such image file") from None
    except OSError as e:
        raise ImageError(path, f"cannot read file ({e.strerror or e})") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        try:
            with Image.open(f) as img:
                w, h = img.size
                if min(w, h) < min_side:
                    raise ImageError(path, f"image of {w}x{h} pixels is too small (minimum {min_side}x{min_side})")
                if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
                    raise ImageError(path, f"image of {w}x{h} pixels is too large (PIL's limit: {Image.MAX_IMAGE_PIXELS} pixels)")
                img.load()
                return convert(img, mode)
        except ImageError:
            raise
        except Image.UnidentifiedImageError:
            raise ImageError(path, "not a readable image (no image format recognized)") from None
        except Exception as e:
            # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error,
            # IndexError, ... on damaged files (Pillow's own fuzz harness accepts any Exception),
            # so every one of them means "this file is bad".
            detail = " ".join(f"{type(e).__name__}: {e}".split())[:200]  # one line, however PIL words it
            what = "too large to decode" if isinstance(e, Image.DecompressionBombError) else "truncated or corrupt image"
            raise ImageError(path, f"{what} ({detail})") from None


def convert(img: Image.Image, mode: str) -> Image.Image:
    """A loaded image in ``mode``: transparency composited on white, 16-bit scaled to 8."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode == "I;16" or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert(mode)
