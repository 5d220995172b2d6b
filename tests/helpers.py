"""Plain helpers shared by several test files, imported as ``from helpers import ...`` (the way
tests import ``from conftest import ...``); the fixtures themselves live in conftest.py.

* image folders with bad files in them (:func:`make_folder`) and the settings to load them;
* ``TensorBatches`` and folder settings for the data tests;
* hand-made checkpoints and state_dicts for the format tests (:func:`_fake_weights`, :func:`_checkpoint`);
* running ``alexnet ARGV`` in this process (:func:`_run`, :func:`_run_stdout`, :func:`_main`).

The fuzz tests' hypothesis settings and strategies are in fuzz.py, so that the rest of the suite
runs where hypothesis is not installed (the GPU machine of benchmarks/gpu.sh).
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.data import TensorBatches
from alexnet.data.images import MIN_IMAGE_SIDE
from alexnet.data.transforms import Preprocess
from alexnet.formats import FORMAT
from alexnet.models import build_model

CPU = torch.device("cpu")


VARIANTS = ("alexnet", "alexnet2012", "alexnet2012_half", "alexnet_owt", "alexnet_tiny", "convnet4")
# Each variant's smallest input side, written down once: test_models holds min_input_size and the
# forward pass to it, test_summary holds summarize's refusal below it.
MIN_SIZE = {
    "alexnet": 67,
    "alexnet2012": 67,
    "alexnet2012_half": 67,
    "alexnet_owt": 63,
    "alexnet_tiny": 67,
    "convnet4": 27,
}


# --------------------------------------------------------------------------------------------
# Image folders with bad files in them


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
        root / "a" / "corrupt.jpg": (
            random.Random(0).randbytes(3000),
            ("not a readable image", "truncated or corrupt"),
        ),
        root / "a" / "truncated.jpg": (jpeg[: len(jpeg) // 2], ("truncated or corrupt image",)),
        root / "b" / "empty.png": (b"", ("empty file",)),
        root / "b" / "text.jpg": (b"just some notes, saved with the wrong name\n" * 5, ("not a readable image",)),
        root / "b" / "tiny.png": (
            _image_bytes("PNG", (1, 1)),
            (f"image of 1x1 pixels is too small (minimum {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})",),
        ),
    }
    for path, (raw, _) in files.items():
        path.write_bytes(raw)
    return {str(path): words for path, (_, words) in files.items()}


def _cfg(root, **kw):
    return TrainConfig(
        **{"data": str(root), "workers": 0, "image_size": 67, "batch_size": 8, "val_fraction": 0.25, **kw}
    )


def _check_reasons(bad_files: list[dict], expected: dict[str, tuple]) -> None:
    assert sorted(b["path"] for b in bad_files) == sorted(expected)
    for b in bad_files:
        assert any(w in b["reason"] for w in expected[b["path"]]), b
        assert "\n" not in b["reason"]


# --------------------------------------------------------------------------------------------
# Image folders and IDX tensors, loaded


FIXED_STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _folder_cfg(folder, **kw):
    return TrainConfig(data=str(folder), workers=0, image_size=67, batch_size=8, **kw)


def _batches(images, labels, *, train, batch_size=16, image_size=67, mean=(0.0,), std=(1.0,), seed=0):
    return TensorBatches(
        images,
        labels,
        batch_size=batch_size,
        train=train,
        device=CPU,
        seed=seed,
        preprocess=Preprocess.for_tensors(
            mode="L", source_size=images.shape[-1], image_size=image_size, stats={"mean": mean, "std": std}
        ),
    )


# --------------------------------------------------------------------------------------------
# Hand-made checkpoints: tensors of one zero expanded to the right shape


PREPROCESS = {"kind": "tensor", "mode": "L", "source_size": 28, "image_size": 67, "mean": [0.3], "std": [0.3]}


def _fake_weights(name: str, **kwargs) -> dict[str, torch.Tensor]:
    """A state_dict with the shapes of ``build_model(name, **kwargs)`` and the storage of one number."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(name, init="torch", **kwargs).state_dict().items()}
    return {k: torch.zeros(()).expand(s) for k, s in shapes.items()}


def _checkpoint(weights: dict, *, model="alexnet", classes=10, preprocess=PREPROCESS, **config) -> dict:
    """The dict train.py writes, with the given weights and settings (no optimizer state)."""
    return {
        "format": FORMAT,
        "model": weights,
        "optimizer": None,
        "scheduler": None,
        "epoch": 0,
        "best_top1": 0.0,
        "metrics": {"epoch": 0, "val_top1": 0.0},
        "rng": {"torch": torch.get_rng_state(), "cuda": None},
        "preprocess": preprocess,
        "classes": [f"c{i}" for i in range(classes)],
        "config": TrainConfig(model=model, image_size=67, **config).to_dict(),
    }


# --------------------------------------------------------------------------------------------
# alexnet ARGV, run in this process


def _run(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``alexnet ARGV``; each argument may be a path (str() is applied)."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _run_stdout(capsys, *argv) -> tuple[int, str]:
    """Exit code and stdout of ``alexnet ARGV`` (the end-to-end tests' ``_run``)."""
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``alexnet ARGV`` run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    assert err.strip() and "\n" not in err.strip(), err
    return err.strip()


def _refused_in_one_line(rc: int, out: str, err: str, command: str, names: tuple[str, ...]) -> None:
    """The promise the structure fuzzing holds the CLI to: the command works (and says no
    ``nan%``), or exits 1 or 2 with exactly one line, ``alexnet COMMAND: error: ...``, that names
    one of ``names`` (the file, or the data it was pointed at) - never a traceback."""
    if rc == 0:
        assert "nan%" not in out.lower(), out
        return
    assert rc in (1, 2), (rc, err)
    line = _one_line_error(err)
    assert line.startswith(f"alexnet {command}: error: "), line
    assert any(n in line for n in names), (line, names)
