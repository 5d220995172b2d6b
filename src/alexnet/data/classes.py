"""``--classes``: a chosen few of a data set's classes, as if the data set held only those.

The choice is a list of indices into the data set's class names, in the order given; labels are
renumbered 0..K-1 in that order and the names kept, so the model file says what its outputs
mean. Every source (IDX sets, image folders, shards) selects through :func:`choose` for training
and :func:`by_names` for evaluation, which picks a model's classes out of its data by their names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alexnet.errors import DataError
from alexnet.ranges import class_list

SHOWN = 20  # class names an error lists before "... (N in all)"


def _known(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "")


def choose(spec: str | None, names: Sequence[str], where: str) -> list[int] | None:
    """The indices into ``names`` that ``--classes`` ``spec`` picks, in its order; None when
    ``spec`` is None. Each item is a class name, or else an index 0..len-1 (a data set whose
    classes are named 0, 1, ... reads the same either way). An item that is neither is one
    :class:`DataError` naming it and listing the known classes."""
    if spec is None:
        return None
    chosen = []
    for item in class_list(spec):
        if item in names:
            chosen.append(list(names).index(item))
        elif item.isdigit() and int(item) < len(names):
            chosen.append(int(item))
        else:
            raise DataError(
                f"--classes {item}: {where} has no class of that name or index (0..{len(names) - 1}); its classes: "
                f"{_known(names)}"
            )
    if len(set(chosen)) != len(chosen):
        twice = next(names[i] for i in chosen if chosen.count(i) > 1)
        raise DataError(f"--classes {spec}: class {twice!r} is named twice (by index and by name); give it once")
    return chosen


def by_names(wanted: Sequence[str], names: Sequence[str], where: str) -> list[int]:
    """The indices into ``names`` of a model's classes ``wanted`` (chosen with ``--classes`` when
    it was trained), in the model's order: each must be one of the data's classes."""
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(
            f"{where}: has no class {missing[0]!r}, which the model was trained on; its classes: {_known(names)}"
        )
    return [list(names).index(c) for c in wanted]


def relabel(labels: torch.Tensor, chosen: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the positions of the items of the chosen classes, their labels renumbered 0..K-1 in the
    order of ``chosen``) for a tensor of labels."""
    lookup = torch.full((max(int(labels.max()) if len(labels) else 0, *chosen) + 1,), -1, dtype=torch.long)
    lookup[torch.as_tensor(list(chosen), dtype=torch.long)] = torch.arange(len(chosen))
    new = lookup[labels]
    keep = (new >= 0).nonzero().flatten()
    return keep, new[keep]


def relabel_samples(samples: list[tuple[str, int]], chosen: Sequence[int]) -> list[tuple[str, int]]:
    """The (path, label) samples of the chosen classes, labels renumbered as :func:`relabel` does."""
    new = {old: i for i, old in enumerate(chosen)}
    return [(path, new[label]) for path, label in samples if label in new]
