"""The paper's recipe (docs/paper.md): each piece against a reference - the update rule against a
hand-computed step, the plateau's three divisions, the recipe against the settings it documents,
the lighting's eigen-decomposition against numpy's, ten-crop against torchvision's ten_crop and an
explicit loop over crops, ensembles against an explicit average."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from alexnet.config import TrainConfig
from alexnet.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC, PixelMoments, lighting_from_covariance
from alexnet.data.transforms import LIGHTING_STD, Lighting, Preprocess
from alexnet.recipes import RECIPES
from alexnet.training.optim import PaperSGD, make_optimizer, make_schedule

from helpers import _run as _cli

# --------------------------------------------------------------------------------------------
# The update rule


def _two_steps(opt_factory, lrs, w0, grads):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = opt_factory([w])
    for lr, g in zip(lrs, grads):
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().numpy()


def test_paper_sgd_is_the_papers_rule_by_hand_also_when_the_rate_changes():
    m, wd = 0.9, 5e-4
    w0, grads, lrs = (
        np.array([0.5, -1.0, 2.0]),
        [np.array([0.1, 0.2, -0.3]), np.array([-0.4, 0.0, 0.6]), np.array([1.0, -1.0, 0.5])],
        [0.1, 0.01, 0.001],
    )
    w, v = w0.copy(), np.zeros(3)
    for eps, g in zip(lrs, grads):  # section 5, written out
        v = m * v - wd * eps * w - eps * g
        w = w + v
    ours = _two_steps(lambda p: PaperSGD(p, lr=lrs[0], momentum=m, weight_decay=wd), lrs, w0, grads)
    np.testing.assert_allclose(ours, w, rtol=0, atol=1e-15)
    # PyTorch's SGD rescales the whole velocity by the new rate: a different trajectory here ...
    sgd = _two_steps(lambda p: torch.optim.SGD(p, lr=lrs[0], momentum=m, weight_decay=wd), lrs, w0, grads)
    assert np.abs(sgd - w).max() > 1e-3
    # ... and the same one while the rate is constant
    same = [0.01] * 3
    a = _two_steps(lambda p: PaperSGD(p, lr=0.01, momentum=m, weight_decay=wd), same, w0, grads)
    b = _two_steps(lambda p: torch.optim.SGD(p, lr=0.01, momentum=m, weight_decay=wd), same, w0, grads)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


def test_paper_sgd_state_round_trips_exactly():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    cfg = TrainConfig(optimizer="paper")

    def step(model, opt):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    opt = make_optimizer(model, cfg)
    step(model, opt)
    saved_model, saved_opt = {k: v.clone() for k, v in model.state_dict().items()}, copy.deepcopy(opt.state_dict())
    assert set(saved_opt["state"][0]) == {"velocity"}
    step(model, opt)
    other = torch.nn.Linear(4, 3)
    other.load_state_dict(saved_model)
    opt2 = make_optimizer(other, cfg)
    opt2.load_state_dict(saved_opt)
    step(other, opt2)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_plateau_divides_by_ten_three_times_at_most():
    cfg = TrainConfig(schedule="plateau", lr=0.01, optimizer="paper")
    opt = make_optimizer(torch.nn.Linear(1, 1), cfg)
    schedule = make_schedule(opt, cfg, steps_per_epoch=1)
    rates = []
    for _ in range(12):  # validation accuracy never improves after the first epoch
        schedule.after_epoch(0.5)
        rates.append(opt.param_groups[0]["lr"])
    distinct = sorted(set(round(r, 12) for r in rates), reverse=True)
    assert distinct == [0.01, 0.001, 0.0001, 0.00001]


# --------------------------------------------------------------------------------------------
# The recipe


PAPER_DOCUMENTED = {  # the paper, as docs/paper.md's recipe table cites it, written out here independently
    "model": "alexnet2012",
    "lrn": True,
    "image_size": 227,
    "lighting": True,
    "optimizer": "paper",
    "batch_size": 128,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "dropout": 0.5,
    "lr": 0.01,
    "schedule": "plateau",
    "epochs": 90,
    "label_smoothing": 0.0,
    "augment": True,
    "nesterov": False,
}


def test_the_paper_recipe_sets_what_it_documents():
    cfg = TrainConfig.from_dict({"recipe": "paper"})
    for key, value in PAPER_DOCUMENTED.items():
        assert getattr(cfg, key) == value, key
    assert cfg.init == "kaiming"  # the one departure (docs/paper.md)
    assert cfg.recipe == "paper"
    assert TrainConfig.from_dict({"recipe": "fast"}) == TrainConfig(recipe="fast") == TrainConfig()
    assert set(RECIPES["paper"]) == set(PAPER_DOCUMENTED) | {"init"}


def test_recipe_precedence_defaults_recipe_file_flags(tmp_path, capsys, monkeypatch):
    from alexnet.cli import training

    seen = {}  # the settings train would get; no training
    monkeypatch.setattr(
        training, "_cmd_train", lambda args: seen.setdefault("cfg", training.train_settings(args)) and 0
    )
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"image_size": 99, "lr": 0.03}))
    assert _cli(capsys, "train", "--recipe", "paper", "--config", settings, "--lr", "0.05")[0] == 0
    cfg = seen["cfg"]
    assert (cfg.model, cfg.optimizer, cfg.image_size, cfg.lr) == (
        "alexnet2012",
        "paper",
        99,
        0.05,
    )  # recipe < file < flag
    seen.clear()
    settings.write_text(json.dumps({"recipe": "paper", "epochs": 2}))  # the file may name the recipe too
    assert _cli(capsys, "train", "--config", settings)[0] == 0
    assert (seen["cfg"].recipe, seen["cfg"].epochs, seen["cfg"].schedule) == ("paper", 2, "plateau")
    rc, _, err = _cli(capsys, "train", "--recipe", "slow")
    assert rc == 2 and "fast, augmented, paper" in err and len(err.strip().splitlines()) == 1


def test_recipes_command_lists_what_each_sets(capsys):
    rc, out, _ = _cli(capsys, "recipes")
    assert rc == 0
    paper = out.split("paper:")[1]
    assert "* --optimizer" in paper and "paper" in paper and "* --lr" in paper and "0.01" in paper
    fast = out.split("paper:")[0]
    assert "--lr" in fast and "0.02" in fast and "onecycle" in fast


# --------------------------------------------------------------------------------------------
# PCA lighting


def test_lighting_eigen_decomposition_matches_numpy_on_known_data():
    rng = np.random.default_rng(0)
    mix = np.array([[0.30, 0.10, 0.05], [0.10, 0.20, 0.02], [0.05, 0.02, 0.08]])
    images = [np.clip(0.5 + (rng.normal(size=(16 * 16, 3)) @ mix).T.reshape(3, 16, 16), 0, 1) for _ in range(20)]
    moments = PixelMoments()
    for im in images:
        moments.add(torch.from_numpy(im))
    pixels = np.concatenate([im.reshape(3, -1) for im in images], axis=1)
    np.testing.assert_allclose(moments.covariance.numpy(), np.cov(pixels, bias=True), atol=1e-12)
    np.testing.assert_allclose(moments.std.numpy(), pixels.std(axis=1), atol=1e-12)
    eigval, eigvec = lighting_from_covariance(moments.covariance)
    values, vectors = np.linalg.eig(np.cov(pixels, bias=True))  # numpy's general solver, unsorted
    order = np.argsort(values)[::-1]
    np.testing.assert_allclose(eigval, values[order], atol=1e-12)
    for ours, theirs in zip(eigvec, vectors[:, order].T):  # the same directions, up to sign
        assert abs(abs(np.dot(ours, theirs)) - 1) < 1e-10


def test_lighting_adds_the_papers_colour_shift():
    lighting = Lighting(IMAGENET_EIGVAL, IMAGENET_EIGVEC)
    x = torch.rand(3, 5, 5)
    torch.manual_seed(7)
    y = lighting(x)
    torch.manual_seed(7)
    alpha = torch.randn(3).numpy() * LIGHTING_STD
    shift = sum(
        alpha[i] * IMAGENET_EIGVAL[i] * np.array(IMAGENET_EIGVEC[i]) for i in range(3)
    )  # sum_i alpha_i lambda_i p_i
    np.testing.assert_allclose((y - x).numpy(), np.broadcast_to(shift.reshape(3, 1, 1), (3, 5, 5)), atol=1e-6)


def test_preprocess_stores_the_lighting_and_old_files_still_load():
    stats = {
        "mean": [0.5] * 3,
        "std": [0.2] * 3,
        "eigval": list(IMAGENET_EIGVAL),
        "eigvec": [list(v) for v in IMAGENET_EIGVEC],
    }
    pre = Preprocess.for_folder(image_size=67, stats=stats)
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    old = {k: v for k, v in pre.to_dict().items() if k not in ("eigval", "eigvec")}
    assert Preprocess.from_dict(old).eigval is None
    for bad in ({"eigval": [1, 2]}, {"eigvec": [[1, 0, 0], [1, 0, 0], [0, 0, 1]]}, {"eigval": [-1, 0, 0]}):
        with pytest.raises(ValueError, match="eig"):
            Preprocess.from_dict({**pre.to_dict(), **bad})
    with pytest.raises(ValueError, match="eig"):  # one field without the other
        Preprocess.from_dict({k: v for k, v in pre.to_dict().items() if k != "eigvec"})


# --------------------------------------------------------------------------------------------
# Ten-crop


def test_tensor_ten_crop_is_torchvisions_ten_crop_of_the_padded_image():
    # the tensor pipeline's crops are shifts of up to MAX_SHIFT = 2 source pixels of the zero-padded
    # image: at 70 = 28 * 2.5 the padded 32 pixels are 80, and the corners are torchvision's ten_crop
    pre = Preprocess.for_tensors(mode="L", source_size=28, image_size=70, stats={"mean": [0.25], "std": [0.5]})
    x = torch.rand(3, 1, 28, 28)
    padded = F.interpolate(F.pad(x, (2, 2, 2, 2)), size=80, mode="bilinear", align_corners=False)
    reference = torch.stack(TF.ten_crop(padded, 70), dim=1)
    torch.testing.assert_close(pre.ten_crop_batch(x), (reference - 0.25) / 0.5, atol=2e-5, rtol=0)
    torch.testing.assert_close(pre.ten_crop_batch(x)[:, 4], pre.tensor_batch(x))  # the centre view is the single crop


# The test-size network (models.py) where the claim is the pipeline's, the evaluation's or the
# optimizer's; the recipe's own test keeps the paper's network, whose training it is about.
TINY = ["--model", "alexnet_tiny"]


def _train(capsys, tmp_path, name, *args):
    rc, _, err = _cli(
        capsys,
        "train",
        *args,
        *TINY,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--image-size",
        "67",
        "--workers",
        "0",
        "--out",
        tmp_path,
        "--name",
        name,
    )
    assert rc == 0, err
    return tmp_path / name / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def folder_models(image_folder, tmp_path_factory):
    """Two models trained on the image folder with the same hold-out (seed, half the images), different inits."""
    out = tmp_path_factory.mktemp("paper_models")
    from alexnet.cli import main

    paths = []
    for name, init in (("a", "kaiming"), ("b", "torch")):
        assert (
            main(
                [
                    str(a)
                    for a in (
                        "train",
                        "--data",
                        image_folder,
                        *TINY,
                        "--epochs",
                        "1",
                        "--batch-size",
                        "16",
                        "--image-size",
                        "67",
                        "--workers",
                        "0",
                        "--init",
                        init,
                        "--val-fraction",
                        "0.5",
                        "--out",
                        out,
                        "--name",
                        name,
                    )
                ]
            )
            == 0
        )
        paths.append(out / name / "checkpoints" / "last.pt")
    return paths


def _explicit(paths, ten_crop: bool):
    """The reference: every held-out image read by hand, each view cut with torchvision, each
    model's softmax, averaged over views and models; (top-1, mean loss)."""
    from torchvision.transforms import v2

    from alexnet.data.folder import holdout, scan_folder
    from alexnet.data.images import open_image
    from alexnet.formats import read_model

    files = [read_model(p) for p in paths]
    cfg = files[0].config
    samples, _ = scan_folder(__import__("pathlib").Path(cfg["data"]), files[0].classes)
    _, val = holdout(samples, cfg["seed"], cfg["val_fraction"])
    pre = files[0].preprocess
    nets = [f.network().eval() for f in files]
    correct, loss = 0, 0.0
    for path, label in val:
        img = v2.functional.resize(v2.functional.pil_to_tensor(open_image(path, "RGB")), pre.resize, antialias=True)
        crops = TF.ten_crop(img, pre.image_size) if ten_crop else [TF.center_crop(img, pre.image_size)]
        probs = []
        for f, net in zip(files, nets):
            for crop in crops:
                x = TF.normalize(
                    TF.to_dtype(crop, torch.float32, scale=True), list(f.preprocess.mean), list(f.preprocess.std)
                )
                with torch.no_grad():
                    probs.append(net(x[None]).softmax(-1)[0])
        p = torch.stack(probs).mean(0)
        correct += int(p.argmax() == label)
        loss -= float(torch.log(p[label]))
    return correct / len(val), loss / len(val)


