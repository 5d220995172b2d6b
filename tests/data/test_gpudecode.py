"""The GPU-fed folder pipeline (data/gpudecode.py). Everything but nvJPEG is device-agnostic, so
here it runs on CPU tensors with torchvision's CPU JPEG decoder standing in for nvJPEG, against
references: torchvision's v2 ops (resize, crop, horizontal_flip) on the same boxes, Pillow's
reduced-size decode, and the CPU folder loader itself (the same batches, crops and errors). The
``cuda`` tests run the real decoder where a GPU is (benchmarks/gpu.sh)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from alexnet.config import TrainConfig
from alexnet.data import build_data, gpudecode
from alexnet.data.folder import scan_folder
from alexnet.data.gpudecode import gpu_folder_loader, resize_crop_flip, resolve_decode
from alexnet.data.images import open_image, read_jpeg, reduced_size
from alexnet.data.jpegfiles import Crop, crop_for
from alexnet.data.loader import folder_loader
from alexnet.data.transforms import Preprocess
from alexnet.errors import ConfigError, ImageError

CPU = torch.device("cpu")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu.sh runs these)")
STATS = {"mean": [0.45, 0.5, 0.55], "std": [0.2, 0.25, 0.3]}


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth colour with texture: a crop one pixel off gives a very different image."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC
    )
    return Image.fromarray(np.clip(np.asarray(coarse) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8))


def cpu_decode(blobs, device):
    """torchvision's libjpeg-turbo decoder in nvJPEG's place: the same call, on the CPU."""
    return _NVJPEG(blobs, CPU)


_NVJPEG = gpudecode.nvjpeg  # before any test replaces it


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of JPEGs of mixed sizes (some large enough for the reduced-size decode)."""
    root = tmp_path_factory.mktemp("gpu_jpegs")
    sizes = [(160, 120), (160, 120), (120, 160), (300, 200), (97, 90), (160, 120), (330, 250), (90, 140)]
    for n, (w, h) in enumerate(sizes):
        (root / f"c{n % 2}").mkdir(exist_ok=True)
        _photo(w, h, seed=n).save(root / f"c{n % 2}" / f"{n}.jpg", quality=90)
    return root


def _prep(decode: str = "full", **kw) -> Preprocess:
    return dataclasses.replace(Preprocess.for_folder(image_size=67, stats=STATS, resize=77, decode=decode), **kw)


def _batches(loader, epoch: int = 0):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


# -- the crop: device-agnostic, against torchvision's ops --


@pytest.mark.parametrize(
    "size, side",
    [
        ((1100, 830), 256),
        ((830, 1100), 256),
        ((1100, 830), 200),
        ((1100, 830), 100),
        ((513, 700), 256),
        ((500, 375), 256),
        ((1025, 2049), 128),
    ],
)
def test_reduced_size_is_what_pillow_decodes(tmp_path, size, side):
    path = tmp_path / "x.jpg"
    _photo(*size).save(path, quality=85)
    assert open_image(path, "RGB", decode_side=side).size == reduced_size(*size, side)
    assert reduced_size(*size, None) == size


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_resize_crop_flip_equals_torchvision_ops_on_the_same_boxes(channel_order):
    g = torch.Generator().manual_seed(1)
    prep = _prep(channel_order=channel_order)
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        for h, w in [(120, 160), (120, 160), (90, 97), (120, 160), (200, 300), (77, 77)]
    ]
    crops = [
        Crop(77, 102, 3, 30, True),
        Crop(77, 102, 10, 0, False),
        Crop(82, 77, 15, 10, True),
        Crop(90, 120, 23, 53, False),
        Crop(77, 115, 0, 48, True),
        Crop(77, 77, 5, 5, False),
    ]
    out = resize_crop_flip(images, crops, prep)
    for img, c, got in zip(images, crops, out):
        want = TF.crop(TF.resize(img, [c.height, c.width], antialias=True), c.top, c.left, 67, 67)
        want = TF.horizontal_flip(want) if c.flip else want
        want = want.flip(0) if channel_order == "BGR" else want
        assert torch.equal(got, want)


@pytest.mark.parametrize("decode", ["full", "reduced"])
@pytest.mark.parametrize("train", [True, False])
def test_crop_for_draws_the_boxes_the_cpu_transform_cuts(decode, train):
    """A ramp image whose pixels say where they are: the CPU transform's output and ours, cut from
    the same resized ramp with crop_for's box, are equal for every seed."""
    prep = _prep(decode)
    for (w, h), seed in [((160, 120), 1), ((120, 160), 2), ((330, 250), 3), ((97, 90), 4), ((200, 90), 5)]:
        w2, h2 = reduced_size(w, h, prep.decode_side)
        ramp = torch.stack(
            [
                torch.arange(w2).repeat(h2, 1) % 256,
                torch.arange(h2)[:, None].repeat(1, w2) % 256,
                torch.full((h2, w2), seed),
            ]
        ).to(torch.uint8)
        from alexnet.data.transforms import seeded

        with seeded(seed):
            want = prep.folder_transform(train)(Image.fromarray(ramp.permute(1, 2, 0).numpy()))
        c = crop_for(w, h, prep, train, seed)
        got = resize_crop_flip([ramp], [Crop(c.height, c.width, c.top, c.left, c.flip)], prep)[0]
        assert torch.equal(got, want), (w, h, seed, c)


