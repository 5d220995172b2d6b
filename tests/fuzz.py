"""The fuzz tests' hypothesis settings and strategies, imported as ``from fuzz import ...``.
Apart from helpers.py so the rest of the suite runs without hypothesis installed; each fuzz test
module skips itself there (``pytest.importorskip("hypothesis")``)."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# --------------------------------------------------------------------------------------------
# Fuzzing: derandomized and bounded, so the fuzz tests repeat exactly and take seconds


FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
# The same for fuzz tests that run ``alexnet`` in this process, reading capsys after each example;
# each example loads a whole network, so they set far fewer examples.
FUZZ_CLI = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# Values a damaged or hand-edited file may hold where something else belongs: other types, empty
# and nested containers, numbers out of every range, and (in a .pt) tensors of odd shapes.
ODD_VALUES = [
    None,
    "",
    "x",
    "nan",
    [],
    [1, "a"],
    [[]],
    {},
    {"a": {"b": None}},
    2**70,
    -(2**70),
    10**400,
    -1,
    0,
    1,
    7,
    50,
    10**6,
    0.5,
    -0.5,
    1e-300,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
]
ODD_TENSORS = [
    torch.zeros(3),
    torch.full((2, 2), math.nan),
    torch.zeros(5056, dtype=torch.uint8),
    torch.zeros((), dtype=torch.int64),
    torch.ones(96, 1, 11, 11),
    torch.zeros(0),
]


@st.composite
def changes(draw, state, *, tensors: bool):
    """One to three changes to ``state`` (a checkpoint's or a sidecar's dict): each a path of keys
    into it, chosen level by level (stopping early, to replace a whole part, one time in six), and
    a deletion, or a replacement by an odd value (:data:`ODD_VALUES`; :data:`ODD_TENSORS` with
    ``tensors``, for a .pt) or by a value near the one there but wrong (:func:`_near`)."""
    odd = (
        st.sampled_from(ODD_VALUES + (ODD_TENSORS if tensors else []))
        | st.integers()
        | st.floats()
        | st.text(max_size=6)
    )
    out = []
    for _ in range(draw(st.integers(1, 3))):
        path, node = [], state
        while isinstance(node, (dict, list)) and node:
            path.append(draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node)))))
            node = node[path[-1]]
            if draw(st.integers(0, 5)) == 0:
                break
        value = draw(st.sampled_from(_near(node)) if draw(st.booleans()) else odd)
        out.append((path, draw(st.sampled_from(["replace", "replace", "delete"])), value))
    return out


def _near(value) -> list:
    """Values of the kind of ``value`` but wrong: a number negated, zero, nudged, scaled far up
    or down, NaN; a string emptied or changed; a list shortened, lengthened or reversed; an object
    emptied or missing one entry; a tensor of another shape, NaN, or integers (made by expanding
    one number, so a 38M-weight layer stays one number on disk)."""
    if isinstance(value, bool):
        return [not value, int(value)]
    if isinstance(value, (int, float)):
        return [-value, 0, value + 1, value * 1000, value / 1000, math.nan, str(value)]
    if isinstance(value, str):
        return ["", value + "x", value.upper()]
    if isinstance(value, list):
        return [value[:-1], value + value[-1:], value[::-1]] if value else [[0], [None]]
    if isinstance(value, dict):
        return [{}, {k: value[k] for k in list(value)[:-1]}]
    if isinstance(value, torch.Tensor):
        shape = tuple(value.shape)
        longer = shape[:-1] + (shape[-1] + 1,) if shape else (2,)
        return [
            torch.zeros(()).expand(longer),
            torch.full((), math.nan).expand(shape),
            torch.zeros((), dtype=torch.long).expand(shape),
            value.unsqueeze(0),
            torch.zeros((), dtype=value.dtype).expand(shape),
        ]
    return [None, 0]


def changed(state, edits):
    """``state`` with ``edits`` (from :func:`changes`) made: the containers along each path are
    copied, everything else shared, so a 60M-parameter checkpoint is changed without a copy."""
    for path, action, value in edits:
        state = _edit(state, path, action, value)
    return state


def _edit(node, path, action, value):
    if not path:
        return node
    key, rest = path[0], path[1:]
    present = (
        isinstance(node, dict) and key in node or isinstance(node, list) and isinstance(key, int) and key < len(node)
    )
    if not present and not (isinstance(node, dict) and not rest and action == "replace"):  # a new entry may be added
        return node  # an earlier edit removed or replaced this part
    copy = dict(node) if isinstance(node, dict) else list(node)
    if rest:
        copy[key] = _edit(node[key], rest, action, value)
    elif action == "delete":
        del copy[key]
    else:
        copy[key] = value
    return copy
