"""A stored :class:`~alexnet.data.transforms.Preprocess` record read back: every field of the
preprocessing in a checkpoint, sidecar or export checked, a bad one a ValueError naming it
(:meth:`Preprocess.from_dict` is the one caller), and the fields added after model files were
first written, whose absence means their default (:data:`LATER_FIELDS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from alexnet.data.stats import stats_problem
from alexnet.errors import brief
from alexnet.models import MAX_IMAGE_SIZE
from alexnet.ranges import is_number

# Fields added after model files were first written: absent means this value.
LATER_FIELDS = {"channel_order": "RGB", "scale": 1, "resize_to": "shorter"}


def stored_fields(values, source: str = "preprocess") -> dict:
    """The stored form (``Preprocess.to_dict``) -> the record's fields, each checked; a folder's
    ``resize`` is None where the file has none (the record's rule fills it in)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: 'preprocess' must be an object, got {type(values).__name__}")
    kind = values.get("kind")
    if kind not in ("tensor", "folder"):
        raise ValueError(f"{source}: preprocess 'kind' must be tensor or folder, got {brief(kind)}")
    needed = {"mode", "image_size", "mean", "std"} | ({"source_size"} if kind == "tensor" else set())
    missing = sorted(needed - set(values))
    if missing:
        raise ValueError(f"{source}: preprocess lacks {', '.join(missing)}")
    extra = sorted(
        set(values)
        - {
            "kind",
            "mode",
            "image_size",
            "mean",
            "std",
            "source_size",
            "resize",
            "decode",
            "eigval",
            "eigvec",
            *LATER_FIELDS,
        }
    )
    if extra:
        raise ValueError(f"{source}: unknown preprocess field(s) {', '.join(extra)}")
    if values["mode"] not in ("L", "RGB"):
        raise ValueError(f"{source}: preprocess 'mode' must be L or RGB, got {brief(values['mode'])}")
    _check_sizes(values, source)
    later = {**LATER_FIELDS, **{k: values[k] for k in LATER_FIELDS if k in values}}
    _check_later_fields(later, values, source)
    mean, std = values["mean"], values["std"]
    numbers = lambda v: isinstance(v, list) and all(is_number(x) for x in v)  # noqa: E731
    if not (numbers(mean) and numbers(std) and len(mean) == len(std) == (1 if values["mode"] == "L" else 3)):
        raise ValueError(
            f"{source}: preprocess mean and std must be lists of one finite number per channel of mode {values['mode']}"
        )
    problem = stats_problem(mean, std, later["scale"])
    if problem:
        raise ValueError(f"{source}: preprocess {problem}")
    lighting = _read_lighting(values, source)
    decode = values.get("decode", "full" if kind == "folder" else None)  # files from before the field: full size
    if decode not in (("full", "reduced") if kind == "folder" else (None,)):
        raise ValueError(
            f"{source}: preprocess 'decode' must be full or reduced for a folder pipeline, got {brief(decode)}"
        )
    return {
        "kind": kind,
        "mode": values["mode"],
        "image_size": values["image_size"],
        "mean": tuple(float(m) for m in mean),
        "std": tuple(float(s) for s in std),
        "source_size": values.get("source_size"),
        "resize": values.get("resize"),
        "decode": decode,
        **later,
        **lighting,
    }


def _check_later_fields(later: Mapping, values: Mapping, source: str) -> None:
    """``channel_order`` RGB or BGR (of three channels), ``scale`` 1 or 255, ``resize_to`` shorter
    or square (a folder's)."""
    if later["channel_order"] not in ("RGB", "BGR") or (later["channel_order"] == "BGR" and values["mode"] != "RGB"):
        raise ValueError(
            f"{source}: preprocess 'channel_order' must be RGB, or BGR for mode RGB, got "
            f"{brief(later['channel_order'])}"
        )
    if later["scale"] not in (1, 255) or not isinstance(later["scale"], int) or isinstance(later["scale"], bool):
        raise ValueError(
            f"{source}: preprocess 'scale' must be 1 (pixels in [0, 1]) or 255 (0..255), got {brief(later['scale'])}"
        )
    if later["resize_to"] not in ("shorter", "square") or (
        later["resize_to"] == "square" and values["kind"] != "folder"
    ):
        raise ValueError(
            f"{source}: preprocess 'resize_to' must be shorter, or square for kind folder, got "
            f"{brief(later['resize_to'])}"
        )


def _read_lighting(values: Mapping, source: str) -> dict:
    """The stored eigen-decomposition of PCA lighting: both fields or neither (a file from before
    lighting has neither), for RGB only, 3 eigenvalues of at least 0 and 3 orthonormal eigenvectors
    (to the 4 decimals ImageNet's published values have)."""
    if "eigval" not in values and "eigvec" not in values:
        return {}
    eigval, eigvec = values.get("eigval"), values.get("eigvec")
    numbers = lambda v: isinstance(v, list) and len(v) == 3 and all(is_number(x) for x in v)  # noqa: E731
    if values["mode"] != "RGB" or not (
        numbers(eigval) and isinstance(eigvec, list) and len(eigvec) == 3 and all(map(numbers, eigvec))
    ):
        raise ValueError(
            f"{source}: preprocess 'eigval' and 'eigvec' (PCA lighting) must be 3 numbers and 3 "
            "lists of 3 numbers, "
            "of an RGB model"
        )
    gram = torch.tensor(eigvec, dtype=torch.float64) @ torch.tensor(eigvec, dtype=torch.float64).T
    if min(eigval) < 0 or not torch.allclose(gram, torch.eye(3, dtype=torch.float64), atol=1e-3):
        raise ValueError(
            f"{source}: preprocess 'eigval' must be at least 0 and 'eigvec' orthonormal rows, got {brief(eigval)} "
            f"and {brief(eigvec)}"
        )
    return {"eigval": tuple(float(x) for x in eigval), "eigvec": tuple(tuple(float(x) for x in v) for v in eigvec)}


def _check_sizes(values: Mapping, source: str) -> None:
    """The stored sizes: positive integers, a source image no larger than the largest input
    (what the IDX loader takes), and a folder's resized shorter side at least the crop cut from it."""
    for key in ("image_size", "source_size", "resize"):
        v = values.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{source}: preprocess {key!r} must be a positive integer, got {brief(v)}")
    source_size, resize, size = values.get("source_size"), values.get("resize"), values["image_size"]
    if source_size is not None and source_size > MAX_IMAGE_SIZE:
        raise ValueError(f"{source}: preprocess 'source_size' {source_size} is above the maximum {MAX_IMAGE_SIZE}")
    if resize is not None and not size <= resize <= 2 * MAX_IMAGE_SIZE:
        raise ValueError(
            f"{source}: preprocess 'resize' {resize} must be between its image_size {size} and {2 * MAX_IMAGE_SIZE}"
        )
