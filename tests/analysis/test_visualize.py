"""visualize.py and features.py: the paper's figures 3 and 4, each checked against a reference -
the filters image against conv1's weights, FC7 features against a forward pass written out layer by
layer, the neighbour search against a brute-force loop, the predictions against ``alexnet predict``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from alexnet.analysis.neighbours import Images, fc7_features, nearest, sample, split_images
from alexnet.analysis.visualize import FilterLayout, visualize_neighbours, visualize_predictions
from alexnet.data.transforms import Preprocess
from alexnet.formats import read_model
from alexnet.inference.predict import Predictor
from alexnet.models import build_model

from helpers import PREPROCESS, _checkpoint, _main, _one_line_error

RGB_PREPROCESS = {"kind": "folder", "mode": "RGB", "image_size": 67, "resize": 77, "mean": [0.5] * 3, "std": [0.25] * 3}


def _manual_fc7(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """FC7 after its ReLU, written out: every feature layer in turn, the 6 x 6 pooling, then FC6 and
    FC7 as plain matrix products with their ReLUs (dropout is the identity at inference)."""
    for layer in model.features:
        x = layer(x)
    x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)
    fc6, fc7 = [m for m in model.classifier if isinstance(m, nn.Linear)][:2]
    x = torch.relu(x @ fc6.weight.T + fc6.bias)
    return torch.relu(x @ fc7.weight.T + fc7.bias)


@pytest.mark.parametrize("name", ["alexnet", "alexnet2012"])
def test_fc7_features_equal_a_forward_written_out_layer_by_layer(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1).eval()
    predictor = Predictor(model, [str(i) for i in range(10)], Preprocess.from_dict(PREPROCESS))
    pixels = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    images = Images(pixels, None, None, [], "L")

    got = fc7_features(predictor, images, batch_size=3)  # batches of 3, 3 and 1
    with torch.no_grad():
        x = torch.stack(
            [predictor.preprocess(Image.fromarray(p[0].numpy(), "L")) for p in pixels]
        )  # as predict makes input
        want = _manual_fc7(model, x)
    assert got.shape == (7, 4096)
    assert (want > 0).any() and (want == 0).any()  # after the ReLU
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_nearest_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(4, 4096, generator=g), torch.randn(300, 4096, generator=g)
    keys[17] = queries[2] + 1e-3  # a near-duplicate, as a test image may have in the training set
    distances, indices = nearest(queries, keys, 6)
    q, k = queries.double().tolist(), keys.double().tolist()
    for i, row in enumerate(q):
        brute = sorted((math.sqrt(sum((a - b) ** 2 for a, b in zip(row, key))), j) for j, key in enumerate(k))[:6]
        assert indices[i].tolist() == [j for _, j in brute]
        assert distances[i].tolist() == pytest.approx([d for d, _ in brute], rel=1e-5)
    assert indices[2, 0] == 17
    assert nearest(queries, keys[:3], 6)[1].shape == (4, 3)  # fewer keys than asked for: all of them


def _write_checkpoint(folder, model, name, preprocess):
    path = folder / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(_checkpoint(model.state_dict(), model=name, preprocess=preprocess), path)
    return path


@pytest.mark.parametrize("name,preprocess", [("alexnet2012", RGB_PREPROCESS), ("alexnet", PREPROCESS)])
def test_filters_image_tiles_are_the_min_max_scaled_conv1_kernels(name, preprocess, tmp_path, capsys):
    torch.manual_seed(1)
    channels = len(preprocess["mean"])
    checkpoint = _write_checkpoint(tmp_path, build_model(name, num_classes=10, in_channels=channels), name, preprocess)
    code, out, err = _main(capsys, "visualize", "filters", "--checkpoint", str(checkpoint))
    assert code == 0, err
    assert out.strip() == f"wrote {tmp_path / 'filters.png'}"

    weight = torch.load(checkpoint, weights_only=True)["model"]["features.0.weight"].double()  # (96, C, 11, 11)
    image = np.asarray(Image.open(tmp_path / "filters.png").convert("RGB")).astype(int)
    towers = 2 if name == "alexnet2012" else 1
    layout = FilterLayout(96, towers, 11)
    assert image.shape == (towers * layout.tower_height, layout.width, 3)
    for i in range(96):
        w = weight[i]
        expected = ((w - w.min()) / (w.max() - w.min()) * 255).numpy()  # (C, 11, 11)
        x0, y0 = layout.origin(i)
        tile = image[y0 : y0 + 44 : 4, x0 : x0 + 44 : 4]  # (11, 11, 3): one image pixel per kernel pixel
        want = np.repeat(expected, 3, axis=0) if channels == 1 else expected  # grey: R = G = B
        assert np.abs(tile.transpose(2, 0, 1) - want).max() <= 1, f"kernel {i}"
        assert (
            image[y0 : y0 + 44, x0 : x0 + 44] == np.repeat(np.repeat(tile, 4, 0), 4, 1)
        ).all()  # nearest-neighbour scaling
    if towers == 2:  # tower 2's kernels (49-96) form the lower block, as the paper's second GPU
        assert (
            layout.origin(48)[1] > layout.origin(47)[1] + layout.label and layout.origin(48)[1] >= layout.tower_height
        )


def test_predictions_figure_answers_what_alexnet_predict_answers(trained_run, idx_folder, tmp_path, capsys):
    checkpoint = trained_run / "checkpoints" / "last.pt"
    out, results = visualize_predictions(checkpoint, out=tmp_path / "sample.png", count=4, seed=3)
    drawn = sample(len(idx_folder.test_images), 4, 3)
    files = []
    for i in drawn:  # the same test images as files, through the command line
        files.append(tmp_path / f"test{i}.png")
        Image.fromarray(idx_folder.test_images[i].numpy()).save(files[-1])
    code, printed, err = _main(capsys, "predict", *map(str, files), "--checkpoint", str(checkpoint), "--json")
    assert code == 0, err
    assert [r["predictions"] for r in results] == [r["predictions"] for r in json.loads(printed)]
    assert len(results[0]["predictions"]) == 5 and Image.open(out).size[0] > 0

    code, printed, err = _main(
        capsys, "visualize", "predictions", "--checkpoint", str(checkpoint), *map(str, files[:2])
    )
    assert code == 0 and (trained_run / "predictions.png").is_file(), err  # image files named: drawn next to the run


def test_neighbours_are_the_nearest_training_images_by_fc7_distance(trained_run, idx_folder, tmp_path):
    checkpoint = trained_run / "checkpoints" / "last.pt"
    out, found = visualize_neighbours(checkpoint, tmp_path / "n.png", count=2, neighbours=3, train_images=50, seed=5)
    assert found["searched"] == 50 and Image.open(out).size[0] > 0
    # the reference: one image at a time through Predictor.embed, then every distance by a plain loop
    predictor = Predictor.load(checkpoint)
    pil = lambda pixels: Image.fromarray(pixels.numpy(), "L")  # noqa: E731  (28, 28) uint8
    subset = sample(len(idx_folder.train_images), 50, 5)
    keys = {j: predictor.embed([pil(idx_folder.train_images[j])])[0].tolist() for j in subset}
    assert found["queries"] == sample(len(idx_folder.test_images), 2, 5)
    for q, row in zip(found["queries"], found["train"]):
        query = predictor.embed([pil(idx_folder.test_images[q])])[0].tolist()
        brute = sorted(subset, key=lambda j: math.dist(query, keys[j]))[:3]
        assert row == brute


def test_bad_inputs_are_one_line_naming_them(trained_run, tmp_path, capsys):
    missing = tmp_path / "nothing.pt"
    code, _, err = _main(capsys, "visualize", "filters", "--checkpoint", str(missing))
    assert code == 1 and str(missing) in _one_line_error(err)
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    code, _, err = _main(
        capsys, "visualize", "predictions", "--checkpoint", str(trained_run / "checkpoints" / "last.pt"), str(text)
    )
    assert code == 1 and str(text) in _one_line_error(err) and "not a readable image" in err
    code, _, err = _main(
        capsys,
        "visualize",
        "neighbours",
        "--checkpoint",
        str(trained_run / "checkpoints" / "last.pt"),
        "--data",
        str(tmp_path),
    )
    assert code == 1 and str(tmp_path) in _one_line_error(err)


def test_an_image_folder_run_draws_from_its_hold_out_and_its_training_images(image_folder, tmp_path, capsys):
    train = [
        "train",
        "--data",
        str(image_folder),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "67",
        "--workers",
        "0",
        "--model",
        "alexnet_tiny",  # the test-size network: what is drawn from is under test, not the network
    ]
    assert _main(capsys, *train, "--val-fraction", "0.25", "--out", str(tmp_path), "--name", "f")[0] == 0
    checkpoint = tmp_path / "f" / "checkpoints" / "last.pt"
    held_out = json.loads((tmp_path / "f" / "split.json").read_text())["val"]

    _, results = visualize_predictions(
        checkpoint, out=tmp_path / "p.png", count=100
    )  # more than there are: all of them
    assert sorted(r["image"] for r in results) == sorted(held_out)
    code, printed, err = _main(
        capsys, "predict", *[r["image"] for r in results], "--checkpoint", str(checkpoint), "--json"
    )
    assert code == 0 and json.loads(printed) == results, err

    _, found = visualize_neighbours(checkpoint, tmp_path / "n.png", count=2, neighbours=4, train_images=1000)
    assert found["searched"] == 24 - len(held_out)  # every training image, none of the hold-out
    model_file = read_model(checkpoint)
    train_paths, test_paths = (split_images(model_file, s, checkpoint=checkpoint).paths for s in ("train", "test"))
    assert sorted(test_paths) == sorted(held_out) and not set(train_paths) & set(held_out)
    predictor = Predictor.load(checkpoint)  # the reference: one file at a time, every distance by a loop
    keys = [predictor.embed([p])[0].tolist() for p in train_paths]
    for q, row in zip(found["queries"], found["train"]):
        query = predictor.embed([test_paths[q]])[0].tolist()
        assert row == sorted(range(len(keys)), key=lambda j: math.dist(query, keys[j]))[:4]
