"""Images from strangers: what :func:`alexnet.data.images.open_image` refuses, and how it decodes
what it accepts.

Every test drives real files: formats saved by Pillow or written byte by byte, PNG headers that
claim billions of pixels, a 1 x 80,000,000 strip, 16-bit files of both byte orders, float TIFFs,
EXIF-rotated JPEGs, a FIFO. Whatever would need gigabytes if the budget failed runs in a child
process under an address-space limit (``RLIMIT_AS``), so a regression fails the test instead of
taking the machine's memory.

Also: ``open_image`` converts every mode PIL hands back and refuses a bad file with one
``ImageError``; fuzzed image bytes (hypothesis, derandomized and bounded) give an image or a
``DataError``, nothing else.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # the fuzz tests; the rest of the suite runs without it
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps, features

from alexnet.data import DataError, Preprocess
from alexnet.data.folder import scan_folder, scan_images
from alexnet.data.images import (
    FORMAT_NAMES,
    MAX_ASPECT_RATIO,
    MAX_DECODE_BYTES,
    MAX_PIXELS,
    MIN_IMAGE_SIDE,
    check_size,
    convert,
    decode_image,
    open_image,
    resized_size,
)
from alexnet.data.loader import ImageList
from alexnet.errors import ImageError, ImageFormatError, ImageSizeError
from alexnet.inference.predict import Predictor

from fuzz import FUZZ
from helpers import _image_bytes

CLASS_CHANNEL = {"red": 0, "green": 1, "blue": 2}


def test_open_image_converts_every_kind_keeping_its_size(image_set):
    kinds = set()
    for f in image_set.files:
        kinds.add(f.kind)
        with Image.open(f.path) as raw:
            assert raw.mode == f.mode
        rgb, gray = open_image(f.path, "RGB"), open_image(f.path, "L")
        assert rgb.mode == "RGB" and gray.mode == "L"
        assert rgb.size == f.size and gray.size == f.size
        a = np.asarray(rgb, dtype=np.float64)
        if f.kind not in ("gray_png", "gray16_png"):  # the class colour survives the conversion
            assert a.mean(axis=(0, 1)).argmax() == CLASS_CHANNEL[f.label], f
        if f.kind == "rgba_png":
            assert (a[:, 0] == 255).all()  # alpha 0 -> white, not the hidden colour
        if f.kind == "palette_transparent_png":
            assert (a[0] == 255).all()
    assert len(kinds) == 8


def test_open_image_transparency_and_16_bit_values(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[0, 0, 3], rgba[1, 2, 3] = 0, 255  # one transparent, one opaque pixel, the rest transparent too
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(open_image(tmp_path / "a.png", "RGB"))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 2].tolist() == [200, 10, 10]
    assert np.asarray(open_image(tmp_path / "a.png", "L"))[0, 0] == 255

    la = Image.fromarray(np.dstack([np.full((1, 2), 30, np.uint8), np.array([[0, 255]], np.uint8)]), mode="LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png", "L")).tolist() == [[255, 30]]

    values = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)  # 16 bits: 0, 100, 255, 128 in 8
    Image.fromarray(values).save(tmp_path / "g16.png")
    gray = np.asarray(open_image(tmp_path / "g16.png", "L")).astype(int)
    assert np.abs(gray - [[0, 100, 255, 128]]).max() <= 1
    assert np.asarray(open_image(tmp_path / "g16.png", "RGB"))[0, 2].tolist() == [255, 255, 255]


def test_image_error_survives_pickling():
    e = pickle.loads(pickle.dumps(ImageError("/x/y.jpg", "empty file (0 bytes)")))
    assert isinstance(e, DataError) and (e.path, e.reason, str(e)) == (
        "/x/y.jpg",
        "empty file (0 bytes)",
        "/x/y.jpg: empty file (0 bytes)",
    )


def test_decode_image_takes_bytes_by_the_same_rules_as_open_image(image_set, bad_folder):
    """The bytes twin (uploads to alexnet serve) gives the same pixels for every kind of file, and
    the same refusal for every bad one, naming what it was told to; the kind of refusal is typed."""
    for f in image_set.files:
        for mode in ("RGB", "L"):
            assert np.array_equal(
                np.asarray(decode_image(f.path.read_bytes(), mode)), np.asarray(open_image(f.path, mode))
            )
    _, bad = bad_folder
    for path in bad:
        with pytest.raises(ImageError) as by_path:
            open_image(path, "RGB", min_side=MIN_IMAGE_SIDE)
        with pytest.raises(ImageError) as by_bytes:
            decode_image(Path(path).read_bytes(), "RGB", name="upload.jpg", min_side=MIN_IMAGE_SIDE)
        assert str(by_bytes.value) == f"upload.jpg: {by_path.value.reason}" and type(by_bytes.value) is type(
            by_path.value
        )
    for raw, kind in (
        (_other("EPS"), ImageFormatError),
        (_png(50_000, 50_000, complete=False), ImageSizeError),
        (_png(2_000, 10), ImageSizeError),
        (b"notes", ImageError),
    ):
        with pytest.raises(ImageError) as e:
            decode_image(raw, "RGB")
        assert type(e.value) is kind, str(e.value)
    with pytest.raises(ImageSizeError, match="too small"):
        decode_image(_image_bytes("PNG", (4, 4)), "RGB", min_side=MIN_IMAGE_SIDE)


def test_open_image_names_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        open_image(tmp_path / "missing.png", "RGB")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="dir.png: cannot read file"):
        open_image(tmp_path / "dir.png", "RGB")


# --------------------------------------------------------------------------------------------
# Fuzzing: random and mutated bytes give a result or DataError, nothing else


# Damaged files make PIL warn (corrupt EXIF, tags beyond the file, big images) before it fails or copes.
QUIET = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")


SEEDS = {
    "png": _image_bytes("PNG", (12, 10)),
    "jpeg": _image_bytes("JPEG", (12, 10), quality=80),
    "gif": _image_bytes("GIF", (12, 10)),
    "bmp": _image_bytes("BMP", (12, 10)),
    "tiff": _image_bytes("TIFF", (12, 10)),
}


@st.composite
def mutated(draw, seeds: list[bytes]):
    """A seed file with a few bytes overwritten, maybe a run inserted or deleted, maybe cut off."""
    raw = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw) - 1))
        del raw[at : at + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


def _open_or_data_error(path, raw: bytes) -> None:
    path.write_bytes(raw)
    for mode in ("RGB", "L"):
        try:
            img = open_image(path, mode, min_side=MIN_IMAGE_SIDE)
        except DataError as e:
            assert isinstance(e, ImageError) and e.path == str(path) and "\n" not in str(e)
        else:
            assert img.mode == mode and min(img.size) >= MIN_IMAGE_SIDE


@QUIET
@FUZZ
@given(
    raw=st.binary(max_size=4096)
    | st.builds(
        lambda head, tail: head + tail, st.sampled_from([s[:16] for s in SEEDS.values()]), st.binary(max_size=512)
    )
)
def test_fuzz_random_bytes_open_or_raise_data_error(fuzz_dir, raw):
    _open_or_data_error(fuzz_dir / "random.jpg", raw)


@QUIET
@FUZZ
@given(raw=mutated(list(SEEDS.values())))
def test_fuzz_mutated_images_open_or_raise_data_error(fuzz_dir, raw):
    _open_or_data_error(fuzz_dir / "mutated.png", raw)


def test_the_fuzz_seeds_are_valid_images(fuzz_dir):
    """Mutations start from real files, so they explore the decoders and not only format detection."""
    for name, raw in SEEDS.items():
        path = fuzz_dir / f"seed.{name}"
        path.write_bytes(raw)
        assert open_image(path, "RGB", min_side=MIN_IMAGE_SIDE).size == (12, 10)


SRC = Path(__file__).resolve().parents[2] / "src"
STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
LIMIT = 1_500_000_000  # bytes of address space the child may add to what its imports take


def _refused(path, mode: str = "RGB", **kw) -> str:
    """The one-line message open_image refuses ``path`` with (fails if it decodes it)."""
    with pytest.raises(ImageError) as e:
        open_image(path, mode, **kw)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and e.value.path == str(path)
    return message


def _rgb(w: int = 24, h: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int, height: int, *, colour: int = 0, depth: int = 8, rows: bytes | None = None, complete: bool = True
) -> bytes:
    """A PNG written byte by byte (the PNG spec): ``rows`` are the filtered scanlines, or all zero
    (``complete``: every row, compressed as a stream; else only the first few kilobytes)."""
    if rows is None:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        total = height * (1 + width * channels * depth // 8)
        z, block, parts = zlib.compressobj(9), bytes(1 << 22), []
        left = total if complete else min(total, 4096)
        while left:
            parts.append(z.compress(block[: min(left, len(block))]))
            left -= min(left, len(block))
        idat = b"".join(parts) + z.flush()
    else:
        idat = zlib.compress(rows)
    head = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", head) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _child_env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), **extra}


# --------------------------------------------------------------------------------------------
# 1. Only a list of raster formats, recognized by content; no external program


def _good_files() -> dict[str, tuple[bytes, np.ndarray | None]]:
    """{format: (file bytes, the RGB pixels it holds exactly, or None for lossy formats)}."""
    rgb = _rgb()
    img = Image.fromarray(rgb)
    gray = Image.fromarray(rgb[..., 0])
    return {
        "JPEG": (_saved(img, "JPEG", quality=90), None),
        "PNG": (_saved(img, "PNG"), rgb),
        "GIF": (_saved(gray, "GIF"), np.repeat(rgb[..., :1], 3, axis=2)),
        "BMP": (_saved(img, "BMP"), rgb),
        "TIFF": (_saved(img, "TIFF"), rgb),
        "WEBP": (_saved(img, "WEBP", lossless=True), rgb),
        "PPM": (_saved(img, "PPM"), rgb),
        "PGM": (_saved(gray, "PPM"), np.repeat(rgb[..., :1], 3, axis=2)),
    }


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "PGM"])
def test_the_listed_formats_are_decoded_by_content_whatever_the_name(tmp_path, fmt):
    raw, pixels = _good_files()[fmt]
    path = tmp_path / ("photo.png" if fmt == "JPEG" else "photo.jpg")  # a name that lies
    path.write_bytes(raw)
    got = np.asarray(open_image(path, "RGB"))
    with Image.open(io.BytesIO(raw)) as direct:
        assert np.array_equal(got, np.asarray(direct.convert("RGB")))
    if pixels is not None:
        assert np.array_equal(got, pixels)


def _other(fmt: str) -> bytes:
    img = Image.fromarray(_rgb(16, 16))
    if fmt == "EPS-DOS":  # the binary EPS header (magic C5D0D3C6) in front of PostScript
        ps = _saved(img, "EPS")
        return struct.pack("<IIIIIII", 0xC6D3D0C5, 32, len(ps), 0, 0, 0, 0) + b"\xff\xff" + bytes(2) + ps
    if fmt == "SVG":  # Pillow does not read SVG at all: named by a signature of our own
        return b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16"/></svg>\n'
    if fmt in ("XBM", "MSP"):
        img = img.convert("1")
    return _saved(img, fmt)


OTHER_FORMATS = [  # (Pillow's format, what the message calls it)
    ("EPS", "looks like EPS (Encapsulated Postscript)"),
    ("EPS-DOS", "looks like EPS (Encapsulated Postscript)"),
    ("PDF", "looks like PDF"),
    ("SVG", "looks like SVG"),
    ("ICO", "looks like ICO (Windows Icon)"),
    ("ICNS", "looks like ICNS (Mac OS icns resource)"),
    ("PCX", "looks like PCX (Paintbrush)"),
    ("SGI", "looks like SGI"),
    ("QOI", "looks like QOI (Quite OK Image)"),
    ("DDS", "looks like DDS (DirectDraw Surface)"),
    ("XBM", "looks like XBM (X11 Bitmap)"),
    ("MSP", "looks like MSP (Windows Paint)"),
    pytest.param(
        "JPEG2000",
        "looks like JPEG 2000",
        marks=pytest.mark.skipif(not features.check("jpg_2000"), reason="no OpenJPEG"),
    ),
    pytest.param("AVIF", "looks like AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="no libavif")),
]


@pytest.mark.parametrize("fmt, words", OTHER_FORMATS)
def test_other_formats_are_refused_naming_what_they_look_like(tmp_path, fmt, words):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_other(fmt))
    message = _refused(path)
    assert f"not an accepted image format: {words}" in message
    assert message.endswith(f"only {FORMAT_NAMES} files are decoded")


def test_formats_pillow_cannot_tell_are_refused_as_unreadable(tmp_path):
    """Pillow's IM format has no signature Pillow checks; it is refused all the same, as is text."""
    (tmp_path / "im.png").write_bytes(_saved(Image.fromarray(_rgb(16, 16)), "IM"))
    (tmp_path / "notes.jpg").write_text("a shopping list, saved with the wrong name\n" * 4)
    for name in ("im.png", "notes.jpg"):
        assert "not a readable image (no image format recognized" in _refused(tmp_path / name)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(5))  # a JPEG signature, then nothing
    assert "starts like JPEG but its header is damaged" in _refused(tmp_path / "bad.jpg")


