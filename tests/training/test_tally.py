"""engine.Tally, the counts every evaluation reports, against a brute-force loop over hand-made
logits: one image at a time in plain Python, the loss an explicit -log softmax."""

from __future__ import annotations

import math

import pytest
import torch

from alexnet.training import engine

# (logits, true class) per image. Seven classes: ties at the top (torch.argmax takes the first of
# equal maxima), ties inside and outside the top five, and ties across its fifth place, where
# torch.topk's choice decides; class 1 has no image (its accuracy is 0).
SEVEN = [
    ([3.0, 1.0, 0.0, 0.0, 2.0, -1.0, 0.5], 0),  # right; in the top five
    ([3.0, 1.0, 0.0, 0.0, 2.0, -1.0, 0.5], 5),  # the lowest: outside the top five
    ([1.0, 1.0, 0.0, 2.0, 2.0, -1.0, 0.0], 4),  # tied first with class 3, which argmax takes: wrong
    ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 6),  # all tied: top-1 says 0, topk picks the five
    ([2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], 3),  # five tied for places 2-6
    ([5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0], 2),  # third; the tie below is not its
    ([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0], 6),  # seventh
    ([0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 4.0], 6),  # right, with a tie below it
]
# Three classes: fewer than five, so every image is in the "top five".
THREE = [
    ([1.0, 2.0, 3.0], 0),
    ([1.0, 1.0, 1.0], 2),
    ([-2.0, 0.5, 0.25], 1),
    ([4.0, 4.0, -1.0], 1),
]


def _brute_force(images: list[tuple[list[float], int]], num_classes: int) -> tuple[dict, int]:
    """Tally's result one image at a time, and how many images had a tie across the k-th place."""
    k = min(5, num_classes)
    confusion = [[0] * num_classes for _ in range(num_classes)]
    in_top, loss, straddling = 0, 0.0, 0
    for row, y in images:
        predicted = next(j for j in range(num_classes) if row[j] == max(row))  # the first of equal maxima
        confusion[y][predicted] += 1
        above = sum(v > row[y] for v in row)
        with_ties = above + sum(v == row[y] for v in row)  # the place of the last of y's ties, y counted
        if with_ties <= k:  # y and all its ties are in
            in_top += 1
        elif above < k:  # its ties straddle the k-th place: which are in is torch.topk's choice
            straddling += 1
            in_top += y in torch.tensor([row]).topk(k, dim=1).indices[0].tolist()
        loss += -(row[y] - math.log(sum(math.exp(v) for v in row)))
    n = len(images)
    per_class = [confusion[c][c] / sum(confusion[c]) if sum(confusion[c]) else 0.0 for c in range(num_classes)]
    result = {
        "loss": loss / n,
        "top1": sum(confusion[c][c] for c in range(num_classes)) / n,
        "top5": in_top / n,
        "images": n,
        "per_class": per_class,
        "confusion": confusion,
    }
    return result, straddling


@pytest.mark.parametrize("images, num_classes", [(SEVEN, 7), (THREE, 3)], ids=["7-classes", "3-classes"])
def test_tally_counts_as_a_loop_over_images_does(images, num_classes):
    tally = engine.Tally(num_classes, torch.device("cpu"))
    for part in (images[:3], images[3:]):  # two batches: the counts add up
        tally.add(torch.tensor([row for row, _ in part]), torch.tensor([y for _, y in part]))
    got = tally.result()
    want, straddling = _brute_force(images, num_classes)
    assert got["confusion"] == want["confusion"]
    assert got["images"] == want["images"] == len(images)
    for key in ("loss", "top1", "top5"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert got["per_class"] == pytest.approx(want["per_class"], rel=1e-12)
    if num_classes < 5:
        assert got["top5"] == 1.0
    else:  # the cases above are there: ties across the fifth place, an image outside, a class without images
        assert straddling >= 2 and want["top5"] < 1 and want["per_class"][1] == 0.0
