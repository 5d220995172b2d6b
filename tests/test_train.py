"""The main job end to end, through the CLI, on small data the tests generate:
train -> evaluate -> predict -> resume, an image folder, overfitting a tiny set, torchvision weights."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from alexnet import engine
from alexnet.data import Preprocess
from alexnet.formats import load_checkpoint
from alexnet.cli import main
from alexnet.data import TensorBatches
from alexnet.models import build_model

FAST = ["--batch-size", "32", "--image-size", "67", "--seed", "1"]


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def test_train_evaluate_predict(idx_folder, tmp_path, capsys):
    rc, out = _run(capsys, "train", "--data", str(idx_folder.path), "--epochs", "2", *FAST, "--out", str(tmp_path), "--name", "r")
    assert rc == 0, out
    run = tmp_path / "r"
    for name in ("config.json", "command.txt", "env.json", "metrics.jsonl", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["batch_size"] == 32 and config["data"] == str(idx_folder.path)
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"train_loss", "train_acc", "val_top1", "val_top5", "lr"} <= set(rows[-1])

    # evaluate the last checkpoint: the same numbers the run logged for its last epoch
    rc, out = _run(capsys, "evaluate", "--checkpoint", str(run / "checkpoints/last.pt"), "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["top1"] == pytest.approx(rows[-1]["val_top1"])
    assert result["top5"] == pytest.approx(rows[-1]["val_top5"])
    assert sum(map(sum, result["confusion"])) == len(idx_folder.test_labels)
    assert (run / "confusion.png").is_file() and (run / "evaluation.json").is_file()

    # predict a test image saved as PNG: the same top class as the evaluation batch gives
    image = tmp_path / "test0.png"
    Image.fromarray(idx_folder.test_images[0].numpy(), mode="L").save(image)
    rc, out = _run(capsys, "predict", str(image), "--checkpoint", str(run / "checkpoints/last.pt"), "--json")
    assert rc == 0
    preds = json.loads(out)[0]["predictions"]
    probs = [p["probability"] for p in preds]
    assert len(preds) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    state = load_checkpoint(run / "checkpoints/last.pt")
    model = _model(state).eval()
    batches = TensorBatches(idx_folder.test_images[:1].unsqueeze(1), idx_folder.test_labels[:1], batch_size=1,
                            preprocess=Preprocess.from_dict(state["preprocess"]), train=False, device="cpu")  # fmt: skip
    x, _ = next(iter(batches))
    with torch.no_grad():  # predict runs the model in fp32 on the CPU
        expected = model(x).argmax(1).item()
    assert preds[0]["index"] == expected and preds[0]["class"] == state["classes"][expected]


def _model(state):
    from alexnet.formats import model_from_checkpoint

    return model_from_checkpoint(state)


def test_resume_is_exact(idx_folder, tmp_path, capsys, monkeypatch):
    """A run stopped after its first epoch and resumed ends with the same weights as one that ran through."""
    # bit-exact resume is promised on the CPU; cuDNN's autotuned kernels are not deterministic
    args = ["train", "--data", str(idx_folder.path), "--epochs", "2", *FAST, "--out", str(tmp_path), "--precision", "fp32", "--device", "cpu"]
    assert _run(capsys, *args, "--name", "through")[0] == 0

    real = engine.train_one_epoch
    calls = []

    def stop_in_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "train_one_epoch", stop_in_second_epoch)
    assert _run(capsys, *args, "--name", "stopped")[0] == 130
    assert load_checkpoint(tmp_path / "stopped/checkpoints/last.pt")["epoch"] == 0
    monkeypatch.setattr(engine, "train_one_epoch", real)

    rc, out = _run(capsys, "train", "--resume", str(tmp_path / "stopped"))
    assert rc == 0, out
    a = load_checkpoint(tmp_path / "through/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "stopped/checkpoints/last.pt")
    assert b["epoch"] == 1
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda r: {k: v for k, v in r.items() if "second" not in k}  # noqa: E731
    lines = lambda n: [strip(json.loads(s)) for s in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines("through") == lines("stopped")


def test_resume_rejects_new_settings_and_empty_folders(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2  # only --epochs may be given
    assert "--lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_train_on_image_folder(image_folder, tmp_path, capsys):
    rc, out = _run(capsys, "train", "--data", str(image_folder), "--epochs", "1", *FAST, "--workers", "0", "--out", str(tmp_path), "--name", "f")
    assert rc == 0, out
    run = tmp_path / "f"
    split = json.loads((run / "split.json").read_text())
    assert split["seed"] == 1 and split["val"]
    state = load_checkpoint(run / "checkpoints/last.pt")
    assert state["classes"] == sorted(p.name for p in image_folder.iterdir() if p.is_dir())
    assert state["preprocess"]["kind"] == "folder" and len(state["preprocess"]["mean"]) == 3
    image = next(p for p in sorted(image_folder.rglob("*")) if p.is_file())
    rc, out = _run(capsys, "predict", str(image), "--checkpoint", str(run / "checkpoints/best.pt"), "--top", "2", "--json")
    assert rc == 0
    assert len(json.loads(out)[0]["predictions"]) == 2


@pytest.mark.slow
def test_overfits_a_tiny_set(idx_folder):
    """The network and the training step can drive 32 images to (near) zero training loss."""
    torch.manual_seed(0)
    images, labels = idx_folder.train_images[:32].unsqueeze(1), idx_folder.train_labels[:32]
    preprocess = Preprocess.for_tensors(mode="L", source_size=28, image_size=67, stats={"mean": [0.2], "std": [0.3]})
    batches = TensorBatches(images, labels, batch_size=32, preprocess=preprocess, train=False, device="cpu")
    model = build_model("alexnet", num_classes=10, in_channels=1, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)  # 0.01 spikes on 32 images
    losses = [engine.train_one_epoch(model, batches, opt, device=torch.device("cpu")) for _ in range(40)]
    stats = losses[-1]
    assert stats["loss"] < 0.05 and stats["acc"] == 1.0


def test_torchvision_weights_give_torchvision_top5(tmp_path, capsys):
    """--weights FILE: a torchvision AlexNet state_dict predicts what torchvision itself predicts."""
    import torchvision
    from torchvision.models import AlexNet_Weights

    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()
    weights = tmp_path / "alexnet-owt-test.pth"
    torch.save(reference.state_dict(), weights)
    image = tmp_path / "photo.jpg"
    gen = torch.Generator().manual_seed(1)
    Image.fromarray((torch.rand(300, 400, 3, generator=gen) * 255).byte().numpy()).save(image)

    rc, out = _run(capsys, "predict", str(image), "--weights", str(weights), "--json")
    assert rc == 0
    ours = json.loads(out)[0]["predictions"]

    meta = AlexNet_Weights.IMAGENET1K_V1
    with torch.no_grad():
        probs = reference(meta.transforms()(Image.open(image).convert("RGB")).unsqueeze(0)).softmax(1)[0]
    p, idx = probs.topk(5)
    assert [o["class"] for o in ours] == [meta.meta["categories"][i] for i in idx]
    assert [o["probability"] for o in ours] == pytest.approx(p.tolist(), rel=1e-4)