GHOSTSCRIPT_CHILD = """
import os, sys
from PIL import Image
from alexnet.data.images import open_image
from alexnet.errors import ImageError
path, marker = sys.argv[1:]
try:
    open_image(path, "RGB")
    print("decoded")
except ImageError as e:
    print(e)
print("gs ran" if os.path.exists(marker) else "gs did not run")
try:  # what Pillow does with the same file when every format is allowed, to show the trap is live
    Image.open(path).load()
except Exception:
    pass
print("gs ran" if os.path.exists(marker) else "gs did not run")
"""


@pytest.mark.parametrize("fmt", ["EPS", "EPS-DOS"])
def test_postscript_named_jpg_is_refused_and_ghostscript_never_runs(tmp_path, fmt):
    """A fake ``gs`` first on PATH records every call. open_image refuses the file and never calls
    it; plain ``Image.open(...).load()`` on the same file in the same process does."""
    (tmp_path / "bin").mkdir()
    gs, marker = tmp_path / "bin" / "gs", tmp_path / "gs-was-run"
    gs.write_text(f'#!/bin/sh\necho "$@" >> {marker}\n[ "$1" = --version ] && exit 0\nexit 1\n')
    gs.chmod(0o755)
    path = tmp_path / "holiday.jpg"
    path.write_bytes(_other(fmt))
    env = _child_env(PATH=f"{gs.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        [sys.executable, "-c", GHOSTSCRIPT_CHILD, str(path), str(marker)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    refusal, after_open_image, after_pillow = done.stdout.splitlines()
    assert refusal.startswith(f"{path}: not an accepted image format: looks like EPS")
    assert after_open_image == "gs did not run"
    assert after_pillow == "gs ran"


# --------------------------------------------------------------------------------------------
# 2. A budget on pixels, memory and aspect ratio, checked before decoding

LIMITED_CHILD = """
import json, resource, sys
import torch
from PIL import Image
from alexnet.data import Preprocess
from alexnet.data.folder import scan_images
from alexnet.data.images import decode_image, open_image
from alexnet.errors import ImageError
from alexnet.inference.predict import Predictor

pillow_limit, extra, *paths = sys.argv[1:]
if pillow_limit == "off":  # as any other library in the process may have set it
    Image.MAX_IMAGE_PIXELS = None
stats = {"mean": [0.5] * 3, "std": [0.25] * 3}
predictor = Predictor(torch.nn.Identity(), ["a"], Preprocess.for_folder(image_size=224, stats=stats))
with open("/proc/self/status") as f:
    used = int(f.read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + int(extra), resource.getrlimit(resource.RLIMIT_AS)[1]))

def reason(fn):
    try:
        fn()
        return "accepted"
    except ImageError as e:
        return str(e)

def scan(p):
    bad = scan_images([(p, 0)], "RGB")
    if bad:
        raise ImageError(bad[0]["path"], bad[0]["reason"])

results = {}
for p in paths:
    results[p] = {
        "open_image": reason(lambda: open_image(p, "RGB")),
        "scan": reason(lambda: scan(p)),
        "predict": reason(lambda: predictor.inputs([p])),
        "decode_image": reason(lambda: decode_image(open(p, "rb").read(), "RGB", name=p)),  # an upload to alexnet serve
    }
print(json.dumps(results))
"""


def _in_limited_child(paths, pillow_limit: str = "default", extra: int = LIMIT) -> dict:
    """{path: {"open_image" | "scan" | "predict" | "decode_image": one-line refusal or "accepted"}} from a child
    process whose address space may grow by ``extra`` bytes past its imports."""
    cmd = [sys.executable, "-c", LIMITED_CHILD, pillow_limit, str(extra), *map(str, paths)]
    done = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """{name: (file, words its refusal must contain)}: PNGs whose headers ask for too much."""
    root = tmp_path_factory.mktemp("hostile")
    files = {
        # 4 kB of data behind headers claiming 2.5 billion pixels: 10 GB as RGBA, 2.5 GB as grey
        "bomb_rgba": (
            _png(50_000, 50_000, colour=6, complete=False),
            ("is too large: 2,500 megapixels", "DecompressionBombError"),
        ),
        "bomb_gray": (
            _png(50_000, 50_000, colour=0, complete=False),
            ("is too large: 2,500 megapixels", "DecompressionBombError"),
        ),
        # complete, valid files
        "strip_1xN": (
            _png(1, 80_000_000),
            (
                "1x80000000 pixels is too elongated: resized to a 256-pixel shorter side it would be 256x20480000000",
                "1x80000000 pixels is too small (minimum 8x8)",
            ),
        ),  # the scan's minimum side comes first
        "strip_Nx8": (
            _png(1_000_000, 8),
            ("1000000x8 pixels is too elongated: resized to a 256-pixel shorter side it would be 32000000x256",),
        ),
        # over MAX_PIXELS, under Pillow's own refusal (179 MP), so only the budget stops it
        "gray_161MP": (
            _png(12_700, 12_700, colour=0, complete=False),
            ("12700x12700 pixels is too large: 161 megapixels, the limit is 160",),
        ),
        # 121 MP (under MAX_PIXELS) but RGBA: decoded and composited on white it needs 2.4 GB
        "rgba_121MP": (
            _png(11_000, 11_000, colour=6),
            ("in mode RGBA is too large: decoding and converting it would take 2.4 GB, the limit is 1.92 GB",),
        ),
    }
    out = {}
    for name, (raw, words) in files.items():
        (root / f"{name}.png").write_bytes(raw)
        out[name] = (root / f"{name}.png", words)
    return out


@pytest.mark.parametrize("pillow_limit", ["default", "off"])
def test_hostile_headers_are_refused_before_decoding_under_a_memory_limit(hostile, pillow_limit):
    """Through open_image, the folder scan and prediction alike, each file is refused with one
    line naming it, in a child that may not grow by more than 1.5 GB: a budget that let any of
    them be decoded would die there of MemoryError (or a traceback) and fail this test."""
    results = _in_limited_child([p for p, _ in hostile.values()], pillow_limit)
    for name, (path, words) in hostile.items():
        for how, message in results[str(path)].items():
            assert message.startswith(f"{path}: ") and "\n" not in message, (name, how, message)
            assert any(w in message for w in words), (name, how, message)
            if pillow_limit == "off":
                assert "DecompressionBombError" not in message


CONTROL_CHILD = """
import resource, sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
with open("/proc/self/status") as f:
    used = int(f.read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
for path in sys.argv[2:]:
    try:
        with Image.open(path) as im:  # what open_image did before the budget
            im.load()
            Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
        print("decoded")
    except MemoryError:
        print("MemoryError")
"""


def test_without_the_budget_those_files_need_more_than_the_limit(hostile):
    """The limit of the test above bites: Pillow on its own runs out of memory under it."""
    paths = [str(hostile[n][0]) for n in ("bomb_gray", "rgba_121MP")]
    done = subprocess.run(
        [sys.executable, "-c", CONTROL_CHILD, str(LIMIT), *paths],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["MemoryError", "MemoryError"]


def test_the_budget_numbers():
    assert MAX_PIXELS == 160_000_000 and MAX_DECODE_BYTES == MAX_PIXELS * (4 + 8) and MAX_ASPECT_RATIO == 100
    # the largest photo meant to pass: a Phase One IQ4 150MP frame, as RGB, CMYK or grey
    for colour in (0, 2):
        with Image.open(io.BytesIO(_png(14_204, 10_652, colour=colour, complete=False))) as img:
            check_size(img)  # only the header is read: nothing of 600 MB is allocated
    with (
        Image.open(io.BytesIO(_png(14_204, 10_652, colour=6, complete=False))) as img,
        pytest.raises(ImageError, match="in mode RGBA"),
    ):
        check_size(img)


def test_the_aspect_ratio_bound_is_exact_and_uses_torchvisions_resized_size(tmp_path):
    from torchvision.transforms import v2

    for w, h in ((8, 800), (801, 8), (3, 1000), (37, 11)):
        assert resized_size(w, h)[::-1] == tuple(
            v2.Resize(256, antialias=True)(torch.zeros(1, h, w, dtype=torch.uint8)).shape[1:]
        )
    Image.new("L", (8, 800)).save(tmp_path / "ok.png")
    assert open_image(tmp_path / "ok.png", "RGB", min_side=MIN_IMAGE_SIDE).size == (8, 800)
    Image.new("L", (801, 8)).save(tmp_path / "long.png")
    assert "801x8 pixels is too elongated: resized to a 256-pixel shorter side it would be 25632x256" in _refused(
        tmp_path / "long.png"
    )


def test_in_memory_images_for_prediction_get_the_same_checks():
    with pytest.raises(ImageError, match=r"^in-memory image: image of 1x10000 pixels is too elongated"):
        convert(Image.new("L", (1, 10_000)), "RGB")
    predictor = Predictor(torch.nn.Identity(), ["a"], Preprocess.for_folder(image_size=67, stats=STATS))
    with pytest.raises(ImageError, match="too elongated"):
        predictor.inputs([Image.new("RGB", (20_000, 2))])


# --------------------------------------------------------------------------------------------
# 3. 16-bit and floating-point values to 8 bits

VALUES16 = np.array([[0, 1, 255, 256, 32767, 32768, 32896, 65280, 65535, 25700]], dtype=np.uint16)


def _tiff16(order: str) -> bytes:
    dtype = "<u2" if order == "little" else ">u2"
    img = Image.frombuffer(
        "I;16" if order == "little" else "I;16B", VALUES16.shape[::-1], VALUES16.astype(dtype).tobytes(), "raw"
    )
    raw = _saved(img, "TIFF")
    assert raw[:2] == (b"II" if order == "little" else b"MM")  # the byte order in the file
    return raw


def _rolled(values: np.ndarray) -> np.ndarray:
    """(1, 10, 3): ``values`` in the three channels, shifted by one pixel from each to the next."""
    return np.stack([np.roll(values, k, axis=1) for k in range(3)], axis=-1)


def _tiff_rgb16(rgb: np.ndarray, order: str) -> bytes:
    """An uncompressed 16-bit RGB TIFF (which Pillow cannot write), byte by byte (TIFF 6.0)."""
    e = "<" if order == "little" else ">"
    h, w, _ = rgb.shape
    data = rgb.astype(e + "u2").tobytes()
    # (tag, type 3 = SHORT or 4 = LONG, count, value); BitsPerSample (3 values) and the strip follow the IFD
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 3, "bits"),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, "strip"),
        (277, 3, 1, 3),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
    ]
    bits_at = 8 + 2 + 12 * len(tags) + 4
    where = {"bits": bits_at, "strip": bits_at + 6}
    ifd = b"".join(
        struct.pack(e + "HHI", tag, kind, count)
        + (
            struct.pack(e + "HH", value, 0)
            if kind == 3 and count == 1
            else struct.pack(e + "I", where.get(value, value))
        )
        for tag, kind, count, value in tags
    )
    head = (b"II" if order == "little" else b"MM") + struct.pack(e + "HIH", 42, 8, len(tags))
    return head + ifd + struct.pack(e + "I", 0) + struct.pack(e + "HHH", 16, 16, 16) + data


