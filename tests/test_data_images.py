"""data/images.py: ``open_image`` converts every mode PIL hands back and refuses a bad file with one
``ImageError``; fuzzed image bytes (hypothesis, derandomized and bounded) give an image or a
``DataError``, nothing else."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from alexnet.data import DataError, ImageError
from alexnet.data.images import MIN_IMAGE_SIDE, open_image
from helpers import FUZZ, _image_bytes


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
    assert isinstance(e, DataError) and (e.path, e.reason, str(e)) == ("/x/y.jpg", "empty file (0 bytes)", "/x/y.jpg: empty file (0 bytes)")


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
@given(raw=st.binary(max_size=4096) | st.builds(lambda head, tail: head + tail, st.sampled_from([s[:16] for s in SEEDS.values()]), st.binary(max_size=512)))
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