# -- the loader: the CPU loader's batches --


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_loader_gives_the_cpu_loaders_batches(folder, workers):
    samples, _ = scan_folder(folder)
    prep = _prep("full")
    common = dict(batch_size=3, workers=workers, seed=7, device=CPU)
    for train in (True, False):
        ours = gpu_folder_loader(samples, prep, train=train, decode=cpu_decode, **common)
        theirs = folder_loader(samples, prep, train=train, **common)
        assert len(ours) == len(theirs) == 3
        for epoch in (0, 1):
            for (x, y), (xr, yr) in zip(_batches(ours, epoch), _batches(theirs, epoch), strict=True):
                assert torch.equal(y, yr) and x.shape == xr.shape and x.dtype == torch.float32
                # the same boxes: a pixel off would differ by tens of grey levels
                assert (x - xr).abs().max() * max(STATS["std"]) <= 1.01 / 255


def test_reduced_decode_cuts_the_same_boxes_with_pixels_close_to_libjpegs(folder):
    samples, _ = scan_folder(folder)
    prep = Preprocess.for_folder(
        image_size=60, stats=STATS, resize=60, decode="reduced"
    )  # 330x250 and 300x200 decode at 1/2
    ours = gpu_folder_loader(samples, prep, train=True, batch_size=8, workers=0, seed=3, device=CPU, decode=cpu_decode)
    theirs = folder_loader(samples, prep, train=True, batch_size=8, workers=0, seed=3, device=CPU)
    (x, _), (xr, _) = _batches(ours)[0], _batches(theirs)[0]
    grey = (x - xr).abs() * torch.tensor(STATS["std"]).view(1, 3, 1, 1) * 255
    assert (
        grey.mean() < 2.5 and grey.amax((1, 2, 3)).max() > 0
    )  # the halved decodes differ a little, everywhere the same box