def _rgb16(fmt: str) -> bytes:
    """A 16-bit RGB file with VALUES16 in its three channels (rolled), byte by byte."""
    rgb = _rolled(VALUES16)
    if fmt == "PNG":
        return _png(10, 1, colour=2, depth=16, rows=b"\x00" + rgb.astype(">u2").tobytes())
    if fmt == "PPM":
        return b"P6\n10 1\n65535\n" + rgb.astype(">u2").tobytes()
    return _tiff_rgb16(rgb, fmt)


SIXTEEN_BIT = {  # name: (file bytes, mode Pillow opens it in)
    "PNG grey (big-endian in the file)": (lambda: _saved(Image.fromarray(VALUES16), "PNG"), "I;16"),
    "TIFF grey little-endian": (lambda: _tiff16("little"), "I;16"),
    "TIFF grey big-endian": (lambda: _tiff16("big"), "I;16B"),
    "PGM maxval 65535": (lambda: b"P5\n10 1\n65535\n" + VALUES16.astype(">u2").tobytes(), "I"),
    "PNG RGB": (lambda: _rgb16("PNG"), "RGB"),
    "TIFF RGB little-endian": (lambda: _rgb16("little"), "RGB"),
    "TIFF RGB big-endian": (lambda: _rgb16("big"), "RGB"),
    "PPM RGB": (lambda: _rgb16("PPM"), "RGB"),
}


