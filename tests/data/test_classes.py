"""--classes and --subset-per-class: every source keeps the chosen classes' images and only those,
relabelled 0..K-1 in the order given, checked image by image against the files written; the
evaluation readers pick the same classes by name; an unknown class is one line listing the known."""

from __future__ import annotations

import shutil

import pytest
import torch

from alexnet.config import TrainConfig
from alexnet.data import build_data, build_eval_data
from alexnet.data.folder import split_folder
from alexnet.data.prepare import prepare
from alexnet.data.sampling import subset_per_class
from alexnet.errors import ConfigError, DataError

from helpers import CPU, FIXED_STATS, _folder_cfg

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _named(idx_folder, tmp_path):
    """The IDX look-alike with a classes.txt naming its ten classes."""
    root = tmp_path / "named"
    shutil.copytree(idx_folder.path, root)
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return root


def _idx(root, **kw):
    return build_data(TrainConfig(data=str(root), image_size=67, batch_size=16, **kw), CPU)


@pytest.mark.parametrize("spec", ["7,2,5", "seven,two,five", "7,two,5"])
def test_an_idx_set_keeps_the_chosen_classes_renumbered_in_order(idx_folder, tmp_path, spec):
    data = _idx(_named(idx_folder, tmp_path), classes=spec)
    assert data.classes == ["seven", "two", "five"]
    for batches, images, labels in (
        (data.train, idx_folder.train_images, idx_folder.train_labels),
        (data.val, idx_folder.test_images, idx_folder.test_labels),
    ):
        for new, old in enumerate((7, 2, 5)):  # image for image, in the files' order
            assert torch.equal(batches.images[batches.labels == new][:, 0], images[labels == old])
        assert len(batches.labels) == int(sum((labels == c).sum() for c in (7, 2, 5)))
    assert data.num_val == int(sum((idx_folder.test_labels == c).sum() for c in (7, 2, 5)))


def test_statistics_are_those_of_the_chosen_images(idx_folder):
    data = _idx(idx_folder.path, classes="0,9")
    chosen = idx_folder.train_images[(idx_folder.train_labels == 0) | (idx_folder.train_labels == 9)]
    assert data.preprocess.mean[0] == pytest.approx(chosen.float().div(255).mean().item(), rel=1e-5)


def test_an_unknown_class_is_one_line_naming_it_and_the_known_ones(idx_folder, tmp_path):
    with pytest.raises(DataError) as e:
        _idx(_named(idx_folder, tmp_path), classes="seven,sandal")
    message = str(e.value)
    assert "\n" not in message and "--classes sandal" in message and "zero, one, two" in message
    with pytest.raises(DataError, match="--classes 12: .* no class of that name or index"):
        _idx(idx_folder.path, classes="1,12")
    with pytest.raises(DataError, match="named twice"):
        _idx(_named(idx_folder, tmp_path / "again"), classes="7,seven")
    with pytest.raises(ConfigError, match="each once"):
        TrainConfig(classes="1,1")


def test_subset_per_class_takes_that_many_of_each_class(idx_folder):
    data = _idx(idx_folder.path, classes="3,4,5", subset_per_class=7)
    assert torch.bincount(data.train.labels).tolist() == [7, 7, 7]
    images = data.train.images
    for new, old in enumerate((3, 4, 5)):  # drawn from that class's own images
        pool = idx_folder.train_images[idx_folder.train_labels == old]
        assert all((pool == img).flatten(1).all(1).any() for img in images[data.train.labels == new][:, 0])
    keep = subset_per_class(torch.tensor([0] * 5 + [1] * 40), 10, seed=0)
    assert torch.bincount(torch.tensor([0] * 5 + [1] * 40)[keep]).tolist() == [5, 10]  # a short class: all of it
    with pytest.raises(ConfigError, match="give one"):
        TrainConfig(subset=10, subset_per_class=2)


def test_evaluation_picks_the_models_classes_by_name(idx_folder, tmp_path):
    root = _named(idx_folder, tmp_path)
    trained = _idx(root, classes="8,1")
    ev = build_eval_data(str(root), trained.preprocess, trained.classes, chosen=True)
    labels = torch.cat([y for _, y in ev.batches])
    expected = torch.cat([torch.full((int((idx_folder.test_labels == c).sum()),), i) for i, c in enumerate((8, 1))])
    assert ev.classes == ["eight", "one"] and sorted(labels.tolist()) == sorted(expected.tolist())
    with pytest.raises(DataError, match="has no class 'eight'"):
        build_eval_data(str(idx_folder.path), trained.preprocess, trained.classes, chosen=True)


def test_an_image_folder_keeps_the_chosen_class_folders(image_set):
    cfg = _folder_cfg(image_set.path, classes="red,blue", val_fraction=0.25)
    split = split_folder(cfg, image_set.path)
    assert split.classes == ["red", "blue"]
    samples = split.train + split.val
    expected = sorted(str(f.path) for f in image_set.files if f.label in ("red", "blue"))
    assert sorted(p for p, _ in samples) == expected
    assert all(("/red/" in p) == (label == 0) for p, label in samples)
    data = build_data(cfg, CPU, stats=FIXED_STATS)
    ev = build_eval_data(str(image_set.path), data.preprocess, data.classes, val_fraction=0.25, workers=0, chosen=True)
    assert ev.num_images == data.num_val  # the same hold-out, redrawn from the chosen classes


def test_prepared_shards_keep_the_chosen_classes(image_folder_split, tmp_path):
    index = prepare(image_folder_split, tmp_path / "shards", workers=0, quiet=True)
    cfg = TrainConfig(data=str(tmp_path / "shards"), classes="red", image_size=67, batch_size=4, workers=0)
    data = build_data(cfg, CPU)
    red = index.classes.index("red")
    counts = {s: sum(label == red for shard in index.splits[s] for label in shard.labels) for s in ("train", "val")}
    assert data.classes == ["red"] and (data.num_train, data.num_val) == (counts["train"], counts["val"])
    assert all(y.eq(0).all() for _, y in data.val)