@pytest.mark.slow
def test_ten_crop_and_ensemble_match_an_explicit_loop(folder_models, tmp_path, capsys):
    a, b = folder_models
    rc, out, err = _cli(
        capsys, "evaluate", "--checkpoint", a, "--checkpoint", b, "--ten-crop", "--json", "--out", tmp_path
    )
    assert rc == 0, err
    result = json.loads(out)
    rows = {(r["model"], r["crop"]): r for r in result["table"]}
    assert len(rows) == 6  # two models and the ensemble, single-crop and ten-crop
    for paths, name in (([a], str(a)), ([b], str(b)), ([a, b], "ensemble of 2")):
        for ten in (False, True):
            top1, loss = _explicit(paths, ten)
            row = rows[name, "ten-crop" if ten else "single-crop"]
            assert row["top1"] == pytest.approx(top1) and row["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    assert result["top1"] == rows["ensemble of 2", "ten-crop"]["top1"]  # the headline
    # a model's single-crop number is what a plain evaluation reports
    plain = json.loads(_cli(capsys, "evaluate", "--checkpoint", a, "--json", "--out", tmp_path / "plain")[1])
    assert plain["top1"] == rows[str(a), "single-crop"]["top1"] and plain["loss"] == pytest.approx(
        rows[str(a), "single-crop"]["loss"], rel=1e-6
    )
    rc, out, _ = _cli(capsys, "evaluate", "--checkpoint", a, "--checkpoint", b, "--ten-crop", "--out", tmp_path)
    assert "ten-crop" in out and "ensemble of 2" in out


def test_an_ensemble_of_models_of_other_classes_or_data_is_refused(folder_models, idx_folder, tmp_path, capsys):
    other = _train(capsys, tmp_path, "idx", "--data", idx_folder.path)
    rc, _, err = _cli(capsys, "evaluate", "--checkpoint", folder_models[0], "--checkpoint", other)
    assert rc == 2 and "ensemble" in err and len(err.strip().splitlines()) == 1


def test_idx_ten_crop_evaluates_and_lighting_is_skipped_with_a_note(idx_folder, tmp_path, capsys):
    rc, out, err = _cli(
        capsys,
        "train",
        "--data",
        idx_folder.path,
        *TINY,
        "--lighting",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--image-size",
        "67",
        "--out",
        tmp_path,
        "--name",
        "g",
    )
    assert rc == 0, err
    assert sum("PCA lighting skipped" in line for line in out.splitlines()) == 1
    assert not (tmp_path / "g" / "lighting.json").exists()
    rc, out, _ = _cli(
        capsys, "evaluate", "--checkpoint", tmp_path / "g" / "checkpoints" / "last.pt", "--ten-crop", "--json"
    )
    result = json.loads(out)
    assert rc == 0 and result["view"] == "ten-crop" and result["images"] == 80 and len(result["table"]) == 2


def test_folder_lighting_is_recorded_in_the_run_folder_and_checkpoint(image_folder, tmp_path, capsys):
    from alexnet.data.folder import holdout, scan_folder
    from alexnet.data.stats import pixel_moments
    from alexnet.formats import read_model

    ckpt = _train(capsys, tmp_path, "l", "--data", image_folder, "--lighting", "--seed", "3")
    record = json.loads((tmp_path / "l" / "lighting.json").read_text())
    stored = read_model(ckpt).preprocess
    assert record["eigval"] == list(stored.eigval) and record["eigvec"] == [list(v) for v in stored.eigvec]
    samples, _ = scan_folder(image_folder)
    train, _ = holdout(samples, 3, 0.1)
    cov = pixel_moments(train, "RGB", seed=3).covariance.numpy()
    np.testing.assert_allclose(sorted(np.linalg.eigvalsh(cov), reverse=True), stored.eigval, atol=1e-9)


# --------------------------------------------------------------------------------------------
# The recipe trains


@pytest.mark.slow
def test_the_paper_recipe_with_its_departure_leaves_chance_on_tiny_data(idx_folder, tmp_path, capsys):
    rc, out, err = _cli(
        capsys,
        "train",
        "--recipe",
        "paper",
        "--data",
        idx_folder.path,
        "--image-size",
        "67",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--out",
        tmp_path,
        "--name",
        "p",
    )
    assert rc == 0, err
    assert json.loads((tmp_path / "p" / "config.json").read_text())["recipe"] == "paper"
    lines = [json.loads(line) for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    # chance on 10 classes is a loss of ln 10 = 2.303 and 10% top-1, where --init paper stays (docs/paper.md)
    assert lines[-1]["val_loss"] < 2.2 and lines[-1]["val_top5"] > 0.5


@pytest.mark.slow
def test_a_paper_optimizer_run_resumed_ends_with_the_same_weights(idx_folder, tmp_path, capsys):
    common = [
        "--recipe",
        "paper",
        *TINY,
        "--data",
        idx_folder.path,
        "--image-size",
        "67",
        "--batch-size",
        "64",
        "--lr",
        "0.001",
    ]
    assert _cli(capsys, "train", *common, "--epochs", "2", "--out", tmp_path, "--name", "whole")[0] == 0
    assert _cli(capsys, "train", *common, "--epochs", "1", "--out", tmp_path, "--name", "part")[0] == 0
    rc, _, err = _cli(
        capsys, "train", "--resume", tmp_path / "part", "--epochs", "2"
    )  # the velocity is checked and loaded
    assert rc == 0, err
    whole, part = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("whole", "part"))
    assert set(part["optimizer"]["state"][0]) == {"velocity"}
    for key, value in whole["model"].items():
        assert torch.equal(value, part["model"][key]), key


def test_shards_lighting_is_the_covariance_of_their_training_images(image_folder, tmp_path):
    import io
    import tarfile

    from PIL import Image
    from torchvision.transforms import v2

    from alexnet.data.prepare import prepare
    from alexnet.data.shardloader import shards_data

    index = prepare(image_folder, tmp_path / "shards", resize=80, workers=0, quiet=True)
    cfg = TrainConfig(data=str(tmp_path / "shards"), lighting=True, image_size=67, workers=0)
    eigval = shards_data(cfg, cfg.data, torch.device("cpu")).preprocess.eigval
    # the reference: every training image read from the tar files by hand (fewer than the sample size)
    prep = v2.Compose([v2.PILToTensor(), v2.Resize((64, 64), antialias=True), v2.ToDtype(torch.float64, scale=True)])
    pixels = []
    for shard in index.splits["train"]:
        with tarfile.open(tmp_path / "shards" / shard.file) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                    pixels.append(prep(img).reshape(3, -1).numpy())
    assert len(pixels) == index.count("train")
    cov = np.cov(np.concatenate(pixels, axis=1), bias=True)
    np.testing.assert_allclose(eigval, sorted(np.linalg.eigvalsh(cov), reverse=True), rtol=1e-6, atol=1e-9)