@pytest.mark.parametrize("name", list(SIXTEEN_BIT))
def test_16_bit_files_keep_their_high_byte_in_both_byte_orders(tmp_path, name):
    make, pil_mode = SIXTEEN_BIT[name]
    path = tmp_path / "deep.png"
    path.write_bytes(make())
    with Image.open(path) as raw:
        assert raw.mode == pil_mode
    expected = (VALUES16 >> 8).astype(np.uint8)  # 0, 0, 0, 1, 127, 128, 128, 255, 255, 100
    rgb = np.asarray(open_image(path, "RGB"))
    if name == "PPM RGB":  # Pillow reduces a 16-bit PPM itself, rounding v * 255 / 65535: at most 1 off the high byte
        assert np.array_equal(rgb, _rolled(np.rint(VALUES16 * 255.0 / 65535).astype(np.uint8)))
        assert np.abs(rgb.astype(int) - _rolled(expected)).max() == 1
    elif pil_mode == "RGB":  # Pillow reduces 16-bit RGB PNGs and TIFFs itself: the same rule
        assert np.array_equal(rgb, _rolled(expected))
    else:
        assert np.array_equal(np.asarray(open_image(path, "L")), expected)
        assert np.array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))


def _float_tiff(values) -> bytes:
    raw = _saved(Image.fromarray(np.array([values], dtype=np.float32)), "TIFF")
    assert Image.open(io.BytesIO(raw)).mode == "F"
    return raw


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.0, 0.5, 1.0, 0.25, 0.002, 0.999], [0, 128, 255, 64, 1, 255]),  # max <= 1: scaled by 255, rounded
        (
            [0.0, 100.4, 100.6, 255.0, 300.0, -5.0, 1.5, 127.5],
            [0, 100, 101, 255, 255, 0, 2, 128],
        ),  # clipped to [0, 255]
        ([0.5, float("nan"), float("inf"), -float("inf"), 0.2], [0, 0, 255, 0, 0]),  # inf: not a [0, 1] image
        ([0.5, float("nan"), 0.2], [128, 0, 51]),  # NaN counts as 0
    ],
)
def test_float_tiffs_follow_the_documented_rule(tmp_path, values, expected):
    (tmp_path / "f.tif").write_bytes(_float_tiff(values))
    assert np.asarray(open_image(tmp_path / "f.tif", "L")).tolist() == [expected]


