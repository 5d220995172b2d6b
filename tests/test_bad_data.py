"""Bad data: damaged, empty, non-image and tiny files in an image folder, malformed IDX files.

What is checked: the run stops before training with one list of every bad file (or, with
``skip_bad_images``, trains on the rest and records the list); no loader worker ever surfaces a
raw traceback; and fuzzed image bytes and IDX files give a result or :class:`DataError`, nothing
else. The fuzz tests are derandomized and bounded, so they repeat exactly and take seconds.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet.cli import build_parser, main
from alexnet.config import TrainConfig
from alexnet.data import DataError, ImageError, build_data, read_idx
from alexnet.data.folder import scan_folder, scan_images
from alexnet.data.images import MIN_IMAGE_SIDE, open_image

CPU = torch.device("cpu")
GOOD_PER_CLASS = 8


def _image_bytes(fmt: str, size=(40, 30), colour=(200, 40, 30), **kw) -> bytes:
    """A small real image in ``fmt``, with some texture so compressed formats have data to damage."""
    rng = np.random.default_rng(sum(colour))
    rgb = np.clip(np.array(colour) + rng.normal(0, 20, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, mode="RGB")
    if fmt == "GIF":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_folder(root, *, bad: bool = True) -> dict[str, str]:
    """Classes a/ and b/ with GOOD_PER_CLASS good images each, plus (``bad``) five bad files.

    Returns {path of each bad file: words its reason must contain}.
    """
    for c, colour in (("a", (200, 40, 30)), ("b", (30, 60, 220))):
        (root / c).mkdir(parents=True)
        for i in range(GOOD_PER_CLASS):
            fmt, suffix = (("JPEG", ".jpg"), ("PNG", ".png"))[i % 2]
            (root / c / f"good{i}{suffix}").write_bytes(_image_bytes(fmt, (40 + i, 30 + i), colour))
    if not bad:
        return {}
    jpeg = _image_bytes("JPEG", (64, 48), quality=95)
    files = {
        root / "a" / "corrupt.jpg": (random.Random(0).randbytes(3000), ("not a readable image", "truncated or corrupt")),
        root / "a" / "truncated.jpg": (jpeg[: len(jpeg) // 2], ("truncated or corrupt image",)),
        root / "b" / "empty.png": (b"", ("empty file",)),
        root / "b" / "text.jpg": (b"just some notes, saved with the wrong name\n" * 5, ("not a readable image",)),
        root / "b" / "tiny.png": (_image_bytes("PNG", (1, 1)), (f"image of 1x1 pixels is too small (minimum {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})",)),
    }
    for path, (raw, _) in files.items():
        path.write_bytes(raw)
    return {str(path): words for path, (_, words) in files.items()}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_images")
    return root, make_folder(root)


def _cfg(root, **kw):
    return TrainConfig(**{"data": str(root), "workers": 0, "image_size": 67, "batch_size": 8, "val_fraction": 0.25, **kw})


def _check_reasons(bad_files: list[dict], expected: dict[str, tuple]) -> None:
    assert sorted(b["path"] for b in bad_files) == sorted(expected)
    for b in bad_files:
        assert any(w in b["reason"] for w in expected[b["path"]]), b
        assert "\n" not in b["reason"]


# --------------------------------------------------------------------------------------------
# Image folders


def test_build_data_lists_every_bad_file_with_its_reason(bad_folder):
    root, expected = bad_folder
    with pytest.raises(DataError) as e:
        build_data(_cfg(root), CPU)
    first, *rest = str(e.value).splitlines()
    assert first == f"5 bad image file(s) in {root}; fix or remove them, or pass --skip-bad-images to train on the rest:"
    assert all(line.startswith("  ") for line in rest)
    _check_reasons([dict(zip(("path", "reason"), line.strip().split(": ", 1))) for line in rest], expected)


def test_scan_images_is_the_same_with_workers(bad_folder):
    samples, _ = scan_folder(bad_folder[0])
    serial = scan_images(samples, "RGB", 0)
    _check_reasons(serial, bad_folder[1])
    assert scan_images(samples, "RGB", 2) == serial


def test_cli_stops_before_training_naming_every_bad_file(capfd, bad_folder, tmp_path):
    root, expected = bad_folder
    out = tmp_path / "runs"
    argv = ["train", "--data", str(root), "--epochs", "1", "--batch-size", "8", "--image-size", "67", "--workers", "0", "--out", str(out)]
    code = main(argv)
    _, err = capfd.readouterr()
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"alexnet train: error: 5 bad image file(s) in {root}")
    assert all(path in err for path in expected)
    assert not out.exists()


def test_skip_bad_images_flag_comes_from_the_config_field():
    parser = build_parser()
    assert parser.parse_args(["train", "--skip-bad-images"]).skip_bad_images is True
    assert not hasattr(parser.parse_args(["train"]), "skip_bad_images")  # absent: the file or default decides
    assert TrainConfig().skip_bad_images is False


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_images_trains_on_the_rest_and_lists_them(bad_folder, workers):
    root, expected = bad_folder
    data = build_data(_cfg(root, skip_bad_images=True, workers=workers), CPU)
    _check_reasons(data.bad_files, expected)
    used = [p for loader in (data.train, data.val) for p, _ in loader.loader.dataset.samples]
    assert len(used) == data.num_train + data.num_val == 2 * GOOD_PER_CLASS
    assert not set(used) & set(expected)
    assert data.split["val"] == [p for p, _ in data.val.loader.dataset.samples] and data.num_val > 0
    for loader, n in ((data.train, data.num_train), (data.val, data.num_val)):
        seen = 0
        for x, y in loader:
            assert x.shape[1:] == (3, 67, 67) and torch.isfinite(x).all()
            seen += len(y)
        assert seen == n


def test_the_hold_out_split_is_the_one_after_deleting_the_bad_files(tmp_path):
    expected = make_folder(tmp_path)
    skipped = build_data(_cfg(tmp_path, skip_bad_images=True, val_fraction=0.1), CPU)
    for path in expected:
        Path(path).unlink()
    cleaned = build_data(_cfg(tmp_path, val_fraction=0.1), CPU)
    assert skipped.split == cleaned.split and cleaned.bad_files == []
    assert skipped.num_val == round(2 * GOOD_PER_CLASS * 0.1)  # the share of readable images


def test_bad_files_in_a_val_folder_are_listed_too(tmp_path):
    make_folder(tmp_path / "train", bad=False)
    expected = make_folder(tmp_path / "val")
    with pytest.raises(DataError) as e:
        build_data(_cfg(tmp_path), CPU)
    assert all(path in str(e.value) for path in expected)
    data = build_data(_cfg(tmp_path, skip_bad_images=True), CPU)
    _check_reasons(data.bad_files, expected)
    assert data.split is None and data.num_val == 2 * GOOD_PER_CLASS


def test_a_folder_of_only_bad_files_is_a_clear_error(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match="no readable training images left after skipping 6 bad file"):
        build_data(_cfg(tmp_path, skip_bad_images=True), CPU)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_gone_bad_after_the_scan_is_one_line_from_the_main_process(tmp_path, workers):
    make_folder(tmp_path, bad=False)
    data = build_data(_cfg(tmp_path, workers=workers), CPU)
    victim = data.train.loader.dataset.samples[3][0]
    with open(victim, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ImageError) as e:
        for _ in data.train:
            pass
    message = str(e.value)
    assert message.startswith(f"{victim}: ") and "changed since" in message
    assert "\n" not in message and "Traceback" not in message and "worker" not in message


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
# IDX files (the wrong-magic, truncated and wrong-length cases are in test_data.py)


def _idx(*dims, body=b""):
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body


GOOD_IDX = _idx(3, 2, 2, body=bytes(range(12)))
MALFORMED_IDX = {
    "plain-bytes-in-gz": ("x-idx3-ubyte.gz", GOOD_IDX, "cannot read"),
    "gzip-cut-off": ("x-idx3-ubyte.gz", gzip.compress(GOOD_IDX * 50)[:40], "cannot read"),
    "gzip-damaged": ("x-idx3-ubyte.gz", (lambda z: z[:20] + bytes(b ^ 0xFF for b in z[20:30]) + z[30:])(gzip.compress(GOOD_IDX * 50)), "cannot read"),
    "huge-dims": ("x-idx3-ubyte", _idx(2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1, body=bytes(16)), "length"),
    "huge-dims-gz": ("x-idx3-ubyte.gz", gzip.compress(_idx(2**32 - 1, 2**32 - 1, 2**32 - 1, body=bytes(16))), "length"),
    "empty-file": ("x-idx3-ubyte", b"", "magic"),
}


@pytest.mark.parametrize("name, raw, words", MALFORMED_IDX.values(), ids=MALFORMED_IDX.keys())
def test_read_idx_rejects_more_malformed_files_naming_them(tmp_path, name, raw, words):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_read_idx_of_a_directory_or_no_elements_with_huge_dims(tmp_path):
    (tmp_path / "d-idx1-ubyte").mkdir()
    with pytest.raises(DataError, match="d-idx1-ubyte"):
        read_idx(tmp_path / "d-idx1-ubyte")
    path = tmp_path / "z-idx3-ubyte"
    path.write_bytes(_idx(0, 2**32 - 1, 2**32 - 1, 2**32 - 1))  # no elements, yet strides beyond int64
    with pytest.raises(DataError, match="too large"):
        read_idx(path)


# --------------------------------------------------------------------------------------------
# Fuzzing: random and mutated bytes give a result or DataError, nothing else

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
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


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


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


@st.composite
def idx_files(draw) -> bytes:
    """IDX-like bytes: a mostly plausible magic, dims small or huge, a body of about the right
    size (exact, a little off, or arbitrary), sometimes cut off."""
    magic = bytes([
        draw(st.sampled_from([0, 0, 0, 1])),
        draw(st.sampled_from([0, 0, 0, 0x80])),
        draw(st.sampled_from([0x08, 0x08, 0x09, 0x0D])),
        draw(st.integers(0, 6)),
    ])  # fmt: skip
    dims = draw(st.lists(st.integers(0, 5) | st.integers(0, 2**32 - 1), max_size=6))
    size = math.prod(dims)
    if size > 300:
        size = draw(st.integers(0, 64))
    raw = magic + b"".join(d.to_bytes(4, "big") for d in dims) + draw(st.binary(min_size=size, max_size=size + 2))
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw


@FUZZ
@given(raw=idx_files() | st.binary(max_size=64), gz=st.sampled_from(["plain", "gzip", "gzip-damaged"]), at=st.integers(0, 2**16))
def test_fuzz_idx_files_read_or_raise_data_error(fuzz_dir, raw, gz, at):
    path = fuzz_dir / ("fuzz-idx-ubyte" if gz == "plain" else "fuzz-idx-ubyte.gz")
    if gz != "plain":
        raw = bytearray(gzip.compress(raw))
        if gz == "gzip-damaged":  # two bytes flipped anywhere: header, deflate data or CRC/length trailer
            at %= len(raw) - 1
            raw[at], raw[at + 1] = raw[at] ^ 0x5A, raw[at + 1] ^ 0xA5
    path.write_bytes(raw)
    try:
        x = read_idx(path)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert x.dtype == torch.uint8 and 1 <= x.dim() <= 4


def test_the_fuzz_seeds_are_valid_images(fuzz_dir):
    """Mutations start from real files, so they explore the decoders and not only format detection."""
    for name, raw in SEEDS.items():
        path = fuzz_dir / f"seed.{name}"
        path.write_bytes(raw)
        assert open_image(path, "RGB", min_side=MIN_IMAGE_SIDE).size == (12, 10)
