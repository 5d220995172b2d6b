"""The folder pipeline's fast path (data/transforms.py, data/images.py): JPEGs decoded at reduced
size by libjpeg's DCT scaling, uint8 images from the workers, normalization once per batch.
References: PIL's full decode and reduce(), torchvision's own resize/crop ops searched brute force,
and the float pipeline models trained before the ``decode`` field used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from alexnet.data import preprocess_image
from alexnet.data.images import open_image
from alexnet.data.shards import decode_jpeg
from alexnet.data.transforms import Preprocess

STATS = {"mean": [0.45, 0.5, 0.55], "std": [0.2, 0.25, 0.3]}


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth colour image with some texture: what a JPEG of a photo holds."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC
    )
    pixels = np.asarray(coarse).astype(np.float64) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    paths = {}
    for w, h in ((500, 375), (1100, 830), (830, 1100), (140, 96)):
        paths[w, h] = root / f"{w}x{h}.jpg"
        _photo(w, h, seed=w).save(paths[w, h], quality=90)
    return paths


@pytest.mark.parametrize(
    "size, side, scale",
    [
        ((500, 375), 256, 1),
        ((1100, 830), 256, 2),
        ((830, 1100), 256, 2),
        ((1100, 830), 200, 4),
        ((1100, 830), 100, 8),
        ((140, 96), 77, 1),
    ],
)
def test_reduced_decode_takes_the_smallest_dct_scale_keeping_the_shorter_side(jpegs, size, side, scale):
    full = open_image(jpegs[size], "RGB")
    reduced = open_image(jpegs[size], "RGB", decode_side=side)
    w, h = size
    assert reduced.size == (-(-w // scale), -(-h // scale)) and min(reduced.size) >= side
    # the smallest such scale: half of it again would go below the side
    assert scale == 8 or min(w, h) / (2 * scale) < side
    if scale == 1:
        assert np.array_equal(np.asarray(reduced), np.asarray(full))
    else:  # libjpeg's scaled IDCT is close to a box-filtered full decode, not equal to it
        box = np.asarray(full.reduce(scale)).astype(float)
        diff = np.abs(np.asarray(reduced)[: box.shape[0], : box.shape[1]].astype(float) - box)
        assert diff.mean() < 2.0 and diff.max() < 40
    # the shards' decoder takes the same rule
    from_bytes = decode_jpeg(jpegs[size].read_bytes(), "RGB", "x", decode_side=side)
    assert np.array_equal(np.asarray(from_bytes), np.asarray(reduced))


def test_other_formats_decode_at_full_size(tmp_path):
    path = tmp_path / "a.png"
    _photo(1100, 830).save(path)
    assert open_image(path, "RGB", decode_side=100).size == (1100, 830)


def _reference_resized(path, prep: Preprocess) -> torch.Tensor:
    """Decode as the record says (PIL's draft at the scale the rule picks) and resize with torchvision."""
    img = Image.open(path)
    if prep.decode == "reduced":
        s = max(k for k in (1, 2, 4, 8) if min(img.size) // k >= prep.resize)
        img.draft("RGB", (img.size[0] // s, img.size[1] // s))
    return TF.resize(TF.pil_to_tensor(img.convert("RGB")), prep.resize, antialias=True)


@pytest.mark.parametrize("size, image_size", [((140, 96), 67), ((1100, 830), 32)])  # full decode; 1/8 of it
def test_the_uint8_transform_is_torchvision_resize_then_a_crop_and_maybe_a_flip(jpegs, size, image_size):
    prep = Preprocess.for_folder(image_size=image_size, stats=STATS)
    assert prep.decode == "reduced"
    ref = _reference_resized(jpegs[size], prep)
    img = open_image(jpegs[size], "RGB", decode_side=prep.decode_side)
    centre = prep.folder_transform(train=False)(img)
    assert centre.dtype == torch.uint8 and torch.equal(centre, TF.center_crop(ref, image_size))
    seen, s = set(), image_size
    for seed in range(6):
        torch.manual_seed(seed)
        x = prep.folder_transform(train=True)(img)
        assert x.dtype == torch.uint8 and x.shape == (3, s, s)
        found = [
            (i, j, f)
            for i in range(ref.shape[1] - s + 1)
            for j in range(ref.shape[2] - s + 1)
            for f in (False, True)
            if torch.equal(x, (TF.horizontal_flip if f else (lambda t: t))(ref[:, i : i + s, j : j + s]))
        ]
        assert found, f"seed {seed}: not a crop of the resized image"
        seen.add(found[0])
    assert len(seen) > 1  # the crops and flips differ with the seed


def test_the_batch_normalized_on_the_device_equals_the_float_pipeline(jpegs):
    prep = Preprocess.for_folder(image_size=224, stats=STATS)
    images = [
        open_image(p, "RGB", decode_side=prep.decode_side) for p in jpegs.values() if min(Image.open(p).size) >= 224
    ]
    old = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(prep.resize, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(STATS["mean"], STATS["std"]),
        ]
    )
    batch = torch.stack([prep.folder_transform(train=False)(img) for img in images])
    x = prep.to_input(batch)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.stack([old(img) for img in images]), rtol=0, atol=1e-6)


def test_a_model_file_without_decode_keeps_the_full_decode_and_its_predictions(jpegs):
    stored = {"kind": "folder", "mode": "RGB", "image_size": 224, "resize": 256, **STATS}
    prep = Preprocess.from_dict(stored)
    assert prep.decode == "full" and prep.decode_side is None
    assert Preprocess.from_dict(prep.to_dict()) == prep and prep.to_dict() == stored  # written as it always was
    old = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(STATS["mean"], STATS["std"]),
        ]
    )
    path = jpegs[1100, 830]
    torch.testing.assert_close(preprocess_image(path, prep), old(Image.open(path).convert("RGB")), rtol=0, atol=1e-6)
    # a new record decodes at half size here, so its input differs slightly - by the decode alone
    new = Preprocess.for_folder(image_size=224, stats=STATS)
    assert not torch.equal(preprocess_image(path, new), preprocess_image(path, prep))
    expected = new.to_input(TF.center_crop(_reference_resized(path, new), 224)[None])[0]
    assert torch.equal(preprocess_image(path, new), expected)


