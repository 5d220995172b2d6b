"""data/shards.py, data/shardloader.py, data/prepare.py and ``alexnet prepare``: shards that the
``webdataset`` package reads, images equal to PIL's own resize of the sources, every training image
exactly once per epoch across ranks x workers, equal batch counts per rank, exact resuming,
shards over an fsspec ``memory://`` URL, and bad input refused in one line with nothing written."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import tarfile
from collections import Counter

import pytest

pytest.importorskip("fsspec")  # not installed everywhere (benchmarks/gpu.sh runs the suite on a bare GPU machine)
pytest.importorskip("webdataset")  # not installed everywhere (benchmarks/gpu.sh runs the suite on a bare GPU machine)

import fsspec
import numpy as np
import torch
import webdataset as wds
from PIL import Image

import alexnet.training.loop
from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.data import DataError, build_data, build_eval_data
from alexnet.data import prepare as prepare_module
from alexnet.data.folder import scan_folder
from alexnet.data.images import open_image
from alexnet.data.prepare import prepare
from alexnet.data.shardloader import ShardSamples, epoch_order
from alexnet.data.shards import ShardIndex, parse_size
from alexnet.data.stats import channel_stats
from alexnet.data.transforms import Preprocess
from alexnet.formats.checkpoint import load_checkpoint
from alexnet.system.distributed import World

from helpers import CPU, _check_reasons, _run, make_folder


def _train_cfg(dst, **kw):
    return TrainConfig(**{"data": str(dst), "workers": 0, "image_size": 67, "batch_size": 5, **kw})


@pytest.fixture(scope="module")
def shards(image_folder_split, tmp_path_factory):
    """The split folder (train/ 18 images, val/ 6) prepared into small shards, by two workers."""
    dst = tmp_path_factory.mktemp("shards") / "out"
    index = prepare(image_folder_split, dst, shard_size="300KB", workers=2, quiet=True)
    return dst, index


def _reference(path, resize=256) -> tuple[np.ndarray, np.ndarray]:
    """The source image, its shorter side resized by PIL directly (torchvision's rounding), and
    that image saved by PIL as a JPEG of quality 95 and read back."""
    img = open_image(path, "RGB")
    w, h = img.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    resized = img.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    resized.save(buf, format="JPEG", quality=95)
    return np.asarray(resized, dtype=np.float64), np.asarray(Image.open(buf), dtype=np.float64)


def test_prepare_writes_shards_an_index_and_the_class_list(shards, image_set_split):
    dst, index = shards
    train_set, val_set = image_set_split
    assert ShardIndex.read(str(dst)) == index
    assert index.classes == train_set.classes == (dst / "classes.txt").read_text().split()
    assert index.count("train") == len(train_set.files) and index.count("val") == len(val_set.files)
    assert len(index.splits["train"]) > 1  # 300 KB shards: several, none larger unless it holds one sample
    assert all(
        s.bytes == (dst / s.file).stat().st_size and (s.bytes <= 300_000 or s.count == 1)
        for v in index.splits.values()
        for s in v
    )
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        ["index.json", "classes.txt"] + [s.file for v in index.splits.values() for s in v]
    )
    # statistics of the training images, as the folder pipeline computes them
    samples, _ = scan_folder(train_set.path)
    mean, std = channel_stats(samples, "RGB", seed=0)
    assert index.stats["mean"] == pytest.approx(mean) and index.stats["std"] == pytest.approx(std)


def test_webdataset_reads_the_shards_and_the_offsets_point_at_the_members(shards):
    dst, index = shards
    for shard_list in index.splits.values():
        urls = [str(dst / s.file) for s in shard_list]
        samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        keys = [k for s in shard_list for k in s.keys]
        assert [s["__key__"] for s in samples] == keys and len(set(keys)) == len(keys)
        assert [int(s["cls"]) for s in samples] == [label for s in shard_list for label in s.labels]
        members = {s["__key__"]: s for s in samples}
        for shard in shard_list:
            raw = (dst / shard.file).read_bytes()
            for k, key in enumerate(shard.keys):
                jpg = raw[shard.jpg_offset[k] : shard.jpg_offset[k] + shard.jpg_size[k]]
                cls_ = raw[shard.cls_offset[k] : shard.cls_offset[k] + shard.cls_size[k]]
                assert jpg == members[key]["jpg"] and cls_ == members[key]["cls"]


def test_the_shards_hold_the_source_images_resized(shards, image_set_split):
    dst, index = shards
    for split, image_set in zip(("train", "val"), image_set_split):
        # within a class every source has its own size, so (class, stored size) names the source
        sources = {}
        for f in image_set.files:
            ref = _reference(f.path)
            sources[(index.classes.index(f.label), ref[0].shape)] = ref
        assert len(sources) == len(image_set.files)
        seen = set()
        for shard in index.splits[split]:
            for tar_sample in wds.WebDataset(str(dst / shard.file), shardshuffle=False, empty_check=False).decode(
                "rgb8"
            ):
                img, label = tar_sample["jpg"].astype(np.float64), int(tar_sample["cls"])
                resized, jpeg = sources[(label, img.shape)]
                assert np.array_equal(img, jpeg)  # exactly PIL's resize, saved as PIL saves a JPEG of quality 95
                assert (
                    np.abs(img - resized).mean() < 5
                )  # and close to the resized pixels (noisy test images: JPEG's worst case)
                seen.add((label, img.shape))
        assert seen == set(sources)


def test_a_bad_file_is_listed_by_prepare_and_absent_from_the_shards(tmp_path, capsys):
    src = tmp_path / "src"
    expected = make_folder(src)
    rc, _, err = _run(capsys, "prepare", src, tmp_path / "refused", "--workers", "0")
    assert rc == 1 and "5 bad image file(s)" in err and "--skip-bad-images" in err
    assert not (tmp_path / "refused").exists()
    rc, out, _ = _run(capsys, "prepare", src, tmp_path / "dst", "--workers", "0", "--skip-bad-images")
    assert rc == 0 and "alexnet train --data" in out
    _check_reasons(json.loads((tmp_path / "dst" / "bad_images.json").read_text()), expected)
    index = ShardIndex.read(str(tmp_path / "dst"))
    assert index.count("train") + index.count("val") == 16  # the good ones
    # the hold-out is the one training draws from the readable files
    assert index.split == {"seed": 0, "val_fraction": 0.1}
    folder = build_data(
        TrainConfig(data=str(src), workers=0, image_size=67, skip_bad_images=True),
        CPU,
        stats={"mean": [0.5] * 3, "std": [0.25] * 3},
    )
    assert index.count("val") == folder.num_val and index.count("train") == folder.num_train


def _sample_numbers(monkeypatch):
    """Loaded samples become (sample number, worker id): the real batch sampler, workers and collate."""

    def numbered(self, item):
        info = torch.utils.data.get_worker_info()
        return torch.tensor(item[0]), torch.tensor(-1 if info is None else info.id)

    monkeypatch.setattr(ShardSamples, "__getitem__", numbered)
    monkeypatch.setattr(Preprocess, "to_input", lambda self, x: x)  # numbers, not uint8 images: pass them through


def _epoch(data, epoch, start=0):
    data.train.set_epoch(epoch, start)
    return [(x.tolist(), y.tolist()) for x, y in data.train]


@pytest.mark.parametrize("batch_size", [5, 17, 18, 64])  # last global batch of 3, 1 (< 2 ranks), 18; one batch
def test_every_training_image_once_per_epoch_across_2_ranks_x_2_workers(shards, monkeypatch, batch_size):
    dst, index = shards
    n = index.count("train")
    _sample_numbers(monkeypatch)
    ranks = [
        build_data(_train_cfg(dst, workers=2, batch_size=batch_size), CPU, world=World(rank=r, size=2)) for r in (0, 1)
    ]
    whole = build_data(_train_cfg(dst, batch_size=batch_size), CPU)  # world_size 1, no workers
    for epoch in (0, 1):
        per_rank = [_epoch(d, epoch) for d in ranks]
        single = _epoch(whole, epoch)
        counts = [len(b) for b in per_rank] + [len(single)] + [len(d.train) for d in ranks]
        assert counts == [math.ceil(n / batch_size)] * 5  # the same number of batches on every rank
        assert Counter(i for b in per_rank for x, _ in b for i in x) == Counter(range(n))  # exactly once
        assert {w for b in per_rank for _, y in b for w in y} == (
            {0, 1} if len(single) > 1 else {0}
        )  # both workers worked
        for b, (x, _) in enumerate(single):  # rank r: the r-th contiguous chunk of the global batch, sizes within one
            x0, x1 = per_rank[0][b][0], per_rank[1][b][0]
            assert x0 + x1 == x and len(x0) - len(x1) in (0, 1)
    assert _epoch(whole, 0) != _epoch(whole, 1) and _epoch(whole, 0) == _epoch(whole, 0)  # shuffled per (seed, epoch)


def test_validation_is_split_across_ranks_once_each(shards, monkeypatch):
    dst, index = shards
    _sample_numbers(monkeypatch)
    seen = [
        i
        for r in (0, 1)
        for x, _ in build_data(_train_cfg(dst, batch_size=4), CPU, world=World(rank=r, size=2)).val
        for i in x.tolist()
    ]
    assert sorted(seen) == list(range(index.count("val")))


def test_resuming_mid_epoch_gives_the_remaining_batches_exactly(shards):
    dst, _ = shards
    data = build_data(_train_cfg(dst, batch_size=4), CPU, world=World(rank=1, size=2))
    data.train.set_epoch(1)
    full = list(data.train)
    data.train.set_epoch(1, start=2)
    rest = list(data.train)
    assert len(rest) == len(full) - 2 and len(data.train) == len(full)
    for (x, y), (xr, yr) in zip(full[2:], rest):
        assert torch.equal(x, xr) and torch.equal(y, yr)  # the same images, crops and flips


def test_shards_are_read_over_an_fsspec_url(shards, tmp_path):
    dst, index = shards
    fs = fsspec.filesystem("memory")
    for p in dst.iterdir():
        fs.pipe(f"/shards-test/{p.name}", p.read_bytes())
    local = build_data(_train_cfg(dst), CPU)
    for workers in (0, 2):
        remote = build_data(_train_cfg("memory://shards-test", workers=workers), CPU)
        assert remote.classes == local.classes and remote.num_train == local.num_train
        for a, b in ((local.train, remote.train), (local.val, remote.val)):
            for (x, y), (xr, yr) in zip(a, b, strict=True):
                assert torch.equal(x, xr) and torch.equal(y, yr)
    file_url = build_data(_train_cfg(f"file://{dst}"), CPU)
    assert [y.tolist() for _, y in file_url.val] == [y.tolist() for _, y in local.val]


def test_epoch_order_is_a_permutation_drawn_window_by_window():
    counts = [3, 5, 2, 4, 6]
    starts = np.cumsum([0] + counts)
    order = epoch_order(counts, torch.Generator().manual_seed(1), shuffle=True, window=2).tolist()
    assert sorted(order) == list(range(sum(counts)))
    shard_of = [int(np.searchsorted(starts, i, side="right")) - 1 for i in range(sum(counts))]
    blocks, pos = [], 0
    while pos < len(order):  # a block ends once it holds all the samples of two shards (or the rest)
        members, end = set(), pos
        while True:
            members.add(shard_of[order[end]])
            end += 1
            if end - pos == sum(counts[m] for m in members) and (len(members) == 2 or end == len(order)):
                break
        blocks.append(order[pos:end])
        pos = end
    assert [len({shard_of[i] for i in b}) for b in blocks] == [2, 2, 1]
    switches = [sum(shard_of[x] != shard_of[y] for x, y in zip(b, b[1:])) for b in blocks]
    assert max(switches) > 1  # the two shards of a window interleaved, not one after the other
    assert epoch_order(counts, torch.Generator(), shuffle=False).tolist() == list(range(sum(counts)))


@pytest.mark.slow
def test_train_on_shards_then_evaluate(shards, tmp_path, capsys):
    dst, index = shards
    rc, out, err = _run(
        capsys,
        "train",
        "--data",
        dst,
        "--model",
        "alexnet_tiny",  # the test-size network: the shards' reading is under test
        "--epochs",
        "1",
        "--image-size",
        "67",
        "--batch-size",
        "8",
        "--workers",
        "2",
        "--out",
        tmp_path,
        "--name",
        "run",
    )
    assert rc == 0, err
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert ckpt.is_file() and f"on {dst}" in out
    rc, out, err = _run(capsys, "evaluate", "--checkpoint", ckpt, "--json")
    assert rc == 0, err
    assert json.loads(out)["images"] == index.count("val")
    images = build_eval_data(
        str(dst), build_data(_train_cfg(dst), CPU).preprocess, index.classes, batch_size=4, workers=0
    )
    assert images.num_images == index.count("val") and sum(len(y) for _, y in images.batches) == index.count("val")


def test_prepare_refuses_bad_input_in_one_line_writing_nothing(image_folder, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    cases = [
        (["prepare", tmp_path / "missing", tmp_path / "a"], 1, "SRC"),
        (["prepare", image_folder, full], 2, "not empty"),
        (["prepare", image_folder, full, "--force"], 2, "did not write"),
        (["prepare", image_folder, tmp_path / "b", "--shard-size", "lots"], 2, "--shard-size"),
        (["prepare", image_folder, tmp_path / "b", "--shard-size", "0MB"], 2, "--shard-size"),
        (["prepare", image_folder, image_folder / "shards"], 2, "inside SRC"),
        (["prepare", image_folder, tmp_path / "b", "--val-fraction", "1.5"], 2, "--val-fraction"),
    ]
    for argv, code, words in cases:
        rc, out, err = _run(capsys, *argv)
        assert (rc, out) == (code, "") and words in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"] and [p.name for p in full.iterdir()] == ["notes.txt"]
    assert not (image_folder / "shards").exists()


def test_parse_size_reads_decimal_and_binary_units():
    assert [parse_size(t) for t in ("1GB", "500MB", "2GiB", "64KiB", "100000", "1.5kb")] == [
        10**9,
        5 * 10**8,
        2 * 2**30,
        65536,
        100000,
        1500,
    ]
    for bad in ("", "lots", "1XB", "-1MB", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_damaged_shards_and_indexes_are_named_before_training(shards, tmp_path):
    dst, index = shards
    copy = tmp_path / "copy"
    shutil.copytree(dst, copy)
    (copy / index.splits["train"][1].file).write_bytes(b"cut")
    with pytest.raises(DataError, match=f"{index.splits['train'][1].file} has 3 bytes"):
        build_data(_train_cfg(copy), CPU)
    (copy / index.splits["train"][1].file).unlink()
    with pytest.raises(DataError, match=f"cannot read shard {index.splits['train'][1].file}"):
        build_data(_train_cfg(copy), CPU)
    values = json.loads((dst / "index.json").read_text())
    values["splits"]["train"]["shards"][0]["labels"][0] = 7
    (copy / "index.json").write_text(json.dumps(values))
    with pytest.raises(DataError, match="label is outside 0..2"):
        build_data(_train_cfg(copy), CPU)
    (copy / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="its index.json.*: not readable JSON"):
        build_data(_train_cfg(copy), CPU)
    with pytest.raises(DataError, match="shorter side of 256, --image-size 300 needs 343"):
        build_data(_train_cfg(dst, image_size=300), CPU)


def test_a_shard_damaged_after_the_start_is_one_line(shards, tmp_path):
    dst, index = shards
    copy = tmp_path / "copy"
    shutil.copytree(dst, copy)
    data = build_data(_train_cfg(copy, workers=2), CPU)
    first = index.splits["train"][0]
    raw = bytearray((copy / first.file).read_bytes())
    raw[first.jpg_offset[0] : first.jpg_offset[0] + first.jpg_size[0]] = bytes(first.jpg_size[0])  # zeros, same size
    (copy / first.file).write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        for _ in data.train:
            pass
    assert f"{first.file} at byte {first.jpg_offset[0]}" in str(e.value) and "\n" not in str(e.value)
    # a run checks the shards' sizes, not their images: it cannot say one "was readable when it started"
    assert "damaged after alexnet prepare wrote it" in str(e.value), str(e.value)


def test_an_interrupted_prepare_leaves_no_half_shard_and_no_index(image_folder_split, tmp_path, monkeypatch, capsys):
    real, calls = prepare_module.open_image, []

    def fails_on_the_fifteenth(path, *args, **kw):  # a file that went bad after the scan, half-way through
        calls.append(path)
        if len(calls) == 15:
            raise prepare_module.ImageError(path, "truncated or corrupt image (OSError: cut)")
        return real(path, *args, **kw)

    monkeypatch.setattr(prepare_module, "open_image", fails_on_the_fifteenth)
    dst = tmp_path / "dst"
    rc, _, err = _run(capsys, "prepare", image_folder_split, dst, "--workers", "0", "--shard-size", "100KB")
    assert rc == 1 and "changed since" in err and len(err.strip().splitlines()) == 1
    names = sorted(p.name for p in dst.iterdir())
    assert names and all(n.startswith("train-") and n.endswith(".tar") for n in names)  # no index, no .partial
    for n in names:  # the finished shards are whole tar files
        with tarfile.open(dst / n) as tar:
            assert len(tar.getmembers()) % 2 == 0
    monkeypatch.setattr(prepare_module, "open_image", real)
    rc, _, err = _run(capsys, "prepare", image_folder_split, dst, "--workers", "0")
    assert rc == 2 and "--force" in err
    rc, _, _ = _run(capsys, "prepare", image_folder_split, dst, "--workers", "0", "--force")
    assert rc == 0 and ShardIndex.read(str(dst)).count("train") == 18


@pytest.mark.slow
def test_a_run_on_shards_stopped_mid_epoch_resumes_to_the_same_weights(shards, tmp_path, monkeypatch, capsys):
    """Through the real training loop: stopped by SIGTERM after its 2nd step, resumed, it ends
    with the weights of a run that went straight through (as tests/training/test_loop.py does for folders)."""
    dst, _ = shards
    base = [
        "train",
        "--data",
        str(dst),
        "--model",
        "alexnet_tiny",  # the test-size network: the shards' position is under test
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "67",
        "--workers",
        "2",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
    ]
    assert main([*base, "--name", "through"]) == 0
    real = alexnet.training.loop.engine.train_step
    steps = []

    def stop_after_two_steps(*args, **kwargs):
        step = real(*args, **kwargs)
        steps.append(step)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler turns it into a flag
        return step

    monkeypatch.setattr(alexnet.training.loop.engine, "train_step", stop_after_two_steps)
    assert main([*base, "--name", "stopped"]) == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "stopped/checkpoints/last.pt")["totals"]["steps"] == 2
    monkeypatch.setattr(alexnet.training.loop.engine, "train_step", real)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    through, resumed = (
        load_checkpoint(tmp_path / n / "checkpoints" / "last.pt")["model"] for n in ("through", "stopped")
    )
    assert through.keys() == resumed.keys() and all(torch.equal(through[k], resumed[k]) for k in through)