def test_a_pfm_float_file_follows_the_same_rule(tmp_path):
    """PFM (read by Pillow's PPM plugin, mode F): little-endian floats as its negative scale says."""
    (tmp_path / "f.pgm").write_bytes(b"Pf\n4 1\n-1.0\n" + np.array([0.0, 0.5, 1.0, 0.25], dtype="<f4").tobytes())
    assert np.asarray(open_image(tmp_path / "f.pgm", "L")).tolist() == [[0, 128, 255, 64]]


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    values=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9)),
    mode=st.sampled_from(["I;16", "I;16L", "I;16B", "I;16N", "I"]),
)
def test_16_bit_in_memory_images_of_every_byte_order(values, mode):
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4"}[mode]
    img = Image.frombuffer(mode, values.shape[::-1], values.astype(dtype).tobytes(), "raw", mode, 0, 1)
    assert np.array_equal(np.asarray(img), values)
    assert np.array_equal(np.asarray(convert(img, "L")), (values >> 8).astype(np.uint8))


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    values=hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9), elements=st.floats(-10, 400, width=32)
    )
)
def test_float_in_memory_images_follow_the_rule(values):
    scaled = values * 255 if values.max() <= 1.0 else values
    assert np.array_equal(
        np.asarray(convert(Image.fromarray(values), "L")), np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    )