@pytest.mark.parametrize("bad", ["half", 1, None])
def test_a_bad_decode_is_refused(bad):
    stored = {"kind": "folder", "mode": "RGB", "image_size": 224, "resize": 256, **STATS, "decode": bad}
    with pytest.raises(ValueError, match="decode"):
        Preprocess.from_dict(stored)
    with pytest.raises(ValueError, match="decode"):
        Preprocess.from_dict(
            {
                "kind": "tensor",
                "mode": "L",
                "image_size": 67,
                "source_size": 28,
                "mean": [0.3],
                "std": [0.3],
                "decode": "full",
            }
        )


def test_seeded_draws_what_fork_rng_and_manual_seed_draw_and_restores_the_rng():
    from alexnet.data.transforms import seeded

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        ours = torch.randint(0, 1000, (5,)), torch.rand(2)
    after = torch.rand(3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        reference = torch.randint(0, 1000, (5,)), torch.rand(2)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
    assert torch.equal(before, after)  # the block left the global stream where it was


def test_a_resumed_run_keeps_its_checkpoint_decode(image_folder):
    from alexnet.data import build_data

    from helpers import CPU, FIXED_STATS, _folder_cfg

    cfg = _folder_cfg(image_folder, val_fraction=0.25)
    assert build_data(cfg, CPU, stats=FIXED_STATS).preprocess.decode == "reduced"
    old = build_data(cfg, CPU, stats=FIXED_STATS, decode="full")
    assert old.preprocess.decode == "full" and old.train.loader.dataset.decode_side is None


def test_caffe_records_bgr_0_to_255_and_square_warp_come_out_as_their_float_pipeline(jpegs):
    from alexnet.formats.caffe import PREPROCESS as caffe

    assert caffe.decode == "full" and "decode" not in caffe.to_dict()  # converted networks keep the full decode
    img = open_image(jpegs[500, 375], "RGB", decode_side=caffe.decode_side)
    reference = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Lambda(lambda t: t.flip(0)),
            v2.Resize((256, 256), antialias=True),
            v2.CenterCrop(227),
            v2.ToDtype(torch.float32, scale=False),
            v2.Normalize(list(caffe.mean), list(caffe.std)),
        ]
    )
    x = caffe.to_input(caffe.folder_transform(train=False)(img)[None])[0]
    torch.testing.assert_close(x, reference(img), rtol=0, atol=1e-4)
    assert torch.equal(caffe(img), x)