def test_files_that_are_not_plain_jpegs_take_the_cpu_path(tmp_path):
    (tmp_path / "a").mkdir()
    photo = _photo(150, 110, seed=9)
    photo.save(tmp_path / "a" / "png.png")
    photo.convert("CMYK").save(tmp_path / "a" / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: the CPU path rotates it
    photo.save(tmp_path / "a" / "turned.jpg", quality=90, exif=exif)
    photo.save(tmp_path / "a" / "plain.jpg", quality=90)
    assert [read_jpeg(tmp_path / "a" / n) is None for n in ("png.png", "cmyk.jpg", "turned.jpg")] == [True] * 3
    assert read_jpeg(tmp_path / "a" / "plain.jpg")[1:] == (150, 110)
    samples, _ = scan_folder(tmp_path)
    prep = _prep("full")
    calls = []
    ours = gpu_folder_loader(
        samples,
        prep,
        train=True,
        batch_size=4,
        workers=0,
        seed=0,
        device=CPU,
        decode=lambda blobs, d: calls.append(len(blobs)) or cpu_decode(blobs, d),
    )
    theirs = folder_loader(samples, prep, train=True, batch_size=4, workers=0, seed=0, device=CPU)
    (x, _), (xr, _) = _batches(ours)[0], _batches(theirs)[0]
    assert calls == [1] and (x - xr).abs().max() * max(STATS["std"]) <= 1.01 / 255


def test_a_jpeg_the_gpu_cannot_decode_falls_back_to_the_cpu_per_file(folder):
    samples, _ = scan_folder(folder)
    prep = _prep("full")
    first = {}

    def refuses_one(blobs, device):  # nvJPEG failing on one file fails its whole batch call
        first.setdefault("blob", bytes(blobs[0].numpy()))
        if any(bytes(b.numpy()) == first["blob"] for b in blobs):
            raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_BAD_JPEG")
        return cpu_decode(blobs, device)

    ours = gpu_folder_loader(samples, prep, train=True, batch_size=4, workers=0, seed=1, device=CPU, decode=refuses_one)
    theirs = folder_loader(samples, prep, train=True, batch_size=4, workers=0, seed=1, device=CPU)
    for (x, y), (xr, yr) in zip(_batches(ours), _batches(theirs), strict=True):
        assert torch.equal(y, yr) and (x - xr).abs().max() * max(STATS["std"]) <= 1.01 / 255
    assert ours.decoder.fallbacks == 1


def test_a_decoded_image_of_the_wrong_size_is_not_trusted(folder):
    samples, _ = scan_folder(folder)
    prep = _prep("full")
    wrong = lambda blobs, device: [torch.zeros(3, 8, 8, dtype=torch.uint8) for _ in blobs]  # noqa: E731
    ours = gpu_folder_loader(samples, prep, train=False, batch_size=8, workers=0, seed=0, device=CPU, decode=wrong)
    theirs = folder_loader(samples, prep, train=False, batch_size=8, workers=0, seed=0, device=CPU)
    assert torch.allclose(_batches(ours)[0][0], _batches(theirs)[0][0], atol=1e-6)
    assert ours.decoder.fallbacks == len(samples)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_gone_bad_stops_the_run_in_one_line_naming_it(tmp_path, workers):
    for n in range(6):
        (tmp_path / f"c{n % 2}").mkdir(exist_ok=True)
        _photo(120, 100, seed=n).save(tmp_path / f"c{n % 2}" / f"{n}.jpg", quality=90)
    samples, _ = scan_folder(tmp_path)
    loader = gpu_folder_loader(
        samples, _prep(), train=True, batch_size=3, workers=workers, seed=0, device=CPU, decode=cpu_decode
    )
    victim = samples[4][0]
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[: len(data) // 2])  # the header still reads: the decoders find it out
    before = set(multiprocessing.active_children())
    with pytest.raises(ImageError) as e:
        _batches(loader)
    message = str(e.value)
    assert message.startswith(f"{victim}: ") and "changed since" in message and "\n" not in message
    assert set(multiprocessing.active_children()) <= before  # the workers ended with the epoch


def test_leaving_an_epoch_early_ends_the_prefetch_thread(folder):
    import threading

    samples, _ = scan_folder(folder)
    loader = gpu_folder_loader(
        samples, _prep(), train=True, batch_size=2, workers=0, seed=0, device=CPU, decode=cpu_decode
    )
    for _ in loader:
        break
    assert not any(t.name == "alexnet-gpu-decode" for t in threading.enumerate())
    assert len(_batches(loader)) == 4  # and the next epoch is whole


# -- which path: one place decides --


def test_resolve_decode_without_cuda_is_the_cpu_and_gpu_is_refused_in_one_line():
    prep = _prep()
    assert resolve_decode("auto", CPU, prep) == "cpu" and resolve_decode("cpu", CPU, prep) == "cpu"
    with pytest.raises(ConfigError) as e:
        resolve_decode("gpu", CPU, prep)
    assert str(e.value).startswith("--decode gpu: the run's device is cpu") and "--decode cpu" in str(e.value)


def test_resolve_decode_on_cuda_follows_the_nvjpeg_probe(monkeypatch):
    """CUDA mocked: the device is named cuda, the probe's verdict is given."""
    cuda, prep = torch.device("cuda:0"), _prep()
    monkeypatch.setattr(gpudecode, "nvjpeg_problem", lambda device: None)
    assert resolve_decode("auto", cuda, prep) == "gpu" and resolve_decode("gpu", cuda, prep) == "gpu"
    assert resolve_decode("cpu", cuda, prep) == "cpu"
    grey = Preprocess.for_folder(image_size=67, stats={"mean": [0.5], "std": [0.2]}, mode="L")
    assert resolve_decode("auto", cuda, grey) == "cpu"
    lit = Preprocess.for_folder(
        image_size=67, stats={**prep.stats, "eigval": [0.2, 0.02, 0.005], "eigvec": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    )
    assert resolve_decode("auto", cuda, lit) == "cpu"  # PCA lighting: drawn in the CPU workers only
    with pytest.raises(
        ConfigError, match=r"^--decode gpu: PCA lighting \(--lighting\) runs in the CPU loader workers only"
    ):
        resolve_decode("gpu", cuda, lit)
    monkeypatch.setattr(
        gpudecode,
        "nvjpeg_problem",
        lambda device: f"torchvision's nvJPEG decoder does not work on {device} (RuntimeError: x)",
    )
    assert resolve_decode("auto", cuda, prep) == "cpu"
    with pytest.raises(
        ConfigError,
        match=r"^--decode gpu: torchvision's nvJPEG decoder does not work on cuda:0 \(RuntimeError: x\); use",
    ):
        resolve_decode("gpu", cuda, prep)


def test_the_nvjpeg_probe_checks_a_decoded_image(monkeypatch):
    """The probe, with torchvision's CPU decoder (works), one that raises, and one giving a wrong image."""

    def probe(decode, device=CPU):
        gpudecode.nvjpeg_problem.cache_clear()
        monkeypatch.setattr(gpudecode, "nvjpeg", decode)
        try:
            return gpudecode.nvjpeg_problem(device)
        finally:
            gpudecode.nvjpeg_problem.cache_clear()

    calls = []
    assert probe(lambda blobs, device: calls.append(device) or cpu_decode(blobs, device)) is None and calls == [CPU]

    def broken(blobs, device):
        raise RuntimeError("nvjpeg\nnot in this build")

    assert (
        probe(broken, torch.device("cuda:0"))
        == "torchvision's nvJPEG decoder does not work on cuda:0 (RuntimeError: nvjpeg not in this build)"
    )
    grey = lambda blobs, device: [torch.full((3, 24, 32), 128, dtype=torch.uint8) for _ in blobs]  # noqa: E731
    assert probe(grey) == "torchvision's nvJPEG decoder gave a wrong image on cpu"


def test_train_refuses_decode_gpu_without_cuda_in_one_line(folder, capsys, tmp_path):
    from alexnet.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(
        [
            "train",
            "--data",
            str(folder),
            "--decode",
            "gpu",
            "--device",
            "cpu",
            "--image-size",
            "67",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--workers",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert (
        rc == 2
        and err.endswith(
            "--decode gpu: the run's device is cpu, and nvJPEG decodes on CUDA devices only; use --decode auto "
            "(the GPU where it works) or --decode cpu"
        )
        and "\n" not in err
    )


def test_a_cpu_run_builds_the_cpu_loaders(folder):
    data = build_data(TrainConfig(data=str(folder), workers=0, image_size=67, batch_size=4), CPU, stats=STATS)
    assert data.decode_on == "cpu" and not isinstance(data.train, gpudecode.GpuEpochLoader)


# -- on a GPU: the real nvJPEG --


@CUDA
def test_nvjpeg_works_here_and_auto_picks_it():
    assert gpudecode.nvjpeg_problem(torch.device("cuda", torch.cuda.current_device())) is None
    assert resolve_decode("auto", torch.device("cuda"), _prep()) == "gpu"  # as --device auto names it


@CUDA
@pytest.mark.parametrize("decode", ["full", "reduced"])
def test_nvjpeg_batches_are_close_to_the_cpu_loaders(folder, tmp_path, decode):
    """Real nvJPEG: the same boxes; pixels within a few grey levels on average (nvJPEG's IDCT and
    chroma upsampling are not libjpeg-turbo's, the GPU resize goes through float)."""
    import shutil

    root = shutil.copytree(folder, tmp_path / "jpegs")
    _photo(140, 100, seed=11).convert("L").save(root / "c0" / "grey.jpg", quality=90)  # grey JPEG: nvJPEG makes it RGB
    samples, _ = scan_folder(root)
    prep = _prep(decode)
    cuda = torch.device("cuda")  # as --device auto names it: no index
    ours = gpu_folder_loader(samples, prep, train=True, batch_size=4, workers=2, seed=5, device=cuda)
    theirs = folder_loader(samples, prep, train=True, batch_size=4, workers=2, seed=5, device=cuda)
    for (x, y), (xr, yr) in zip(_batches(ours), _batches(theirs), strict=True):
        assert x.device.type == "cuda" and torch.equal(y.cpu(), yr.cpu())
        grey = ((x - xr).abs() * torch.tensor(STATS["std"], device=cuda).view(1, 3, 1, 1) * 255).cpu()
        assert grey.mean() < 3.0, grey.mean((1, 2, 3))
    assert ours.decoder.fallbacks <= 1  # at most the grey JPEG, where nvJPEG does not give it as RGB


@CUDA
def test_nvjpeg_failing_on_a_damaged_jpeg_leaves_the_batch_to_the_cpu(tmp_path):
    for n in range(4):
        (tmp_path / "a").mkdir(exist_ok=True)
        _photo(160, 120, seed=n).save(tmp_path / "a" / f"{n}.jpg", quality=90)
    victim = tmp_path / "a" / "2.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])  # truncated: Pillow refuses it; nvJPEG may decode part or fail
    samples, _ = scan_folder(tmp_path)
    cuda = torch.device("cuda", torch.cuda.current_device())
    loader = gpu_folder_loader(samples, _prep(), train=False, batch_size=4, workers=0, seed=0, device=cuda)
    try:
        x, _ = _batches(loader)[0]
        assert x.shape == (4, 3, 67, 67) and torch.isfinite(x).all()  # nvJPEG decoded what it could
    except ImageError as e:  # nvJPEG refused it and so did the CPU: one line naming it
        assert str(e).startswith(f"{victim}: ") and "\n" not in str(e)


@CUDA
def test_a_training_run_on_cuda_decodes_on_the_gpu(folder, tmp_path, capsys):
    from alexnet.cli import main

    rc = main(
        [
            "train",
            "--data",
            str(folder),
            "--image-size",
            "67",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
            "--name",
            "r",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "env.json").read_text())["decode"] == "gpu"
    assert "nvJPEG" in capsys.readouterr().out