# --------------------------------------------------------------------------------------------
# 4. EXIF orientation, the same in training and prediction


def _quadrants(w: int = 64, h: int = 48) -> np.ndarray:
    """Four flat colours in the four quadrants, so a rotation is obvious and JPEG keeps them."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[: h // 2, : w // 2], a[: h // 2, w // 2 :] = (250, 20, 20), (20, 250, 20)
    a[h // 2 :, : w // 2], a[h // 2 :, w // 2 :] = (20, 20, 250), (240, 240, 40)
    return a


def _with_orientation(fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = Image.fromarray(_quadrants())
    if fmt == "TIFF":
        return _saved(img, "TIFF", tiffinfo={0x0112: orientation})
    return _saved(img, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def test_exif_orientation_6_is_applied_as_torchvision_applies_it(tmp_path):
    from torchvision.io import ImageReadMode, decode_jpeg

    raw = _with_orientation("JPEG", 6)
    (tmp_path / "rotated.jpg").write_bytes(raw)
    got = np.asarray(open_image(tmp_path / "rotated.jpg", "RGB"))
    with Image.open(io.BytesIO(raw)) as stored:  # the pixels as stored, not turned
        assert stored.getexif()[0x0112] == 6
        stored_pixels = np.asarray(stored.convert("RGB"))
    assert got.shape == (64, 48, 3)
    assert np.array_equal(got, np.rot90(stored_pixels, k=-1))  # 6: turned 90 degrees clockwise
    reference = decode_jpeg(
        torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB, apply_exif_orientation=True
    )
    assert reference.permute(1, 2, 0).shape == got.shape
    assert np.abs(reference.permute(1, 2, 0).numpy().astype(int) - got).max() <= 2  # torchvision's own libjpeg build
    assert got[0, -1, 0] > 200 and got[-1, 0, :2].min() > 200  # red now top right, yellow bottom left


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_exif_transpose(tmp_path, fmt, orientation):
    path = tmp_path / "o.img"
    path.write_bytes(_with_orientation(fmt, orientation))
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert np.array_equal(np.asarray(open_image(path, "RGB")), expected)
    if orientation == 6 and fmt == "PNG":
        assert np.array_equal(expected, np.rot90(_quadrants(), k=-1))


def test_training_and_prediction_see_the_same_upright_image(tmp_path):
    (tmp_path / "a").mkdir()
    path = tmp_path / "a" / "rotated.jpg"
    path.write_bytes(_with_orientation("JPEG", 6))
    preprocess = Preprocess.for_folder(image_size=67, stats=STATS)
    loaded = ImageList([(str(path), 0)], "RGB", preprocess.folder_transform(train=False), preprocess.decode_side)[0][0]
    training = preprocess.to_input(loaded[None])[0]  # as the loader hands the batch over
    predictor = Predictor(torch.nn.Identity(), ["a"], preprocess)
    with Image.open(path) as as_stored:  # an in-memory image still carrying its EXIF
        from_pil = predictor.inputs([as_stored])[0]
    assert torch.equal(predictor.inputs([path])[0], training) and torch.equal(from_pil, training)
    upright = preprocess(Image.fromarray(np.asarray(open_image(path, "RGB", decode_side=preprocess.decode_side))))
    assert torch.equal(training, upright)


def test_unreadable_exif_is_ignored(tmp_path):
    jpeg = _saved(Image.fromarray(_quadrants()), "JPEG", quality=95)
    app1 = b"Exif\x00\x00" + b"XX garbage, not a TIFF header" * 3
    broken = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    (tmp_path / "odd.jpg").write_bytes(broken)
    got = np.asarray(open_image(tmp_path / "odd.jpg", "RGB"))
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))


# --------------------------------------------------------------------------------------------
# 5. Special files: refused at once, never waited on or read


def _refused_within(path, seconds: float = 10.0) -> str:
    """open_image's refusal of ``path``, from a thread; fails if it has not answered in time."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(message=_refused_or_none(path)), daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive() and Path(path).is_fifo():  # release the blocked open before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < seconds, f"open_image({path}) still waiting"
    assert out["message"] is not None, f"{path} was decoded"
    return out["message"]


def _refused_or_none(path) -> str | None:
    try:
        open_image(path, "RGB")
    except ImageError as e:
        return str(e)
    return None


def test_special_files_are_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "link.jpg").symlink_to(tmp_path / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "socket.png"))
    try:
        cases = {
            tmp_path / "pipe.jpg": "a named pipe",
            tmp_path / "link.jpg": "a named pipe",
            tmp_path / "folder.png": "a directory",
            tmp_path / "socket.png": "a socket",
            Path("/dev/zero"): "a character device",
        }
        for path, kind in cases.items():
            assert _refused_within(path) == f"{path}: cannot read file (not a regular file but {kind})"
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# The folder scan lists them like any other bad file


def test_a_folder_scan_names_each_hostile_file_with_its_reason(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.fromarray(_rgb(30, 20, seed=i)).save(tmp_path / "a" / f"good{i}.jpg")
    (tmp_path / "a" / "ps.jpg").write_bytes(_other("EPS"))
    (tmp_path / "a" / "doc.png").write_bytes(_other("PDF"))
    Image.new("L", (900, 8)).save(tmp_path / "a" / "banner.png")
    samples, _ = scan_folder(tmp_path)
    bad = {Path(b["path"]).name: b["reason"] for b in scan_images(samples, "RGB")}
    assert set(bad) == {"ps.jpg", "doc.png", "banner.png"}
    assert bad["ps.jpg"].startswith("not an accepted image format: looks like EPS")
    assert bad["doc.png"].startswith("not an accepted image format: looks like PDF")
    assert bad["banner.png"].startswith("image of 900x8 pixels is too elongated")
